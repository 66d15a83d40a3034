/**
 * A layer read straight from the storage of an overlay2 engine on this host, as the exact tar the
 * engine itself would write for it in `docker save`. Why: before the first byte of a save, the
 * engine writes the whole save to a temporary directory (~2.7 s for 512 MiB here, and as much
 * disk again); reading the layer where it lies starts at once and writes nothing.
 *
 * The engine keeps, per layer, a tar-split record (`image/overlay2/layerdb/sha256/<chain ID>/
 * tar-split.json.gz`): the tar's headers and padding as raw segments, and for each file its name
 * and size. The file contents are in the layer's diff directory (`overlay2/<cache-id>/diff`).
 * Replaying the record with those contents gives back the original tar byte for byte (the record is
 * tar-split's, which the engine vendors to give layers back; docker.test checks the replay against
 * what `docker save` gives, layer by layer).
 *
 * The receiver still hashes every layer against its diff ID, so a layer read wrong is refused like
 * any corrupted one; `open` answers undefined (use `docker save`) where this does not apply: another
 * storage driver, an engine on another host, a layer whose files cannot be read.
 *
 *   const files = await docker.layerFiles()            // undefined: not an overlay2 engine on this host
 *   const layer = await files?.open(chainId)           // undefined: fall back to docker save
 *   if (layer !== undefined) send(layer.size, layer.stream(signal))
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, readFile } from 'node:fs/promises'
import { join, normalize, sep } from 'node:path'
import { StringDecoder } from 'node:string_decoder'
import { createGunzip } from 'node:zlib'
import { LayerFilesError } from '../../protocol/errors.js'

/** One entry of a tar-split record: a raw segment of the tar, or a file whose contents follow. */
type TarSplitEntry =
  | { kind: 'segment', bytes: Buffer }
  /** `name` as bytes when the tar named the file in bytes that are not UTF-8 (tar-split's name_raw). */
  | { kind: 'file', name: string | Buffer, size: number }

export interface LayerFile {
  /** Bytes of the layer tar. */
  size: number
  /** The layer tar, read as it is sent (each file opened in turn). */
  stream: (signal?: AbortSignal) => AsyncIterable<Uint8Array>
}

/** Reads of a layer's files: as large as the blob frames they are sent in (protocol/wire.ts). */
const READ_CHUNK_BYTES = 512 * 1024
/** tar-split's entry types (storage/entry.go). */
const FILE_TYPE = 1
const SEGMENT_TYPE = 2

export class LayerFiles {
  /** `root` is the engine's DockerRootDir, as this host sees it. */
  constructor (private readonly root: string) {}

  /**
   * The image's config exactly as stored (its sha256 is the image ID: checked), from
   * `image/overlay2/imagedb/content/sha256/<hex>`; undefined when it cannot be read here.
   */
  async config (imageId: string): Promise<Uint8Array | undefined> {
    const hex = /^sha256:([0-9a-f]{64})$/.exec(imageId)?.[1]
    if (hex === undefined) return undefined
    try {
      const bytes = await readFile(join(this.root, 'image', 'overlay2', 'imagedb', 'content', 'sha256', hex))
      return createHash('sha256').update(bytes).digest('hex') === hex ? bytes : undefined
    } catch {
      return undefined
    }
  }

  /** The layer of that chain ID (`sha256:<hex>`), or undefined when it cannot be read here. */
  async open (chainId: string): Promise<LayerFile | undefined> {
    const hex = /^sha256:([0-9a-f]{64})$/.exec(chainId)?.[1]
    if (hex === undefined) return undefined
    const meta = join(this.root, 'image', 'overlay2', 'layerdb', 'sha256', hex)
    const record = join(meta, 'tar-split.json.gz')
    let diff: string
    let size = 0
    try {
      const cacheId = (await readFile(join(meta, 'cache-id'), 'utf8')).trim()
      if (!/^[0-9a-f]{64}$/.test(cacheId)) return undefined
      diff = join(this.root, 'overlay2', cacheId, 'diff')
      // A first pass for the size (the receiver is told it up front); the record is streamed both
      // times, so a layer of many files costs no memory for its list.
      for await (const e of tarSplitEntries(record)) size += e.kind === 'segment' ? e.bytes.length : e.size
    } catch {
      return undefined
    }
    return { size, stream: signal => replay(diff, record, signal) }
  }
}

/** The entries of a tar-split record (gzip, one JSON object per line). Throws LayerFilesError on anything else. */
async function * tarSplitEntries (path: string, signal?: AbortSignal): AsyncGenerator<TarSplitEntry> {
  const file = createReadStream(path, { signal })
  const gunzip = createGunzip()
  file.on('error', err => { gunzip.destroy(err) })
  file.pipe(gunzip)
  const text = new StringDecoder('utf8')
  let rest = ''
  try {
    for await (const chunk of gunzip as AsyncIterable<Buffer>) {
      const lines = (rest + text.write(chunk)).split('\n')
      rest = lines.pop() ?? ''
      for (const line of lines) if (line.trim() !== '') yield parseTarSplitLine(line)
    }
    rest += text.end()
    if (rest.trim() !== '') yield parseTarSplitLine(rest)
  } finally {
    file.destroy()
    gunzip.destroy()
  }
}

/** One line of a tar-split record. */
export function parseTarSplitLine (line: string): TarSplitEntry {
  const e = JSON.parse(line) as { type?: unknown, name?: unknown, name_raw?: unknown, size?: unknown, payload?: unknown }
  if (e.type === SEGMENT_TYPE) return { kind: 'segment', bytes: Buffer.from(typeof e.payload === 'string' ? e.payload : '', 'base64') }
  if (e.type !== FILE_TYPE) throw new LayerFilesError(`tar-split: unknown entry type ${String(e.type)}`)
  const size = e.size ?? 0
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new LayerFilesError('tar-split: a file entry without a valid size')
  const name = typeof e.name === 'string' ? e.name : typeof e.name_raw === 'string' ? Buffer.from(e.name_raw, 'base64') : undefined
  if (name === undefined) throw new LayerFilesError('tar-split: a file entry without a name')
  return { kind: 'file', name, size }
}

/** The tar: segments as recorded, each file's `size` bytes from the diff directory. */
async function * replay (diff: string, record: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  for await (const e of tarSplitEntries(record, signal)) {
    signal?.throwIfAborted()
    if (e.kind === 'segment') {
      if (e.bytes.length > 0) yield e.bytes
      continue
    }
    if (e.size === 0) continue
    yield * readExactly(inside(diff, e.name), e.size, signal)
  }
}

/** `name` under `dir` (as bytes for a name in bytes); a name that climbs out of it is refused. */
function inside (dir: string, name: string | Buffer): string | Buffer {
  // latin1 maps bytes to characters one to one: the checks see the bytes, and give them back.
  const text = typeof name === 'string' ? name : name.toString('latin1')
  const rel = normalize(text).replace(/^(\.\/)+/, '')
  if (rel === '..' || rel.startsWith(`..${sep}`) || rel.startsWith(sep)) throw new LayerFilesError(`tar-split: file ${text} lies outside the layer`)
  return typeof name === 'string' ? join(dir, rel) : Buffer.concat([Buffer.from(dir + sep), Buffer.from(rel, 'latin1')])
}

/** Exactly `size` bytes of a file: a file shorter or longer than the record says is an error. */
async function * readExactly (path: string | Buffer, size: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  let fh
  try {
    fh = await open(path, 'r')
  } catch (err) {
    throw new LayerFilesError(`${path.toString()}: ${(err as Error).message}`, { cause: err })
  }
  try {
    const { size: actual } = await fh.stat()
    if (actual !== size) throw new LayerFilesError(`${path.toString()} has ${actual} bytes; the layer records ${size}`)
    let read = 0
    for await (const chunk of fh.createReadStream({ autoClose: false, highWaterMark: READ_CHUNK_BYTES, signal }) as AsyncIterable<Buffer>) {
      read += chunk.length
      yield chunk
    }
    if (read !== size) throw new LayerFilesError(`${path.toString()}: read ${read} bytes, the layer records ${size}`)
  } finally {
    await fh.close()
  }
}
