/**
 * Reading a tree without following symlinks: a walk that holds each directory open by descriptor
 * and names its children through `/proc/<pid>/fd/<n>/<name>`, so a directory swapped for a symlink
 * while the walk runs (a container writing its volume) never leads outside the root; and block
 * hashing of regular files (sha256 of SYNC_BLOCK_BYTES blocks), with a cache that lets the next
 * round skip files whose inode, size, mtime and ctime did not change.
 */
import { createHash } from 'node:crypto'
import { constants, lstatSync, readlinkSync, type BigIntStats } from 'node:fs'
import { open, readdir, type FileHandle } from 'node:fs/promises'
import { SyncLimitError } from '../../protocol/errors.js'
import { MAX_SYNC_DEPTH, SYNC_BLOCK_BYTES } from './wire.js'
import type { XattrAccess, Xattrs } from './xattrs.js'

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

/**
 * Inode calls (lstat, readlink, chown, chmod, utimes, link) made synchronously between two turns
 * of the event loop: each takes microseconds, and a libuv round trip for each cost far more on a
 * tree of thousands of small files; 256 of them keep the loop's turns well under a few ms.
 */
export const SYNC_CALLS_PER_SLICE = 256

/** Lets the event loop run (timers, other streams) between slices of synchronous calls. */
export async function yieldLoop (signal: AbortSignal): Promise<void> {
  await new Promise<void>(resolve => { setImmediate(resolve) })
  signal.throwIfAborted()
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
  for (let i = 0; i < names.length; i++) {
    // Inode calls, without data I/O, made here in the loop: one libuv round trip each was most of
    // a walk of many small files. The loop yields between slices.
    if (i > 0 && i % SYNC_CALLS_PER_SLICE === 0) await yieldLoop(signal)
    const name = names[i]
    const at = `${base}/${name}`
    let st: BigIntStats
    try { st = lstatSync(at, { bigint: true }) } catch (err) { if (missing(err)) continue; throw err }
    const type = entryType(st)
    if (type === undefined) continue
    const entry: WalkEntry = { path: rel === '.' ? name : `${rel}/${name}`, at, type, stat: st }
    if (type === 'symlink') {
      try { entry.link = readlinkSync(at) } catch (err) { if (missing(err)) continue; throw err }
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
  return (await openSameStat(path, st))?.fh
}

/** `openSame`, with the open file's stat as it is now. */
export async function openSameStat (path: string, st: BigIntStats): Promise<{ fh: FileHandle, now: BigIntStats } | undefined> {
  let fh: FileHandle
  try { fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW) } catch (err) { if (missing(err)) return undefined; throw err }
  const now = await fh.stat({ bigint: true })
  if (now.ino !== st.ino || now.dev !== st.dev || !now.isFile()) {
    await fh.close()
    return undefined
  }
  return { fh, now }
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

/**
 * A file whose ctime is this much older than the start of its hashing cannot change afterwards
 * without its ctime moving: the kernel stamps times at its clock tick (a few ms), so a write in the
 * same tick as the last one could leave ctime as it was ("racy" in git's sense). Hashes of a file
 * changed more recently are used for this sync but neither cached nor trusted when its blocks are
 * sent (they are hashed again then).
 */
export const RACY_CTIME_NS = 1_000_000_000n

/** Block buffers kept for reuse: allocating 1 MiB per file or block had the GC run most of the time. */
const POOL_KEEP = 8
const pool: Buffer[] = []

/** A SYNC_BLOCK_BYTES buffer from the pool; give it back with `releaseBlockBuffer` when done. */
export function takeBlockBuffer (): Buffer {
  return pool.pop() ?? Buffer.allocUnsafe(SYNC_BLOCK_BYTES)
}

export function releaseBlockBuffer (buf: Buffer): void {
  if (pool.length < POOL_KEEP && buf.byteLength === SYNC_BLOCK_BYTES) pool.push(buf)
}

interface Cached { size: bigint, mtimeNs: bigint, ctimeNs: bigint, hashes: Buffer }

/**
 * Block hashes of files, and extended attributes of any entry, by inode, kept by a caller between
 * rounds of syncs of one tree. An entry holds only while the inode's size, mtime and ctime are
 * those it was read at (a write moves the ctime even when it restores the mtime, and so does
 * setting an attribute); only settled inodes (RACY_CTIME_NS) are kept.
 */
export class HashCache {
  private readonly byInode = new Map<string, Cached>()
  private readonly xattrsByInode = new Map<string, { ctimeNs: bigint, xattrs: Xattrs }>()

  get (st: BigIntStats): Buffer | undefined {
    const c = this.byInode.get(`${st.dev}:${st.ino}`)
    if (c === undefined || c.size !== st.size || c.mtimeNs !== st.mtimeNs || c.ctimeNs !== st.ctimeNs) return undefined
    return c.hashes
  }

  set (st: BigIntStats, hashes: Buffer): void {
    this.byInode.set(`${st.dev}:${st.ino}`, { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, hashes })
  }

  /** Extended attributes of any inode read or set before at this ctime (setting one moves the ctime). */
  getXattrs (st: BigIntStats): Xattrs | undefined {
    const c = this.xattrsByInode.get(`${st.dev}:${st.ino}`)
    return c !== undefined && c.ctimeNs === st.ctimeNs ? c.xattrs : undefined
  }

  setXattrs (st: BigIntStats, xattrs: Xattrs): void {
    this.xattrsByInode.set(`${st.dev}:${st.ino}`, { ctimeNs: st.ctimeNs, xattrs })
  }

  /**
   * The attributes of each entry: from the cache where it holds, the rest read with one `xattrs.read`
   * (one getfattr per call: the cost of a round of an unchanged tree was mostly those), cached
   * when settled.
   */
  async readXattrs<T extends { at: string, stat: BigIntStats }> (entries: T[], xattrs: XattrAccess, signal: AbortSignal): Promise<Map<T, Xattrs>> {
    const out = new Map<T, Xattrs>()
    const missing = entries.filter(e => {
      const c = this.getXattrs(e.stat)
      if (c !== undefined) out.set(e, c)
      return c === undefined
    })
    if (missing.length === 0) return out
    const startNs = nowNs()
    const read = await xattrs.read(missing.map(e => e.at), signal)
    for (const e of missing) {
      const x = read.get(e.at) ?? {}
      out.set(e, x)
      if (settledSince(e.stat, startNs)) this.setXattrs(e.stat, x)
    }
    return out
  }
}

/** `cache.readXattrs`, or a plain read of all of them without a cache. */
export async function readXattrs<T extends { at: string, stat: BigIntStats }> (entries: T[], xattrs: XattrAccess, signal: AbortSignal, cache?: HashCache): Promise<Map<T, Xattrs>> {
  if (cache !== undefined) return await cache.readXattrs(entries, xattrs, signal)
  const read = await xattrs.read(entries.map(e => e.at), signal)
  return new Map(entries.map(e => [e, read.get(e.at) ?? {}]))
}

/** Wall clock in nanoseconds, the clock file times are stamped with. */
export function nowNs (): bigint {
  return BigInt(Date.now()) * 1_000_000n
}

/** Whether a file with stat `st`, hashed from `startNs` on, cannot have changed since without its ctime moving. */
export function settledSince (st: BigIntStats, startNs: bigint): boolean {
  return st.ctimeNs < startNs - RACY_CTIME_NS
}

/** Whether two stats of one inode say its content and times are as they were. */
export function sameStat (a: BigIntStats, b: BigIntStats): boolean {
  return a.ino === b.ino && a.dev === b.dev && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs
}

export interface Hashed {
  hashes: Buffer
  /** The file was settled (RACY_CTIME_NS) when hashed: while its stat stays `st`, its blocks are these. */
  settled: boolean
}

/**
 * The block hashes (32 bytes each, concatenated) of the regular file at `path`, which must still be
 * the inode `st` names; undefined if it is gone or replaced. A block that reads as zeros hashes
 * without sha256 running over it (holes of sparse files).
 */
export async function hashFile (path: string, st: BigIntStats, signal: AbortSignal, cache?: HashCache): Promise<Buffer | undefined> {
  return (await hashFileSettled(path, st, signal, cache))?.hashes
}

/** `hashFile`, saying whether the result may be trusted while the stat stays the same. The next block is read while one is hashed. */
export async function hashFileSettled (path: string, st: BigIntStats, signal: AbortSignal, cache?: HashCache): Promise<Hashed | undefined> {
  const cached = cache?.get(st)
  if (cached !== undefined) return { hashes: cached, settled: true }
  const startNs = nowNs()
  const fh = await openSame(path, st)
  if (fh === undefined) return undefined
  const size = Number(st.size)
  const n = blockCount(size)
  const hashes = Buffer.alloc(n * 32)
  const bufs = n > 1 ? [takeBlockBuffer(), takeBlockBuffer()] : [takeBlockBuffer()]
  const read = async (i: number): Promise<Buffer> => {
    const buf = bufs[i % bufs.length]
    const len = blockLength(size, i)
    const got = await readAt(fh, buf, len, i * SYNC_BLOCK_BYTES)
    buf.fill(0, got, len) // shrank while read: the rest reads as zeros, as the destination would write it
    return buf.subarray(0, len)
  }
  let next: Promise<Buffer> | undefined
  try {
    next = n > 0 ? read(0) : undefined
    for (let i = 0; i < n; i++) {
      signal.throwIfAborted()
      const data = await (next as Promise<Buffer>)
      next = i + 1 < n ? read(i + 1) : undefined
      sha256(data).copy(hashes, i * 32)
    }
    const settled = settledSince(st, startNs)
    if (settled) cache?.set(st, hashes)
    return { hashes, settled }
  } finally {
    await next?.catch(() => {})
    await fh.close()
    for (const b of bufs) releaseBlockBuffer(b)
  }
}
