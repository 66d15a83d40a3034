/**
 * The Prometheus metrics and their endpoint, on loopback with port 0: what the sink is told shows
 * up in a scrape; peers and snapshot ages are read at scrape time; only GET /metrics is served.
 * test/integration/metrics.test.ts scrapes real agents in the lab.
 */
import { expect } from 'chai'
import winston from 'winston'
import { PrometheusMetrics } from '../../agent/metrics/prometheus.js'
import { MetricsServer, hostPort } from '../../agent/metrics/server.js'
import { NO_METRICS } from '../../agent/metrics/sink.js'
import { ConfigError } from '../../protocol/errors.js'
import type { PeerState } from '../../protocol/messages.js'
import { parseMetrics, sample } from '../fixtures/metrics.js'
import { rejection } from '../fixtures/assert.js'

const silent = winston.createLogger({ silent: true })

describe('agent metrics (Prometheus endpoint on loopback)', () => {
  let clock = 1_000_000
  const peers: Record<PeerState, number> = { alive: 2, suspect: 0, dead: 0 }
  const prometheus = new PrometheusMetrics({ peerCounts: () => ({ ...peers }), version: '9.9.9', name: 'aws-1', now: () => clock })
  const server = new MetricsServer({ host: '127.0.0.1', port: 0 }, prometheus, silent)
  let base: string

  before(async () => {
    await server.start()
    base = `http://${hostPort(server.address ?? { host: '', port: 0 })}`
  })
  after(async () => { await server.stop() })

  async function scrape (): Promise<ReturnType<typeof parseMetrics>> {
    const res = await fetch(`${base}/metrics`)
    expect(res.status).to.equal(200)
    expect(res.headers.get('content-type')).to.contain('text/plain')
    return parseMetrics(await res.text())
  }

  it('binds the port it was given (0: a free one) on loopback', () => {
    expect(server.address?.host).to.equal('127.0.0.1')
    expect(server.address?.port).to.be.greaterThan(0)
  })

  it('reads peers by state from the peer table at every scrape', async () => {
    let s = await scrape()
    expect(sample(s, 'goto_peers', { state: 'alive' })).to.equal(2)
    expect(sample(s, 'goto_peers', { state: 'dead' })).to.equal(0)
    peers.alive = 1
    peers.dead = 1
    s = await scrape()
    expect(sample(s, 'goto_peers', { state: 'alive' })).to.equal(1)
    expect(sample(s, 'goto_peers', { state: 'dead' })).to.equal(1)
  })

  it('counts bytes, moves and their durations as the sink is told', async () => {
    let s = await scrape()
    expect(sample(s, 'goto_moves_started_total')).to.equal(0)
    expect(sample(s, 'goto_moves_received_total', { outcome: 'committed' })).to.equal(0)
    prometheus.bytesSent(1000)
    prometheus.bytesSent(24)
    prometheus.bytesReceived(7)
    prometheus.moveStarted()
    prometheus.moveStarted()
    prometheus.moveEnded('succeeded', { seconds: 3, downtimeSeconds: 0.3 })
    prometheus.moveEnded('failed', { seconds: 0.2, reason: 'PortConflictError' })
    prometheus.moveReceived('committed')
    s = await scrape()
    expect(sample(s, 'goto_transfer_sent_bytes_total')).to.equal(1024)
    expect(sample(s, 'goto_transfer_received_bytes_total')).to.equal(7)
    expect(sample(s, 'goto_moves_started_total')).to.equal(2)
    expect(sample(s, 'goto_moves_succeeded_total')).to.equal(1)
    expect(sample(s, 'goto_moves_failed_total', { reason: 'PortConflictError' })).to.equal(1)
    expect(sample(s, 'goto_move_duration_seconds_count', { outcome: 'succeeded' })).to.equal(1)
    expect(sample(s, 'goto_move_duration_seconds_bucket', { outcome: 'succeeded', le: '2' })).to.equal(0)
    expect(sample(s, 'goto_move_duration_seconds_bucket', { outcome: 'succeeded', le: '5' })).to.equal(1)
    expect(sample(s, 'goto_move_duration_seconds_count', { outcome: 'failed' })).to.equal(1)
    expect(sample(s, 'goto_move_downtime_seconds_sum')).to.equal(0.3)
    expect(sample(s, 'goto_moves_received_total', { outcome: 'committed' })).to.equal(1)
    expect(sample(s, 'goto_agent_info', { name: 'aws-1', version: '9.9.9' })).to.equal(1)
    expect(sample(s, 'process_resident_memory_bytes')).to.be.greaterThan(0)
  })

  it('counts wire bytes and their cost per link class, the compression ratio, and bytes served by holders', async () => {
    let s = await scrape()
    expect(sample(s, 'goto_transfer_link_bytes_total', { class: 'expensive' })).to.equal(0)
    expect(sample(s, 'goto_layer_bytes_from_holder_total')).to.equal(0)
    const sentBefore = sample(s, 'goto_transfer_sent_bytes_total') ?? 0
    // 1024 blob bytes so far went on the wire uncompressed, over a free link.
    prometheus.wireBytes('free', sentBefore, 0)
    prometheus.bytesSent(2 ** 30)
    prometheus.wireBytes('expensive', 2 ** 29, 0.09)
    prometheus.wireBytes('cheap', 2 ** 29, 0.02)
    prometheus.layerBytesFromHolder(4096)
    s = await scrape()
    expect(sample(s, 'goto_transfer_link_bytes_total', { class: 'expensive' })).to.equal(2 ** 29)
    expect(sample(s, 'goto_transfer_link_cost_total', { class: 'expensive' })).to.be.closeTo(0.045, 1e-12)
    expect(sample(s, 'goto_transfer_link_cost_total', { class: 'cheap' })).to.be.closeTo(0.01, 1e-12)
    expect(sample(s, 'goto_transfer_link_cost_total', { class: 'free' })).to.equal(0)
    expect(sample(s, 'goto_transfer_compression_ratio')).to.be.closeTo((2 ** 30 + sentBefore) / (2 ** 30 + sentBefore), 1e-9)
    prometheus.bytesSent(2 ** 20)
    prometheus.wireBytes('expensive', 2 ** 19, 0.09)
    s = await scrape()
    expect(sample(s, 'goto_transfer_compression_ratio')).to.be.closeTo((2 ** 30 + 2 ** 20 + sentBefore) / (2 ** 30 + 2 ** 19 + sentBefore), 1e-9)
    expect(sample(s, 'goto_layer_bytes_from_holder_total')).to.equal(4096)
  })

  it('reports each snapshot\'s age at scrape time, and drops a forgotten one', async () => {
    prometheus.snapshotTaken('web', clock - 5000)
    prometheus.snapshotTaken('db', clock)
    let s = await scrape()
    expect(sample(s, 'goto_snapshot_age_seconds', { container: 'web' })).to.equal(5)
    expect(sample(s, 'goto_snapshot_age_seconds', { container: 'db' })).to.equal(0)
    clock += 60_000
    prometheus.snapshotForgotten('db')
    s = await scrape()
    expect(sample(s, 'goto_snapshot_age_seconds', { container: 'web' })).to.equal(65)
    expect(sample(s, 'goto_snapshot_age_seconds', { container: 'db' })).to.equal(undefined)
  })

  it('serves only GET and HEAD /metrics', async () => {
    expect((await fetch(`${base}/`)).status).to.equal(404)
    expect((await fetch(`${base}/metrics/x`)).status).to.equal(404)
    const post = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' })
    expect(post.status).to.equal(405)
    expect(post.headers.get('allow')).to.equal('GET, HEAD')
    const head = await fetch(`${base}/metrics`, { method: 'HEAD' })
    expect(head.status).to.equal(200)
    expect(await head.text()).to.equal('')
    expect((await fetch(`${base}/metrics?x=1`)).status).to.equal(200)
  })

  it('refuses an address it cannot bind with a ConfigError naming --metrics-listen', async () => {
    const taken = new MetricsServer({ host: '127.0.0.1', port: server.address?.port ?? 0 }, prometheus, silent)
    const err = await rejection(taken.start())
    expect(err).to.be.instanceOf(ConfigError)
    expect((err as ConfigError).option).to.equal('--metrics-listen')
    await taken.stop()
  })

  it('has a no-op sink for an agent without metrics', () => {
    NO_METRICS.bytesSent(1)
    NO_METRICS.moveEnded('failed', { seconds: 1, reason: 'X' })
    NO_METRICS.snapshotTaken('web', 0)
  })
})
