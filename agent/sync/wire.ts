/**
 * The sync wire: binary frames over one duplex byte stream, with the bounds every reader enforces.
 *
 * A frame is `kind (u8) | length (u32 big-endian) | payload`. JSON frames carry the control
 * messages (hello, one entry of the tree, end, wantEnd, result); HASHES frames carry a regular
 * file's block hashes right after its entry; WANT frames carry the blocks the destination asks
 * for; BLOCK frames carry one block's bytes. A reader checks the length against the kind's bound
 * before it buffers the payload, so a hostile length never allocates.
 *
 * `ByteDuplex` is the it-pipe shape (`source` + `sink`) that `messageStreamToDuplex()` of
 * @libp2p/utils gives for a libp2p stream, so a caller hands either a libp2p stream or an
 * in-process pair (duplex.ts) to both sides. `Outbox` gives backpressure to the writer: `send`
 * waits while more than OUTBOX_HIGH_WATER bytes wait for the sink to pull them.
 */
import { Uint8ArrayList } from 'uint8arraylist'
import { ProtocolError, SyncLimitError } from '../../protocol/errors.js'

/**
 * Block size of the per-file hashes: 1 MiB. The hashes cost 32 bytes per MiB (a 2 GiB volume's
 * manifest holds 64 KiB of hashes), sha256 over 1 MiB is far from call overhead, a 1 MiB change
 * sends at most two blocks even unaligned, and one block fits one BLOCK frame without splitting.
 * Smaller blocks would send less around a small write but grow every manifest and round.
 */
export const SYNC_BLOCK_BYTES = 1024 * 1024
/**
 * Wire format version; the destination refuses another. 2: the destination sends each file's
 * wants as soon as its hashes are in, and the source answers them while it sends the rest of the
 * manifest (BLOCK frames among the manifest's); 1 waited for the whole manifest.
 */
export const SYNC_WIRE_VERSION = 2

/** Bound of one JSON frame: an entry with a 4 KiB path, a 4 KiB link target and 64 KiB of xattrs in base64 fits. */
export const MAX_SYNC_JSON_BYTES = 256 * 1024
/** Hashes in one HASHES frame (1 MiB of hashes: a 32 GiB file's worth). */
export const MAX_HASHES_PER_FRAME = 32 * 1024
/** Entries of one tree. The destination holds each entry in memory (some hundred bytes each). */
export const MAX_SYNC_ENTRIES = 1_000_000
/**
 * Blocks of one tree, summed over its files: 4 Mi blocks (4 TiB). The destination holds their
 * hashes in memory (32 bytes each, 128 MiB at this bound).
 */
export const MAX_SYNC_BLOCKS = 4 * 1024 * 1024
/** Linux PATH_MAX less the NUL: the longest relative path an entry may have. */
export const MAX_SYNC_PATH_BYTES = 4095
/** Linux NAME_MAX: the longest component of a path. */
export const MAX_SYNC_NAME_BYTES = 255
/** Directory depth of a tree (the source holds one descriptor per level while it walks). */
export const MAX_SYNC_DEPTH = 256
/** Longest symlink target (PATH_MAX less the NUL). */
export const MAX_SYNC_LINK_BYTES = 4095
/** Linux XATTR_NAME_MAX. */
export const MAX_XATTR_NAME_BYTES = 255
/** Linux XATTR_SIZE_MAX: the largest value of one extended attribute, and of all of an entry's names and values together. */
export const MAX_XATTR_BYTES = 64 * 1024

/** Frame kinds. */
export const FRAME_JSON = 1
export const FRAME_HASHES = 2
export const FRAME_WANT = 3
export const FRAME_BLOCK = 4

/** BLOCK frame flags: the block changed at the source since it was hashed (a new hash follows), or the file is gone. */
export const BLOCK_CHANGED = 1
export const BLOCK_GONE = 2
/** Frame header: kind (u8), payload length (u32). */
export const FRAME_HEADER_BYTES = 5
/** BLOCK header: file index (u32), block index (u32), flags (u8). */
export const BLOCK_HEADER_BYTES = 9

/** Most blocks one WANT frame names (4 bytes each after the file index). */
export const MAX_WANTS_PER_FRAME = 64 * 1024

const MAX_PAYLOAD: Record<number, number> = {
  [FRAME_JSON]: MAX_SYNC_JSON_BYTES,
  [FRAME_HASHES]: MAX_HASHES_PER_FRAME * 32,
  [FRAME_WANT]: 4 + MAX_WANTS_PER_FRAME * 4,
  [FRAME_BLOCK]: BLOCK_HEADER_BYTES + 32 + SYNC_BLOCK_BYTES
}

/** Bytes waiting for the sink before `Outbox.send` waits: enough for a few blocks in flight. */
export const OUTBOX_HIGH_WATER = 4 * 1024 * 1024

/** A duplex byte stream in the it-pipe shape: what a libp2p stream becomes through messageStreamToDuplex(). */
export interface ByteDuplex {
  source: AsyncIterable<Uint8Array | Uint8ArrayList>
  sink: (source: AsyncIterable<Uint8Array>) => Promise<void>
}

export interface Frame { kind: number, payload: Uint8Array, body?: Uint8ArrayList }

export function frame (kind: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + payload.byteLength)
  out[0] = kind
  new DataView(out.buffer).setUint32(1, payload.byteLength)
  out.set(payload, 5)
  return out
}

export function jsonFrame (message: unknown): Uint8Array {
  const bytes = Buffer.from(JSON.stringify(message))
  if (bytes.byteLength > MAX_SYNC_JSON_BYTES) throw new SyncLimitError(`sync message of ${bytes.byteLength} bytes exceeds ${MAX_SYNC_JSON_BYTES}`)
  return frame(FRAME_JSON, bytes)
}

/** `promise`, or the signal's reason if it aborts first (the listener is removed either way). */
export async function raceAbort<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  let onAbort: (() => void) | undefined
  const stop = new Promise<never>((_resolve, reject) => {
    onAbort = () => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([promise, stop])
  } finally {
    signal.removeEventListener('abort', onAbort as () => void)
  }
}

/** Reads frames from a byte source, each bounded by its kind before its payload is buffered. */
export class FrameReader {
  private readonly buffer = new Uint8ArrayList()
  private readonly iterator: AsyncIterator<Uint8Array | Uint8ArrayList>
  private done = false

  constructor (source: AsyncIterable<Uint8Array | Uint8ArrayList>) {
    this.iterator = source[Symbol.asyncIterator]()
  }

  private async fill (bytes: number, signal: AbortSignal): Promise<boolean> {
    while (this.buffer.byteLength < bytes) {
      if (this.done) return false
      const next = await raceAbort(this.iterator.next(), signal)
      if (next.done === true) { this.done = true; continue }
      this.buffer.append(next.value)
    }
    return true
  }

  /**
   * The next frame, or undefined when the stream ended cleanly between frames. A BLOCK frame's
   * payload is only its first bytes (header and hash, at most BLOCK_HEADER_BYTES + 32); all of it
   * is in `body`, the chunks as they arrived (a block is never copied into one buffer).
   */
  async next (signal: AbortSignal): Promise<Frame | undefined> {
    if (!await this.fill(5, signal)) {
      if (this.buffer.byteLength === 0) return undefined
      throw new ProtocolError('sync stream ended inside a frame header')
    }
    const kind = this.buffer.get(0)
    const length = this.buffer.getUint32(1)
    const max = MAX_PAYLOAD[kind]
    if (max === undefined) throw new ProtocolError(`unknown sync frame kind ${kind}`)
    if (length > max) throw new SyncLimitError(`sync frame of kind ${kind} announces ${length} bytes, more than ${max}`)
    if (!await this.fill(5 + length, signal)) throw new ProtocolError('sync stream ended inside a frame')
    if (kind === FRAME_BLOCK) {
      const body = this.buffer.sublist(5, 5 + length)
      const payload = body.subarray(0, Math.min(length, BLOCK_HEADER_BYTES + 32))
      this.buffer.consume(5 + length)
      return { kind, payload, body }
    }
    const payload = this.buffer.subarray(5, 5 + length)
    this.buffer.consume(5 + length)
    return { kind, payload }
  }

  /** The next frame, which must be there. */
  async expect (signal: AbortSignal): Promise<Frame> {
    const f = await this.next(signal)
    if (f === undefined) throw new ProtocolError('sync stream ended early')
    return f
  }

  /** Stops the source (the peer may still be writing). */
  async close (): Promise<void> {
    await this.iterator.return?.()
  }
}

export function parseJson (f: Frame): Record<string, unknown> {
  if (f.kind !== FRAME_JSON) throw new ProtocolError(`expected a sync message, got frame kind ${f.kind}`)
  let value: unknown
  try { value = JSON.parse(Buffer.from(f.payload).toString('utf8')) } catch (err) {
    throw new ProtocolError('sync message is not JSON', { cause: err })
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProtocolError('sync message is not an object')
  return value as Record<string, unknown>
}

/**
 * The writing half: frames queue here and the duplex's sink pulls them. `send` waits while more than
 * OUTBOX_HIGH_WATER bytes are queued, so a fast producer (the source reading blocks) follows the
 * pace of the stream.
 */
export class Outbox {
  private readonly queue: Uint8Array[] = []
  private queued = 0
  private closed = false
  private failure: unknown
  private wakeReader: (() => void) | undefined
  private readonly wakeWriters: Array<() => void> = []

  async send (bytes: Uint8Array, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted()
    if (this.closed) throw new ProtocolError('sync stream closed')
    this.queue.push(bytes)
    this.queued += bytes.byteLength
    this.wakeReader?.()
    while (this.queued > OUTBOX_HIGH_WATER && !this.closed) {
      await raceAbort(new Promise<void>(resolve => { this.wakeWriters.push(resolve) }), signal)
    }
  }

  /** No more frames: the sink ends after the queued ones (or at once with `error`). */
  close (error?: unknown): void {
    this.closed = true
    this.failure = error
    this.wakeReader?.()
    for (const w of this.wakeWriters.splice(0)) w()
  }

  async * frames (): AsyncGenerator<Uint8Array> {
    while (true) {
      const next = this.queue.shift()
      if (next !== undefined) {
        this.queued -= next.byteLength
        if (this.queued <= OUTBOX_HIGH_WATER) for (const w of this.wakeWriters.splice(0)) w()
        yield next
        continue
      }
      if (this.closed) {
        if (this.failure !== undefined) throw this.failure
        return
      }
      await new Promise<void>(resolve => { this.wakeReader = resolve })
      this.wakeReader = undefined
    }
  }
}

/**
 * Node sets times as a double of seconds (libuv), which at today's dates keeps about 0.25 µs, and
 * libuv's split into seconds and nanoseconds loses a little more (up to ~1.1 µs seen here): a mtime
 * we set reads back within this of the source's, and a base file that close counts as unchanged.
 */
export const MTIME_SLACK_NS = 4000n
