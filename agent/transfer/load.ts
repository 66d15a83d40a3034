/**
 * Loading a received image into the destination's engine. The layers are in the staging store
 * (verified as they arrived); the engine may already hold the first `present` of them as a chain.
 * `buildLoadTarball` streams a classic `docker save` layout from the store — the config, one
 * `<chain id>/layer.tar` per layer after `present`, and a manifest listing every layer (the engine
 * takes the ones it has from its own chain, so their files are omitted) with `"RepoTags": null`, so
 * a load never moves a local tag. `loadVerified` checks the config against the layers, streams that
 * tarball into the engine and confirms the engine now holds exactly `sha256:<config digest>`.
 *
 *   const { present, missing } = layersToSend(diffIds, await docker.imageChains())   // plan.ts
 *   for (const d of missing) await store.receive(d, size, bytes, signal)             // layer-store.ts
 *   const imageId = await loadVerified(docker, { config, diffIds, present, store, imageId }, signal)
 *
 * What Docker 20.10 needs of such a tarball (tried on its engine): `manifest.json` (without it the
 * engine takes the legacy v1 path and fails on a missing `repositories`), the config file the
 * manifest names (any file name: the ID is the sha256 of its bytes), and for each layer the engine
 * lacks a file at the manifest's path for it, plain or gzip. Paths are free (flat names, any
 * directories, one file named at two positions), directory entries and entry order do not matter
 * (the engine unpacks the whole tarball into `<data-root>/tmp` first), and the paths of layers it
 * already holds as a chain may name nothing. It refuses a manifest whose layer count differs from
 * the config's diff IDs, a layer whose bytes do not hash to its diff ID, a missing file for a layer
 * whose chain it does not hold, and a path outside the tarball; a refused load keeps no image and
 * no layer. `RepoTags` naming a local tag would move that tag to the loaded image, hence `null`.
 *
 * The containerd image store (Docker 25+ with `containerd-snapshotter`, the default of Docker 29;
 * agent/docker/engine-kind.ts) takes the same layout but no thin tarball: its load needs the file
 * of every layer, whatever it holds (`failed to resolve layers: layer ".../layer.tar" not found`).
 * And it names the loaded image by the digest of its manifest, not by the config digest (an
 * inspect by the config digest finds nothing). So into that store the load is an OCI layout
 * (`buildOciLoadTarball`): `oci-layout`, `index.json` naming one manifest without a ref name (no
 * tag moves), the config and manifest blobs, and each layer as an uncompressed blob
 * `blobs/sha256/<diff id>`. The engine stores those blobs as they are, so a later load of ours may
 * reference them without sending them (tried on dockerd 28.5.2 + containerd 2.1.9: a manifest
 * whose blobs are in the content store loads without them; the chain's snapshots are reused). Only
 * this agent's own earlier loads are known to be stored that way, so `loadBase` gives as chains
 * on that store just the ones the caller loaded itself (a move's preload, for its restore); layers
 * the engine holds from elsewhere are sent again.
 *
 * Podman (containers/storage) takes the classic layout and names the image by its config digest,
 * but its load needs the file of every layer (`docker-archive: Some layer tarfiles are missing in
 * the tarball`) and, unlike the containerd store, never reuses what it holds: `loadBase` gives no
 * chain there, so every layer is sent and every load is whole. The loaded image's ID must be the manifest's
 * digest, and the engine must report exactly `diffIds` as its rootfs. A load whose result does not
 * check out is removed again: nothing unexpected is left behind.
 */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import type { ImageInfo } from '../docker/types.js'
import type { ImageStore } from '../docker/engine-kind.js'
import {
  GotoError, ImageIdMismatchError, ImageLoadError, LayerMissingError, TransferError
} from '../../protocol/errors.js'
import type { LayerStore } from './layer-store.js'
import { chainIds } from './plan.js'
import { TAR_END, tarHeader, tarPadding } from './tar.js'

/** What loadVerified needs of an engine (agent/docker's DockerHost provides it). */
export interface ImageLoader {
  /** `docker load` of a tarball; resolves with the loaded image IDs once the engine finished, rejects if it failed. */
  loadImage: (tar: Readable, signal?: AbortSignal) => Promise<string[]>
  /** The image as the engine holds it; undefined or a rejection when it has no such image. */
  inspectImage: (ref: string, signal?: AbortSignal) => Promise<ImageInfo | undefined>
  /** Removes an image that a load made but that did not check out. */
  removeImage: (id: string, opts: { force?: boolean }, signal?: AbortSignal) => Promise<void>
}

/** What a load into an engine may build on: its image store, and the chains whose layer files the tarball may leave out. */
export interface LoadBase {
  imageStore: ImageStore
  /** Diff-ID chains (base first) the engine holds and reuses in a load: none on the containerd store. */
  chains: string[][]
}

/**
 * The engine's LoadBase: its store from `/info`, and the chains a load may build on — the engine's
 * image chains on a graph driver; on the containerd store only `ownLoads`, chains this agent loaded
 * there itself as an OCI layout (their layers stored as uncompressed blobs named by diff ID).
 */
export async function loadBase (
  docker: { info: (signal?: AbortSignal) => Promise<{ imageStore: ImageStore }>, imageChains: (signal?: AbortSignal) => Promise<string[][]> },
  signal?: AbortSignal,
  ownLoads: ReadonlyArray<readonly string[]> = []
): Promise<LoadBase> {
  const { imageStore } = await docker.info(signal)
  switch (imageStore) {
    case 'graphdriver': return { imageStore, chains: await docker.imageChains(signal) }
    case 'containerd': return { imageStore, chains: ownLoads.map(c => [...c]) }
    case 'containers-storage': return { imageStore, chains: [] }
  }
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
const OCI_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar'

/** The OCI manifest of the image with uncompressed layer blobs named by their diff IDs. */
export function ociManifest (config: Uint8Array, diffIds: readonly string[], sizes: readonly number[]): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configDigest(config), size: config.byteLength },
    layers: diffIds.map((d, i) => ({ mediaType: OCI_LAYER_TAR, digest: d, size: sizes[i] }))
  }))
}

/**
 * An OCI-layout tarball of the image for the containerd image store: the blobs of the layers from
 * `present` on (streamed from the store), the config, the manifest (`ociManifest`, referencing
 * every layer; the engine holds the first `present` as blobs from an earlier load of ours) and an
 * index naming it without a ref name. `sizes` are the layers' sizes, base first.
 */
export function buildOciLoadTarball (input: Omit<LoadInput, 'imageId' | 'imageStore'>, sizes: readonly number[]): Readable {
  checkPresent(input.present, input.diffIds.length)
  return Readable.from(nonEmpty(ociTarball(input, sizes)), { objectMode: false })
}

function blobPath (digest: string): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`
}

async function * ociTarball ({ config, diffIds, present, store }: Omit<LoadInput, 'imageId' | 'imageStore'>, sizes: readonly number[]): AsyncGenerator<Uint8Array> {
  const sent = new Set<string>()
  for (let i = present; i < diffIds.length; i++) {
    if (sent.has(diffIds[i])) continue // one blob serves every position of a repeated layer
    sent.add(diffIds[i])
    yield * storedLayerEntry(store, diffIds[i], blobPath(diffIds[i]))
  }
  const manifest = ociManifest(config, diffIds, sizes)
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: OCI_MANIFEST, digest: digestOf(manifest), size: manifest.byteLength }]
  }))
  for (const [name, bytes] of [[blobPath(configDigest(config)), config], [blobPath(digestOf(manifest)), manifest],
    ['oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}')], ['index.json', index]] as const) {
    yield tarHeader({ name, size: bytes.byteLength })
    yield bytes
    yield tarPadding(bytes.byteLength)
  }
  yield TAR_END
}

function digestOf (bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

/**
 * The ID the engine will give the image once loaded: the config digest on a graph driver, the
 * digest of the OCI manifest we write for it on the containerd store (every layer must then be in
 * the store, for its size). What a journal records, so that a recovery finds what a load made.
 */
export async function loadedImageId (input: Pick<LoadInput, 'config' | 'diffIds' | 'store' | 'imageStore'>): Promise<string> {
  const expected = configDigest(input.config)
  if (input.imageStore !== 'containerd') return expected
  return digestOf(ociManifest(input.config, input.diffIds, await storedSizes(input.store, input.diffIds, expected)))
}

/** Every layer's size from the store (the containerd path keeps every layer of a transfer there). */
async function storedSizes (store: Pick<LayerStore, 'size'>, diffIds: readonly string[], expected: string): Promise<number[]> {
  const sizes: number[] = []
  for (const d of diffIds) {
    const size = await store.size(d)
    if (size === undefined) throw new LayerMissingError(`layer ${d} of image ${expected} is not in the store; a load into the containerd store names every layer's size`)
    sizes.push(size)
  }
  return sizes
}

export interface LoadInput {
  /** The image config JSON exactly as the source's engine stores it (its sha256 is the image ID). */
  config: Uint8Array
  /** The image's layers (diff IDs), base first; must equal the config's rootfs.diff_ids. */
  diffIds: readonly string[]
  /** How many layers, from the base, the engine already holds as a chain (layersToSend's `present`). */
  present: number
  /** Holds every layer after `present` (for the containerd store: every layer, for their sizes). */
  store: Pick<LayerStore, 'open' | 'has' | 'size'>
  /** The image ID the source announced; when given, the config must hash to it. */
  imageId?: string
  /** The engine's image store (default 'graphdriver'): 'containerd' loads an OCI layout (buildOciLoadTarball). */
  imageStore?: ImageStore
}

/** `sha256:<hex>` of the config bytes: the ID an engine gives the image. */
export function configDigest (config: Uint8Array): string {
  return `sha256:${createHash('sha256').update(config).digest('hex')}`
}

/**
 * A classic `docker save` tarball of the image, built as it is read: nothing but the config and the
 * manifest is held in memory, the layers stream from the store with the reader's backpressure.
 * Destroying the stream closes the layer being read. Errors (a layer gone from the store, or changed
 * size while read) come out as the stream's error.
 */
export function buildLoadTarball (input: Omit<LoadInput, 'imageId' | 'imageStore'>): Readable {
  checkPresent(input.present, input.diffIds.length)
  return Readable.from(nonEmpty(tarball(input)), { objectMode: false })
}

async function * tarball ({ config, diffIds, present, store }: Omit<LoadInput, 'imageId' | 'imageStore'>): AsyncGenerator<Uint8Array> {
  const paths = layerPaths(diffIds)
  for (let i = present; i < diffIds.length; i++) yield * storedLayerEntry(store, diffIds[i], paths[i])
  yield * closingEntries(config, paths)
}

/**
 * Where the manifest puts each layer: one directory per position in the chain, named by its chain
 * ID — unique even when a diff ID occurs twice in the image (an empty layer, say), and the same
 * every time.
 */
export function layerPaths (diffIds: readonly string[]): string[] {
  return chainIds(diffIds).map(c => `${c.slice('sha256:'.length)}/layer.tar`)
}

/** One tar entry at `path` holding a layer streamed from the store. */
export async function * storedLayerEntry (store: Pick<LayerStore, 'open'>, diffId: string, path: string): AsyncGenerator<Uint8Array> {
  const { size, stream } = await store.open(diffId)
  try {
    yield tarHeader({ name: path, size })
    let sent = 0
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      sent += chunk.byteLength
      if (sent > size) break
      yield chunk
    }
    if (sent !== size) throw new TransferError(`layer ${diffId} changed in the store while it was read (${sent} bytes, expected ${size})`)
    yield tarPadding(size)
  } finally {
    stream.destroy()
  }
}

/**
 * What completes a load tarball once every layer file is in it: the config, the manifest naming
 * `layerPaths` (one per diff ID, base first; paths of layers the engine holds may name nothing)
 * with `"RepoTags": null`, and the end-of-archive marker.
 */
export function * closingEntries (config: Uint8Array, layerPaths: readonly string[]): Generator<Uint8Array> {
  const configName = `${configDigest(config).slice('sha256:'.length)}.json`
  yield tarHeader({ name: configName, size: config.byteLength })
  yield config
  yield tarPadding(config.byteLength)
  const manifest = Buffer.from(JSON.stringify([{ Config: configName, RepoTags: null, Layers: layerPaths }]))
  yield tarHeader({ name: 'manifest.json', size: manifest.byteLength })
  yield manifest
  yield tarPadding(manifest.byteLength)
  yield TAR_END
}

/** Skips empty chunks (padding of a file that fills its last block), which a byte stream has no use for. */
async function * nonEmpty (source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) if (chunk.byteLength > 0) yield chunk
}

function checkPresent (present: number, layers: number): void {
  if (!Number.isSafeInteger(present) || present < 0 || present > layers) {
    throw new TransferError(`present must be a layer count from 0 to ${layers}, not ${present}`)
  }
}

/** The config's rootfs.diff_ids; ImageIdMismatchError when the config is not an image config. */
function configDiffIds (config: Uint8Array): string[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(Buffer.from(config.buffer, config.byteOffset, config.byteLength).toString('utf8'))
  } catch (err) {
    throw new ImageIdMismatchError(`the image config is not JSON: ${(err as Error).message}`, { cause: err })
  }
  const rootfs = (parsed as { rootfs?: { type?: unknown, diff_ids?: unknown } } | null)?.rootfs
  const ids = rootfs?.diff_ids
  if (rootfs?.type !== 'layers' || !Array.isArray(ids) || !ids.every(d => typeof d === 'string')) {
    throw new ImageIdMismatchError('the image config has no rootfs of type "layers" with diff_ids')
  }
  return ids as string[]
}

function sameList (a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

/**
 * Loads the image into the engine and proves it arrived whole: checks the config (against
 * `imageId` when given, and its diff IDs against `diffIds`) and that the store holds every layer
 * after `present` before the engine sees anything, streams the tarball into `docker.loadImage`,
 * then requires the engine to hold `sha256:<config digest>` with exactly `diffIds` (on the
 * containerd store: the one image it loaded, with exactly `diffIds`). Returns that image ID.
 *
 * Errors: ImageIdMismatchError (config does not match, or the engine holds something else after
 * the load), LayerMissingError (a layer to send is not in the store), ImageLoadError (the engine
 * refused the load, e.g. it lacks a layer assumed present; it then keeps no image), the signal's
 * reason on abort.
 */
export async function loadVerified (docker: ImageLoader, input: LoadInput, signal?: AbortSignal): Promise<string> {
  const { config, diffIds, present, store } = input
  const expected = checkLoadInput(input)
  for (const d of diffIds.slice(present)) {
    if (!await store.has(d)) throw new LayerMissingError(`layer ${d} of image ${expected} is not in the store; it must be received before the load`)
  }
  signal?.throwIfAborted()
  // The containerd store names the image by the manifest we write for it.
  const sizes = input.imageStore === 'containerd' ? await storedSizes(store, diffIds, expected) : undefined
  const manifestId = sizes === undefined ? undefined : digestOf(ociManifest(config, diffIds, sizes))

  const tar = sizes === undefined ? buildLoadTarball({ config, diffIds, present, store }) : buildOciLoadTarball({ config, diffIds, present, store }, sizes)
  // A failure of our own tarball (a layer gone from the store) is the real cause of whatever
  // error the engine request then ends with.
  let tarError: unknown
  tar.once('error', err => { tarError = err })
  let loaded: string[]
  try {
    loaded = await docker.loadImage(tar, signal)
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason
    if (tarError instanceof GotoError) throw tarError
    throw loadRefused(err, expected, present)
  } finally {
    tar.destroy()
  }
  if (tarError !== undefined) throw tarError
  return await confirmLoaded(docker, { expected: manifestId ?? expected, diffIds, loaded }, signal)
}

/** ImageLoadError for an engine that refused a load of `expected` whose first `present` layers it was assumed to hold. */
export function loadRefused (err: unknown, expected: string, present: number): ImageLoadError {
  const what = present > 0 ? ` (does it hold the first ${present} layers as a chain?)` : ''
  return new ImageLoadError(`the engine refused to load image ${expected}${what}: ${(err as Error).message}`, { cause: err })
}

/**
 * Checks a load's input before the engine sees anything: the config hashes to `imageId` when
 * given, lists exactly `diffIds`, and `present` is a layer count. Returns the image ID
 * (`sha256:<config digest>`). ImageIdMismatchError or TransferError otherwise.
 */
export function checkLoadInput ({ config, diffIds, present, imageId }: Omit<LoadInput, 'store'>): string {
  const expected = configDigest(config)
  if (imageId !== undefined && imageId !== expected) {
    throw new ImageIdMismatchError(`the image config hashes to ${expected}, not to the announced ${imageId}`)
  }
  const fromConfig = configDiffIds(config)
  if (!sameList(fromConfig, diffIds)) {
    throw new ImageIdMismatchError(`the image config ${expected} lists ${fromConfig.length} layers (${fromConfig.join(', ')}), not the ${diffIds.length} given (${diffIds.join(', ')})`)
  }
  checkPresent(present, diffIds.length)
  return expected
}

/** What a load reported, to confirm against what was meant. */
export interface LoadResult {
  /** The ID the engine gives the image: the config digest (graph driver) or the manifest digest (containerd store). */
  expected: string
  diffIds: readonly string[]
  /** The image IDs the engine said it loaded. */
  loaded: readonly string[]
}

/**
 * After the engine answered a load: it loaded nothing but `expected`, and now holds that image with
 * exactly `diffIds`. Returns `expected`; ImageIdMismatchError otherwise, after removing what the
 * load made (an image in use elsewhere stays: removal without force).
 */
export async function confirmLoaded (docker: ImageLoader, r: LoadResult, signal?: AbortSignal): Promise<string> {
  try {
    return await checkLoaded(docker, r, signal)
  } catch (err) {
    if (signal?.aborted !== true) {
      for (const id of new Set(r.loaded)) await docker.removeImage(id, { force: false }, signal).catch(() => { /* in use, or gone: keep */ })
    }
    throw err
  }
}

async function checkLoaded (docker: ImageLoader, { expected, diffIds, loaded }: LoadResult, signal?: AbortSignal): Promise<string> {
  const other = loaded.filter(id => id !== expected)
  if (other.length > 0) throw new ImageIdMismatchError(`loading image ${expected} made the engine load ${other.join(', ')}`)
  const id = expected
  let info: ImageInfo | undefined
  try {
    info = await docker.inspectImage(id, signal)
  } catch (err) {
    if (signal?.aborted === true) throw signal.reason
    throw new ImageIdMismatchError(`after the load the engine has no image ${id}: ${(err as Error).message}`, { cause: err })
  }
  if (info === undefined) throw new ImageIdMismatchError(`after the load the engine has no image ${id}`)
  if (info.id !== id) throw new ImageIdMismatchError(`after the load the engine's image is ${info.id}, not ${id}`)
  if (!sameList(info.diffIds, diffIds)) {
    throw new ImageIdMismatchError(`after the load image ${id} has layers ${info.diffIds.join(', ')}, not ${diffIds.join(', ')}`)
  }
  return id
}
