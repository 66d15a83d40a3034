/**
 * Sending an image's layers to a destination (the pre-copy of a move or snapshot), two ways:
 *
 *   layer files  read straight from the engine's storage (DockerHost.layerFiles), in chain order,
 *                each named by its diff ID: no `docker save`, whose engine first writes the whole
 *                save to disk. Taken whenever every wanted layer and the config can be read so.
 *   save stream  `docker save` streamed, each wanted layer sent as it comes out of the engine.
 *
 * A save stream names layers by path, not diff ID; which path is which layer is learned from the
 * destination's reply (it hashes every layer to verify it) and remembered per image in a
 * SavePathCache, so a layer known to be unwanted is skipped without crossing the network. A layer
 * not yet known is sent unnamed, and the destination keeps it only if the move needs it.
 * The destination verifies every layer either way; this side never hashes them. A named layer
 * continues where the destination's partial copy of it ends (TransferLink.layer, `resume`): an
 * earlier transfer of it that was cut off left that much verified there.
 */
import { randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { DockerHost } from '../docker/docker-host.js'
import type { ImageInfo } from '../docker/types.js'
import type { Logger } from '../log.js'
import { chainIds } from './plan.js'
import { spoolToFile } from './spool.js'
import type { TransferLink } from './link.js'
import type { LayerReply } from '../../protocol/move-messages.js'
import { TransferIncompleteError } from '../../protocol/errors.js'

/**
 * The bytes of `source` after its first `offset` (a resumed layer: the destination holds those).
 * They are read and dropped here: a layer rebuilt from the engine's files or a save stream cannot
 * be entered in the middle, and reading is local, while the link carries only the rest.
 */
export async function * fromOffset (source: AsyncIterable<Uint8Array>, offset: number): AsyncGenerator<Uint8Array> {
  let skip = offset
  for await (const chunk of source) {
    if (skip >= chunk.byteLength) { skip -= chunk.byteLength; continue }
    yield skip === 0 ? chunk : chunk.subarray(skip)
    skip = 0
  }
}

/** How many images' save-stream layer names a cache remembers by default (a few hundred bytes each). */
export const SAVE_PATH_CACHE_IMAGES = 64

/** Per image: save-stream path → diff ID, for the last few images sent (least recently used goes). */
export class SavePathCache {
  private readonly images = new Map<string, Map<string, string>>()

  constructor (private readonly capacity = SAVE_PATH_CACHE_IMAGES) {}

  /** The paths known for `imageId` (a live map: what is learned while sending is added to it). */
  paths (imageId: string): Map<string, string> {
    const known = this.images.get(imageId) ?? new Map<string, string>()
    this.images.delete(imageId)
    this.images.set(imageId, known)
    while (this.images.size > this.capacity) this.images.delete(this.images.keys().next().value as string)
    return known
  }
}

export interface SentLayers {
  /** The image config as the engine gave it (undefined only when nothing needed sending). */
  config?: Uint8Array
  bytes: number
  layers: number
}

export interface LayerSenderDeps {
  docker: DockerHost
  paths: SavePathCache
  log: Logger
}

export class LayerSender {
  constructor (private readonly deps: LayerSenderDeps) {}

  /**
   * Sends the layers of `image` in `want` for transfer `moveId`; `spool` is a directory for layers
   * whose size the save stream does not state. Returns what was sent.
   */
  async send (link: TransferLink, moveId: string, image: ImageInfo, want: ReadonlySet<string>, spool: string, onBytes: (n: number) => void, signal: AbortSignal): Promise<SentLayers> {
    return await this.sendLayerFiles(link, moveId, image, want, onBytes, signal) ??
      await this.sendSaveStream(link, moveId, image, want, spool, onBytes, signal)
  }

  /** Undefined when a layer or the config cannot be read from storage before anything was sent. */
  private async sendLayerFiles (link: TransferLink, moveId: string, image: ImageInfo, want: ReadonlySet<string>, onBytes: (n: number) => void, signal: AbortSignal): Promise<SentLayers | undefined> {
    const files = await this.deps.docker.layerFiles(signal)
    if (files === undefined) return undefined
    const config = await files.config(image.id)
    const chain = chainIds(image.diffIds)
    const layers = await Promise.all(image.diffIds.map(async (d, i) => want.has(d) ? { diffId: d, file: await files.open(chain[i]) } : undefined))
    if (config === undefined || layers.some(l => l !== undefined && l.file === undefined)) {
      this.deps.log.info('layers not readable from the engine\'s storage; using docker save', { image: image.id })
      return undefined
    }
    let bytes = 0
    let sent = 0
    for (const l of layers) {
      if (l?.file === undefined) continue
      const { size } = l.file
      const file = l.file
      const { result, offset } = await link.layer({ op: 'layer', moveId, diffId: l.diffId, size }, off => fromOffset(file.stream(signal), off), signal, onBytes)
      const reply = result as LayerReply
      if (reply.diffId !== l.diffId) throw new TransferIncompleteError(`the destination took layer ${l.diffId} for ${reply.diffId}`)
      if (offset > 0) this.deps.log.info('layer resumed', { moveId, digest: l.diffId, offset, bytes: size - offset })
      bytes += size - offset
      sent++
    }
    return { config, bytes, layers: sent }
  }

  private async sendSaveStream (link: TransferLink, moveId: string, image: ImageInfo, want: ReadonlySet<string>, spool: string, onBytes: (n: number) => void, signal: AbortSignal): Promise<SentLayers> {
    let config: Uint8Array | undefined
    let bytes = 0
    let layers = 0
    const left = new Set(want)
    const known = this.deps.paths.paths(image.id)
    for await (const entry of this.deps.docker.saveImage(image.id, signal)) {
      if (entry.kind === 'config') config = entry.bytes
      if (entry.kind !== 'layer') continue
      const name = known.get(entry.path)
      if (left.size === 0 || (name !== undefined && !left.has(name))) { for await (const _ of entry.stream) { /* not needed: drain */ } continue }
      let size = entry.size
      let source: AsyncIterable<Uint8Array> = entry.stream
      let path: string | undefined
      if (size === undefined) {
        // A layout that does not state sizes (OCI, compressed): spool to learn it.
        path = join(spool, `layer-${randomBytes(4).toString('hex')}.tar`)
        size = (await spoolToFile(entry.stream, path, signal)).size
        source = createReadStream(path)
      }
      const spooled = path
      const from = (off: number): AsyncIterable<Uint8Array> => spooled !== undefined ? createReadStream(spooled, { start: off }) : fromOffset(source, off)
      const { result, offset } = await link.layer({ op: 'layer', moveId, diffId: name ?? null, size }, from, signal, onBytes)
      const reply = result as LayerReply
      if (path !== undefined) await rm(path, { force: true })
      // The destination hashed the layer to verify it and says which it was. Were it to lie, the
      // only effect would be on its own move (a layer wrongly skipped later leaves the image
      // incomplete there, and its load fails).
      if (!image.diffIds.includes(reply.diffId)) throw new TransferIncompleteError(`the destination took layer ${entry.path} for ${reply.diffId}, which is not a layer of ${image.id}`)
      known.set(entry.path, reply.diffId)
      if (offset > 0) this.deps.log.info('layer resumed', { moveId, digest: reply.diffId, offset, bytes: size - offset })
      if (left.delete(reply.diffId)) { bytes += size - offset; layers++ }
    }
    if (left.size > 0) throw new TransferIncompleteError(`the engine's save of ${image.id} lacked layer(s) ${[...left].join(', ')}`)
    return { config, bytes, layers }
  }
}
