/**
 * The Prometheus side of the metrics sink. This module (and prom-client with it) is loaded by
 * main.ts with a dynamic import only when --metrics-listen is given, so an agent without metrics
 * does not pay for it in memory.
 *
 * Every series is registered on a registry of our own (not prom-client's global one), with the Node
 * process metrics (process_*, nodejs_*) next to ours. Peers by state and snapshot ages are computed
 * when scraped; counters and histograms are fed through the `Metrics` interface.
 * docs/operations.md lists every series with its meaning and labels.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { PeerState } from '../../protocol/messages.js'
import type { IncomingMoveOutcome, Metrics, MoveOutcome } from './sink.js'
import { costOf, type LinkClass } from '../transfer/links.js'

/** Whole moves: seconds for a small container on one LAN, up to many minutes for a large image across clouds. */
export const MOVE_DURATION_BUCKETS_S = [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]
/** Downtime follows what the container wrote, not the image: tenths of a second to a minute. */
export const MOVE_DOWNTIME_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]
/**
 * How often prom-client's event-loop lag monitor wakes the loop. Its default (10 ms, a hundred
 * wake-ups a second) cost an idle agent 0.35 % of a core against a budget of 1 %; once a second
 * costs nothing measurable and still shows a loop blocked for long enough to delay heartbeats.
 */
export const EVENT_LOOP_SAMPLE_MS = 1000

export interface PrometheusMetricsDeps {
  /** The peer table's counts, read at every scrape. */
  peerCounts: () => Record<PeerState, number>
  /** For goto_agent_info. */
  version: string
  name: string
  now?: () => number
}

export class PrometheusMetrics implements Metrics {
  readonly registry = new Registry()
  private readonly sent: Counter
  private readonly received: Counter
  private readonly started: Counter
  private readonly succeeded: Counter
  private readonly failed: Counter<'reason'>
  private readonly duration: Histogram<'outcome'>
  private readonly downtime: Histogram
  private readonly incoming: Counter<'outcome'>
  private readonly snapshots = new Map<string, number>()
  private readonly linkBytes: Counter<'class'>
  private readonly linkCost: Counter<'class'>
  private readonly fromHolder: Counter
  /** Blob bytes in and on the wire, for the compression ratio (read at scrape). */
  private readonly totals = { in: 0, wire: 0 }

  constructor (deps: PrometheusMetricsDeps) {
    const registers = [this.registry]
    const now = deps.now ?? Date.now
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS })
    new Gauge({ name: 'goto_agent_info', help: 'Always 1; the labels name this agent and its version.', labelNames: ['name', 'version'], registers })
      .set({ name: deps.name, version: deps.version }, 1)
    new Gauge<'state'>({
      name: 'goto_peers',
      help: 'Agents in this agent\'s peer table, by state (alive, suspect, dead); itself not included.',
      labelNames: ['state'],
      registers,
      collect () {
        for (const [state, n] of Object.entries(deps.peerCounts())) this.set({ state }, n)
      }
    })
    const snapshots = this.snapshots
    new Gauge<'container'>({
      name: 'goto_snapshot_age_seconds',
      help: 'Seconds since the last snapshot of each protected container running here was taken.',
      labelNames: ['container'],
      registers,
      collect () {
        this.reset()
        const t = now()
        for (const [container, at] of snapshots) this.set({ container }, Math.max(0, (t - at) / 1000))
      }
    })
    this.sent = new Counter({ name: 'goto_transfer_sent_bytes_total', help: 'Layer and volume bytes this agent sent to destinations of its moves (payload only).', registers })
    this.linkBytes = new Counter({ name: 'goto_transfer_link_bytes_total', help: 'Blob bytes this agent put on the wire (after compression) as a transfer source, by link class (free, cheap, expensive).', labelNames: ['class'], registers })
    this.linkCost = new Counter({ name: 'goto_transfer_link_cost_total', help: 'Estimated cost of those bytes (the link table\'s price per GiB, in its currency), by link class.', labelNames: ['class'], registers })
    const totals = this.totals
    new Gauge({
      name: 'goto_transfer_compression_ratio',
      help: 'Blob bytes in over blob bytes on the wire, of everything this agent sent as a transfer source (1: nothing compressed, or nothing sent yet).',
      registers,
      collect () { this.set(totals.wire > 0 ? totals.in / totals.wire : 1) }
    })
    this.fromHolder = new Counter({ name: 'goto_layer_bytes_from_holder_total', help: 'Layer bytes this agent received from a holder near it instead of from the move\'s source.', registers })
    this.received = new Counter({ name: 'goto_transfer_received_bytes_total', help: 'Layer and volume bytes this agent received as the destination of moves (payload only).', registers })
    this.started = new Counter({ name: 'goto_moves_started_total', help: 'Moves ordered at this agent (dry runs excluded) that began planning.', registers })
    this.succeeded = new Counter({ name: 'goto_moves_succeeded_total', help: 'Started moves whose container runs at the destination.', registers })
    this.failed = new Counter({ name: 'goto_moves_failed_total', help: 'Started moves that failed (and were rolled back), by error name.', labelNames: ['reason'], registers })
    this.duration = new Histogram({ name: 'goto_move_duration_seconds', help: 'Duration of started moves, plan to commit or rollback.', labelNames: ['outcome'], buckets: MOVE_DURATION_BUCKETS_S, registers })
    this.downtime = new Histogram({ name: 'goto_move_downtime_seconds', help: 'Downtime of successful moves: pause here to running at the destination.', buckets: MOVE_DOWNTIME_BUCKETS_S, registers })
    this.incoming = new Counter({ name: 'goto_moves_received_total', help: 'Moves into this agent that ended, by outcome (committed, rolled_back); dry runs are not counted.', labelNames: ['outcome'], registers })
    // Series with known label values exist from the start (at 0), so rates and alerts see them.
    for (const outcome of ['succeeded', 'failed'] as const) this.duration.zero({ outcome })
    for (const outcome of ['committed', 'rolled_back'] as const) this.incoming.inc({ outcome }, 0)
    for (const c of ['free', 'cheap', 'expensive'] as const) { this.linkBytes.inc({ class: c }, 0); this.linkCost.inc({ class: c }, 0) }
  }

  bytesSent (n: number): void { this.sent.inc(n); this.totals.in += n }
  wireBytes (linkClass: LinkClass, n: number, costPerGiB: number): void {
    this.linkBytes.inc({ class: linkClass }, n)
    this.linkCost.inc({ class: linkClass }, costOf(n, costPerGiB))
    this.totals.wire += n
  }

  layerBytesFromHolder (n: number): void { this.fromHolder.inc(n) }
  bytesReceived (n: number): void { this.received.inc(n) }
  moveStarted (): void { this.started.inc() }

  moveEnded (outcome: MoveOutcome, e: { seconds: number, downtimeSeconds?: number, reason?: string }): void {
    if (outcome === 'succeeded') this.succeeded.inc()
    else this.failed.inc({ reason: e.reason ?? 'unknown' })
    this.duration.observe({ outcome }, e.seconds)
    if (e.downtimeSeconds !== undefined) this.downtime.observe(e.downtimeSeconds)
  }

  moveReceived (outcome: IncomingMoveOutcome): void { this.incoming.inc({ outcome }) }
  snapshotTaken (container: string, takenAtMs: number): void { this.snapshots.set(container, takenAtMs) }
  snapshotForgotten (container: string): void { this.snapshots.delete(container) }
}
