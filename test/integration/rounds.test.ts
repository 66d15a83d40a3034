/**
 * Moves that copy named volumes in rounds while the container runs (agent/move/rounds.ts, the
 * `volume` transfer step), in the lab: two hosts with real engines and agents, the real CLI. One lab
 * for the file; after() tears it down even when a test failed.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { moveJson, type MoveRun } from '../fixtures/move-cli.js'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { listTree, listingDifferences, type ListedEntry } from '../../agent/sync/index.js'
import type { MoveEvent } from '../../protocol/move-messages.js'
import type { PeerRow } from '../../protocol/messages.js'

const run = promisify(execFile)
const STATE_TIMEOUT_MS = 30_000
type Done = Extract<MoveEvent, { event: 'done' }>
type Failed = Extract<MoveEvent, { event: 'failed' }>
type Round = Extract<MoveEvent, { event: 'round' }>

describe('moves copy volumes in rounds while the container runs (2 hosts, real engines and agents)', function () {
  this.timeout(180_000)
  const lab = new Lab({ prefix: 'gotolabu', subnet: '10.213.250.0/24' })
  let A: LabHost
  let B: LabHost

  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
    return stdout.trim()
  }

  async function mountpoint (h: LabHost, volume: string): Promise<string> {
    return await docker(h, 'volume', 'inspect', '-f', '{{.Mountpoint}}', volume)
  }

  async function move (container: string, from: LabHost, to: LabHost, onEvent?: (ev: MoveEvent) => void, extra: string[] = []): Promise<MoveRun> {
    return await moveJson(container, to.name, { controlMain: lab.controlMain, bundle: lab.operatorBundle, agent: from.agentAddr, extra, onEvent })
  }

  function done (r: { code: number | null, events: MoveEvent[], stderr: string }): Done {
    const last = r.events.at(-1)
    expect(last?.event, `${JSON.stringify(last)} ${r.stderr}`).to.equal('done')
    expect(r.code).to.equal(0)
    return last as Done
  }

  function rounds (r: { events: MoveEvent[] }): Round[] {
    return r.events.filter((e): e is Round => e.event === 'round')
  }

  async function aliveAt (from: LabHost, name: string): Promise<boolean> {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === name && p.state === 'alive')
  }

  /** A listing without the root's mtime (the engine's volume directory is made anew at the destination). */
  async function listing (dir: string): Promise<ListedEntry[]> {
    return (await listTree(dir, { signal: AbortSignal.timeout(60_000) })).map(e => e.path === '.' ? { ...e, mtimeNs: '0' } : e)
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[A, B] = await lab.up(2)
    for (const h of [A, B]) {
      for (const other of [A, B]) await waitFor(async () => await aliveAt(h, other.name), { timeoutMs: 60_000, intervalMs: 250, what: `${other.name} alive at ${h.name}` })
    }
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('a container appending a counter every 10 ms: the destination holds every value up to the freeze, in order, and it counts on', async () => {
    // 8 MiB of other data makes round 1 larger than the test profile's volumeFreezeBytes: a second round follows.
    await docker(A, 'volume', 'create', 'countdata')
    await docker(A, 'run', '--rm', '-v', 'countdata:/data', 'gotolab/base:latest', 'sh', '-c', 'head -c 8m /dev/urandom > /data/bulk')
    // On every start: resume after the last value in the volume, and note it beside the last value
    // the container's own filesystem (the changes layer, taken in the freeze) had seen.
    const script = 'i=$(tail -n1 /data/counter 2>/dev/null); i=${i:-0}; echo "$i $(cat /last 2>/dev/null || echo none)" >> /data/starts; ' +
      'while true; do i=$((i+1)); echo $i >> /data/counter; echo $i > /last; sleep 0.01; done'
    await docker(A, 'run', '-d', '--name', 'counter', '-v', 'countdata:/data', 'gotolab/base:latest', 'sh', '-c', script)
    await waitFor(async () => Number(await docker(A, 'exec', 'counter', 'sh', '-c', 'wc -l < /data/counter')) > 50, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: 'counting' })

    const dry = await move('counter', A, B, undefined, ['--dry-run'])
    const plan = dry.events.find(e => e.event === 'plan') as Extract<MoveEvent, { event: 'plan' }>
    expect(plan.plan.volumeData).to.have.length(1)
    expect(plan.plan.volumeData?.[0]).to.deep.include({ name: 'countdata', copy: 'rounds' })
    expect(plan.plan.volumeData?.[0].bytes).to.be.greaterThan(8 * 1024 * 1024 - 1)
    const human = await lab.cli(['move', 'counter', '--to', B.name, '--dry-run'], { agent: A.agentAddr })
    expect(human.stdout).to.match(/volume countdata: [0-9.]+ MiB to send, in rounds/)

    const r = await move('counter', A, B)
    const ev = done(r)
    const rs = rounds(r)
    expect(rs.length, JSON.stringify(rs)).to.be.at.least(3) // round 1, at least one more, the final round
    expect(rs[0]).to.deep.include({ round: 1, final: false })
    expect(rs[0].bytes).to.be.at.least(8 * 1024 * 1024)
    expect(rs.at(-1)?.final).to.equal(true)
    expect(rs.at(-1)?.bytes, 'the final round carries only the last difference').to.be.below(2 * 1024 * 1024)
    expect(ev.downtimeMs).to.be.a('number')

    const starts = (await docker(B, 'exec', 'counter', 'cat', '/data/starts')).split('\n')
    expect(starts).to.have.length(2)
    expect(starts[0]).to.equal('0 none')
    const [resumed, lastSeen] = starts[1].split(' ').map(Number)
    // The volume's last value at the freeze is the last the container wrote (it writes the volume first).
    expect(resumed - lastSeen).to.be.oneOf([0, 1])
    const count = async (): Promise<number[]> => (await docker(B, 'exec', 'counter', 'cat', '/data/counter')).split('\n').map(Number)
    const first = await count()
    await waitFor(async () => (await count()).length > first.length + 20, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: 'counting on at the destination' })
    const values = await count()
    values.forEach((v, i) => { expect(v, `line ${i + 1}`).to.equal(i + 1) })
    expect(values.length).to.be.greaterThan(resumed)
    expect((await docker(A, 'ps', '-a', '--format', '{{.Names}}')).split('\n')).to.not.include('counter')
  })

  it('a tree with a hard link, a symlink, a sparse file, a fifo, modes and owners arrives identical', async () => {
    await docker(A, 'volume', 'create', 'treedata')
    await docker(A, 'run', '--rm', '-v', 'treedata:/data', 'gotolab/base:latest', 'sh', '-c', [
      'mkdir -p /data/d/e', 'echo hello > /data/d/f', 'ln /data/d/f /data/d/hard', 'ln -s ../f /data/d/e/sym',
      'dd if=/dev/urandom of=/data/sparse bs=4096 count=2 seek=10000 2>/dev/null', 'mkfifo /data/fifo',
      'head -c 3m /dev/urandom > /data/d/e/blob', 'chown 1234:5678 /data/d/f', 'chmod 4750 /data/d/f', 'chown 7:8 /data/d/e', 'chmod 710 /data/d/e',
      'chmod 600 /data/fifo', 'chown -h 3:4 /data/d/e/sym'
    ].join(' && '))
    await docker(A, 'run', '-d', '--name', 'tree', '-v', 'treedata:/data', 'gotolab/base:latest', 'sleep', '3600')
    const before = await listing(await mountpoint(A, 'treedata'))
    expect(before.map(e => e.path)).to.include.members(['d/hard', 'd/e/sym', 'sparse', 'fifo'])

    const r = await move('tree', A, B)
    done(r)
    expect(rounds(r).at(-1)?.final).to.equal(true)
    const dir = await mountpoint(B, 'treedata')
    const after = await listing(dir)
    expect(listingDifferences(before, after)).to.deep.equal([])
    const sparse = await stat(join(dir, 'sparse'))
    expect(sparse.size).to.equal(10002 * 4096)
    expect(sparse.blocks * 512, 'the sparse file stays sparse').to.be.below(1024 * 1024)
  })

  it('the destination agent killed during round 2: rollback, the container runs on at the source, nothing lost; a retry resumes from what was verified', async () => {
    await docker(A, 'volume', 'create', 'killdata')
    await docker(A, 'run', '--rm', '-v', 'killdata:/data', 'gotolab/base:latest', 'sh', '-c', 'head -c 32m /dev/urandom > /data/big')
    // Writes 8 MiB files without pause (so that round 2 has work when the destination dies), until
    // told to stop; then removes them and sleeps.
    await docker(A, 'run', '-d', '--name', 'killme', '-v', 'killdata:/data', 'gotolab/base:latest', 'sh', '-c',
      'n=0; while [ ! -e /data/stop ]; do head -c 8m /dev/urandom > /data/hot.$((n % 2)); n=$((n + 1)); done; rm -f /data/hot.*; exec sleep 3600')
    const sumBig = await docker(A, 'exec', 'killme', 'md5sum', '/data/big')

    let killed: Promise<void> | undefined
    const first = await move('killme', A, B, ev => {
      if (killed === undefined && ev.event === 'round' && ev.round === 1) killed = lab.killAgent(B.name)
    })
    await killed
    expect(killed, 'the move never reported round 1').to.not.equal(undefined)
    const last = first.events.at(-1) as Failed
    expect(last.event, JSON.stringify(last)).to.equal('failed')
    expect(last.rollback).to.be.oneOf(['done', 'none-needed'])
    const state = JSON.parse(await docker(A, 'inspect', 'killme'))[0].State
    expect(state.Running).to.equal(true)
    expect(state.Paused).to.equal(false)
    expect(await docker(A, 'exec', 'killme', 'md5sum', '/data/big')).to.equal(sumBig)

    // The restarted destination removes the half-made volume (keeping its synced tree for the retry).
    await lab.startAgent(B.name)
    await waitFor(async () => await aliveAt(A, B.name), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${B.name} alive again` })
    expect(await docker(B, 'volume', 'ls', '-q')).to.not.contain('killdata')

    // Quiet now: what the retry's round 1 sends is what the kept tree lacks.
    await docker(A, 'exec', 'killme', 'touch', '/data/stop')
    await waitFor(async () => (await docker(A, 'exec', 'killme', 'ls', '/data')).split('\n').every(n => !n.startsWith('hot')), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: 'the writer to stop' })
    const retry = await move('killme', A, B)
    done(retry)
    const rs = rounds(retry)
    expect(rs[0].round).to.equal(1)
    expect(rs[0].bytes, 'round 1 of the retry sends only what the kept tree lacks, not the 32 MiB file').to.be.below(1024 * 1024)
    expect(await docker(B, 'exec', 'killme', 'md5sum', '/data/big')).to.equal(sumBig)
    expect(JSON.parse(await docker(B, 'inspect', 'killme'))[0].State.Running).to.equal(true)
  })
})
