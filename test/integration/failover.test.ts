/**
 * Failover in the lab: three hosts with real engines and agents (test timing profile: dead after
 * 3 s, snapshots every 2 s), the real CLI. One lab for the file; after() tears it down even when a
 * test failed. The scenarios run in order on the same protected containers: protect and snapshot,
 * a short pause that moves nothing, a host killed, its return, a partition, every agent restarted.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { setTimeout as delay } from 'node:timers/promises'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { dockerCli, getFile, killOnEvent, putFile, runningNames } from '../fixtures/docker.js'
import type { AgentStatus, FailoverContainerRow, PeerRow } from '../../protocol/messages.js'

/** Generous next to the test profile (dead after 3 s): a loaded machine is slow, not wrong. */
const STATE_TIMEOUT_MS = 60_000
/** The test profile's suspicion timeout; a pause shorter than it must move nothing. */
const SUSPECT_AFTER_MS = 1000

describe('failover in the lab (3 hosts, real engines and agents)', function () {
  this.timeout(300_000)
  const lab = new Lab({ prefix: 'gotolabf', subnet: '10.213.160.0/24', log: line => { if (process.env.GOTO_LAB_VERBOSE !== undefined) console.log(`      lab: ${line}`) } })
  let hosts: LabHost[]
  /** Hosts whose engine is down (killed), so not asked. */
  const down = new Set<string>()

  const docker = dockerCli

  async function status (h: LabHost): Promise<AgentStatus | undefined> {
    const r = await lab.cli(['status', '--json'], { agent: h.agentAddr })
    return r.code === 0 ? JSON.parse(r.stdout) as AgentStatus : undefined
  }

  async function row (h: LabHost, name: string): Promise<FailoverContainerRow | undefined> {
    return (await status(h))?.failover?.containers.find(c => c.name === name)
  }

  /** The hosts (engines up) where a container of that exact name runs (paused for a snapshot counts). */
  async function runningOn (name: string): Promise<LabHost[]> {
    const out: LabHost[] = []
    for (const h of hosts) {
      if (down.has(h.name)) continue
      if ((await runningNames(h)).includes(name)) out.push(h)
    }
    return out
  }

  /** Waits until exactly one host runs `name` and its agent owns it; returns that host and its row. */
  async function oneOwner (name: string, not?: LabHost): Promise<{ host: LabHost, row: FailoverContainerRow }> {
    return await waitFor(async () => {
      const on = await runningOn(name)
      if (on.length !== 1 || on[0] === not) return undefined
      const r = await row(on[0], name)
      return r?.owner === on[0].name ? { host: on[0], row: r } : undefined
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `exactly one owned copy of ${name}${not === undefined ? '' : ` off ${not.name}`}` })
  }

  /** Waits for a snapshot of `name` with a sequence above `after`, taken by `owner`. */
  async function snapshotAfter (owner: LabHost, name: string, after: number): Promise<FailoverContainerRow> {
    return await waitFor(async () => {
      const r = await row(owner, name)
      return r !== undefined && (r.snapshotSeq ?? 0) > after && r.holders.length > 0 ? r : undefined
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `a snapshot of ${name} on ${owner.name} after seq ${after}` })
  }

  async function allAlive (from: LabHost, n = hosts.length): Promise<boolean> {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    if (r.code !== 0) return false
    const rows = JSON.parse(r.stdout) as PeerRow[]
    return rows.length === n && rows.every(p => p.state === 'alive')
  }

  async function meshUp (): Promise<void> {
    for (const h of hosts) await waitFor(async () => await allAlive(h), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `every member alive at ${h.name}` })
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    hosts = await lab.up(3)
    await meshUp()
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('protects a container by label or by `goto protect`, and snapshots each to a replica holder', async () => {
    const [A] = hosts
    await docker(A, 'run', '-d', '--name', 'web', '-l', 'goto.protect=true', '-v', 'webdata:/data', 'gotolab/base:latest', 'sleep', '1000000')
    await docker(A, 'run', '-d', '--name', 'db', '-v', 'dbdata:/var/db', 'gotolab/base:latest', 'sleep', '1000000')
    await docker(A, 'run', '-d', '--name', 'plain', 'gotolab/base:latest', 'sleep', '1000000')
    const p = await lab.cli(['protect', 'db'])
    expect(p.code, p.stderr).to.equal(0)
    expect(p.stdout).to.contain(`db on ${A.name}: protected`)
    const json = await lab.cli(['protect', 'db', '--json'])
    expect(JSON.parse(json.stdout)).to.deep.include({ container: 'db', protected: true, host: A.name })

    for (const name of ['web', 'db']) {
      const r = await snapshotAfter(A, name, 0)
      expect(r).to.deep.include({ protected: true, owner: A.name, epoch: 1, fenced: false })
      expect(r.holders).to.have.length(1)
      expect(r.holders[0]).to.not.equal(A.name)
      const holder = hosts.find(h => h.name === r.holders[0]) as LabHost
      const held = await waitFor(async () => (await status(holder))?.failover?.held.find(s => s.name === name), { timeoutMs: STATE_TIMEOUT_MS, what: `${holder.name} to hold ${name}` })
      expect(held).to.deep.include({ owner: A.name, epoch: 1 })
    }
    const plain = await row(A, 'plain')
    expect(plain).to.deep.include({ protected: false, owner: null, epoch: null })
    // Protected and unprotected again by order: owned while protected, let go of after.
    expect((await lab.cli(['protect', 'plain'])).code).to.equal(0)
    await waitFor(async () => (await row(A, 'plain'))?.owner === A.name, { timeoutMs: STATE_TIMEOUT_MS, what: 'plain owned by its host' })
    const un = await lab.cli(['unprotect', 'plain'])
    expect(un.code, un.stderr).to.equal(0)
    expect(un.stdout).to.contain(`plain on ${A.name}: not protected`)
    expect(await row(A, 'plain')).to.deep.include({ protected: false, owner: null, epoch: null })
    const text = await lab.cli(['status'], { agent: A.agentAddr })
    expect(text.stdout).to.contain('failover:   safe').and.to.match(/web\s+yes\s+\S+\s+1\s/)

    const unknown = await lab.cli(['protect', 'no-such'])
    expect(unknown.code).to.equal(1)
    expect(unknown.stderr).to.contain("no container 'no-such'")
    const usage = await lab.cli(['protect'])
    expect(usage.code).to.equal(2)
  })

  it('an agent paused (SIGSTOP) for less than the suspicion timeout moves nothing', async () => {
    const [A] = hosts
    const before = await snapshotAfter(A, 'web', 0)
    const pid = (await lab.load()).hosts.find(h => h.name === A.name)?.agent?.pid
    expect(pid).to.be.a('number')
    process.kill(pid as number, 'SIGSTOP')
    try {
      await delay(SUSPECT_AFTER_MS / 2)
    } finally {
      process.kill(pid as number, 'SIGCONT')
    }
    // Two more snapshots by the same owner take longer than a death would (3 s): nothing moved meanwhile.
    const later = await snapshotAfter(A, 'web', (before.snapshotSeq ?? 0) + 1)
    expect(later).to.deep.include({ owner: A.name, epoch: 1, fenced: false })
    expect((await runningOn('web')).map(h => h.name)).to.deep.equal([A.name])
    expect((await runningOn('db')).map(h => h.name)).to.deep.equal([A.name])
  })

  it('kills a host: each protected container runs again on exactly one survivor, with its last snapshot', async () => {
    const [A] = hosts
    await putFile(A, 'web', '/data/vol.txt', 'snap')
    await putFile(A, 'web', '/file.txt', 'snap')
    await putFile(A, 'db', '/var/db/rows.txt', 'rows')
    const seqWeb = (await row(A, 'web'))?.snapshotSeq ?? 0
    const seqDb = (await row(A, 'db'))?.snapshotSeq ?? 0
    // A snapshot that started before the writes may not hold them: wait for the one after it.
    await snapshotAfter(A, 'web', seqWeb + 1)
    await snapshotAfter(A, 'db', seqDb + 1)
    // Written after the last snapshot boundary: a failover loses it (the data-loss window). The
    // agent is frozen first so that no snapshot can start between these writes and the kill.
    const pid = (await lab.load()).hosts.find(h => h.name === A.name)?.agent?.pid as number
    process.kill(pid, 'SIGSTOP')
    await putFile(A, 'web', '/data/late.txt', 'late')
    await putFile(A, 'web', '/late.txt', 'late')
    await lab.kill(A.name)
    down.add(A.name)

    for (const name of ['web', 'db']) {
      const { host, row: r } = await oneOwner(name)
      expect(host.name).to.not.equal(A.name)
      expect(r.epoch).to.equal(2)
      expect(r.protected).to.equal(true)
    }
    const web = (await runningOn('web'))[0]
    expect([await getFile(web, 'web', '/data/vol.txt'), await getFile(web, 'web', '/file.txt')]).to.deep.equal(['snap', 'snap'])
    expect([await getFile(web, 'web', '/data/late.txt'), await getFile(web, 'web', '/late.txt')]).to.deep.equal([undefined, undefined])
    expect(await docker(web, 'inspect', '--format', '{{index .Config.Labels "goto.epoch"}}', 'web')).to.equal('2')
    const db = (await runningOn('db'))[0]
    expect(await getFile(db, 'db', '/var/db/rows.txt')).to.equal('rows')
    // The restored containers are protected again: snapshotted by their new owners.
    await snapshotAfter(web, 'web', 0)
  })

  it('the dead host comes back: it learns the higher epoch and keeps its stale copy stopped', async () => {
    const [A] = hosts
    await lab.start(A.name)
    down.delete(A.name)
    await meshUp()
    await waitFor(async () => {
      const names = (await docker(A, 'ps', '-a', '--format', '{{.Names}} {{.State}}')).split('\n')
      return !names.some(n => n.startsWith('web ')) && names.some(n => /^web\.stale-e1-\S+ exited$/.test(n))
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${A.name} to set its stale copy of web aside` })
    expect((await row(A, 'web'))?.owner ?? null).to.equal(null)
    for (const name of ['web', 'db']) {
      const { row: r } = await oneOwner(name)
      expect(r.epoch).to.equal(2)
    }
  })

  it('partitions the owner from the other two: it fences, the majority restores, after heal one copy runs', async () => {
    const { host: owner } = await oneOwner('web')
    const seq = (await row(owner, 'web'))?.snapshotSeq ?? 0
    await putFile(owner, 'web', '/data/part.txt', 'part')
    await snapshotAfter(owner, 'web', seq + 1)
    await lab.partition(owner.name)
    try {
      // The minority side stops its copy ...
      await waitFor(async () => !(await runningOn('web')).includes(owner), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: `${owner.name} to fence web` })
      // ... and the majority runs it, at a higher epoch, from the snapshot.
      const { host: next, row: r } = await oneOwner('web', owner)
      expect(r.epoch).to.equal(3)
      expect(await getFile(next, 'web', '/data/part.txt')).to.equal('part')
    } finally {
      await lab.heal()
    }
    const { host: next } = await oneOwner('web', owner)
    await meshUp()
    await waitFor(async () => ((await row(owner, 'web'))?.owner ?? null) === null, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${owner.name} to give up web` })
    expect((await runningOn('web')).map(h => h.name)).to.deep.equal([next.name])
    expect((await docker(owner, 'ps', '-a', '--format', '{{.Names}}')).split('\n')).to.not.include('web')
  })

  it('an agent killed while a snapshot has its container frozen unpauses it when it starts again', async () => {
    const { host } = await oneOwner('db')
    const pid = (await lab.load()).hosts.find(h => h.name === host.name)?.agent?.pid as number
    // The agent dies the moment the engine has paused the container for a snapshot.
    const watch = await killOnEvent(host, 'db', 'pause', pid, STATE_TIMEOUT_MS)
    try {
      await watch.killed
    } finally {
      watch.close()
    }
    await waitFor(async () => { try { process.kill(pid, 0); return false } catch { return true } }, { timeoutMs: 10_000, intervalMs: 20, what: 'the killed agent to be gone' })
    expect(await docker(host, 'inspect', '--format', '{{.State.Paused}}', 'db'), 'the agent died after the freeze ended').to.equal('true')

    await lab.startAgent(host.name)
    await waitFor(async () => await docker(host, 'inspect', '--format', '{{.State.Running}} {{.State.Paused}}', 'db') === 'true false', { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: `${host.name} to unpause db` })
    // Snapshots go on, from the one owner: this host, or — when its restart outlasted deadAfterMs
    // (a loaded machine) — the survivor that took db over meanwhile, its copy here then stale.
    const owner = await oneOwner('db')
    await snapshotAfter(owner.host, 'db', owner.row.snapshotSeq ?? 0)
  })

  it('restarting every agent duplicates nothing and loses nothing', async () => {
    const before = new Map<string, { host: string, epoch: number | null }>()
    for (const name of ['web', 'db']) {
      const { host, row: r } = await oneOwner(name)
      before.set(name, { host: host.name, epoch: r.epoch })
    }
    await Promise.all(hosts.map(async h => { await lab.killAgent(h.name) }))
    await Promise.all(hosts.map(async h => { await lab.startAgent(h.name) }))
    await meshUp()
    for (const name of ['web', 'db']) {
      const { host, row: r } = await oneOwner(name)
      await snapshotAfter(host, name, r.snapshotSeq ?? 0)
      expect({ host: host.name, epoch: r.epoch }).to.deep.equal(before.get(name))
      expect(await runningOn(name)).to.have.length(1)
    }
  })
})
