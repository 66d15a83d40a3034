/**
 * The destination's two readers of one stream (wire version 2): the manifest (JSON and HASHES
 * frames) and the blocks (BLOCK frames) arrive interleaved, since the source answers wants while it
 * still sends the manifest. Whichever reader needs a frame reads the next from the stream and queues
 * one of the other kind for the other. The manifest's reader waits while more than
 * DEMUX_BLOCK_BYTES of blocks are queued, so a builder behind the stream holds the stream back
 * instead of memory filling; the blocks' reader never waits on the manifest (its files were all
 * announced before it wanted them), so the two cannot wait on each other. Nothing reads the stream
 * when neither needs a frame (no read is left pending at the end).
 */
import { ProtocolError } from '../../protocol/errors.js'
import { FRAME_BLOCK, raceAbort, type Frame, type FrameReader } from './wire.js'

/** Blocks queued for the builder before the manifest's reader waits: a few blocks. */
export const DEMUX_BLOCK_BYTES = 4 * 1024 * 1024

export class Demux {
  private readonly manifest: Frame[] = []
  private readonly blocks: Frame[] = []
  private blockBytes = 0
  private pulling: Promise<void> | undefined
  private ended = false
  private failure: { error: unknown } | undefined
  private waiters: Array<() => void> = []

  constructor (private readonly reader: FrameReader) {}

  async nextManifest (signal: AbortSignal): Promise<Frame> {
    return await this.next(this.manifest, signal)
  }

  async nextBlock (signal: AbortSignal): Promise<Frame> {
    return await this.next(this.blocks, signal)
  }

  private async next (queue: Frame[], signal: AbortSignal): Promise<Frame> {
    while (true) {
      signal.throwIfAborted()
      const f = queue.shift()
      if (f !== undefined) {
        if (queue === this.blocks) { this.blockBytes -= f.body?.byteLength ?? 0; this.wake() }
        return f
      }
      if (this.failure !== undefined) throw this.failure.error
      if (this.ended) throw new ProtocolError('sync stream ended early')
      if (this.pulling !== undefined || (queue === this.manifest && this.blockBytes > DEMUX_BLOCK_BYTES)) {
        await raceAbort(new Promise<void>(resolve => { this.waiters.push(resolve) }), signal)
        continue
      }
      this.pulling = this.pull(signal)
      await this.pulling
    }
  }

  /** Reads one frame into its queue; never rejects (a failure is kept for every reader). */
  private async pull (signal: AbortSignal): Promise<void> {
    try {
      const f = await this.reader.next(signal)
      if (f === undefined) this.ended = true
      else if (f.kind === FRAME_BLOCK) { this.blocks.push(f); this.blockBytes += f.body?.byteLength ?? 0 } else this.manifest.push(f)
    } catch (error) {
      this.failure = { error }
    } finally {
      this.pulling = undefined
      this.wake()
    }
  }

  private wake (): void {
    for (const w of this.waiters.splice(0)) w()
  }
}

/** An ordered hand-off of items from one async producer to one consumer. */
export class HandOff<T> {
  private readonly items: T[] = []
  private ended = false
  private wakeup: (() => void) | undefined

  push (item: T): void { this.items.push(item); this.wakeup?.() }
  end (): void { this.ended = true; this.wakeup?.() }

  /** The next item, or undefined once the producer ended and all were taken. */
  async next (signal: AbortSignal): Promise<T | undefined> {
    while (true) {
      signal.throwIfAborted()
      if (this.items.length > 0) return this.items.shift()
      if (this.ended) return undefined
      await raceAbort(new Promise<void>(resolve => { this.wakeup = resolve }), signal)
      this.wakeup = undefined
    }
  }
}
