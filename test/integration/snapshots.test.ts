/**
 * Incremental failover snapshots in the lab (agent/failover/snapshot-store.ts versions, volumes
 * synced by difference against the holder's current version): three hosts with real engines and
 * agents (test timing profile: snapshots every 2 s, dead after 3 s). One protected container with
 * a 64 MiB volume; the scenarios run in order on it: a 1 MiB change sends about 1 MiB (the
 * owner's snapshot log and the holder's interface counters); the owner's agent killed while a
 * snapshot streams a large change leaves the holder's current version as it was, whole; the
 * owner's host killed, the holder restores that version with its data. after() tears the lab
 * down even when a test failed. GOTO_LAB_VERBOSE=1: the lab's steps, agents at debug level;
 * SNAP_SPOOL=1: agents with --volume-spool-only (every volume as a whole archive, as before
 * incremental snapshots), to compare the two on the same scenario.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { dockerCli as docker, runningNames } from '../fixtures/docker.js'
import { listTree, listingDifferences, type ListedEntry } from '../../agent/sync/index.js'
import type { AgentStatus, FailoverContainerRow, PeerRow } from '../../protocol/messages.js'

const run = promisify(execFile)
const MiB = 1024 * 1024
/** Generous next to the test profile (snapshots every 2 s, dead after 3 s): a loaded machine is slow, not wrong. */
const STATE_TIMEOUT_MS = 90_000
const SEGMENTS = 32
const SEGMENT_BYTES = 2 * MiB

/** A line of an agent's JSON log. */
interface LogLine { message?: string, container?: string, seq?: number, bytes?: number, volumeBytes?: number, changesBytes?: number, freezeMs?: number }

describe('incremental snapshots (3 hosts, real engines and agents)', function () {
  this.timeout(300_000)
  const lab = new Lab({ prefix: 'gotolabh', subnet: '10.213.45.0/24', agentArgs: () => [...process.env.GOTO_LAB_VERBOSE === undefined ? [] : ['--log-level', 'debug'], ...process.env.SNAP_SPOOL === undefined ? [] : ['--volume-spool-only']], log: line => { if (process.env.GOTO_LAB_VERBOSE !== undefined) console.log(`      lab: ${line}`) } })
  let hosts: LabHost[]
  let A: LabHost
  /** The replica holder of db (replicas: 1). */
  let H: LabHost
  /** The owner's volume as the last complete snapshot saw it (what a takeover must restore). */
  let lastSnapshotted: ListedEntry[]

  async function status (h: LabHost): Promise<AgentStatus | undefined> {
    const r = await lab.cli(['status', '--json'], { agent: h.agentAddr })
    return r.code === 0 ? JSON.parse(r.stdout) as AgentStatus : undefined
  }

  async function row (h: LabHost, name: string): Promise<FailoverContainerRow | undefined> {
    return (await status(h))?.failover?.containers.find(c => c.name === name)
  }

  async function snapshotAfter (owner: LabHost, name: string, after: number): Promise<FailoverContainerRow> {
    return await waitFor(async () => {
      const r = await row(owner, name)
      return r !== undefined && (r.snapshotSeq ?? 0) > after && r.holders.length > 0 ? r : undefined
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: `a snapshot of ${name} on ${owner.name} after seq ${after}` })
  }

  /** The 'snapshot taken' lines of `h`'s agent log for container `name`, by seq. */
  async function taken (h: LabHost, name: string): Promise<Map<number, LogLine>> {
    const out = new Map<number, LogLine>()
    for (const l of (await readFile(h.agentLog, 'utf8')).split('\n')) {
      if (!l.includes('"snapshot taken"')) continue
      try {
        const j = JSON.parse(l) as LogLine
        if (j.message === 'snapshot taken' && j.container === name && typeof j.seq === 'number') out.set(j.seq, j)
      } catch { /* a line cut by a kill */ }
    }
    return out
  }

  /** Bytes received on every interface of `h`'s namespace but loopback. */
  async function rxBytes (h: LabHost): Promise<number> {
    const { stdout } = await run('ip', ['-n', h.netns, '-j', '-s', 'link', 'show'])
    return (JSON.parse(stdout) as Array<{ ifname: string, stats64?: { rx?: { bytes?: number } } }>)
      .filter(l => l.ifname !== 'lo').reduce((n, l) => n + (l.stats64?.rx?.bytes ?? 0), 0)
  }

  async function mountpoint (h: LabHost, volume: string): Promise<string> {
    return await docker(h, 'volume', 'inspect', '-f', '{{.Mountpoint}}', volume)
  }

  /** A listing (type, mode, owner, size, link, sha256 of every entry) without the root's mtime (a restore makes the volume anew). */
  async function listing (dir: string): Promise<ListedEntry[]> {
    return (await listTree(dir, { signal: AbortSignal.timeout(60_000) })).map(e => e.path === '.' ? { ...e, mtimeNs: '0' } : e)
  }

  /** The holder's directory of db's versions, and the version CURRENT names. */
  async function heldVersion (): Promise<{ dir: string, version: string }> {
    const snaps = join(H.dir, 'state', 'snapshots')
    const entry = (await readdir(snaps)).find(n => n.endsWith('.db'))
    if (entry === undefined) throw new Error(`${H.name} holds no version of db`)
    const dir = join(snaps, entry)
    return { dir, version: (JSON.parse(await readFile(join(dir, 'CURRENT'), 'utf8')) as { version: string }).version }
  }

  /**
   * The holder's current version of db and a listing of its volume, read while snapshots go on
   * every 2 s: a read the next snapshot cut (its version replaced, the old one removed) is read
   * again. `versions`: the directory's entries at that moment.
   */
  async function currentVersion (): Promise<{ dir: string, version: string, entries: ListedEntry[], versions: string[] }> {
    return await waitFor(async () => {
      try {
        const { dir, version } = await heldVersion()
        const entries = await listing(join(dir, version, 'volumes', 'dbdata'))
        const versions = (await readdir(dir)).sort()
        return (await heldVersion()).version === version ? { dir, version, entries, versions } : undefined
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
        throw err
      }
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 50, what: `a read of ${H.name}'s current version of db not cut by the next snapshot` })
  }

  /** Overwrites `bytes` of segment `i` of the owner's volume at `offset`, from this machine (no exec: a snapshot is not put off). */
  async function overwrite (i: number, offset: number, bytes: number): Promise<void> {
    const fh = await open(join(await mountpoint(A, 'dbdata'), `seg-${i}`), 'r+')
    try { await fh.write(randomBytes(bytes), 0, bytes, offset) } finally { await fh.close() }
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    hosts = await lab.up(3)
    A = hosts[0]
    for (const h of hosts) {
      await waitFor(async () => {
        const r = await lab.cli(['peers', '--json'], { agent: h.agentAddr })
        return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).filter(p => p.state === 'alive').length === hosts.length
      }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `every member alive at ${h.name}` })
    }
  })

  afterEach(async function () {
    if (this.currentTest?.state !== 'failed') return
    // What the agents said of snapshots, for the failure's reader (the lab goes at the end).
    for (const h of hosts ?? []) {
      const lines = (await readFile(h.agentLog, 'utf8').catch(() => '')).split('\n').filter(l => /snapshot |volume round|rolled back|not stored|failed|refused|dead/.test(l))
      console.log(`      ${h.name}: db ${await run('/usr/bin/docker', ['-H', h.dockerHost, 'inspect', '-f', '{{.State.Status}}', 'db'], { timeout: 10_000 }).then(r => r.stdout.trim(), (e: Error) => e.message.slice(0, 200))}`)
      console.log(`      ${h.name} agent log:\n${lines.slice(-15).map(l => `        ${l.slice(0, 600)}`).join('\n')}`)
    }
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('after a 1 MiB change of a 64 MiB volume, the next snapshot sends about 1 MiB', async () => {
    await docker(A, 'volume', 'create', 'dbdata')
    const data = await mountpoint(A, 'dbdata')
    for (let i = 0; i < SEGMENTS; i++) await writeFile(join(data, `seg-${i}`), randomBytes(SEGMENT_BYTES))
    await docker(A, 'run', '-d', '--name', 'db', '-l', 'goto.protect=true', '-v', 'dbdata:/var/db', 'gotolab/base:latest', 'sleep', '1000000')
    const first = await snapshotAfter(A, 'db', 0)
    H = hosts.find(h => h.name === first.holders[0]) as LabHost
    expect(H.name).to.not.equal(A.name)
    const firstLog = [...(await taken(A, 'db')).entries()].sort((x, y) => x[0] - y[0])[0]?.[1]
    expect(firstLog?.volumeBytes, 'the first snapshot: the whole volume').to.be.at.least(SEGMENTS * SEGMENT_BYTES)
    // A quiet one: nothing changed, nothing of the volume travels.
    const quiet = await snapshotAfter(A, 'db', first.snapshotSeq as number)
    expect((await taken(A, 'db')).get(quiet.snapshotSeq as number)?.volumeBytes).to.be.below(64 * 1024)

    // One aligned 1 MiB block of one segment changes, once.
    const rx0 = await rxBytes(H)
    const seqBefore = (await row(A, 'db'))?.snapshotSeq as number
    await overwrite(7, MiB, MiB)
    const seqAt = (await row(A, 'db'))?.snapshotSeq as number
    // The snapshot that started after the write holds it (one under way at the write may have, too).
    const after = await snapshotAfter(A, 'db', seqAt)
    const rx1 = await rxBytes(H)
    const log = await taken(A, 'db')
    let volumeBytes = 0
    let bytes = 0
    for (let s = seqBefore + 1; s <= (after.snapshotSeq as number); s++) {
      volumeBytes += log.get(s)?.volumeBytes ?? 0
      bytes += log.get(s)?.bytes ?? 0
    }
    expect(volumeBytes, 'the changed block, sent once').to.be.within(MiB, 2 * MiB)
    expect(bytes, 'with the changes layers: about 1 MiB').to.be.below(3 * MiB)
    expect(rx1 - rx0, "bytes on the holder's interface over those snapshots").to.be.within(MiB, 4 * MiB)

    // The holder's current version is the owner's volume, byte- and metadata-identical.
    lastSnapshotted = await listing(await mountpoint(A, 'dbdata'))
    const held = await currentVersion()
    expect(listingDifferences(lastSnapshotted, held.entries)).to.deep.equal([])
    expect(held.versions, 'one version kept').to.deep.equal(['CURRENT', held.version])
  })

  it("the owner's agent killed while a snapshot streams a large change: the holder's current version stays, whole", async () => {
    // Just after a snapshot completed (the next starts a full interval after this one started).
    const seq = (await row(A, 'db'))?.snapshotSeq as number
    await snapshotAfter(A, 'db', seq)
    lastSnapshotted = (await currentVersion()).entries
    // 48 MiB changed, put in place by renames (milliseconds: written in place, a snapshot taken
    // during the writing would hold part of it, and complete before the large one is cut off).
    // Snapshots without a change may replace the version meanwhile; its content stays.
    const volume = await mountpoint(A, 'dbdata')
    const aside = join(volume, '..', 'test-aside')
    await mkdir(aside)
    for (let i = 0; i < 24; i++) await writeFile(join(aside, `seg-${i}`), randomBytes(SEGMENT_BYTES))
    for (let i = 0; i < 24; i++) await rename(join(aside, `seg-${i}`), join(volume, `seg-${i}`))
    await rm(aside, { recursive: true })
    const incoming = join(H.dir, 'state', 'snapshots', '.incoming')
    // A round is building its staging copy of the volume in the holder's next version.
    await waitFor(async () => {
      for (const t of await readdir(incoming).catch(() => [] as string[])) {
        if ((await readdir(join(incoming, t, 'volumes')).catch(() => [] as string[])).some(n => n.startsWith('.dbdata.sync-'))) return true
      }
      return false
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 10, what: `a snapshot round of db streaming into ${H.name}` })
    await lab.killAgent(A.name)
    const now = await currentVersion()
    expect(listingDifferences(lastSnapshotted, now.entries), 'CURRENT still names a version without the cut-off change, whole').to.deep.equal([])
    expect(now.versions, 'the only version kept').to.deep.equal(['CURRENT', now.version])
    // The holder drops the cut-off assembly when the transfer goes silent (or a takeover ends it).
    await waitFor(async () => (await readdir(incoming)).length === 0, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${H.name} to drop the incomplete version` })
  })

  it("the owner's host killed (its agent is gone already): the holder restores the newest complete version, with its data", async () => {
    await lab.kill(A.name)
    const restored = await waitFor(async () => {
      for (const h of hosts) {
        if (h === A || !(await runningNames(h)).includes('db')) continue
        const r = await row(h, 'db')
        if (r?.owner === h.name) return { host: h, row: r }
      }
      return undefined
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: 'db running again on a survivor' })
    expect(restored.host.name, 'restored by the one holder of its snapshot').to.equal(H.name)
    expect(restored.row.epoch).to.equal(2)
    // The volume as the last complete snapshot had it: the 1 MiB change in, the cut-off 48 MiB not.
    expect(listingDifferences(lastSnapshotted, await listing(await mountpoint(H, 'dbdata')))).to.deep.equal([])
    expect(await docker(H, 'exec', 'db', 'sh', '-c', `ls /var/db | wc -l`)).to.equal(String(SEGMENTS))
  })
})
