/**
 * Live moves (`goto move --live`, agent/move/live.ts) in the lab: three hosts with real engines and
 * agents, the real CLI, and real CRIU (Debian unstable's 4.2.1 from `.ci/criu`) on two of them,
 * whose engines run with --experimental; the third has neither. A container counting in a shell
 * variable (its count only in memory; it writes it to a file for the test to read) and serving
 * busybox httpd on a published port moves with its processes: at the destination it counts on from
 * where it was. One lab for the file; after() tears it down even when a test failed.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { moveJson, type MoveRun } from '../fixtures/move-cli.js'
import { dockerCli as docker } from '../fixtures/docker.js'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import type { MoveEvent } from '../../protocol/move-messages.js'
import type { PeerRow } from '../../protocol/messages.js'

const run = promisify(execFile)
const STATE_TIMEOUT_MS = 30_000
const PORT = '18080'
type Failed = Extract<MoveEvent, { event: 'failed' }>
type Plan = Extract<MoveEvent, { event: 'plan' }>

describe('live moves: the processes move with their memory (CRIU; 3 hosts, real engines and agents)', function () {
  this.timeout(240_000)
  const lab = new Lab({ prefix: 'gotolabj', subnet: '10.213.55.0/24' })
  let A: LabHost
  let B: LabHost
  let C: LabHost

  async function move (container: string, from: LabHost, to: LabHost, extra: string[] = [], onEvent?: (ev: MoveEvent) => void): Promise<MoveRun> {
    return await moveJson(container, to.name, { controlMain: lab.controlMain, bundle: lab.operatorBundle, agent: from.agentAddr, extra, onEvent })
  }

  function last<T extends MoveEvent['event']> (r: MoveRun, event: T): Extract<MoveEvent, { event: T }> {
    const ev = r.events.at(-1)
    expect(ev?.event, `${JSON.stringify(ev)} ${r.stderr}`).to.equal(event)
    return ev as Extract<MoveEvent, { event: T }>
  }

  async function aliveAt (from: LabHost, name: string): Promise<boolean> {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === name && p.state === 'alive')
  }

  /** The count the container's shell holds (it writes it to /tmp/count on every step). */
  async function count (h: LabHost, name: string): Promise<number> {
    return Number(await docker(h, 'exec', name, 'cat', '/tmp/count'))
  }

  /**
   * A counter in a shell variable (never read back from disk) and busybox httpd on port 80,
   * published; restart policy `always`, which the engine would otherwise apply to the checkpoint's exit.
   */
  async function startCounter (h: LabHost, name: string): Promise<number> {
    const script = `mkdir -p /srv && echo "served by ${name}" > /srv/index.html && httpd -p 80 -h /srv; ` +
      'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; usleep 100000; done'
    await docker(h, 'run', '-d', '--name', name, '--restart', 'always', '-p', `${PORT}:80`, 'gotolab/base:latest', 'sh', '-c', script)
    await waitFor(async () => await count(h, name).catch(() => 0) >= 10, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: `${name} counting on ${h.name}` })
    return await count(h, name)
  }

  async function served (h: LabHost): Promise<string> {
    const res = await fetch(`http://${h.ip}:${PORT}/`, { signal: AbortSignal.timeout(5000) })
    return (await res.text()).trim()
  }

  async function names (h: LabHost): Promise<string[]> {
    return (await docker(h, 'ps', '-a', '--format', '{{.Names}}')).split('\n').filter(n => n !== '')
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[A, B, C] = await lab.up([
      { name: 'aws-1', provider: 'aws', criu: true },
      { name: 'azure-1', provider: 'azure', criu: true },
      { name: 'vagrant-1', provider: 'vagrant' }
    ])
    for (const h of [A, B, C]) {
      for (const other of [A, B, C]) await waitFor(async () => await aliveAt(h, other.name), { timeoutMs: 60_000, intervalMs: 250, what: `${other.name} alive at ${h.name}` })
    }
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('the lab\'s CRIU passes its check on this kernel', async () => {
    const { stdout, stderr } = await run('/var/cache/goto-lab/criu/bin/criu', ['check']).catch((err: { stdout: string, stderr: string }) => err)
    expect(stdout + stderr).to.include('Looks good')
  })

  it('a counting, serving container moves live: at the destination it counts on from where it was and its server answers', async () => {
    await startCounter(A, 'live1')
    expect(await served(A)).to.equal('served by live1')

    const dry = await move('live1', A, B, ['--dry-run', '--live'])
    last(dry, 'done')
    const plan = (dry.events.find(e => e.event === 'plan') as Plan).plan
    expect(plan.live?.source).to.deep.include({ host: A.name, ok: true, missing: [] })
    expect(plan.live?.destination).to.deep.include({ host: B.name, ok: true, missing: [] })
    expect(plan.live?.destination.criu).to.match(/^4\.2/)
    const human = await lab.cli(['move', 'live1', '--to', B.name, '--dry-run', '--live'], { agent: A.agentAddr })
    expect(human.stdout).to.include(`live: ${B.name}: can take live moves (CRIU 4.2`)

    const before = await count(A, 'live1')
    const r = await move('live1', A, B, ['--live'])
    const done = last(r, 'done')
    expect(done.live, 'live timings').to.not.equal(undefined)
    expect(done.live?.checkpointBytes).to.be.greaterThan(0)
    expect(done.live?.checkpointFiles).to.be.greaterThan(0)
    expect(done.downtimeMs).to.be.greaterThan(0)

    // The shell's variable went on: never back to 1, always at least the count before the move.
    const first = await count(B, 'live1')
    expect(first, `count at the destination right after the move (before it: ${before})`).to.be.at.least(before)
    await waitFor(async () => await count(B, 'live1') > first + 5, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: 'counting on at the destination' })
    expect(await served(B)).to.equal('served by live1')
    expect(await names(A)).to.not.include('live1')
    expect(await docker(B, 'inspect', '-f', '{{.HostConfig.RestartPolicy.Name}} {{.RestartCount}}', 'live1')).to.equal('always 0')
  })

  it('a destination agent killed during a live move: the source restores from its own checkpoint and counts on; a retry succeeds', async () => {
    // live1 (the test before) holds the published port on B, which a move there would be refused for.
    await docker(B, 'rm', '-f', 'live1').catch(() => '')
    await startCounter(A, 'live2')
    let killed: Promise<void> | undefined
    const before = await count(A, 'live2')
    const r = await move('live2', A, B, ['--live'], ev => {
      // At the freeze the checkpoint is being taken here: the destination goes before it can take it.
      if (ev.event === 'step' && ev.step === 'freeze') killed ??= lab.killAgent(B.name)
    })
    await killed
    const failed = last(r, 'failed') as Failed
    expect(failed.rollback, JSON.stringify(failed)).to.equal('done')
    expect(failed.resumed, JSON.stringify(failed)).to.equal('checkpoint')
    expect(await names(A)).to.include('live2')
    const after = await count(A, 'live2')
    expect(after, `count after the rollback (before the move: ${before})`).to.be.at.least(before)
    await waitFor(async () => await count(A, 'live2') > after + 5, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: 'counting on at the source' })
    expect(await served(A)).to.equal('served by live2')
    // Restored, not restarted by the engine, and its restart policy given back.
    expect(await docker(A, 'inspect', '-f', '{{.HostConfig.RestartPolicy.Name}} {{.RestartCount}}', 'live2')).to.equal('always 0')

    await lab.startAgent(B.name)
    await waitFor(async () => await aliveAt(A, B.name), { timeoutMs: 60_000, intervalMs: 250, what: `${B.name} alive again at ${A.name}` })
    expect(await names(B)).to.not.include('live2')
    const retryFrom = await count(A, 'live2')
    const retry = await move('live2', A, B, ['--live'])
    last(retry, 'done')
    expect(await count(B, 'live2')).to.be.at.least(retryFrom)
    expect(await served(B)).to.equal('served by live2')
  })

  it('preflight refuses a host without CRIU or an experimental engine, with one clear line, changing nothing', async () => {
    // Port 18080 on A is free again: live2 left for B.
    await startCounter(A, 'live3')
    const to = await move('live3', A, C, ['--live'])
    const failed = last(to, 'failed') as Failed
    expect(failed.error.name).to.equal('LiveUnavailableError')
    expect(failed.rollback).to.equal('none-needed')
    expect(failed.error.message).to.include(C.name)
    expect(failed.error.message).to.include('CRIU not found')
    expect(failed.error.message).to.include('experimental')
    const dry = await move('live3', A, C, ['--live', '--dry-run'])
    expect((last(dry, 'failed') as Failed).error.name).to.equal('LiveUnavailableError')
    // Nothing changed: it runs on A, counting, and C has nothing of it.
    const n = await count(A, 'live3')
    await waitFor(async () => await count(A, 'live3') > n + 3, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: 'live3 counting on A' })
    expect(await names(C)).to.not.include('live3')
    const human = await lab.cli(['move', 'live3', '--to', C.name, '--live'], { agent: A.agentAddr })
    expect(human.code).to.equal(1)
    expect(human.stderr).to.match(/live move not possible: vagrant-1: CRIU not found .*; the engine is not in experimental mode/)

    // goto status says whether a host takes live moves, and why not.
    const statusA = await lab.cli(['status', A.name], { agent: A.agentAddr })
    expect(statusA.stdout).to.match(/live moves: yes \(CRIU 4\.2/)
    const statusC = await lab.cli(['status', C.name], { agent: A.agentAddr })
    expect(statusC.stdout).to.match(/live moves: no: CRIU not found/)

    // The source's own check comes first: from C, nothing reaches A.
    await docker(C, 'run', '-d', '--name', 'live4', 'gotolab/base:latest', 'sleep', '3600')
    const from = await move('live4', C, A, ['--live'])
    const refused = last(from, 'failed') as Failed
    expect(refused.error.name).to.equal('LiveUnavailableError')
    expect(refused.error.message).to.include(C.name)
    expect(await names(A)).to.not.include('live4')
  })
})
