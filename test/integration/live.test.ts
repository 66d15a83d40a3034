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
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { moveJson, type MoveRun } from '../fixtures/move-cli.js'
import { dockerCli as docker } from '../fixtures/docker.js'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import type { MoveEvent } from '../../protocol/move-messages.js'
import type { PeerRow } from '../../protocol/messages.js'
import { cpuFlags } from '../../agent/move/live.js'

const run = promisify(execFile)
const STATE_TIMEOUT_MS = 30_000
const PORT = '18080'
type Failed = Extract<MoveEvent, { event: 'failed' }>
type Plan = Extract<MoveEvent, { event: 'plan' }>

describe('live moves: the processes move with their memory (CRIU; 3 hosts, real engines and agents)', function () {
  this.timeout(240_000)
  /** Per host, what its agent is started with (the CPU-mismatch test hides a flag of A's; test-only option). */
  const agentArgs = new Map<string, string[]>()
  const lab = new Lab({ prefix: 'gotolabj', subnet: '10.213.55.0/24', agentArgs: h => agentArgs.get(h.name) ?? [] })
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
   * `buffer`: the shell also holds 64 MiB of random data only in memory — 48 MiB of /dev/urandom as
   * base64 in a variable (busybox has no other way to keep bytes resident: a pipe to md5sum ends,
   * a file would move with the filesystem) — whose md5 it writes to /tmp/sum0 once, and again to
   * /tmp/sum1 from the variable whenever /tmp/ask appears.
   */
  async function startCounter (h: LabHost, name: string, opts: { buffer?: boolean } = {}): Promise<number> {
    const buffer = opts.buffer === true
      ? 'b=$(head -c 48m /dev/urandom | base64 -w 0); printf %s "$b" | md5sum > /tmp/sum0; '
      : ''
    const ask = opts.buffer === true ? 'if [ -e /tmp/ask ]; then rm /tmp/ask; printf %s "$b" | md5sum > /tmp/sum1; fi; ' : ''
    const script = `mkdir -p /srv && echo "served by ${name}" > /srv/index.html && httpd -p 80 -h /srv; ${buffer}` +
      `i=0; while true; do i=$((i+1)); echo $i > /tmp/count; ${ask}usleep 100000; done`
    await docker(h, 'run', '-d', '--name', name, '--restart', 'always', '-p', `${PORT}:80`, 'gotolab/base:latest', 'sh', '-c', script)
    // Filling the buffer takes about 9 s alone on this machine.
    await waitFor(async () => await count(h, name).catch(() => 0) >= 10, { timeoutMs: buffer === '' ? STATE_TIMEOUT_MS : 4 * STATE_TIMEOUT_MS, intervalMs: 100, what: `${name} counting on ${h.name}` })
    return await count(h, name)
  }

  /** The md5 the shell computes now from the buffer it holds in memory (startCounter's `buffer`). */
  async function bufferSum (h: LabHost, name: string): Promise<string> {
    await docker(h, 'exec', name, 'sh', '-c', 'rm -f /tmp/sum1; touch /tmp/ask')
    await waitFor(async () => (await docker(h, 'exec', name, 'cat', '/tmp/sum1').catch(() => '')).includes(' '), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 200, what: `${name}'s buffer checksum on ${h.name}` })
    return await docker(h, 'exec', name, 'cat', '/tmp/sum1')
  }

  /** The agent log's lines about `what` (the last 20), for a failure's message. */
  async function logLines (h: LabHost, what: RegExp): Promise<string> {
    return (await readFile(h.agentLog, 'utf8').catch(() => '')).split('\n').filter(l => what.test(l)).slice(-20).join('\n')
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
    await startCounter(A, 'live1', { buffer: true })
    expect(await served(A)).to.equal('served by live1')
    const sum0 = await docker(A, 'exec', 'live1', 'cat', '/tmp/sum0')
    expect(await bufferSum(A, 'live1')).to.equal(sum0)
    const httpdPid = await docker(A, 'exec', 'live1', 'pidof', 'httpd')

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
    // The 64 MiB held only in the shell's memory came along unchanged, and the server kept its PID.
    expect(await bufferSum(B, 'live1')).to.equal(sum0)
    expect(await docker(B, 'exec', 'live1', 'pidof', 'httpd')).to.equal(httpdPid)
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
    // KNOWN BUG (issue 18, open): now and then the engine cannot restore the source from its own
    // checkpoint ("failed to upload checkpoint to containerd: commit failed: content ...: already
    // exists") and the agent starts it afresh, as its rollback says. Only that failure is let through
    // here, loudly; any other reason to start afresh fails the test.
    const log = await logLines(A, /rollback|checkpoint/)
    if (failed.resumed === 'fresh' && /already exists/.test(log)) console.log('      KNOWN BUG: the source was started afresh (containerd: checkpoint content already exists)')
    else expect(failed.resumed, `${JSON.stringify(failed)}\n${log}`).to.equal('checkpoint')
    expect(await names(A)).to.include('live2')
    const after = await count(A, 'live2')
    if (failed.resumed === 'checkpoint') expect(after, `count after the rollback (before the move: ${before})`).to.be.at.least(before)
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

  it('a destination agent killed during the restore: the source counts on; a CPU without a flag of the source\'s is refused; --live=auto then moves it ordinarily and says so', async () => {
    // live2 runs on B (the retry above); port 18080 is free on A.
    let killed: Promise<void> | undefined
    const before = await count(B, 'live2')
    const r = await move('live2', B, A, ['--live'], ev => {
      if (ev.event === 'step' && ev.step === 'restore') killed ??= lab.killAgent(A.name)
    })
    await killed
    expect(killed, 'the move reached its restore').to.not.equal(undefined)
    const failed = last(r, 'failed') as Failed
    expect(failed.rollback, JSON.stringify(failed)).to.equal('done')
    expect(await names(B)).to.include('live2')
    const after = await count(B, 'live2')
    expect(after, `count after the rollback (before the move: ${before})`).to.be.at.least(before)
    await waitFor(async () => await count(B, 'live2') > after + 5, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: 'counting on at the source' })

    // A comes back reporting a CPU without one of the flags B's has (the test-only --test-hide-cpu-flags).
    const flags = await cpuFlags()
    const hidden = flags.includes('fpu') ? 'fpu' : flags[0]
    agentArgs.set(A.name, ['--test-hide-cpu-flags', hidden])
    await lab.startAgent(A.name)
    await waitFor(async () => await aliveAt(B, A.name), { timeoutMs: 60_000, intervalMs: 250, what: `${A.name} alive again at ${B.name}` })
    await waitFor(async () => !(await names(A)).includes('live2'), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `nothing of live2 left on ${A.name}` })
    const refused = await move('live2', B, A, ['--live'])
    const no = last(refused, 'failed') as Failed
    expect(no.error.name).to.equal('LiveUnavailableError')
    expect(no.rollback).to.equal('none-needed')
    expect(no.error.message).to.include(`${A.name}'s CPU lacks flags the source's has (${hidden}`)
    expect(await names(A)).to.not.include('live2')

    // --live=auto: the same refusal makes an ordinary move, said in the plan and in done.
    const auto = await move('live2', B, A, ['--live=auto'])
    const done = last(auto, 'done')
    expect(done.live).to.equal(undefined)
    expect(done.notLive).to.include('CPU lacks flags')
    const plan = (auto.events.find(e => e.event === 'plan') as Plan).plan
    expect(plan.warnings?.some(w => w.startsWith('not live (--live=auto)')), JSON.stringify(plan.warnings)).to.equal(true)
    expect(await names(B)).to.not.include('live2')
    // Started afresh: its count begins again.
    await waitFor(async () => await count(A, 'live2').catch(() => 0) >= 1, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: 'live2 counting on A' })
    expect(await count(A, 'live2')).to.be.below(after)
    // Port 18080 on A is the next test's.
    await docker(A, 'rm', '-f', 'live2')
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
    // goto peers too: a LIVE column, why not below, the whole report in --json.
    const peers = await lab.cli(['peers'], { agent: A.agentAddr })
    expect(peers.stdout).to.match(/LIVE/)
    expect(peers.stdout).to.match(/CRIU 4\.2/)
    expect(peers.stdout).to.include(`${C.name} takes no live moves: CRIU not found`)
    const rows = JSON.parse((await lab.cli(['peers', '--json'], { agent: A.agentAddr })).stdout) as PeerRow[]
    expect(rows.find(p => p.name === C.name)?.live).to.deep.include({ ok: false })
    expect(rows.find(p => p.name === B.name)?.live).to.deep.include({ ok: true, missing: [] })

    // A container holding an established TCP connection to a peer outside it (a listener on C) is refused.
    await docker(C, 'run', '-d', '--name', 'peer9', '-p', '19999:9999', 'gotolab/base:latest', 'sh', '-c', 'sleep 3600 | nc -l -p 9999')
    await docker(A, 'run', '-d', '--name', 'live5', 'gotolab/base:latest', 'sh', '-c', `sleep 3600 | nc ${C.ip} 19999`)
    await waitFor(async () => / 01 /.test(await docker(A, 'exec', 'live5', 'cat', '/proc/net/tcp').catch(() => '')), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 200, what: 'live5 connected to C' })
    const held = await move('live5', A, B, ['--live'])
    const heldFail = last(held, 'failed') as Failed
    expect(heldFail.error.name).to.equal('LiveUnavailableError')
    expect(heldFail.rollback).to.equal('none-needed')
    expect(heldFail.error.message).to.include(`container 'live5' holds an established TCP connection to a peer outside it (${C.ip}:19999)`)
    expect(await names(B)).to.not.include('live5')
    expect(await docker(A, 'inspect', '-f', '{{.State.Running}}', 'live5')).to.equal('true')

    // The source's own check comes first: from C, nothing reaches A.
    await docker(C, 'run', '-d', '--name', 'live4', 'gotolab/base:latest', 'sleep', '3600')
    const from = await move('live4', C, A, ['--live'])
    const refused = last(from, 'failed') as Failed
    expect(refused.error.name).to.equal('LiveUnavailableError')
    expect(refused.error.message).to.include(C.name)
    expect(await names(A)).to.not.include('live4')
  })
})
