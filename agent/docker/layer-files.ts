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
 * Nothing outside the layer is read, whatever the layer holds (its files came from whoever built the
 * image: a `etc` that is a symlink to `/` must not make `etc/shadow` the host's): every path component
 * below the engine's root is checked with lstat to be a directory of its own (no symlink), and each
 * file is opened with O_NOFOLLOW and must be the regular file lstat saw. A layer whose storage fails
 * this is "not here" (docker save, which reads inside the container's root, sends it); a file that
 * fails it mid-stream fails the read with LayerFilesError.
 *
 *   const files = await docker.layerFiles()            // undefined: not an overlay2 engine on this host
 *   const layer = await files?.open(chainId)           // undefined: fall back to docker save
 *   if (layer !== undefined) send(layer.size, layer.stream(signal))
 */
import { createHash } from 'node:crypto'
import { constants } from 'node:fs'
import { lstat, open, type FileHandle } from 'node:fs/promises'
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
/**
 * How files are opened: never through a symlink (the last component; the ones above are checked
 * with lstat), and without waiting on a FIFO (it is then refused as no regular file).
 */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK

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
      const bytes = await readStored(this.root, ['image', 'overlay2', 'imagedb', 'content', 'sha256', hex])
      return createHash('sha256').update(bytes).digest('hex') === hex ? bytes : undefined
    } catch {
      return undefined
    }
  }

  /** The layer of that chain ID (`sha256:<hex>`), or undefined when it cannot be read here. */
  async open (chainId: string): Promise<LayerFile | undefined> {
    const hex = /^sha256:([0-9a-f]{64})$/.exec(chainId)?.[1]
    if (hex === undefined) return undefined
    const meta = ['image', 'overlay2', 'layerdb', 'sha256', hex]
    const record = join(this.root, ...meta, 'tar-split.json.gz')
    let diff: string
    let size = 0
    try {
      const cacheId = (await readStored(this.root, [...meta, 'cache-id'])).toString('utf8').trim()
      if (!/^[0-9a-f]{64}$/.test(cacheId)) return undefined
      if (!await directoriesBelow(this.root, [...meta])) return undefined
      if (!await directoriesBelow(this.root, ['overlay2', cacheId, 'diff'])) return undefined
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
  let fh: FileHandle
  try {
    fh = await open(path, OPEN_FLAGS)
  } catch (err) {
    throw new LayerFilesError(`${path}: ${(err as Error).message}`, { cause: err })
  }
  const file = fh.createReadStream({ signal })
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
  // The directories of the layer already found to be its own, so a layer of many files in a few
  // directories costs one lstat per directory.
  const checked = new Set<string>()
  for await (const e of tarSplitEntries(record, signal)) {
    signal?.throwIfAborted()
    if (e.kind === 'segment') {
      if (e.bytes.length > 0) yield e.bytes
      continue
    }
    if (e.size === 0) continue
    yield * readExactly(diff, inside(e.name), e.size, checked, signal)
  }
}

/**
 * The path of `name` inside a layer, as bytes (a name given in bytes is kept as those bytes, a name
 * in text as its UTF-8), its `.` and empty components gone; a name that climbs out is refused.
 */
function inside (name: string | Buffer): Buffer {
  // latin1 maps bytes to characters one to one: the checks see the bytes, and give them back.
  const text = typeof name === 'string' ? name : name.toString('latin1')
  const rel = normalize(text).replace(/^(\.\/)+/, '')
  if (rel === '..' || rel.startsWith(`..${sep}`) || rel.startsWith(sep)) throw new LayerFilesError(`tar-split: file ${text} lies outside the layer`)
  return Buffer.from(rel, typeof name === 'string' ? 'utf8' : 'latin1')
}

/**
 * Whether each of `parts` below `base` is a directory of its own (lstat: no symlink, nothing else),
 * each checked before the next; `base` itself is the engine's root, which this host's root chose.
 * `checked` holds the paths already found to be (as latin1 text of their bytes).
 */
async function directoriesBelow (base: string | Buffer, parts: ReadonlyArray<string | Buffer>, checked?: Set<string>): Promise<boolean> {
  let path = Buffer.from(base)
  for (const part of parts) {
    path = Buffer.concat([path, Buffer.from(sep), Buffer.from(part)])
    const key = path.toString('latin1')
    if (checked?.has(key) === true) continue
    try {
      const st = await lstat(path)
      if (!st.isDirectory()) return false
    } catch {
      return false
    }
    checked?.add(key)
  }
  return true
}

/** A whole small file of the engine's storage (a cache ID, an image config), every step to it checked. */
async function readStored (root: string, parts: string[]): Promise<Buffer> {
  if (!await directoriesBelow(root, parts.slice(0, -1))) throw new LayerFilesError(`${join(root, ...parts)}: not below the engine root by directories of its own`)
  const fh = await open(join(root, ...parts), OPEN_FLAGS)
  try {
    if (!(await fh.stat()).isFile()) throw new LayerFilesError(`${join(root, ...parts)} is not a regular file`)
    return await fh.readFile()
  } finally {
    await fh.close()
  }
}

/**
 * Exactly `size` bytes of the file `rel` below `dir`: every directory on the way a directory of the
 * layer's own, the file itself a regular file reached by no symlink; a file shorter or longer than
 * the record says is an error.
 */
async function * readExactly (dir: string, rel: Buffer, size: number, checked: Set<string>, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const parts: Buffer[] = []
  for (let start = 0; ;) {
    const slash = rel.indexOf(sep, start)
    if (slash < 0) { parts.push(rel.subarray(start)); break }
    parts.push(rel.subarray(start, slash))
    start = slash + 1
  }
  const path = Buffer.concat([Buffer.from(dir + sep), rel])
  const shown = path.toString()
  if (!await directoriesBelow(dir, parts.slice(0, -1), checked)) throw new LayerFilesError(`${shown}: a directory on the way is a symlink or no directory: not read, it may lead out of the layer`)
  let fh
  try {
    // lstat first: a device node or FIFO is never opened (opening one can act on the host).
    if (!(await lstat(path)).isFile()) throw new LayerFilesError(`${shown} is not a regular file`)
    fh = await open(path, OPEN_FLAGS)
  } catch (err) {
    if (err instanceof LayerFilesError) throw err
    throw new LayerFilesError(`${shown}: ${(err as Error).message}`, { cause: err })
  }
  try {
    const st = await fh.stat()
    if (!st.isFile()) throw new LayerFilesError(`${shown} is not a regular file`)
    if (st.size !== size) throw new LayerFilesError(`${shown} has ${st.size} bytes; the layer records ${size}`)
    let read = 0
    for await (const chunk of fh.createReadStream({ autoClose: false, highWaterMark: READ_CHUNK_BYTES, signal }) as AsyncIterable<Buffer>) {
      read += chunk.length
      yield chunk
    }
    if (read !== size) throw new LayerFilesError(`${shown}: read ${read} bytes, the layer records ${size}`)
  } finally {
    await fh.close()
  }
}
