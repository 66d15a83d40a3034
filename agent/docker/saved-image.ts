/**
 * Reads a `docker save` stream (`GET /images/{id}/get`) entry by entry while it arrives, never
 * holding a layer in memory, in either layout engines write:
 *
 * - classic (Engine <= 24; Debian's 20.10 writes only this): `<v1 id>/layer.tar`, `<v1 id>/json`,
 *   `<v1 id>/VERSION`, `<config hex>.json`, `manifest.json`, `repositories`. Entries come in
 *   lexical order, so the config sits between the layer directories and the manifest comes last. A
 *   layer whose diff ID appeared earlier in the chain is a symlink `layer.tar -> ../<v1 id>/layer.tar`.
 *   Podman (4.3, 5.x) writes the same files but keeps each layer once at the archive root as
 *   `<diff id hex>.tar`, first, with `<v1 id>/layer.tar` a symlink to it and the manifest naming
 *   the root file; entries are not in lexical order.
 * - OCI (Engine 25+, skopeo's `oci-archive:`): `blobs/sha256/<hex>` for the config, the manifest(s)
 *   and the layers, in digest order, then `index.json` and `oci-layout` (an engine also writes a
 *   classic `manifest.json` naming blobs). Which blob is what is known only at the end, so each blob
 *   is told by its first bytes: gzip magic 1f 8b is a compressed layer (inflated on the way: a diff
 *   ID is the sha256 of the uncompressed tar), JSON with `rootfs` is the config, other JSON is a
 *   manifest or index (kept to resolve index.json), anything else is a tar layer. Media types are
 *   not trusted for compression: skopeo 1.9 labels uncompressed layers `tar+gzip`.
 *
 *   for await (const e of readSavedImage(stream)) {
 *     if (e.kind === 'layer') await consume(e.stream)   // or skip it: it is drained for you
 *   }
 *
 * Errors: a stream that is not such an archive (bad tar, truncated, no manifest, a blob that does
 * not match its digest, a manifest naming an absent layer) is a SavedImageFormatError; an error of
 * the source stream itself is passed on unchanged.
 */
import { createHash, type Hash } from 'node:crypto'
import { posix } from 'node:path'
import { Readable, pipeline } from 'node:stream'
import { createGunzip } from 'node:zlib'
import tarStream from 'tar-stream'
import { GotoError, SavedImageFormatError } from '../../protocol/errors.js'
import type { SavedEntry } from './types.js'

/**
 * Largest JSON entry (config, manifest, index) we hold in memory. Real configs are a few KiB to a
 * few hundred KiB (long build histories); the bound keeps a hostile archive from filling memory.
 */
export const MAX_JSON_BYTES = 16 * 2 ** 20
/** One tar header block: enough to see gzip magic (offset 0), tar magic (offset 257) or a '{'. */
const PEEK_BYTES = 512
/** How many symlinks/hard links in a row we follow to find a layer's data. */
const MAX_LINK_DEPTH = 8

type Chunk = Buffer
type EntryIterator = AsyncIterator<Chunk>

interface ManifestDescriptor { digest?: unknown, mediaType?: unknown }
interface JsonBlob { path: string, value: unknown }

export interface ReadSavedOptions {
  /**
   * Accept a manifest naming layers the archive does not hold (a thin load tarball, transfer/load.ts:
   * the engine takes those from its own chain). The manifest then names their paths as written;
   * the caller tells them from the layers it was given. Default false: a SavedImageFormatError.
   */
  absentLayers?: boolean
}

/** Parses a save stream; see the module comment. */
export async function * readSavedImage (source: AsyncIterable<Uint8Array> | Readable, opts: ReadSavedOptions = {}): AsyncGenerator<SavedEntry> {
  const extract = tarStream.extract()
  const feeder = new Feeder(source, extract)
  const fail = (err: unknown): unknown => feeder.error ?? (err instanceof GotoError ? err : new SavedImageFormatError(`not a readable image archive: ${(err as Error).message}`, { cause: err }))
  const next = async (it: EntryIterator): Promise<IteratorResult<Chunk>> => {
    try {
      return await it.next()
    } catch (err) {
      throw fail(err)
    }
  }

  let config: { path: string, digest: string } | undefined
  const layerPaths = new Set<string>()
  const links = new Map<string, string>()
  const jsonBlobs = new Map<string, unknown>()
  let dockerManifest: JsonBlob | undefined
  let ociIndex: JsonBlob | undefined

  const entries = extract[Symbol.asyncIterator]()
  try {
    for (;;) {
      const item = await entries.next().catch(err => { throw fail(err) })
      if (item.done === true) break
      const entry = item.value
      const it = entry[Symbol.asyncIterator]() as EntryIterator
      const path = normalize(entry.header.name)
      const type = entry.header.type ?? 'file'
      const role = roleOf(path)

      if (type === 'symlink' || type === 'link') {
        const target = entry.header.linkname ?? ''
        links.set(path, type === 'symlink' ? posix.join(posix.dirname(path), target) : normalize(target))
        await drain(it, next)
        continue
      }
      if (type !== 'file' && type !== 'contiguous-file') {
        await drain(it, next)
        continue
      }

      if (role.kind === 'skip') {
        await drain(it, next)
      } else if (role.kind === 'docker-manifest' || role.kind === 'oci-index') {
        const value = parseJson(path, await readAll(it, next, path))
        if (role.kind === 'docker-manifest') dockerManifest = { path, value }
        else ociIndex = { path, value }
      } else if (role.kind === 'classic-config') {
        const bytes = await readAll(it, next, path)
        const digest = sha256(bytes)
        if (digest !== `sha256:${role.hex}`) throw new SavedImageFormatError(`config ${path} has sha256 ${digest}, not the digest its name says`)
        config = oneConfig(config, path, digest)
        yield { kind: 'config', digest, bytes }
      } else {
        // A classic layer.tar or an OCI blob: look at its first bytes.
        const peek = await peekChunks(it, next, PEEK_BYTES)
        const head = Buffer.concat(peek.chunks)
        const format = sniff(head)
        if (format === 'zstd' || format === 'xz' || format === 'bzip2') {
          throw new SavedImageFormatError(`${path} is ${format}-compressed; only uncompressed and gzip layers are supported`)
        }
        const hasher = role.kind === 'blob' ? blobHasher(role.algorithm, path) : undefined
        if (format === 'json' && role.kind === 'blob') {
          const bytes = Buffer.concat([head, await readAll(it, next, path, head.length)])
          hasher?.update(bytes)
          hasher?.check(role.hex)
          const value = parseJson(path, bytes)
          if (isImageConfig(value)) {
            const digest = sha256(bytes)
            config = oneConfig(config, path, digest)
            yield { kind: 'config', digest, bytes }
          } else {
            jsonBlobs.set(path, value)
          }
          continue
        }
        const compressed = format === 'gzip'
        const layer = new LayerReader(path, it, peek.chunks, compressed, next, hasher === undefined ? undefined : { hasher, hex: role.kind === 'blob' ? role.hex : '' })
        yield { kind: 'layer', path, size: compressed ? undefined : entry.header.size, compressed, stream: layer.stream() }
        await layer.finish()
        layerPaths.add(path)
      }
    }
    await feeder.done
    if (feeder.error !== undefined) throw feeder.error

    if (config === undefined) throw new SavedImageFormatError('the archive holds no image config')
    const manifest = dockerManifest !== undefined
      ? fromDockerManifest(dockerManifest, config.path)
      : ociIndex !== undefined
        ? fromOciIndex(ociIndex, jsonBlobs, config.path)
        : undefined
    if (manifest === undefined) throw new SavedImageFormatError('the archive has neither manifest.json nor index.json')
    const layers = manifest.layers.map(p => {
      const real = resolveLink(p, links)
      if (!layerPaths.has(real) && opts.absentLayers !== true) throw new SavedImageFormatError(`the manifest names layer ${p}, which the archive does not hold`)
      return real
    })
    yield { kind: 'manifest', config: config.path, layers }
  } finally {
    feeder.stop()
    extract.destroy()
  }
}

// --- entries ----------------------------------------------------------------------------------

type Role =
  | { kind: 'skip' }
  | { kind: 'docker-manifest' }
  | { kind: 'oci-index' }
  | { kind: 'classic-config', hex: string }
  | { kind: 'classic-layer' }
  | { kind: 'blob', algorithm: string, hex: string }

function roleOf (path: string): Role {
  if (path === 'manifest.json') return { kind: 'docker-manifest' }
  if (path === 'index.json') return { kind: 'oci-index' }
  let m = /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(path)
  if (m !== null) return { kind: 'blob', algorithm: m[1] ?? '', hex: m[2] ?? '' }
  m = /^([a-f0-9]{64})\.json$/.exec(path)
  if (m !== null) return { kind: 'classic-config', hex: m[1] ?? '' }
  if (/^[^/]+\/layer\.tar$/.test(path)) return { kind: 'classic-layer' }
  // Podman's classic layout: each layer once, at the root, named by its diff ID.
  if (/^[a-f0-9]{64}\.tar$/.test(path)) return { kind: 'classic-layer' }
  // <v1 id>/json, <v1 id>/VERSION, repositories, oci-layout, and whatever a newer engine adds.
  return { kind: 'skip' }
}

function normalize (name: string): string {
  const n = posix.normalize(name).replace(/^(\.\/)+/, '').replace(/\/+$/, '')
  return n === '.' ? '' : n
}

function resolveLink (path: string, links: Map<string, string>): string {
  let p = path
  for (let i = 0; i < MAX_LINK_DEPTH; i++) {
    const target = links.get(p)
    if (target === undefined) return p
    p = target
  }
  throw new SavedImageFormatError(`${path}: too many links`)
}

type Format = 'gzip' | 'zstd' | 'xz' | 'bzip2' | 'json' | 'tar'

function sniff (head: Buffer): Format {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip'
  if (head.length >= 4 && head.readUInt32BE(0) === 0x28b52ffd) return 'zstd'
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz'
  if (head.length >= 3 && head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2'
  const ustar = head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar'
  if (!ustar && /^\s*\{/.test(head.subarray(0, 64).toString('latin1'))) return 'json'
  // A tar (an empty layer is 1024 zero bytes and has no magic at all).
  return 'tar'
}

function isImageConfig (value: unknown): boolean {
  const rootfs = (value as { rootfs?: { diff_ids?: unknown } } | null)?.rootfs
  return typeof rootfs === 'object' && rootfs !== null && Array.isArray(rootfs.diff_ids)
}

function oneConfig (seen: { path: string, digest: string } | undefined, path: string, digest: string): { path: string, digest: string } {
  if (seen !== undefined && seen.digest !== digest) {
    throw new SavedImageFormatError(`the archive holds more than one image config (${seen.path}, ${path}); save one image at a time`)
  }
  return { path, digest }
}

function sha256 (bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

function parseJson (path: string, bytes: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'))
  } catch (err) {
    throw new SavedImageFormatError(`${path} is not valid JSON: ${(err as Error).message}`, { cause: err })
  }
}

// --- manifests --------------------------------------------------------------------------------

/** `manifest.json`: [{ Config, RepoTags, Layers }]; we take the entry of the config we saw. */
function fromDockerManifest (m: JsonBlob, configPath: string): { layers: string[] } {
  if (!Array.isArray(m.value)) throw new SavedImageFormatError(`${m.path} is not a list of images`)
  const mine = m.value.filter(e => typeof (e as { Config?: unknown })?.Config === 'string' && normalize((e as { Config: string }).Config) === configPath)
  if (mine.length === 0) throw new SavedImageFormatError(`${m.path} has no entry for the config ${configPath}`)
  const layers = (mine[0] as { Layers?: unknown }).Layers
  if (!Array.isArray(layers) || !layers.every(l => typeof l === 'string')) throw new SavedImageFormatError(`${m.path}: Layers is not a list of paths`)
  return { layers: layers.map(l => normalize(l as string)) }
}

/**
 * `index.json` -> (nested indexes) -> image manifests. Every image manifest reachable through blobs
 * the archive holds is a candidate; the one whose config is the config we saw is ours (an index may
 * also name attestation manifests or platforms that were not saved).
 */
function fromOciIndex (index: JsonBlob, blobs: Map<string, unknown>, configPath: string): { layers: string[] } {
  const found: Array<{ path: string, value: { config?: ManifestDescriptor, layers?: unknown } }> = []
  const visit = (value: unknown, where: string, depth: number): void => {
    if (depth > 4) throw new SavedImageFormatError(`${where}: indexes nested too deep`)
    const v = value as { manifests?: unknown, layers?: unknown, config?: unknown } | null
    if (Array.isArray(v?.manifests)) {
      for (const d of v.manifests as ManifestDescriptor[]) {
        const p = blobPath(d?.digest, where)
        const child = blobs.get(p)
        if (child !== undefined) visit(child, p, depth + 1)
      }
    } else if (Array.isArray(v?.layers) && typeof v?.config === 'object') {
      found.push({ path: where, value: v as { config?: ManifestDescriptor, layers?: unknown } })
    }
  }
  visit(index.value, index.path, 0)
  const mine = found.filter(f => blobPath(f.value.config?.digest, f.path) === configPath)
  if (mine.length === 0) {
    throw new SavedImageFormatError(found.length === 0
      ? `${index.path} leads to no image manifest the archive holds`
      : `no image manifest in the archive names the config ${configPath}`)
  }
  const manifest = mine[0] as (typeof found)[number]
  return { layers: (manifest.value.layers as ManifestDescriptor[]).map(l => blobPath(l?.digest, manifest.path)) }
}

function blobPath (digest: unknown, where: string): string {
  const m = typeof digest === 'string' ? /^([a-z0-9]+):([a-f0-9]+)$/.exec(digest) : null
  if (m === null) throw new SavedImageFormatError(`${where}: '${String(digest)}' is not a digest`)
  return `blobs/${m[1] ?? ''}/${m[2] ?? ''}`
}

// --- reading entries --------------------------------------------------------------------------

type Next = (it: EntryIterator) => Promise<IteratorResult<Chunk>>

async function drain (it: EntryIterator, next: Next): Promise<void> {
  for (;;) if ((await next(it)).done === true) return
}

async function readAll (it: EntryIterator, next: Next, path: string, already = 0): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = already
  for (;;) {
    const r = await next(it)
    if (r.done === true) return Buffer.concat(chunks)
    size += r.value.length
    if (size > MAX_JSON_BYTES) throw new SavedImageFormatError(`${path} is larger than ${MAX_JSON_BYTES} bytes`)
    chunks.push(r.value)
  }
}

async function peekChunks (it: EntryIterator, next: Next, want: number): Promise<{ chunks: Buffer[] }> {
  const chunks: Buffer[] = []
  let size = 0
  while (size < want) {
    const r = await next(it)
    if (r.done === true) break
    chunks.push(r.value)
    size += r.value.length
  }
  return { chunks }
}

interface BlobHasher { update: (b: Uint8Array) => void, check: (hex: string) => void }

/** Checks an OCI blob's bytes against the digest in its name (sha256 and sha512; others unchecked). */
function blobHasher (algorithm: string, path: string): BlobHasher | undefined {
  if (algorithm !== 'sha256' && algorithm !== 'sha512') return undefined
  const hash: Hash = createHash(algorithm)
  return {
    update: b => { hash.update(b) },
    check: hex => {
      const got = hash.digest('hex')
      if (got !== hex) throw new SavedImageFormatError(`blob ${path} has ${algorithm} ${got}, not the digest its name says`)
    }
  }
}

/**
 * One layer entry handed to the consumer as a stream of uncompressed tar bytes. The consumer reads
 * it (once) or leaves it; `finish()`, called before the next entry is read, ends whatever is left.
 */
class LayerReader {
  private gen: AsyncGenerator<Chunk> | undefined

  constructor (
    private readonly path: string,
    private readonly it: EntryIterator,
    private peeked: Buffer[],
    private readonly compressed: boolean,
    private readonly next: Next,
    private readonly verify: { hasher: BlobHasher, hex: string } | undefined
  ) {}

  stream (): AsyncIterable<Uint8Array> {
    return {
      [Symbol.asyncIterator]: () => {
        if (this.gen !== undefined) throw new TypeError(`layer ${this.path} can be read only once`)
        this.gen = this.raw()
        return (this.compressed ? inflate(this.gen, this.path) : this.gen)[Symbol.asyncIterator]()
      }
    }
  }

  async finish (): Promise<void> {
    // If the consumer stopped midway, end its generator (waits for a read in flight), then drop
    // what is left of the entry so the archive can go on.
    if (this.gen !== undefined) await this.gen.return(undefined).catch(() => {})
    await drain(this.it, this.next)
  }

  private async * raw (): AsyncGenerator<Chunk> {
    const peeked = this.peeked
    this.peeked = []
    for (const chunk of peeked) {
      this.verify?.hasher.update(chunk)
      yield chunk
    }
    for (;;) {
      const r = await this.next(this.it)
      if (r.done === true) break
      this.verify?.hasher.update(r.value)
      yield r.value
    }
    this.verify?.hasher.check(this.verify.hex)
  }
}

/** Gunzips a byte stream; a bad gzip stream is a SavedImageFormatError, a source error passes. */
async function * inflate (source: AsyncGenerator<Chunk>, path: string): AsyncGenerator<Chunk> {
  const input = Readable.from(source, { objectMode: false })
  const gunzip = createGunzip()
  pipeline(input, gunzip, () => { /* errors surface through the iteration below */ })
  try {
    for await (const chunk of gunzip) yield chunk as Chunk
  } catch (err) {
    if (err instanceof GotoError) throw err
    throw new SavedImageFormatError(`layer ${path} is not valid gzip: ${(err as Error).message}`, { cause: err })
  } finally {
    input.destroy()
    gunzip.destroy()
  }
}

// --- feeding the parser -----------------------------------------------------------------------

/**
 * Writes the source into the tar parser with backpressure. An error of the source is kept in
 * `error` (and ends the parser) so it reaches the caller as itself, not as a format error.
 */
class Feeder {
  error: unknown
  readonly done: Promise<void>
  private stopped = false
  private readonly iterator: AsyncIterator<Uint8Array>

  constructor (private readonly source: AsyncIterable<Uint8Array> | Readable, private readonly extract: tarStream.Extract) {
    this.iterator = (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
    this.done = this.pump()
  }

  stop (): void {
    if (this.stopped) return
    this.stopped = true
    if (this.source instanceof Readable) {
      this.source.destroy()
    } else {
      void Promise.resolve(this.iterator.return?.()).catch(() => {})
    }
  }

  private async pump (): Promise<void> {
    try {
      for (;;) {
        const r = await this.iterator.next()
        if (r.done === true || this.stopped || this.extract.destroyed) break
        if (!this.extract.write(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength))) await this.drained()
      }
      if (!this.stopped && !this.extract.destroyed) this.extract.end(null)
    } catch (err) {
      if (this.stopped) return
      this.error = err
      this.extract.destroy(err as Error)
    }
  }

  private async drained (): Promise<void> {
    if (this.extract.destroyed) return
    await new Promise<void>(resolve => {
      const done = (): void => {
        this.extract.off('drain', done)
        this.extract.off('close', done)
        resolve()
      }
      this.extract.on('drain', done)
      this.extract.on('close', done)
    })
  }
}
