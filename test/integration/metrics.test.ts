/**
 * goto-agent --metrics-listen in the lab: three hosts with real engines and agents, scraped over
 * HTTP like Prometheus would. vagrant-1 serves on its lab address (named explicitly), aws-1 on the
 * default (loopback inside its namespace, scraped from there), azure-1 has metrics off. One lab for
 * the file; after() tears it down even when a test failed.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Lab, tcpOpen, waitFor, type LabHost } from '../lab/index.js'
import { parseMetrics, sample, type Sample } from '../fixtures/metrics.js'

const run = promisify(execFile)
/** Generous next to the test profile (dead after 3 s): a loaded CI machine is slow, not wrong. */
const STATE_TIMEOUT_MS = 30_000
const METRICS_PORT = 9464
/** Fetches argv[1] and prints the body; exit 3 when the connection fails, 4 on a status other than 200. */
const FETCH_SCRIPT = 'fetch(process.argv[1], { signal: AbortSignal.timeout(5000) }).then(async r => { process.stdout.write(await r.text()); process.exit(r.status === 200 ? 0 : 4) }, e => { process.stderr.write(String(e.cause?.code ?? e)); process.exit(3) })'

describe('agent metrics in the lab (3 hosts, scraped over HTTP)', function () {
  this.timeout(180_000)
  const lab = new Lab({
    prefix: 'gotolabp',
    subnet: '10.213.120.0/24',
    // Host 0: an explicit non-loopback address; host 1: a bare port (loopback); host 2: metrics off.
    agentArgs: h => h.index === 0 ? ['--metrics-listen', `${h.ip}:${METRICS_PORT}`] : h.index === 1 ? ['--metrics-listen', String(METRICS_PORT)] : []
  })
  let A: LabHost
  let B: LabHost
  let C: LabHost

  /** A from the root namespace, through its lab address. */
  async function scrapeA (): Promise<Sample[]> {
    const res = await fetch(`http://${A.ip}:${METRICS_PORT}/metrics`, { signal: AbortSignal.timeout(5000) })
    expect(res.status).to.equal(200)
    return parseMetrics(await res.text())
  }

  /** GET http://127.0.0.1:PORT/metrics from inside a host's namespace; the exit code says what happened. */
  async function scrapeInside (h: LabHost): Promise<{ code: number, samples: Sample[] }> {
    try {
      const { stdout } = await run('nsenter', [`--net=/var/run/netns/${h.netns}`, process.execPath, '-e', FETCH_SCRIPT, `http://127.0.0.1:${METRICS_PORT}/metrics`], { timeout: 15_000, maxBuffer: 4 * 1024 * 1024 })
      return { code: 0, samples: parseMetrics(stdout) }
    } catch (err) {
      return { code: (err as { code?: number }).code ?? -1, samples: [] }
    }
  }

  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
    return stdout.trim()
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[A, B, C] = await lab.up(3)
    // A two-layer image on A, so a move sends a layer in pre-copy as well as the container's changes.
    await docker(A, 'run', '--name', 'mbuild', 'gotolab/base:latest', 'sh', '-c', 'mkdir -p /www && echo metrics > /www/index.html')
    await docker(A, 'commit', 'mbuild', 'mapp:v1')
    await docker(A, 'rm', 'mbuild')
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('serves on the address named, on loopback for a bare port, and not at all by default', async () => {
    const a = await scrapeA()
    expect(sample(a, 'goto_agent_info', { name: A.name })).to.equal(1)
    expect((await fetch(`http://${A.ip}:${METRICS_PORT}/`)).status).to.equal(404)
    // B: reachable on loopback inside its namespace, not on its lab address.
    const b = await scrapeInside(B)
    expect(b.code).to.equal(0)
    expect(sample(b.samples, 'goto_agent_info', { name: B.name })).to.equal(1)
    expect(await tcpOpen(B.ip, METRICS_PORT)).to.equal(false)
    // C: metrics are off, nothing listens.
    expect((await scrapeInside(C)).code).to.equal(3)
    expect(await tcpOpen(C.ip, METRICS_PORT)).to.equal(false)
  })

  it('shows peers by state: 2 alive, then 1 alive and 1 suspect or dead after a peer dies', async () => {
    await waitFor(async () => sample(await scrapeA(), 'goto_peers', { state: 'alive' }) === 2, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `2 alive peers in ${A.name}'s metrics` })
    await lab.killAgent(C.name)
    await waitFor(async () => {
      const s = await scrapeA()
      const gone = (sample(s, 'goto_peers', { state: 'suspect' }) ?? 0) + (sample(s, 'goto_peers', { state: 'dead' }) ?? 0)
      return sample(s, 'goto_peers', { state: 'alive' }) === 1 && gone === 1
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `1 alive and 1 suspect or dead peer in ${A.name}'s metrics after ${C.name} died` })
  })

  it('counts a move at the source (started, succeeded, duration, bytes sent) and the destination (bytes received)', async () => {
    await docker(A, 'run', '-d', '--name', 'mweb', 'mapp:v1', 'httpd', '-f', '-p', '8080', '-h', '/www')
    await docker(A, 'exec', 'mweb', 'sh', '-c', 'echo changed > /www/state.txt')
    const a0 = await scrapeA()
    const b0 = (await scrapeInside(B)).samples
    const r = await lab.cli(['move', 'mweb', '--to', B.name, '--json'])
    expect(r.code, r.stdout + r.stderr).to.equal(0)
    const a1 = await scrapeA()
    const b1 = (await scrapeInside(B)).samples
    const delta = (before: Sample[], after: Sample[], name: string, labels: Record<string, string> = {}): number =>
      (sample(after, name, labels) ?? 0) - (sample(before, name, labels) ?? 0)
    expect(delta(a0, a1, 'goto_moves_started_total')).to.equal(1)
    expect(delta(a0, a1, 'goto_moves_succeeded_total')).to.equal(1)
    expect(delta(a0, a1, 'goto_move_duration_seconds_count', { outcome: 'succeeded' })).to.equal(1)
    expect(delta(a0, a1, 'goto_move_downtime_seconds_count')).to.equal(1)
    expect(a1.some(s => s.name === 'goto_moves_failed_total')).to.equal(false)
    const sent = delta(a0, a1, 'goto_transfer_sent_bytes_total')
    expect(sent).to.be.greaterThan(0)
    // Every blob byte A handed to a transfer stream was read by B.
    expect(delta(b0, b1, 'goto_transfer_received_bytes_total')).to.equal(sent)
    expect(delta(b0, b1, 'goto_moves_received_total', { outcome: 'committed' })).to.equal(1)
  })
})
