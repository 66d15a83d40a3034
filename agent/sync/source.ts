/**
 * The source half of a tree sync: describes the tree at `root` (each entry, then for regular files
 * their block hashes), then answers the destination's WANT frames with the blocks it lacks, and
 * returns the destination's result. A block read again for sending that no longer hashes to what
 * the manifest said (a running container wrote it meanwhile) goes with its new hash (CHANGED); a
 * file that is gone or replaced by another inode goes as GONE and the destination leaves it out.
 * Either way every byte the destination keeps matches a hash the source sent for it.
 */
import type { BigIntStats } from 'node:fs'
import { join } from 'node:path'
import { ProtocolError, SyncLimitError, fromWireError, type WireError } from '../../protocol/errors.js'
import { entryToWire, splitRdev, type SyncEntry } from './entry.js'
import { blockLength, hashFileSettled, openSameStat, readAt, sameStat, sha256, walkTree, type Hashed, type HashCache, type WalkEntry } from './tree.js'
import {
  BLOCK_CHANGED, BLOCK_GONE, BLOCK_HEADER_BYTES, FRAME_BLOCK, FRAME_HASHES, FRAME_JSON, FRAME_WANT, FRAME_HEADER_BYTES, FrameReader, MAX_HASHES_PER_FRAME, MAX_SYNC_ENTRIES,
  Outbox, SYNC_BLOCK_BYTES, SYNC_WIRE_VERSION, frame, jsonFrame, parseJson, raceAbort, type ByteDuplex, type Frame
} from './wire.js'
import { NO_XATTRS, type XattrAccess } from './xattrs.js'

export interface SyncSourceOptions {
  signal: AbortSignal
  xattrs?: XattrAccess
  /** Kept by the caller between rounds of one tree: unchanged files are not hashed again. */
  hashCache?: HashCache
}

/** What the destination reported after it swapped the new tree in. */
export interface SyncResult {
  entries: number
  /** Regular files hard-linked unchanged from the destination's previous tree. */
  filesLinked: number
  /** Regular files written anew (from local blocks and blocks that travelled). */
  filesBuilt: number
  blocksReceived: number
  blocksLocal: number
  bytesReceived: number
  /** Files that changed at the source while they were sent (their newest blocks arrived). */
  changed: string[]
  /** Files gone from the source before their blocks were sent: not in the new tree. */
  gone: string[]
}

interface SourceFile { path: string, stat: BigIntStats, hashes: Buffer, settled: boolean }

/**
 * Files of one directory hashed at once: their opens, reads and closes overlap (a tree of small
 * files is mostly such round trips), and a few 1 MiB buffers each is all it holds.
 */
const HASH_CONCURRENCY = 4

/** `fn` over `items` with at most `limit` running, results in order. */
async function * ordered<T, R> (items: T[], limit: number, fn: (item: T) => Promise<R>): AsyncGenerator<R> {
  const running: Array<Promise<R>> = []
  let next = 0
  while (next < items.length && running.length < limit) running.push(fn(items[next++]))
  try {
    while (running.length > 0) {
      const r = await (running.shift() as Promise<R>)
      if (next < items.length) running.push(fn(items[next++]))
      yield r
    }
  } finally {
    // Left early (an error): let what still runs finish, its failures already superseded.
    await Promise.allSettled(running)
  }
}

export async function syncSource (root: string, duplex: ByteDuplex, options: SyncSourceOptions): Promise<SyncResult> {
  const xattrs = options.xattrs ?? NO_XATTRS
  // The destination may refuse the tree at any point (a result with an error) while we write:
  // a reader of our own takes every frame as it comes and stops our writing at once.
  const local = new AbortController()
  const stop = (): void => { local.abort(options.signal.reason) }
  options.signal.addEventListener('abort', stop, { once: true })
  if (options.signal.aborted) stop()
  const signal = local.signal
  const out = new Outbox()
  const sinkDone = duplex.sink(out.frames())
  sinkDone.catch(() => {})
  const reader = new FrameReader(duplex.source)
  const inbox = new Inbox()
  let completed = false
  void (async () => {
    try {
      while (true) {
        const f = await reader.next(signal)
        if (f === undefined) break
        if (f.kind === FRAME_JSON) {
          const m = parseJson(f)
          if (m.t === 'result' && m.ok !== true) { local.abort(fromWireError(m.error as WireError)); break }
        }
        inbox.push(f)
      }
      inbox.end()
    } catch (err) {
      // The stream failed under us: stop the writer too (it may wait on backpressure that never eases).
      inbox.end(err)
      local.abort(err)
    }
  })()
  try {
    await out.send(jsonFrame({ t: 'hello', version: SYNC_WIRE_VERSION, blockSize: SYNC_BLOCK_BYTES }), signal)
    // Wire version 2: wants are answered while the manifest is still being sent.
    const files = new Map<number, SourceFile>()
    const serving = serveWants(files, inbox, out, signal)
    serving.catch((err: unknown) => { local.abort(err) })
    try {
      await sendManifest(root, out, xattrs, signal, files, options.hashCache)
    } catch (err) {
      await serving.catch(() => {})
      throw err
    }
    await serving
    const result = parseJson(await inbox.next(signal))
    if (result.t !== 'result') throw new ProtocolError(`expected the sync result, got ${String(result.t)}`)
    out.close()
    await sinkDone
    completed = true
    return result.stats as SyncResult
  } catch (err) {
    out.close(err)
    if (signal.aborted && !options.signal.aborted) throw signal.reason
    throw err
  } finally {
    options.signal.removeEventListener('abort', stop)
    local.abort()
    // An async generator's return() waits for its pending read: after a failure that read of the
    // caller's stream may end only once the caller aborts the stream, after we return. Not awaited then.
    const closing = reader.close().catch(() => {})
    if (completed) await closing
  }
}

/** Frames the reader took, for the writer's loop to handle in order. */
class Inbox {
  private readonly frames: Frame[] = []
  private ended = false
  private failure: unknown
  private wake: (() => void) | undefined

  push (f: Frame): void { this.frames.push(f); this.wake?.() }
  end (error?: unknown): void { this.ended = true; this.failure = error; this.wake?.() }

  async next (signal: AbortSignal): Promise<Frame> {
    while (true) {
      signal.throwIfAborted()
      const f = this.frames.shift()
      if (f !== undefined) return f
      if (this.ended) throw this.failure ?? new ProtocolError('sync stream ended early')
      await raceAbort(new Promise<void>(resolve => { this.wake = resolve }), signal)
      this.wake = undefined
    }
  }
}

/** Sends the manifest; each regular file that carries data goes into `files` before its entry is sent. */
async function sendManifest (root: string, out: Outbox, xattrs: XattrAccess, signal: AbortSignal, files: Map<number, SourceFile>, cache?: HashCache): Promise<void> {
  const groups = new Map<string, number>()
  let index = 0
  for await (const batch of walkTree(root, signal)) {
    const attrs = await xattrs.read(batch.map(e => e.at), signal)
    // The first name of each inode carries the data; later names (hard links) are members of its group.
    const seen = new Set<string>()
    const carries = (w: WalkEntry): boolean => {
      if (w.type !== 'file') return false
      const key = `${w.stat.dev}:${w.stat.ino}`
      if (w.stat.nlink > 1n && (groups.has(key) || seen.has(key))) return false
      seen.add(key)
      return true
    }
    const hash = async (w: WalkEntry): Promise<Hashed | undefined> => carries(w) ? await hashFileSettled(w.at, w.stat, signal, cache) : undefined
    let i = 0
    for await (let hashed of ordered(batch, HASH_CONCURRENCY, hash)) {
      const w = batch[i++]
      if (index >= MAX_SYNC_ENTRIES) throw new SyncLimitError(`tree has more than ${MAX_SYNC_ENTRIES} entries`)
      const st = w.stat
      const entry: SyncEntry = {
        path: w.path,
        type: w.type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: w.type === 'file' ? Number(st.size) : 0,
        mtimeNs: st.mtimeNs.toString(),
        xattrs: attrs.get(w.at) ?? {}
      }
      if (w.link !== undefined) entry.link = w.link
      if (w.type === 'char' || w.type === 'block') Object.assign(entry, splitRdev(st.rdev))
      let hashes: Buffer | undefined
      if (w.type === 'file') {
        const key = `${st.dev}:${st.ino}`
        const group = st.nlink > 1n ? groups.get(key) : undefined
        if (group !== undefined) entry.group = group
        else {
          // A name left to another of its inode's whose file was gone: this one carries the data.
          if (hashed === undefined && st.nlink > 1n) hashed = await hashFileSettled(w.at, st, signal, cache)
          if (hashed === undefined) continue // gone while we walked
          hashes = hashed.hashes
          files.set(index, { path: join(root, w.path), stat: st, hashes, settled: hashed.settled })
          if (st.nlink > 1n) {
            entry.group = groups.size
            groups.set(key, entry.group)
          }
        }
      }
      await out.send(jsonFrame(entryToWire(entry)), signal)
      if (hashes !== undefined) {
        for (let off = 0; off < hashes.byteLength; off += MAX_HASHES_PER_FRAME * 32) {
          await out.send(frame(FRAME_HASHES, hashes.subarray(off, off + MAX_HASHES_PER_FRAME * 32)), signal)
        }
      }
      index++
    }
  }
  await out.send(jsonFrame({ t: 'end', entries: index }), signal)
}

/**
 * Answers WANT frames in order. Each BLOCK frame is one buffer the block is read into in place
 * (header and, if it changed, its new hash before it): no copy between the disk and the stream.
 * A block of a file settled at hashing whose stat is still the same is sent without hashing it
 * again; the destination verifies every block against the manifest in any case.
 */
async function serveWants (files: Map<number, SourceFile>, inbox: Inbox, out: Outbox, signal: AbortSignal): Promise<void> {
  const gone = new Set<number>()
  while (true) {
    const f = await inbox.next(signal)
    if (f.kind !== FRAME_WANT) {
      const m = parseJson(f)
      if (m.t === 'wantEnd') return
      if (m.t === 'result') throw m.ok === true ? new ProtocolError('sync result before the wants ended') : fromWireError(m.error as WireError)
      throw new ProtocolError(`unexpected sync message ${String(m.t)} among wants`)
    }
    if (f.payload.byteLength < 4 || f.payload.byteLength % 4 !== 0) throw new ProtocolError('malformed WANT frame')
    const view = new DataView(f.payload.buffer, f.payload.byteOffset, f.payload.byteLength)
    const fileIndex = view.getUint32(0)
    const file = files.get(fileIndex)
    if (file === undefined) throw new ProtocolError(`WANT of entry ${fileIndex}, which is not a regular file with data`)
    if (gone.has(fileIndex)) continue
    const size = Number(file.stat.size)
    const opened = await openSameStat(file.path, file.stat)
    const fh = opened?.fh
    try {
      const trusted = opened !== undefined && file.settled && sameStat(opened.now, file.stat)
      for (let off = 4; off < f.payload.byteLength; off += 4) {
        signal.throwIfAborted()
        const block = view.getUint32(off)
        if (block * 32 >= file.hashes.byteLength) throw new ProtocolError(`WANT of block ${block} past the end of entry ${fileIndex}`)
        if (fh === undefined) {
          const header = Buffer.alloc(BLOCK_HEADER_BYTES)
          header.writeUInt32BE(fileIndex, 0)
          header.writeUInt32BE(block, 4)
          header[8] = BLOCK_GONE
          gone.add(fileIndex)
          await out.send(frame(FRAME_BLOCK, header), signal)
          break
        }
        // [room for the header if unchanged | frame header, block header, new hash if changed | data]
        const len = blockLength(size, block)
        const buf = Buffer.allocUnsafe(FRAME_HEADER_BYTES + BLOCK_HEADER_BYTES + 32 + len)
        const dataAt = FRAME_HEADER_BYTES + BLOCK_HEADER_BYTES + 32
        const got = await readAt(fh, buf.subarray(dataAt), len, block * SYNC_BLOCK_BYTES)
        buf.fill(0, dataAt + got, dataAt + len)
        const data = buf.subarray(dataAt)
        const expected = file.hashes.subarray(block * 32, block * 32 + 32)
        const hash = trusted ? expected : sha256(data)
        const changed = !hash.equals(expected)
        const start = changed ? 0 : 32
        buf[start] = FRAME_BLOCK
        buf.writeUInt32BE(buf.byteLength - start - FRAME_HEADER_BYTES, start + 1)
        buf.writeUInt32BE(fileIndex, start + FRAME_HEADER_BYTES)
        buf.writeUInt32BE(block, start + FRAME_HEADER_BYTES + 4)
        buf[start + FRAME_HEADER_BYTES + 8] = changed ? BLOCK_CHANGED : 0
        if (changed) hash.copy(buf, FRAME_HEADER_BYTES + BLOCK_HEADER_BYTES)
        await out.send(buf.subarray(start), signal)
      }
    } finally {
      await fh?.close()
    }
  }
}
