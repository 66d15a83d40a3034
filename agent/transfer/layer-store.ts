/**
 * The destination's staging store for layers received for a move: one file per verified layer,
 * `<dir>/<hex of diff ID>.tar`, in the agent's state directory (`<stateDir>/layers`).
 *
 *   const store = await LayerStore.open(join(stateDir, 'layers'))
 *   if (!await store.has(diffId)) await store.receive(diffId, size, bytesFromPeer, signal)
 *   const tar = buildLoadTarball({ config, diffIds, present, store })   // load.ts
 *   await store.prune(new Set(layersOfMovesInProgress))
 *
 * `receive` streams into a temp file under `<dir>/incoming/` while hashing; the writes run behind
 * the hashing, batched (at most 2 MiB held, whatever the layer's size; a slow disk slows the pull,
 * which is the backpressure). It refuses the layer the moment it
 * goes past its announced size, when the disk would keep less than `minFreeBytes` free (checked
 * before the first byte and as bytes arrive, against the filesystem's real free space), or at the end if its sha256 is not its diff ID; on any failure,
 * abort included, the temp file is removed. Only a verified layer is renamed into place, so
 * whatever `has` reports survives an agent restart and a retried transfer need not resend it. One
 * store (one agent) per directory: `open` discards temp files a crashed receive left behind.
 *
 * Resume inside a layer (`resumable`): a receive that a sender can continue keeps its bytes in
 * `<dir>/partial/<hex>.tar` beside a record `<hex>.json` — the layer's diff ID and size, and a
 * verified prefix: how many bytes the file holds (`offset`) and the sha256 of exactly those bytes.
 * The record is rewritten every PARTIAL_RECORD_BYTES (after those bytes are written) and once more
 * when the receive fails (cut, aborted, the sender gone), so a retry continues from where the bytes
 * stopped, or after a crash of this agent from the last record. Node's Hash cannot be saved, so a
 * resume reads the kept prefix again, hashing it, which both checks it against the record (a
 * mismatch, a shorter file: the partial is discarded and the layer starts over) and gives the hash
 * state the rest continues; the final check against the diff ID covers the whole layer. Measured
 * (docs/performance.md, 256 MiB, this 2-core machine under load): re-hashing a kept prefix from
 * the page cache took 1.0 s per 256 MiB, once per resume; per-block hashes of fixed 4 MiB blocks
 * would have added 0.57 s per 256 MiB to *every* receive (0.63 → 1.19 s of hashing), and a resume
 * would still have to read the prefix for the whole layer's sha256. So: re-hash, no block hashes.
 *
 * How long a kept layer lasts is the opener's choice (`durability`):
 *   'disk'  each layer is fsynced before it is renamed into place: it survives a power cut too
 *           (snapshots held for failover).
 *   'boot'  no fsync: a kept layer lives in the page cache until the kernel writes it back, and the
 *           store is valid for this boot only (`open` empties it when the machine has rebooted since
 *           it was last opened; after an OS crash its files could be torn). The staging store of
 *           moves uses this: its layers are removed when the move ends, minutes later at most, and
 *           no fsync of a whole layer stands between a layer's last byte and the engine's load. An
 *           OS crash costs the retry a resend, nothing else.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto'
import { mkdir, open, readFile, readdir, rename, rm, stat, statfs, truncate, writeFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import {
  GotoError, InsufficientDiskError, LayerDigestMismatchError, LayerMissingError, LayerTooLargeError, LayerTruncatedError, TransferError
} from '../../protocol/errors.js'

const DIFF_ID = /^sha256:([0-9a-f]{64})$/
const LAYER_FILE = /^([0-9a-f]{64})\.tar$/
const INCOMING = 'incoming'
/** Partial layers a sender may continue, each with its record (kept across restarts of this agent). */
const PARTIAL = 'partial'
const PARTIAL_FILE = /^([0-9a-f]{64})\.(tar|json)$/
/**
 * Bytes between two records of a partial's verified prefix: what a crash of this agent (not a cut
 * link, after which the record is written at the last byte) costs a resume at most. Each record
 * waits for the bytes before it to be written (a flush of at most WRITE_BEHIND_BYTES) and writes a
 * file of ~200 bytes: at 8 MiB, under 1 % of a receive's time.
 */
export const PARTIAL_RECORD_BYTES = 8 * 1024 * 1024
/** Bytes read at a time while a resume re-hashes a kept prefix. */
const REHASH_READ_BYTES = 1024 * 1024
/** The boot a 'boot' store's layers belong to (the kernel's boot ID when they were kept). */
const BOOT_FILE = 'boot-id'
const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id'
/** Received bytes queued for the disk at most: enough to batch several frames per write; more (8 MiB) pushed a 1 GiB receive near its 64 MiB memory budget. */
const WRITE_BEHIND_BYTES = 2 * 1024 * 1024

/**
 * Free disk a store leaves on its filesystem by default: a receive stops (InsufficientDiskError) when
 * its layer would take free space below this, so a sender cannot fill the disk the engine and the
 * agent's state live on. Checked before the first byte (against the announced size) and again as
 * bytes arrive, every DISK_CHECK_BYTES (concurrent receives, other writers, a size that lied).
 */
export const DEFAULT_MIN_FREE_BYTES = 256 * 1024 * 1024
/** Bytes received between two looks at the filesystem's free space (a statfs costs microseconds). */
export const DISK_CHECK_BYTES = 4 * 1024 * 1024

export interface StoreLimits {
  /** Free bytes to leave on the filesystem (default DEFAULT_MIN_FREE_BYTES; 0: no check). */
  minFreeBytes?: number
  /** Bytes between two checks of free space while receiving (default DISK_CHECK_BYTES). */
  diskCheckBytes?: number
}

export interface ReceiveResult {
  /** Bytes received and kept (the announced size). */
  bytes: number
}

/** A stored layer opened for reading: its size as stored, and its bytes. */
export interface StoredLayer {
  size: number
  stream: Readable
}

/** What a partial layer's record says: its bytes [0, offset) hash to `prefix` (sha256 hex). */
interface PartialRecord { diffId: string, size: number, offset: number, prefix: string }

/**
 * A receive a sender continues from `offset` (LayerStore.resumable): call `receive` with the bytes
 * from there on, or `release` when none will come; either ends it.
 */
export interface ResumableReceive {
  /** Bytes of the layer already here, verified against the partial's record: the sender starts there. */
  offset: number
  /** Why a kept partial was thrown away (absent: there was none, or it was used). */
  discarded?: string
  receive: (rest: AsyncIterable<Uint8Array>, signal?: AbortSignal) => Promise<ReceiveResult>
  release: () => void
}

/** The hex part of a diff ID; TransferError when it is not `sha256:<64 hex>`. */
export function diffIdHex (diffId: string): string {
  const m = DIFF_ID.exec(diffId)
  if (m === null) throw new TransferError(`not a layer diff ID: '${String(diffId).slice(0, 80)}'`)
  return m[1]
}

export type Durability = 'disk' | 'boot'

export class LayerStore {
  private readonly minFreeBytes: number
  private readonly diskCheckBytes: number
  /** Resumable receives under way, by hex: a newer one for the same layer stops the older first. */
  private readonly resuming = new Map<string, { stop: AbortController, settled: Promise<void> }>()

  private constructor (readonly dir: string, readonly durability: Durability, limits: StoreLimits) {
    this.minFreeBytes = limits.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES
    this.diskCheckBytes = limits.diskCheckBytes ?? DISK_CHECK_BYTES
  }

  /**
   * Opens (creating it if needed) the store in `dir`, dropping unverified leftovers of a crash and,
   * for a 'boot' store, every layer kept before the machine last booted.
   */
  static async open (dir: string, opts: { durability?: Durability } & StoreLimits = {}): Promise<LayerStore> {
    const durability = opts.durability ?? 'disk'
    await mkdir(dir, { recursive: true, mode: 0o700 })
    await rm(join(dir, INCOMING), { recursive: true, force: true })
    await mkdir(join(dir, INCOMING), { mode: 0o700 })
    await mkdir(join(dir, PARTIAL), { recursive: true, mode: 0o700 })
    const store = new LayerStore(dir, durability, opts)
    if (durability === 'boot') {
      const boot = (await readFile(BOOT_ID_PATH, 'utf8')).trim()
      const recorded = await readFile(join(dir, BOOT_FILE), 'utf8').then(s => s.trim(), () => undefined)
      if (recorded !== boot) {
        await store.prune(new Set())
        await store.prunePartials(Infinity)
        await writeFile(join(dir, BOOT_FILE), `${boot}\n`, { mode: 0o600 })
      }
    }
    return store
  }

  private pathOf (diffId: string): string {
    return join(this.dir, `${diffIdHex(diffId)}.tar`)
  }

  /**
   * Streams one layer from `source` into the store, verifying it as it passes. Resolves when the
   * layer is verified and in place (durably, for a 'disk' store); rejects with LayerTooLargeError
   * (as soon as more than `announcedSize` bytes arrive, before they are written), LayerTruncatedError
   * (fewer bytes), LayerDigestMismatchError (sha256 is not `diffId`), the signal's reason on abort,
   * an error of the source as is when it is one of ours, or TransferError for anything else (disk
   * full, ...).
   * On any failure nothing of the layer is kept. Chunks are written after the next ones are pulled,
   * so the source must not reuse a chunk's memory once it yielded it (no Node stream or libp2p
   * stream does).
   */
  async receive (diffId: string, announcedSize: number, source: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<ReceiveResult> {
    return await this.receiveChecked(diffIdHex(diffId), d => d === diffId, diffId, announcedSize, source, signal)
  }

  /**
   * Like `receive`, for a sender that cannot name the layer before it has read it (a `docker save`
   * stream names layers by path, not digest): the layer is kept under its own sha256 if that is one
   * of `candidates`, and refused with LayerDigestMismatchError otherwise. Returns the diff ID.
   */
  async receiveAny (candidates: ReadonlySet<string>, announcedSize: number, source: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<ReceiveResult & { diffId: string }> {
    let matched = ''
    const r = await this.receiveChecked(randomBytes(8).toString('hex'), d => { matched = d; return candidates.has(d) }, 'one of the expected layers', announcedSize, source, signal)
    return { ...r, diffId: matched }
  }

  /**
   * Starts a receive of layer `diffId` that continues a partial kept from an earlier one: its
   * record is checked and its prefix re-hashed; `offset` says where the sender must start (0 when
   * nothing usable was kept). A resumable receive of the same layer still under way (its sender
   * cut off but not yet noticed) is stopped first, and its last bytes recorded. What `receive`
   * then throws is what `receive` throws; on any failure but a refused layer (digest, size) the
   * bytes received stay kept for the next resume.
   */
  async resumable (diffId: string, announcedSize: number, signal?: AbortSignal): Promise<ResumableReceive> {
    const hex = diffIdHex(diffId)
    if (!Number.isSafeInteger(announcedSize) || announcedSize < 0) throw new TransferError(`layer ${diffId}: announced size ${announcedSize} is not a byte count`)
    const before = this.resuming.get(hex)
    if (before !== undefined) {
      before.stop.abort(new TransferError(`layer ${diffId}: a newer transfer of this layer resumes it`))
      await before.settled
    }
    const stop = new AbortController()
    let settle = (): void => {}
    const settled = new Promise<void>(resolve => { settle = resolve })
    const mine = { stop, settled }
    this.resuming.set(hex, mine)
    const end = (): void => {
      if (this.resuming.get(hex) === mine) this.resuming.delete(hex)
      settle()
    }
    let point: { offset: number, hash: Hash, discarded?: string }
    try {
      point = await this.resumePoint(hex, diffId, announcedSize, AbortSignal.any([stop.signal, ...signal === undefined ? [] : [signal]]))
    } catch (err) {
      end()
      throw err
    }
    let used = false
    return {
      offset: point.offset,
      ...point.discarded === undefined ? {} : { discarded: point.discarded },
      receive: async (rest, recvSignal) => {
        if (used) throw new TransferError(`layer ${diffId}: a resumable receive takes its bytes once`)
        used = true
        try {
          return await this.receivePartial(hex, diffId, announcedSize, point, rest, AbortSignal.any([stop.signal, ...recvSignal === undefined ? [] : [recvSignal]]))
        } finally {
          end()
        }
      },
      release: () => { if (!used) { used = true; end() } }
    }
  }

  private partialPaths (hex: string): { file: string, record: string } {
    return { file: join(this.dir, PARTIAL, `${hex}.tar`), record: join(this.dir, PARTIAL, `${hex}.json`) }
  }

  /** Where a resume of layer `hex` starts: the kept prefix re-hashed and matched to its record, or 0. */
  private async resumePoint (hex: string, diffId: string, size: number, signal: AbortSignal): Promise<{ offset: number, hash: Hash, discarded?: string }> {
    const paths = this.partialPaths(hex)
    const fresh = async (discarded?: string): Promise<{ offset: number, hash: Hash, discarded?: string }> => {
      await this.dropPartial(hex)
      return { offset: 0, hash: createHash('sha256'), ...discarded === undefined ? {} : { discarded } }
    }
    const text = await readFile(paths.record, 'utf8').catch(() => undefined)
    if (text === undefined) return await fresh()
    let rec: PartialRecord
    try {
      rec = parseRecord(JSON.parse(text))
    } catch {
      return await fresh('its record is unreadable')
    }
    if (rec.diffId !== diffId) return await fresh(`its record names ${rec.diffId}`)
    if (rec.size !== size) return await fresh(`it was of a layer of ${rec.size} bytes, this one is announced with ${size}`)
    if (rec.offset > size) return await fresh('its record is past the layer\'s end')
    const held = await stat(paths.file).then(s => s.size, () => -1)
    if (held < rec.offset) return await fresh(`its file holds ${Math.max(held, 0)} of the ${rec.offset} bytes recorded`)
    // Bytes written after the last record are not known good: cut them off.
    if (held > rec.offset) await truncate(paths.file, rec.offset)
    const hash = createHash('sha256')
    const fh = await open(paths.file, 'r')
    try {
      const buf = Buffer.allocUnsafe(REHASH_READ_BYTES)
      for (let pos = 0; pos < rec.offset;) {
        signal.throwIfAborted()
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.byteLength, rec.offset - pos), pos)
        if (bytesRead === 0) break
        hash.update(buf.subarray(0, bytesRead))
        pos += bytesRead
      }
    } finally {
      await fh.close()
    }
    if (hash.copy().digest('hex') !== rec.prefix) return await fresh('its bytes do not match its record')
    return { offset: rec.offset, hash }
  }

  private async receivePartial (hex: string, diffId: string, size: number, point: { offset: number, hash: Hash }, rest: AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<ReceiveResult> {
    signal.throwIfAborted()
    const paths = this.partialPaths(hex)
    await this.checkDisk(diffId, size - point.offset)
    const fh = await open(paths.file, point.offset === 0 ? 'w' : 'a', 0o600)
    let closed = false
    const writer = new WriteBehind(fh, WRITE_BEHIND_BYTES)
    const { hash } = point
    let bytes = point.offset
    let recorded = point.offset
    /** Bytes [0, bytes) are written (flushed): say so in the record. */
    const record = async (): Promise<void> => {
      await writer.flush()
      if (this.durability === 'disk') await fh.sync()
      const tmp = `${paths.record}.${randomBytes(4).toString('hex')}.tmp`
      await writeFile(tmp, JSON.stringify({ diffId, size, offset: bytes, prefix: hash.copy().digest('hex') } satisfies PartialRecord), { mode: 0o600 })
      await rename(tmp, paths.record)
      recorded = bytes
    }
    let keepPartial = true
    try {
      await this.pull(diffId, size, rest, signal, writer, hash, async n => {
        bytes = n
        if (bytes - recorded >= PARTIAL_RECORD_BYTES) await record()
      }, point.offset)
      await writer.flush()
      if (bytes < size) throw new LayerTruncatedError(`layer ${diffId}: ended after ${bytes} of the announced ${size} bytes`)
      const actual = `sha256:${hash.digest('hex')}`
      if (actual !== diffId) {
        keepPartial = false
        throw new LayerDigestMismatchError(`layer ${diffId}: received ${bytes} bytes (${point.offset} of them kept from an earlier transfer) whose sha256 is ${actual}`)
      }
      signal.throwIfAborted()
      if (this.durability === 'disk') await fh.sync()
      closed = true
      await fh.close()
      await rename(paths.file, this.pathOf(diffId))
      keepPartial = false
      await rm(paths.record, { force: true })
      if (this.durability === 'disk') await syncDir(this.dir)
      return { bytes: bytes - point.offset }
    } catch (err) {
      if (err instanceof LayerTooLargeError) keepPartial = false
      if (keepPartial && bytes > recorded) {
        // The bytes that came are good so far: record them for the next resume (unless the disk failed).
        await record().catch(() => { keepPartial = false })
      }
      if (signal.aborted) throw signal.reason
      if (err instanceof GotoError) throw err
      throw new TransferError(`layer ${diffId}: receiving failed: ${(err as Error).message}`, { cause: err })
    } finally {
      await writer.settled()
      if (!closed) await fh.close().catch(() => {})
      if (!keepPartial) await this.dropPartial(hex).catch(() => {})
    }
  }

  private async dropPartial (hex: string): Promise<void> {
    const paths = this.partialPaths(hex)
    await rm(paths.record, { force: true })
    await rm(paths.file, { force: true })
  }

  /**
   * Bytes kept of a partial layer a sender may continue (the last record's offset; 0 when none).
   * A hint only: `resumable` checks the bytes before it uses them.
   */
  async partialBytes (diffId: string): Promise<number> {
    const text = await readFile(this.partialPaths(diffIdHex(diffId)).record, 'utf8').catch(() => undefined)
    if (text === undefined) return 0
    try { return parseRecord(JSON.parse(text)).offset } catch { return 0 }
  }

  /** Removes partial layers not touched for `olderThanMs` (Infinity: all), except those being received; returns their diff IDs. */
  async prunePartials (olderThanMs: number, now = Date.now()): Promise<string[]> {
    const removed = new Set<string>()
    for (const n of await readdir(join(this.dir, PARTIAL)).catch(() => [] as string[])) {
      const m = PARTIAL_FILE.exec(n)
      if (m === null) { await rm(join(this.dir, PARTIAL, n), { force: true }); continue }
      if (this.resuming.has(m[1])) continue
      const st = await stat(join(this.dir, PARTIAL, n)).catch(() => undefined)
      if (st === undefined) continue
      if (olderThanMs === Infinity || now - st.mtimeMs > olderThanMs) {
        await rm(join(this.dir, PARTIAL, n), { force: true })
        removed.add(`sha256:${m[1]}`)
      }
    }
    return [...removed].sort()
  }

  private async receiveChecked (tmpName: string, accept: (actual: string) => boolean, diffId: string, announcedSize: number, source: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<ReceiveResult> {
    const hex = tmpName
    if (!Number.isSafeInteger(announcedSize) || announcedSize < 0) {
      throw new TransferError(`layer ${diffId}: announced size ${announcedSize} is not a byte count`)
    }
    signal?.throwIfAborted()
    await this.checkDisk(diffId, announcedSize)
    const tmp = join(this.dir, INCOMING, `${hex}.${randomBytes(6).toString('hex')}.partial`)
    const fh = await open(tmp, 'wx', 0o600)
    let closed = false
    let kept = false
    // Disk, CPU and network overlap: chunks are written behind the hashing, batched.
    const writer = new WriteBehind(fh, WRITE_BEHIND_BYTES)
    try {
      const hash = createHash('sha256')
      const bytes = await this.pull(diffId, announcedSize, source, signal, writer, hash)
      await writer.flush()
      if (bytes < announcedSize) {
        throw new LayerTruncatedError(`layer ${diffId}: ended after ${bytes} of the announced ${announcedSize} bytes`)
      }
      const actual = `sha256:${hash.digest('hex')}`
      if (!accept(actual)) {
        throw new LayerDigestMismatchError(`layer ${diffId}: received ${bytes} bytes whose sha256 is ${actual}`)
      }
      signal?.throwIfAborted()
      if (this.durability === 'disk') await fh.sync()
      closed = true
      await fh.close()
      await rename(tmp, this.pathOf(actual))
      kept = true
      if (this.durability === 'disk') await syncDir(this.dir)
      return { bytes }
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason
      if (err instanceof GotoError) throw err
      throw new TransferError(`layer ${diffId}: receiving failed: ${(err as Error).message}`, { cause: err })
    } finally {
      await writer.settled()
      if (!closed) await fh.close().catch(() => {})
      if (!kept) await rm(tmp, { force: true }).catch(() => {})
    }
  }

  /**
   * Hashes and queues for the disk every chunk of `source`, the layer's bytes after the `from`
   * already held; LayerTooLargeError the moment they would pass `size`, InsufficientDiskError when
   * the disk runs short. `held` hears the bytes held after each chunk. Returns the bytes held.
   */
  private async pull (diffId: string, size: number, source: AsyncIterable<Uint8Array>, signal: AbortSignal | undefined, writer: WriteBehind, hash: Hash, held?: (bytes: number) => Promise<void>, from = 0): Promise<number> {
    let bytes = from
    let unchecked = 0
    for await (const chunk of abortable(source, signal)) {
      if (bytes + chunk.byteLength > size) throw new LayerTooLargeError(`layer ${diffId}: more than the announced ${size} bytes arrived`)
      unchecked += chunk.byteLength
      if (unchecked >= this.diskCheckBytes) {
        unchecked = 0
        await this.checkDisk(diffId, size - bytes, writer.queued)
      }
      hash.update(chunk)
      bytes += chunk.byteLength
      await writer.push(chunk)
      await held?.(bytes)
    }
    return bytes
  }

  /**
   * InsufficientDiskError when writing `coming` more bytes (plus `queued` not yet written) would
   * take the filesystem's free space below minFreeBytes.
   */
  private async checkDisk (diffId: string, coming: number, queued = 0): Promise<void> {
    if (this.minFreeBytes <= 0) return
    const fs = await statfs(this.dir)
    const free = fs.bavail * fs.bsize - queued
    if (free - coming < this.minFreeBytes) {
      throw new InsufficientDiskError(`layer ${diffId}: ${Math.floor(free / 2 ** 20)} MiB free at ${this.dir}, ${Math.ceil(coming / 2 ** 20)} MiB still to come, ${Math.round(this.minFreeBytes / 2 ** 20)} MiB must stay free`)
    }
  }

  /** True when the verified layer is in the store. */
  async has (diffId: string): Promise<boolean> {
    return await this.size(diffId) !== undefined
  }

  /** Size in bytes of the stored layer, or undefined when it is not in the store. */
  async size (diffId: string): Promise<number | undefined> {
    try {
      const s = await stat(this.pathOf(diffId))
      return s.isFile() ? s.size : undefined
    } catch (err) {
      if (isNotFound(err)) return undefined
      throw err
    }
  }

  /**
   * Opens a stored layer for reading; the size comes from the same open file as the bytes, so they
   * agree even if the layer is removed meanwhile. LayerMissingError when it is not in the store.
   */
  async open (diffId: string): Promise<StoredLayer> {
    let fh: FileHandle
    try {
      fh = await open(this.pathOf(diffId), 'r')
    } catch (err) {
      if (isNotFound(err)) throw new LayerMissingError(`layer ${diffId} is not in the store at ${this.dir}`, { cause: err })
      throw err
    }
    try {
      const { size } = await fh.stat()
      return { size, stream: fh.createReadStream({ autoClose: true }) }
    } catch (err) {
      await fh.close().catch(() => {})
      throw err
    }
  }

  /** Removes a layer; true when it was there. */
  async remove (diffId: string): Promise<boolean> {
    const path = this.pathOf(diffId)
    try {
      await rm(path)
      return true
    } catch (err) {
      if (isNotFound(err)) return false
      throw err
    }
  }

  /** The diff IDs of the stored layers, sorted. */
  async list (): Promise<string[]> {
    const names = await readdir(this.dir)
    return names.flatMap(n => {
      const m = LAYER_FILE.exec(n)
      return m === null ? [] : [`sha256:${m[1]}`]
    }).sort()
  }

  /** Removes every stored layer whose diff ID is not in `keep`; returns the removed diff IDs. */
  async prune (keep: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = []
    for (const d of await this.list()) {
      if (!keep.has(d) && await this.remove(d)) removed.push(d)
    }
    return removed
  }
}

/**
 * Writes chunks to a file in order, behind the caller: a chunk pushed while a write is in flight
 * waits in a queue, and the whole queue goes in the next write (one writev). So the number of
 * writes follows the disk's pace, not the number of chunks — one small write per network frame,
 * each waiting for a thread-pool turn, crawled on a busy machine. `push` waits only while more
 * than `limit` bytes are queued or being written; that bound is the memory this costs.
 */
class WriteBehind {
  private queue: Uint8Array[] = []
  private pending = 0
  private inFlight: Promise<void> | undefined
  private failure: { error: unknown } | undefined
  private wakeUp: (() => void) | undefined

  constructor (private readonly fh: FileHandle, private readonly limit: number) {}

  /** Bytes pushed and not yet written. */
  get queued (): number { return this.pending }

  /** Queues the chunk (the caller must not change it afterwards); rejects with an earlier write's error. */
  async push (chunk: Uint8Array): Promise<void> {
    this.check()
    this.queue.push(chunk)
    this.pending += chunk.byteLength
    this.pump()
    while (this.pending > this.limit && this.failure === undefined) await new Promise<void>(resolve => { this.wakeUp = resolve })
    this.check()
  }

  /** Resolves once everything pushed is written; rejects with the first write error. */
  async flush (): Promise<void> {
    for (;;) {
      this.check()
      if (this.inFlight === undefined) {
        if (this.queue.length === 0) return
        this.pump()
      }
      await this.inFlight
    }
  }

  /** Waits for the write in flight, whatever its outcome (before closing the file). */
  async settled (): Promise<void> {
    this.queue = []
    await this.inFlight
  }

  private check (): void {
    if (this.failure !== undefined) throw this.failure.error
  }

  private pump (): void {
    if (this.inFlight !== undefined || this.queue.length === 0 || this.failure !== undefined) return
    const batch = this.queue
    this.queue = []
    const bytes = batch.reduce((n, c) => n + c.byteLength, 0)
    this.inFlight = writevAll(this.fh, batch).then(() => {
      this.pending -= bytes
      this.inFlight = undefined
      this.pump()
    }, (error: unknown) => {
      this.failure = { error }
      this.inFlight = undefined
    }).finally(() => {
      const wake = this.wakeUp
      this.wakeUp = undefined
      wake?.()
    })
  }
}

/** fh.writev may write less than asked; loop until every byte of `chunks` is on its way to disk. */
async function writevAll (fh: FileHandle, chunks: Uint8Array[]): Promise<void> {
  let rest = chunks
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest)
    let skip = bytesWritten
    while (rest.length > 0 && skip >= rest[0].byteLength) {
      skip -= rest[0].byteLength
      rest = rest.slice(1)
    }
    if (skip > 0) rest = [rest[0].subarray(skip), ...rest.slice(1)]
  }
}

function parseRecord (v: unknown): PartialRecord {
  const r = v as Partial<PartialRecord> | null
  if (r === null || typeof r !== 'object' || typeof r.diffId !== 'string' || typeof r.prefix !== 'string' || !/^[0-9a-f]{64}$/.test(r.prefix) ||
    !Number.isSafeInteger(r.size) || !Number.isSafeInteger(r.offset) || (r.offset as number) < 0) throw new TransferError('malformed partial-layer record')
  return r as PartialRecord
}

/** fsync of a directory, so a rename in it survives a crash. */
async function syncDir (dir: string): Promise<void> {
  const d = await open(dir, 'r')
  try {
    await d.sync()
  } finally {
    await d.close()
  }
}

function isNotFound (err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT'
}

/**
 * Iterates `source` but rejects with the signal's reason as soon as it aborts, even while the
 * source is waiting for data; an abandoned source is told to stop (`return()`), not awaited. One
 * listener per pending read (a long-lived abort promise raced against every read would keep every
 * chunk reachable until the end).
 */
async function * abortable<T> (source: AsyncIterable<T>, signal: AbortSignal | undefined): AsyncGenerator<T> {
  if (signal === undefined) {
    yield * source
    return
  }
  const it = source[Symbol.asyncIterator]()
  let finished = false
  try {
    for (;;) {
      signal.throwIfAborted()
      const r = await new Promise<IteratorResult<T>>((resolve, reject) => {
        const onAbort = (): void => { reject(signal.reason) }
        signal.addEventListener('abort', onAbort, { once: true })
        it.next().then(
          v => { signal.removeEventListener('abort', onAbort); resolve(v) },
          e => { signal.removeEventListener('abort', onAbort); reject(e) }
        )
      })
      if (r.done === true) {
        finished = true
        return
      }
      yield r.value
    }
  } finally {
    if (!finished) Promise.resolve(it.return?.()).catch(() => {})
  }
}
