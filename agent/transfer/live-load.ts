/**
 * A `docker load` fed while the layers are still arriving, so that receiving and loading overlap
 * instead of running one after the other (the first move of a one-layer image would otherwise take
 * the transfer's time plus the load's).
 *
 *   const live = new LiveLoad(docker)                       // opens POST /images/load
 *   const { diffId } = await live.layer(size, bytes, s => store.receiveAny(ids, size, s))
 *   const imageId = await live.finish({ config, diffIds, present, store }, signal)
 *   // undefined from finish: the live load was abandoned; load from the store (loadVerified)
 *
 * Every byte goes both to the staging store (which hashes it; `keep`) and into the tarball, but
 * no unverified layer can become an image or a layer in the engine: the engine unpacks the whole
 * tarball into its temporary directory before it reads the manifest, and
 *   - the last chunk of each layer reaches the tarball only after `keep` verified the layer, so a
 *     refused layer leaves its tar entry short, and the load is then cut off (the request aborted:
 *     the engine's unpacking fails on the truncated body and it removes its temporary directory);
 *   - `manifest.json`, without which the engine loads nothing, is written last, by `finish`, once
 *     every layer of the image is verified;
 *   - the engine checks each layer against the config's diff IDs again as it registers it, and
 *     `finish` confirms the loaded image ID is the config's digest (load.ts `confirmLoaded`).
 * Entries are written one after another (`layer` calls queue); a layer that turns out not to be
 * needed stays in the tarball under a path the manifest does not name, which the engine ignores.
 */
import { once } from 'node:events'
import { PassThrough } from 'node:stream'
import { LayerMissingError, TransferError } from '../../protocol/errors.js'
import {
  checkLoadInput, closingEntries, confirmLoaded, layerPaths, loadRefused, storedLayerEntry, type ImageLoader, type LoadInput
} from './load.js'
import { tarHeader, tarPadding } from './tar.js'

/** Bytes the tarball buffers ahead of the engine's reading: a few chunks, not a layer. */
const TARBALL_BUFFER_BYTES = 1024 * 1024

export class LiveLoad {
  private readonly tar = new PassThrough({ highWaterMark: TARBALL_BUFFER_BYTES })
  private readonly cut = new AbortController()
  private readonly loaded: Promise<string[]>
  /** Where in the tarball each verified layer is. */
  private readonly paths = new Map<string, string>()
  private queue: Promise<unknown> = Promise.resolve()
  private entries = 0
  private abandoned: Error | undefined
  /** The engine answered the complete tarball: nothing left to cut off. */
  private settled = false

  constructor (private readonly docker: ImageLoader) {
    this.loaded = docker.loadImage(this.tar, this.cut.signal)
    this.loaded.catch(err => { this.abandon(err as Error) })
  }

  /** True once the load was cut off; `finish` then returns undefined. */
  get isAbandoned (): boolean { return this.abandoned !== undefined }

  /**
   * Passes one layer of `size` bytes from `source` to `keep` (which must verify it, consuming every
   * byte, and resolve with its diff ID) and into the tarball. Resolves with what `keep` resolved
   * with. A failure of `keep` is thrown as is and abandons the live load; a failure of the live load
   * never fails `keep`: the layer is then only staged, and `finish` reports the abandonment.
   */
  async layer<T extends { diffId: string }> (size: number, source: AsyncIterable<Uint8Array>, keep: (source: AsyncIterable<Uint8Array>) => Promise<T>): Promise<T> {
    const turn = this.queue.then(async () => await this.entry(size, source, keep))
    this.queue = turn.catch(() => {})
    return await turn
  }

  private async entry<T extends { diffId: string }> (size: number, source: AsyncIterable<Uint8Array>, keep: (source: AsyncIterable<Uint8Array>) => Promise<T>): Promise<T> {
    const path = `incoming-${this.entries++}.tar`
    await this.write(tarHeader({ name: path, size }))
    const held: { chunk?: Uint8Array } = {}
    let kept: T
    try {
      kept = await keep(this.holdingLast(source, held))
    } catch (err) {
      this.abandon(new TransferError(`a layer was refused: ${(err as Error).message}`, { cause: err }))
      throw err
    }
    if (held.chunk !== undefined) await this.write(held.chunk)
    await this.write(tarPadding(size))
    if (!this.isAbandoned) this.paths.set(kept.diffId, path)
    return kept
  }

  /** Yields every chunk of `source`, writing each to the tarball except the last, left in `held`. */
  private async * holdingLast (source: AsyncIterable<Uint8Array>, held: { chunk?: Uint8Array }): AsyncGenerator<Uint8Array> {
    for await (const chunk of source) {
      if (held.chunk !== undefined) await this.write(held.chunk)
      held.chunk = chunk
      yield chunk
    }
  }

  /** Writes to the tarball with the engine's backpressure; does nothing once abandoned. */
  private async write (chunk: Uint8Array): Promise<void> {
    if (this.isAbandoned || chunk.byteLength === 0) return
    if (this.tar.write(chunk)) return
    try {
      await once(this.tar, 'drain', { signal: this.cut.signal })
    } catch { /* cut off meanwhile: abandoned */ }
  }

  /**
   * Completes the tarball once every layer after `present` is in it or in the store (staged by an
   * earlier attempt: streamed from there now), waits for the engine and confirms the image.
   * Returns the image ID, or undefined when the live load had been abandoned (the caller then loads
   * from the store). Throws what loadVerified throws for a bad config, a missing layer or an
   * engine that refused the complete tarball.
   */
  async finish (input: LoadInput, signal?: AbortSignal): Promise<string | undefined> {
    await this.queue
    if (this.isAbandoned) return undefined
    // The containerd store takes an OCI layout, whose blob names are known only once verified:
    // the destination never starts a live load there; any other caller gets the store's load.
    if (input.imageStore !== undefined && input.imageStore !== 'graphdriver') { this.abort(new TransferError(`a live load cannot feed the ${input.imageStore} image store`)); return undefined }
    const { config, diffIds, present, store } = input
    const expected = checkLoadInput(input)
    const paths = layerPaths(diffIds)
    const fromStore: number[] = []
    for (let i = present; i < diffIds.length; i++) {
      const here = this.paths.get(diffIds[i])
      if (here !== undefined) paths[i] = here
      else if (await store.has(diffIds[i])) fromStore.push(i)
      else throw new LayerMissingError(`layer ${diffIds[i]} of image ${expected} was neither received nor staged; it must be before the load`)
    }
    const onAbort = (): void => { this.abandon(signal?.reason as Error) }
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      for (const i of fromStore) for await (const chunk of storedLayerEntry(store, diffIds[i], paths[i])) await this.write(chunk)
      for (const chunk of closingEntries(config, paths)) await this.write(chunk)
      signal?.throwIfAborted()
      if (this.isAbandoned) return undefined
      this.tar.end()
      let loaded: string[]
      try {
        loaded = await this.loaded
      } catch (err) {
        if (signal?.aborted === true) throw signal.reason
        throw loadRefused(err, expected, present)
      } finally {
        this.settled = true
      }
      return await confirmLoaded(this.docker, { expected, diffIds, loaded }, signal)
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** Cuts the load off (a rollback, a refused layer): the engine keeps nothing of it. */
  abort (why: Error): void {
    this.abandon(why)
  }

  private abandon (why: Error): void {
    if (this.abandoned !== undefined || this.settled) return
    this.abandoned = why
    this.cut.abort(why)
    this.tar.destroy()
  }
}
