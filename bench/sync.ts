/**
 * Tree sync benchmarks (issue 16), no lab: the source half runs in this process, the destination
 * in a child process (bench/sync-peer.ts, as two agents would), over a loopback TCP connection (a
 * real stream pair, with the kernel's buffers and backpressure), against a baseline measured in the
 * same run on the same tree:
 *   1. first full copy of a ~2 GiB tree (a few large files, a few thousand small ones)
 *      vs `tar c | tar x` of it between two directories, run before and after the sync (the
 *      mean of the two: the load of a shared machine drifts)             (target ≤ 1.2×)
 *   2. an incremental round after a 1 MiB change in a large file: bytes sent and time vs the full copy
 *   3. RSS growth of each side's process during the full copy (target < 64 MiB)
 * The tree is generated under the system's temporary directory and removed afterwards; the section
 * is skipped, saying so, when less than SYNC_BENCH_MIN_FREE_GIB is free there.
 * `GOTO_BENCH_SYNC_MIB` sets the tree's size (default 2048) for quicker runs while profiling, and
 * `GOTO_BENCH_SYNC_PEER_ARGS` Node options for the destination's process (`--cpu-prof ...`).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, mkdtemp, open, rm, statfs } from 'node:fs/promises'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { HashCache, NO_XATTRS, attrTools, syncSource, type SyncResult, type XattrAccess } from '../agent/sync/index.js'
import { RSS_SAMPLE_MS, socketDuplex } from './sync-socket.js'

const MiB = 1024 * 1024
/** Source tree, tar's copy and the sync's copy with its staging of one changed large file, with room to spare. */
const SYNC_BENCH_MIN_FREE_GIB = 6
const TARGET_RATIO = 1.2
const TARGET_RSS_MIB = 64
const SMALL_FILES = 3000
const SMALL_BYTES = 64 * 1024
const SMALL_PER_DIR = 100
const LARGE_FILES = 4

const fmt = (n: number, d = 1): string => n.toFixed(d)

/**
 * The destination agent in a process of its own (bench/sync-peer.ts), as on another host; each
 * `round` has it connect to our listener, and runs the source half here on that connection.
 */
class Peer {
  private readonly child: ChildProcess
  private readonly lines: AsyncIterator<string>

  private constructor (private readonly server: Server, live: string, xattrs: boolean) {
    const port = (server.address() as AddressInfo).port
    this.child = spawn(process.execPath, [...(process.env.GOTO_BENCH_SYNC_PEER_ARGS ?? '').split(' ').filter(a => a !== ''), join(dirname(fileURLToPath(import.meta.url)), 'sync-peer.js'), String(port), live, xattrs ? 'xattrs' : ''], { stdio: ['pipe', 'pipe', 'inherit'] })
    this.lines = createInterface({ input: this.child.stdout as NodeJS.ReadableStream })[Symbol.asyncIterator]()
  }

  static async start (live: string, xattrs: boolean): Promise<Peer> {
    const server = createServer({ allowHalfOpen: true })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    return new Peer(server, live, xattrs)
  }

  async round (src: string, xattrs: XattrAccess, cache: HashCache): Promise<Round> {
    const accepted = once(this.server, 'connection') as Promise<[Socket]>
    const start = performance.now()
    this.child.stdin?.write('go\n')
    const [socket] = await accepted
    const rss0 = process.memoryUsage.rss()
    let rssMax = rss0
    const sampler = setInterval(() => { rssMax = Math.max(rssMax, process.memoryUsage.rss()) }, RSS_SAMPLE_MS)
    try {
      await syncSource(src, socketDuplex(socket), { signal: AbortSignal.timeout(600_000), xattrs, hashCache: cache })
      const line = await this.lines.next()
      const ms = performance.now() - start
      if (line.done === true) throw new Error('the destination process ended without its result')
      const peer = JSON.parse(line.value) as { result: SyncResult, rssGrowth: number, bytesRead: number }
      rssMax = Math.max(rssMax, process.memoryUsage.rss())
      return { ms, result: peer.result, wireBytes: peer.bytesRead, sourceRssGrowthMiB: (rssMax - rss0) / MiB, destinationRssGrowthMiB: peer.rssGrowth / MiB }
    } finally {
      clearInterval(sampler)
      socket.destroy()
    }
  }

  async stop (): Promise<void> {
    this.child.stdin?.end()
    if (this.child.exitCode === null) await once(this.child, 'exit')
    this.server.close()
  }
}

interface Round { ms: number, result: SyncResult, wireBytes: number, sourceRssGrowthMiB: number, destinationRssGrowthMiB: number }

/** Files of distinct blocks, cheaply: one random MiB with a counter stamped into each 4 KiB. */
export async function generateTree (root: string, totalMiB: number): Promise<{ large: string[] }> {
  const smallMiB = SMALL_FILES * SMALL_BYTES / MiB
  const largeMiB = Math.max(1, Math.floor((totalMiB - smallMiB) / LARGE_FILES))
  const pattern = Buffer.alloc(MiB)
  for (let i = 0; i < MiB; i += 4) pattern.writeUInt32LE((Math.random() * 0xffffffff) >>> 0, i)
  let counter = 0
  const fill = (buf: Buffer): void => {
    pattern.copy(buf)
    for (let off = 0; off < buf.byteLength; off += 4096) buf.writeUInt32LE(counter++ >>> 0, off)
  }
  const buf = Buffer.alloc(MiB)
  const large: string[] = []
  await mkdir(join(root, 'large'), { recursive: true })
  for (let f = 0; f < LARGE_FILES; f++) {
    const path = join(root, 'large', `blob-${f}.bin`)
    large.push(path)
    const fh = await open(path, 'w')
    try {
      for (let m = 0; m < largeMiB; m++) { fill(buf); await fh.write(buf, 0, MiB) }
    } finally { await fh.close() }
  }
  for (let i = 0; i < SMALL_FILES; i++) {
    const dir = join(root, 'small', `d${Math.floor(i / SMALL_PER_DIR)}`)
    if (i % SMALL_PER_DIR === 0) await mkdir(dir, { recursive: true })
    fill(buf)
    const fh = await open(join(dir, `f${i}`), 'w')
    try { await fh.write(buf, 0, SMALL_BYTES) } finally { await fh.close() }
  }
  return { large }
}

async function exec (cmd: string, args: string[]): Promise<void> {
  const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] })
  const [code] = await once(p, 'exit') as [number]
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code}`)
}

/** `tar -C src -c . | tar -C dst -x`; milliseconds. */
async function tarCopy (src: string, dst: string): Promise<number> {
  await mkdir(dst)
  const start = performance.now()
  const c = spawn('tar', ['-C', src, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const x = spawn('tar', ['-C', dst, '-xf', '-'], { stdio: ['pipe', 'ignore', 'inherit'] })
  c.stdout.pipe(x.stdin)
  const [[cc], [xc]] = await Promise.all([once(c, 'exit'), once(x, 'exit')]) as [[number], [number]]
  if (cc !== 0 || xc !== 0) throw new Error(`tar exited ${cc} / ${xc}`)
  return performance.now() - start
}

/** Flushes the written data of the file system under `dir`, so one run's writeback does not slow the next. */
async function flush (dir: string): Promise<void> {
  await exec('sync', ['-f', dir])
}

export async function syncBench (): Promise<Record<string, unknown>> {
  const totalMiB = Number(process.env.GOTO_BENCH_SYNC_MIB ?? 2048)
  const fs = await statfs(tmpdir())
  const freeGiB = fs.bavail * fs.bsize / 2 ** 30
  const needGiB = SYNC_BENCH_MIN_FREE_GIB * totalMiB / 2048
  console.log(`\n== tree sync: first full copy of a ${totalMiB} MiB tree (${LARGE_FILES} large files, ${SMALL_FILES} × ${SMALL_BYTES / 1024} KiB), source and destination in two processes over loopback TCP, vs tar c | tar x; an incremental round after 1 MiB changed`)
  if (freeGiB < needGiB) {
    console.log(`   SKIPPED: ${fmt(freeGiB)} GiB free under ${tmpdir()}, the section needs ${fmt(needGiB)} GiB`)
    return { skipped: `${fmt(freeGiB)} GiB free, ${fmt(needGiB)} GiB needed` }
  }
  const work = await mkdtemp(join(tmpdir(), 'goto-syncbench-'))
  try {
    const src = join(work, 'src')
    const { large } = await generateTree(src, totalMiB)
    let xattrs: XattrAccess = NO_XATTRS
    try { xattrs = await attrTools() } catch { console.log('   (no attr tools: xattrs not read)') }
    await flush(work)

    // The baseline before and after the sync (its mean is the ratio's): the machine's load drifts.
    const tarRun = async (): Promise<number> => {
      const ms = await tarCopy(src, join(work, 'tar'))
      await rm(join(work, 'tar'), { recursive: true, force: true })
      await flush(work)
      return ms
    }
    const tarBefore = await tarRun()

    const cache = new HashCache()
    const live = join(work, 'dst', 'volume')
    await mkdir(dirname(live))
    const peer = await Peer.start(live, xattrs !== NO_XATTRS)
    let full: Round
    let incr: Round
    try {
      full = await peer.round(src, xattrs, cache)
      await flush(work)
      // 1 MiB written in the middle of a large file, across a block boundary (two blocks change).
      const fh = await open(large[0], 'r+')
      try { await fh.write(Buffer.alloc(MiB, 0x5a), 0, MiB, 10 * MiB + MiB / 2) } finally { await fh.close() }
      incr = await peer.round(src, xattrs, cache)
    } finally {
      await peer.stop()
    }
    await rm(dirname(live), { recursive: true, force: true })
    await flush(work)
    const tarAfter = await tarRun()
    const tarMs = (tarBefore + tarAfter) / 2
    const rssGrowth = Math.max(full.sourceRssGrowthMiB, full.destinationRssGrowthMiB)

    const ratio = full.ms / tarMs
    const results = {
      treeMiB: totalMiB,
      tarMs,
      tarBeforeMs: tarBefore,
      tarAfterMs: tarAfter,
      fullSyncMs: full.ms,
      ratio,
      fullWireMiB: full.wireBytes / MiB,
      fullResult: { ...full.result, changed: full.result.changed.length, gone: full.result.gone.length },
      incrementalMs: incr.ms,
      incrementalWireMiB: incr.wireBytes / MiB,
      incrementalBytesReceived: incr.result.bytesReceived,
      incrementalTimeRatio: incr.ms / full.ms,
      sourceRssGrowthMiB: full.sourceRssGrowthMiB,
      destinationRssGrowthMiB: full.destinationRssGrowthMiB
    }
    console.log(`   tar c | tar x ${fmt(tarMs / 1000, 2)} s (mean of ${fmt(tarBefore / 1000, 2)} s before and ${fmt(tarAfter / 1000, 2)} s after the sync); sync first full copy ${fmt(full.ms / 1000, 2)} s → ${fmt(ratio, 2)}x, target ≤ ${TARGET_RATIO}x ${ratio <= TARGET_RATIO ? 'met' : 'MISSED'}`)
    console.log(`   incremental after 1 MiB: ${fmt(incr.ms / 1000, 2)} s (${fmt(incr.ms / full.ms * 100)} % of the full copy), ${fmt(incr.result.bytesReceived / MiB, 2)} MiB of blocks, ${fmt(incr.wireBytes / MiB, 2)} MiB on the wire (full copy ${fmt(full.wireBytes / MiB)} MiB)`)
    console.log(`   RSS growth during the full copy: source ${fmt(full.sourceRssGrowthMiB)} MiB, destination ${fmt(full.destinationRssGrowthMiB)} MiB, target < ${TARGET_RSS_MIB} MiB ${rssGrowth < TARGET_RSS_MIB ? 'met' : 'MISSED'}`)
    return results
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}
