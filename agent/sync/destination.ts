/**
 * The destination half of a tree sync. It never writes into the live tree: it builds a staging
 * copy beside it (`.<name>.sync-XXXXXX`), from three sources per regular file —
 *   - the whole file hard-linked from the base tree (the live tree or a previous staging copy the
 *     caller names) when its content and all its metadata are unchanged: O(1) and no data copied,
 *     which is what rounds and versions want (the data is shared, and never written again: a file
 *     that differs in anything is built anew);
 *   - blocks found anywhere in the base by hash (unchanged parts of a changed file, a renamed
 *     file), read and verified again as they are copied;
 *   - blocks it asked the source for (WANT), verified against the announced hash as they arrive;
 * and all-zero blocks left as holes (ftruncate, then positioned writes), so sparse files stay sparse.
 * Then owners, modes, xattrs and mtimes, and only when all of it is complete the staging copy
 * replaces the live tree by rename. Any failure removes the staging copy; the live tree is untouched.
 *
 * Wire paths are hostile: each is checked (entry.ts) and its parent must be a directory this tree
 * listed before, which in the staging copy is a directory we made, so nothing reaches through a
 * symlink. Files are created with O_EXCL|O_NOFOLLOW. One sync per live tree at a time (the caller's lock).
 */
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, constants, lchownSync, linkSync, lstatSync, lutimesSync, readdirSync, rmdirSync, unlinkSync, type BigIntStats } from 'node:fs'
import { lstat, mkdir, mkdtemp, open, readdir, rename, rm, symlink, type FileHandle } from 'node:fs/promises'
import { execFile } from 'node:child_process'
import { basename, dirname, join } from 'node:path'
import { promisify } from 'node:util'
import {
  ProtocolError, SyncBlockMismatchError, SyncEntryRefusedError, SyncLimitError, SyncPathEscapeError, SyncToolMissingError, toWireError
} from '../../protocol/errors.js'
import { entryFromWire, parentOf, sameXattrs, type SyncEntry } from './entry.js'
import type { SyncResult } from './source.js'
import { blockCount, blockLength, hashFileSettled, isZeroHash, openSameStat, readAt, readXattrs, releaseBlockBuffer, sameStat, sha256, SYNC_CALLS_PER_SLICE, takeBlockBuffer, walkTree, yieldLoop, type HashCache } from './tree.js'
import { TaskPool } from './pool.js'
import { Demux, HandOff } from './demux.js'
import {
  BLOCK_CHANGED, BLOCK_GONE, BLOCK_HEADER_BYTES, FRAME_BLOCK, FRAME_HASHES, FRAME_WANT, FrameReader, MAX_SYNC_BLOCKS, MAX_SYNC_ENTRIES,
  MAX_WANTS_PER_FRAME, Outbox, SYNC_BLOCK_BYTES, SYNC_WIRE_VERSION, frame, jsonFrame, parseJson, type ByteDuplex,
  MTIME_SLACK_NS
} from './wire.js'
import { NO_XATTRS, type XattrAccess, type Xattrs } from './xattrs.js'

const execFileP = promisify(execFile)

/**
 * Tasks of the build at once (opens, block writes, local copies, closes) and bytes of blocks they
 * hold: enough to keep libuv's four threads and the disk busy behind the stream, a few blocks of memory.
 */
const BUILD_TASKS = 16
const BUILD_WINDOW_BYTES = 8 * 1024 * 1024
/** Consecutive received blocks of a file written with one call, up to this many bytes. */
const WRITE_COALESCE_BYTES = 2 * 1024 * 1024

export interface SyncDestinationOptions {
  signal: AbortSignal
  xattrs?: XattrAccess
  /** The tree to compare against and reuse from (a previous staging copy or version); default the live tree. */
  base?: string
  /** Kept by the caller between rounds: base files not changed since are not hashed again. */
  hashCache?: HashCache
}

interface BaseFile { path: string, stat: BigIntStats, settled?: boolean }
interface LocalBlock { file: BaseFile, offset: number }
type Plan = { kind: 'link', from: BaseFile } | { kind: 'build', local: Array<LocalBlock | undefined>, wants: number[] }

/** Prefixes of the names a sync leaves beside a live tree `name` while it runs. */
function stagingPrefix (live: string): string { return `.${basename(live)}.sync-` }
function oldPrefix (live: string): string { return `.${basename(live)}.sync-old-` }

async function exists (path: string): Promise<boolean> {
  try { await lstat(path); return true } catch { return false }
}

/**
 * Repairs what a sync cut off by a crash left: a live tree renamed away but not replaced is put
 * back, and staging copies are removed.
 */
export async function recoverSyncLeftovers (live: string): Promise<void> {
  const parent = dirname(live)
  let names: string[]
  try { names = await readdir(parent) } catch { return }
  const olds = names.filter(n => n.startsWith(oldPrefix(live)))
  if (!await exists(live) && olds.length > 0) await rename(join(parent, olds[0]), live)
  for (const n of await readdir(parent)) {
    if (n.startsWith(stagingPrefix(live))) await rm(join(parent, n), { recursive: true, force: true })
  }
}

export async function syncDestination (live: string, duplex: ByteDuplex, options: SyncDestinationOptions): Promise<SyncResult> {
  const { signal } = options
  const out = new Outbox()
  const sinkDone = duplex.sink(out.frames())
  sinkDone.catch(() => {})
  const reader = new FrameReader(duplex.source)
  let staging: string | undefined
  try {
    const hello = parseJson(await reader.expect(signal))
    if (hello.t !== 'hello' || hello.version !== SYNC_WIRE_VERSION || hello.blockSize !== SYNC_BLOCK_BYTES) {
      throw new ProtocolError(`sync hello of version ${String(hello.version)} / block ${String(hello.blockSize)}; this agent speaks ${SYNC_WIRE_VERSION} / ${SYNC_BLOCK_BYTES}`)
    }
    await recoverSyncLeftovers(live)
    await mkdir(dirname(live), { recursive: true })
    staging = await mkdtemp(join(dirname(live), stagingPrefix(live)))
    const build = new StagingBuild(staging, options.xattrs ?? NO_XATTRS, new Demux(reader), out, signal, options.hashCache)
    await build.indexBase(options.base ?? live)
    await build.receiveAndBuild()
    await build.applyMetadata()
    // Complete and verified: swap it in.
    const old = join(dirname(live), oldPrefix(live) + randomBytes(6).toString('hex'))
    const hadLive = await exists(live)
    if (hadLive) await rename(live, old)
    await rename(staging, live)
    staging = undefined
    if (hadLive) await removeTree(old)
    if (options.hashCache !== undefined) await build.cacheHashes(live, options.hashCache)
    const stats = build.stats
    await out.send(jsonFrame({ t: 'result', ok: true, stats }), signal)
    out.close()
    await sinkDone
    return stats
  } catch (err) {
    if (staging !== undefined) await rm(staging, { recursive: true, force: true }).catch(() => {})
    if (!signal.aborted) {
      await out.send(jsonFrame({ t: 'result', ok: false, error: toWireError(err) }), AbortSignal.timeout(5000)).catch(() => {})
    }
    out.close()
    throw err
  } finally {
    await reader.close().catch(() => {})
  }
}

class StagingBuild {
  readonly entries: SyncEntry[] = []
  private readonly hashes = new Map<number, Buffer>()
  private readonly dirs = new Set<string>()
  private readonly paths = new Set<string>()
  private readonly groupFirst = new Map<number, number>()
  private readonly plans = new Map<number, Plan>()
  private readonly gone = new Set<number>()
  private readonly changed = new Set<number>()
  private totalBlocks = 0
  private mknodPath: string | undefined
  readonly stats: SyncResult = { entries: 0, filesLinked: 0, filesBuilt: 0, blocksReceived: 0, blocksLocal: 0, bytesReceived: 0, changed: [], gone: [] }

  private readonly baseFiles = new Map<string, BaseFile>()
  private readonly sameSize = new Map<number, BaseFile[]>()
  private readonly baseXattrs = new Map<BaseFile, Xattrs>()
  private readonly byHash = new Map<string, LocalBlock>()
  private readonly hashed = new Map<BaseFile, Buffer | undefined>()
  private readonly usedInodes = new Set<string>()
  /** Files planned (and their wants sent), in manifest order, for the builder. */
  private readonly ready = new HandOff<number>()
  private signal: AbortSignal

  constructor (
    private readonly staging: string,
    private readonly xattrs: XattrAccess,
    private readonly demux: Demux,
    private readonly out: Outbox,
    signal: AbortSignal,
    private readonly cache: HashCache | undefined
  ) {
    this.signal = signal
  }

  /**
   * The manifest, the plan of each file as soon as its hashes are in (its wants sent at once), and
   * the build, all at the same time: the source answers wants while it still hashes the rest of
   * its tree (wire version 2). The first failure of any of the three stops the others.
   */
  async receiveAndBuild (): Promise<void> {
    const outer = this.signal
    const local = new AbortController()
    const stop = (): void => { local.abort(outer.reason) }
    outer.addEventListener('abort', stop, { once: true })
    if (outer.aborted) stop()
    this.signal = local.signal
    let failure: { error: unknown } | undefined
    const fail = (error: unknown): void => { failure ??= { error }; local.abort(error) }
    try {
      const building = this.buildFiles().catch(fail)
      await this.receiveManifest().then(() => { this.ready.end() }, fail)
      await building
      if (failure !== undefined) throw failure.error
    } finally {
      outer.removeEventListener('abort', stop)
      this.signal = outer
    }
  }

  private at (path: string): string {
    return path === '.' ? this.staging : join(this.staging, path)
  }

  async receiveManifest (): Promise<void> {
    while (true) {
      const m = parseJson(await this.demux.nextManifest(this.signal))
      if (m.t === 'end') {
        if (m.entries !== this.entries.length) throw new ProtocolError(`sync manifest announced ${String(m.entries)} entries and sent ${this.entries.length}`)
        if (this.entries.length === 0) throw new SyncEntryRefusedError('sync manifest without a root entry')
        this.stats.entries = this.entries.length
        await this.out.send(jsonFrame({ t: 'wantEnd' }), this.signal)
        return
      }
      if (m.t !== 'entry') throw new ProtocolError(`unexpected sync message ${String(m.t)} in the manifest`)
      if (this.entries.length >= MAX_SYNC_ENTRIES) throw new SyncLimitError(`tree has more than ${MAX_SYNC_ENTRIES} entries`)
      const e = entryFromWire(m)
      const index = this.entries.length
      if (index === 0 && e.path !== '.') throw new SyncEntryRefusedError('the first sync entry is not the root')
      if (index > 0 && e.path === '.') throw new SyncEntryRefusedError('a second root entry')
      if (this.paths.has(e.path)) throw new SyncEntryRefusedError(`entry ${e.path} listed twice`)
      if (index > 0 && !this.dirs.has(parentOf(e.path))) {
        throw new SyncPathEscapeError(`entry ${e.path}: its parent is not a directory of the tree listed before it`)
      }
      this.paths.add(e.path)
      this.entries.push(e)
      if (e.type === 'dir') this.dirs.add(e.path)
      if (e.type === 'file') {
        const member = e.group !== undefined && this.groupFirst.has(e.group)
        if (e.group !== undefined && !member) this.groupFirst.set(e.group, index)
        if (member) {
          const first = this.entries[this.groupFirst.get(e.group as number) as number]
          if (first.size !== e.size) throw new SyncEntryRefusedError(`hard link ${e.path} differs in size from ${first.path}`)
        } else {
          await this.receiveHashes(index, e)
        }
      }
      await this.create(e)
      if (this.hashes.has(index)) {
        await this.planFile(index)
        this.ready.push(index)
      }
    }
  }

  private async receiveHashes (index: number, e: SyncEntry): Promise<void> {
    const n = blockCount(e.size)
    this.totalBlocks += n
    if (this.totalBlocks > MAX_SYNC_BLOCKS) throw new SyncLimitError(`tree has more than ${MAX_SYNC_BLOCKS} blocks`)
    const hashes = Buffer.alloc(n * 32)
    let got = 0
    while (got < hashes.byteLength) {
      const f = await this.demux.nextManifest(this.signal)
      if (f.kind !== FRAME_HASHES || f.payload.byteLength % 32 !== 0 || got + f.payload.byteLength > hashes.byteLength) {
        throw new ProtocolError(`entry ${e.path}: expected ${n} block hashes`)
      }
      hashes.set(f.payload, got)
      got += f.payload.byteLength
    }
    this.hashes.set(index, hashes)
  }

  /** Everything but regular files is made as its entry arrives (regular files after the plan). */
  private async create (e: SyncEntry): Promise<void> {
    const p = this.at(e.path)
    switch (e.type) {
      case 'dir': if (e.path !== '.') await mkdir(p, { mode: 0o700 }); break
      case 'symlink': await symlink(e.link as string, p); break
      case 'fifo': await this.mknod([p, 'p']); break
      case 'char': await this.mknod([p, 'c', String(e.major), String(e.minor)]); break
      case 'block': await this.mknod([p, 'b', String(e.major), String(e.minor)]); break
      case 'file': break
    }
  }

  private async mknod (args: string[]): Promise<void> {
    this.mknodPath ??= await findMknod()
    await execFileP(this.mknodPath, ['-m', '0600', ...args], { signal: this.signal })
  }

  /** Lists the base tree (the live tree or a previous staging copy), with its files' xattrs; hashed as files ask. */
  async indexBase (base: string): Promise<void> {
    try {
      const st = await lstat(base)
      if (!st.isDirectory()) return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw err
    }
    for await (const batch of walkTree(base, this.signal)) {
      const files = batch.filter(w => w.type === 'file').map(w => ({ at: w.at, stat: w.stat, rel: w.path, file: { path: join(base, w.path), stat: w.stat } as BaseFile }))
      const attrs = await readXattrs(files, this.xattrs, this.signal, this.cache)
      for (const f of files) {
        this.baseFiles.set(f.rel, f.file)
        this.baseXattrs.set(f.file, attrs.get(f) ?? {})
        const size = Number(f.stat.size)
        const list = this.sameSize.get(size) ?? []
        list.push(f.file)
        this.sameSize.set(size, list)
      }
    }
  }

  /** A base file's block hashes, its blocks then found by hash for every file planned after. */
  private async addBlocks (file: BaseFile): Promise<Buffer | undefined> {
    if (this.hashed.has(file)) return this.hashed.get(file)
    const r = await hashFileSettled(file.path, file.stat, this.signal, this.cache)
    this.hashed.set(file, r?.hashes)
    if (r === undefined) return undefined
    file.settled = r.settled
    const h = r.hashes
    for (let b = 0; b * 32 < h.byteLength; b++) {
      const key = h.subarray(b * 32, b * 32 + 32).toString('hex')
      if (!this.byHash.has(key)) this.byHash.set(key, { file, offset: b * SYNC_BLOCK_BYTES })
    }
    return h
  }

  /**
   * Decides for one file, as soon as its hashes are in: link it whole from the base, or build it
   * from local blocks and wanted ones (its WANT frames sent now). The base file of the same path
   * is its candidate; a file with none looks among base files of the same size (a rename).
   */
  private async planFile (index: number): Promise<void> {
    const e = this.entries[index]
    const hashes = this.hashes.get(index) as Buffer
    const cand = this.baseFiles.get(e.path)
    if (cand !== undefined) await this.addBlocks(cand)
    else for (const f of this.sameSize.get(e.size) ?? []) await this.addBlocks(f)
    const candHashes = cand !== undefined ? this.hashed.get(cand) : undefined
    if (cand !== undefined && candHashes !== undefined && candHashes.equals(hashes) && sameMetadata(e, cand.stat) &&
        sameXattrs(e.xattrs, this.baseXattrs.get(cand) ?? {}) && !this.usedInodes.has(`${cand.stat.dev}:${cand.stat.ino}`)) {
      this.usedInodes.add(`${cand.stat.dev}:${cand.stat.ino}`)
      this.plans.set(index, { kind: 'link', from: cand })
      return
    }
    const local: Array<LocalBlock | undefined> = []
    const wants: number[] = []
    for (let b = 0; b * 32 < hashes.byteLength; b++) {
      const h = hashes.subarray(b * 32, b * 32 + 32)
      if (isZeroHash(h, blockLength(e.size, b))) { local.push(undefined); continue }
      const found = this.byHash.get(h.toString('hex'))
      local.push(found)
      if (found === undefined) wants.push(b)
    }
    this.plans.set(index, { kind: 'build', local, wants })
    for (let off = 0; off < wants.length; off += MAX_WANTS_PER_FRAME) {
      const part = wants.slice(off, off + MAX_WANTS_PER_FRAME)
      const payload = Buffer.alloc(4 + part.length * 4)
      payload.writeUInt32BE(index, 0)
      part.forEach((b, i) => payload.writeUInt32BE(b, 4 + i * 4))
      await this.out.send(frame(FRAME_WANT, payload), this.signal)
    }
  }

  /**
   * Regular files in manifest order (the order of the wants, so blocks arrive in the order they are
   * needed). Frames are read and verified here, one after another; the opens, writes, local copies
   * and closes run in a TaskPool meanwhile, bounded in files and in bytes held.
   */
  async buildFiles (): Promise<void> {
    const pool = new TaskPool(BUILD_TASKS, BUILD_WINDOW_BYTES)
    let linkedHere = 0
    try {
      while (true) {
        const index = await this.ready.next(this.signal)
        if (index === undefined) break
        const e = this.entries[index]
        const plan = this.plans.get(index) as Plan
        if (plan.kind === 'link') {
          // An inode call: made here, the event loop let run every SYNC_CALLS_PER_SLICE of them.
          if (++linkedHere % SYNC_CALLS_PER_SLICE === 0) await yieldLoop(this.signal)
          linkSync(plan.from.path, this.at(e.path))
          this.stats.filesLinked++
          continue
        }
        await this.buildFile(index, e, plan, pool)
      }
      await pool.drain()
    } finally {
      await pool.settle()
    }
    const members: Array<[string, string]> = []
    for (let index = 0; index < this.entries.length; index++) {
      const e = this.entries[index]
      if (e.type !== 'file' || e.group === undefined) continue
      const first = this.groupFirst.get(e.group) as number
      if (first === index || this.gone.has(first)) continue
      members.push([this.at(this.entries[first].path), this.at(e.path)])
    }
    await inSlices(members, this.signal, ([from, to]) => { linkSync(from, to) })
    if (this.stats.filesBuilt + this.stats.filesLinked + this.gone.size !== this.plans.size) throw new ProtocolError('sync build incomplete')
  }

  private async buildFile (index: number, e: SyncEntry, plan: Extract<Plan, { kind: 'build' }>, pool: TaskPool): Promise<void> {
    const hashes = this.hashes.get(index) as Buffer
    const path = this.at(e.path)
    let fh: FileHandle | undefined
    const last = blockCount(e.size) - 1
    const wanted = new Set(plan.wants)
    const bases = new Map<BaseFile, Promise<OpenBase | undefined>>()
    const closeAll = async (): Promise<void> => {
      const handles = await Promise.allSettled(bases.values())
      bases.clear()
      for (const h of handles) if (h.status === 'fulfilled') await h.value?.fh.close().catch(() => {})
      const f = fh
      fh = undefined
      await f?.close()
    }
    const opened = (await pool.run(async () => {
      fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
      // The size comes with the last block's write, unless that block is a hole.
      if (plan.local[last] === undefined && !wanted.has(last)) await fh.truncate(e.size)
    }, this.signal)).done
    const writes: Array<Promise<void>> = [opened]
    // Received blocks that follow each other go in one pwritev (fewer round trips to libuv's threads).
    let pending: { at: number, chunks: Uint8Array[], bytes: number } | undefined
    const flush = async (): Promise<void> => {
      if (pending === undefined) return
      const { at, chunks, bytes } = pending
      pending = undefined
      writes.push((await pool.run(async () => {
        await opened
        if (fh !== undefined) await writevAll(fh, chunks, at)
      }, this.signal, bytes)).done)
    }
    let closing = false
    let wantsLeft = wanted.size
    try {
      for (let b = 0; b < plan.local.length; b++) {
        this.signal.throwIfAborted()
        const expected = hashes.subarray(b * 32, b * 32 + 32)
        const len = blockLength(e.size, b)
        const local = plan.local[b]
        if (local !== undefined) {
          writes.push((await pool.run(async () => {
            await opened
            if (fh === undefined) return
            let base = bases.get(local.file)
            if (base === undefined) { base = openBase(local.file); bases.set(local.file, base) }
            await copyLocal(fh, await base, local, expected, len, b, e.path)
            this.stats.blocksLocal++
          }, this.signal, len)).done)
          continue
        }
        if (!wanted.has(b)) continue // zeros: a hole
        const f = await this.demux.nextBlock(this.signal)
        wantsLeft--
        if (f.kind !== FRAME_BLOCK || f.body === undefined || f.payload.byteLength < BLOCK_HEADER_BYTES) throw new ProtocolError(`expected block ${b} of ${e.path}`)
        const p = Buffer.from(f.payload.buffer, f.payload.byteOffset, f.payload.byteLength)
        if (p.readUInt32BE(0) !== index || p.readUInt32BE(4) !== b) throw new ProtocolError(`expected block ${b} of entry ${index}, got ${p.readUInt32BE(4)} of ${p.readUInt32BE(0)}`)
        const flags = p[8]
        if ((flags & BLOCK_GONE) !== 0) {
          pending = undefined
          this.gone.add(index)
          this.stats.gone.push(e.path)
          await pool.run(async () => {
            await Promise.all(writes)
            await closeAll()
            await rm(path, { force: true })
          }, this.signal)
          closing = true
          return
        }
        let want = expected
        let dataAt = BLOCK_HEADER_BYTES
        if ((flags & BLOCK_CHANGED) !== 0) {
          if (p.byteLength < BLOCK_HEADER_BYTES + 32) throw new ProtocolError(`block ${b} of ${e.path} has no new hash`)
          want = p.subarray(BLOCK_HEADER_BYTES, BLOCK_HEADER_BYTES + 32)
          dataAt += 32
          if (!this.changed.has(index)) { this.changed.add(index); this.stats.changed.push(e.path) }
        }
        const data = f.body.sublist(dataAt)
        if (data.byteLength !== len) throw new ProtocolError(`block ${b} of ${e.path} has ${data.byteLength} bytes, not ${len}`)
        const h = createHash('sha256')
        for (const chunk of data) h.update(chunk)
        if (!h.digest().equals(want)) throw new SyncBlockMismatchError(`${e.path} block ${b} does not match its sha256`)
        if (pending !== undefined && pending.at + pending.bytes === b * SYNC_BLOCK_BYTES && pending.bytes + len <= WRITE_COALESCE_BYTES) {
          pending.chunks.push(...data)
          pending.bytes += len
        } else {
          await flush()
          pending = { at: b * SYNC_BLOCK_BYTES, chunks: [...data], bytes: len }
        }
        this.stats.blocksReceived++
        this.stats.bytesReceived += len
      }
      if (wantsLeft !== 0) throw new ProtocolError(`${e.path}: ${wantsLeft} wanted blocks never arrived`)
      await flush()
      await pool.run(async () => {
        await Promise.all(writes)
        if (fh === undefined) return // its open failed: the pool holds that failure
        await closeAll()
        this.stats.filesBuilt++
      }, this.signal)
      closing = true
    } finally {
      if (!closing) {
        await Promise.all(writes)
        await closeAll().catch(() => {})
      }
    }
  }

  /**
   * Owners before modes (chown clears setuid bits), xattrs after owners (chown clears capabilities),
   * mtimes last, directories deepest first. Inode calls only, made synchronously in slices.
   */
  async applyMetadata (): Promise<void> {
    const keep = this.entries.filter((e, i) => !this.skipsMetadata(e, i))
    await inSlices(keep, this.signal, e => {
      const p = this.at(e.path)
      lchownSync(p, e.uid, e.gid)
      if (e.type !== 'symlink') chmodSync(p, e.mode)
    })
    await this.xattrs.write(keep.filter(e => Object.keys(e.xattrs).length > 0).map(e => ({ path: this.at(e.path), xattrs: e.xattrs })), this.signal)
    await inSlices([...keep].reverse(), this.signal, e => {
      const t = Number(BigInt(e.mtimeNs)) / 1e9
      lutimesSync(this.at(e.path), t, t)
    })
  }

  /**
   * After the swap: the block hashes of every regular file now in `live`, under its final stat (a
   * link or the old tree's removal moved its ctime), so the next round hashes none of them again.
   * The tree is written by syncs only (it is never the volume a container runs on).
   */
  async cacheHashes (live: string, cache: HashCache): Promise<void> {
    await inSlices([...this.hashes].filter(([index]) => !this.gone.has(index)), this.signal, ([index, hashes]) => {
      const st = lstatSync(join(live, this.entries[index].path), { bigint: true })
      if (st.isFile()) { cache.set(st, hashes); cache.setXattrs(st, this.entries[index].xattrs) }
    })
  }

  /** Hard links take their first member's metadata; a file linked from the base already has it (and the base's inode must not change). */
  private skipsMetadata (e: SyncEntry, index: number): boolean {
    if (e.type !== 'file') return false
    if (e.group !== undefined && this.groupFirst.get(e.group) !== index) return true
    if (this.gone.has(index)) return true
    return this.plans.get(index)?.kind === 'link'
  }
}

function sameMetadata (e: SyncEntry, st: BigIntStats): boolean {
  return Number(st.mode & 0o7777n) === e.mode && Number(st.uid) === e.uid && Number(st.gid) === e.gid &&
    Number(st.size) === e.size && absDiff(st.mtimeNs, BigInt(e.mtimeNs)) < MTIME_SLACK_NS
}

function absDiff (a: bigint, b: bigint): bigint { return a > b ? a - b : b - a }

async function writeAll (fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < data.byteLength) {
    const { bytesWritten } = await fh.write(data, done, data.byteLength - done, position + done)
    done += bytesWritten
  }
}

/** Writes the chunks at `position` with as few pwritev calls as the kernel allows. */
async function writevAll (fh: FileHandle, chunks: Uint8Array[], position: number): Promise<void> {
  let rest = chunks
  while (rest.length > 0) {
    let { bytesWritten } = await fh.writev(rest, position)
    position += bytesWritten
    while (rest.length > 0 && bytesWritten >= rest[0].byteLength) { bytesWritten -= rest[0].byteLength; rest = rest.slice(1) }
    if (bytesWritten > 0) rest = [rest[0].subarray(bytesWritten), ...rest.slice(1)]
  }
}

interface OpenBase { fh: FileHandle, trusted: boolean }

/** A base file opened for its blocks; trusted (not hashed again) while it is as it was when hashed and settled. */
async function openBase (file: BaseFile): Promise<OpenBase | undefined> {
  const opened = await openSameStat(file.path, file.stat)
  if (opened === undefined) return undefined
  return { fh: opened.fh, trusted: file.settled === true && sameStat(opened.now, file.stat) }
}

/** Copies one block of the base into `fh`, verified against `expected` unless the base is trusted. */
async function copyLocal (fh: FileHandle, base: OpenBase | undefined, local: LocalBlock, expected: Buffer, len: number, b: number, path: string): Promise<void> {
  if (base === undefined) throw new SyncBlockMismatchError(`base file ${local.file.path} changed while the sync ran`)
  const buf = takeBlockBuffer()
  try {
    const got = await readAt(base.fh, buf, len, local.offset)
    const data = buf.subarray(0, len)
    if (got !== len || (!base.trusted && !sha256(data).equals(expected))) throw new SyncBlockMismatchError(`${path} block ${b}: the base's copy no longer matches`)
    await writeAll(fh, data, b * SYNC_BLOCK_BYTES)
  } finally {
    releaseBlockBuffer(buf)
  }
}

/**
 * Removes the old tree after the swap, by inode calls in slices between event-loop turns (fs.rm
 * awaited a libuv round trip per entry). Not abortable: the new tree is in place by then. Falls
 * back to fs.rm on any error (it retries and reports).
 */
async function removeTree (path: string): Promise<void> {
  let calls = 0
  const walk = async (dir: string): Promise<void> => {
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, d.name)
      if (d.isDirectory()) await walk(p)
      else unlinkSync(p)
      if (++calls % SYNC_CALLS_PER_SLICE === 0) await new Promise<void>(resolve => { setImmediate(resolve) })
    }
    rmdirSync(dir)
  }
  try { await walk(path) } catch { await rm(path, { recursive: true, force: true }) }
}

/** `fn` for each item, synchronously, the event loop running between slices of SYNC_CALLS_PER_SLICE. */
async function inSlices<T> (items: T[], signal: AbortSignal, fn: (item: T) => void): Promise<void> {
  for (let i = 0; i < items.length; i++) {
    if (i % SYNC_CALLS_PER_SLICE === 0) await yieldLoop(signal)
    fn(items[i])
  }
}

async function findMknod (): Promise<string> {
  for (const p of ['/usr/bin/mknod', '/bin/mknod']) if (await exists(p)) return p
  throw new SyncToolMissingError('mknod not found (coreutils)')
}
