/**
 * Reading a tree without following symlinks: a walk that holds each directory open by descriptor
 * and names its children through `/proc/<pid>/fd/<n>/<name>`, so a directory swapped for a symlink
 * while the walk runs (a container writing its volume) never leads outside the root; and block
 * hashing of regular files (sha256 of SYNC_BLOCK_BYTES blocks), with a cache that lets the next
 * round skip files whose inode, size, mtime and ctime did not change.
 */
import { createHash } from 'node:crypto'
import { constants, type BigIntStats } from 'node:fs'
import { lstat, open, readdir, readlink, type FileHandle } from 'node:fs/promises'
import { SyncLimitError } from '../../protocol/errors.js'
import { MAX_SYNC_DEPTH, SYNC_BLOCK_BYTES } from './wire.js'

export type EntryType = 'dir' | 'file' | 'symlink' | 'fifo' | 'char' | 'block'

export interface WalkEntry {
  /** Relative POSIX path, '.' for the root itself. */
  path: string
  /** A path that names this entry through its parent's open descriptor (valid until the walk moves on from its directory). */
  at: string
  type: EntryType
  stat: BigIntStats
  /** Symlink target. */
  link?: string
}

export function entryType (st: BigIntStats): EntryType | undefined {
  if (st.isDirectory()) return 'dir'
  if (st.isFile()) return 'file'
  if (st.isSymbolicLink()) return 'symlink'
  if (st.isFIFO()) return 'fifo'
  if (st.isCharacterDevice()) return 'char'
  if (st.isBlockDevice()) return 'block'
  return undefined // sockets: nothing to copy (tar skips them too)
}

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW

function fdPath (fh: FileHandle): string {
  return `/proc/${process.pid}/fd/${fh.fd}`
}

function missing (err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP'
}

/**
 * The root, then each directory's children (sorted by name) as one batch, depth first: a directory
 * comes before what it holds. Entries that vanish while the walk runs, and sockets, are left out.
 */
export async function * walkTree (root: string, signal: AbortSignal): AsyncGenerator<WalkEntry[]> {
  const rootFh = await open(root, DIR_FLAGS)
  try {
    const st = await rootFh.stat({ bigint: true })
    yield [{ path: '.', at: fdPath(rootFh), type: 'dir', stat: st }]
    yield * walkDir(rootFh, '.', 1, signal)
  } finally {
    await rootFh.close()
  }
}

async function * walkDir (dir: FileHandle, rel: string, depth: number, signal: AbortSignal): AsyncGenerator<WalkEntry[]> {
  signal.throwIfAborted()
  if (depth > MAX_SYNC_DEPTH) throw new SyncLimitError(`tree deeper than ${MAX_SYNC_DEPTH} at ${rel}`)
  const base = fdPath(dir)
  const names = (await readdir(base)).sort()
  const batch: WalkEntry[] = []
  for (const name of names) {
    const at = `${base}/${name}`
    let st: BigIntStats
    try { st = await lstat(at, { bigint: true }) } catch (err) { if (missing(err)) continue; throw err }
    const type = entryType(st)
    if (type === undefined) continue
    const entry: WalkEntry = { path: rel === '.' ? name : `${rel}/${name}`, at, type, stat: st }
    if (type === 'symlink') {
      try { entry.link = await readlink(at) } catch (err) { if (missing(err)) continue; throw err }
    }
    batch.push(entry)
  }
  yield batch
  for (const entry of batch) {
    if (entry.type !== 'dir') continue
    let child: FileHandle
    try { child = await open(entry.at, DIR_FLAGS) } catch (err) { if (missing(err)) continue; throw err }
    try {
      const st = await child.stat({ bigint: true })
      // Replaced since it was listed: what is there now is not what the batch said.
      if (st.ino !== entry.stat.ino || st.dev !== entry.stat.dev) continue
      yield * walkDir(child, entry.path, depth + 1, signal)
    } finally {
      await child.close()
    }
  }
}

/** Opens a regular file without following a symlink and checks it is still the inode `st` names; undefined if it is gone or replaced. */
export async function openSame (path: string, st: BigIntStats): Promise<FileHandle | undefined> {
  let fh: FileHandle
  try { fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW) } catch (err) { if (missing(err)) return undefined; throw err }
  const now = await fh.stat({ bigint: true })
  if (now.ino !== st.ino || now.dev !== st.dev || !now.isFile()) {
    await fh.close()
    return undefined
  }
  return fh
}

export function blockCount (size: number): number {
  return Math.ceil(size / SYNC_BLOCK_BYTES)
}

export function blockLength (size: number, index: number): number {
  return Math.min(SYNC_BLOCK_BYTES, size - index * SYNC_BLOCK_BYTES)
}

const ZERO_BLOCK = Buffer.alloc(SYNC_BLOCK_BYTES)
const ZERO_FULL_HASH = createHash('sha256').update(ZERO_BLOCK).digest()

export function sha256 (bytes: Uint8Array): Buffer {
  if (bytes.byteLength === SYNC_BLOCK_BYTES && ZERO_BLOCK.equals(bytes)) return ZERO_FULL_HASH
  return createHash('sha256').update(bytes).digest()
}

/** Whether `hash` is that of `length` zero bytes: such a block is left as a hole. */
export function isZeroHash (hash: Uint8Array, length: number): boolean {
  if (length === SYNC_BLOCK_BYTES) return ZERO_FULL_HASH.equals(hash)
  return createHash('sha256').update(ZERO_BLOCK.subarray(0, length)).digest().equals(hash)
}

/** Reads `length` bytes at `position` (fewer only at end of file) into `buf`. */
export async function readAt (fh: FileHandle, buf: Buffer, length: number, position: number): Promise<number> {
  let done = 0
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  return done
}

interface Cached { size: bigint, mtimeNs: bigint, ctimeNs: bigint, hashes: Buffer }

/**
 * Block hashes of files by inode, kept by a caller between rounds of syncs of one tree. An entry
 * holds only while the inode's size, mtime and ctime are those it was hashed at (a write moves the
 * ctime even when it restores the mtime).
 */
export class HashCache {
  private readonly byInode = new Map<string, Cached>()

  get (st: BigIntStats): Buffer | undefined {
    const c = this.byInode.get(`${st.dev}:${st.ino}`)
    if (c === undefined || c.size !== st.size || c.mtimeNs !== st.mtimeNs || c.ctimeNs !== st.ctimeNs) return undefined
    return c.hashes
  }

  set (st: BigIntStats, hashes: Buffer): void {
    this.byInode.set(`${st.dev}:${st.ino}`, { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, hashes })
  }
}

/**
 * The block hashes (32 bytes each, concatenated) of the regular file at `path`, which must still be
 * the inode `st` names; undefined if it is gone or replaced. A block that reads as zeros hashes
 * without sha256 running over it (holes of sparse files).
 */
export async function hashFile (path: string, st: BigIntStats, signal: AbortSignal, cache?: HashCache): Promise<Buffer | undefined> {
  const cached = cache?.get(st)
  if (cached !== undefined) return cached
  const fh = await openSame(path, st)
  if (fh === undefined) return undefined
  try {
    const size = Number(st.size)
    const n = blockCount(size)
    const hashes = Buffer.alloc(n * 32)
    const buf = Buffer.allocUnsafe(SYNC_BLOCK_BYTES)
    for (let i = 0; i < n; i++) {
      signal.throwIfAborted()
      const len = blockLength(size, i)
      const got = await readAt(fh, buf, len, i * SYNC_BLOCK_BYTES)
      buf.fill(0, got, len) // shrank while read: the rest reads as zeros, as the destination would write it
      sha256(buf.subarray(0, len)).copy(hashes, i * 32)
    }
    cache?.set(st, hashes)
    return hashes
  } finally {
    await fh.close()
  }
}
