/**
 * Snapshot scheduling: which owned container is due a snapshot, and taking it. Each owned, running,
 * unfenced container is snapshotted every snapshotIntervalMs to its `replicas` holders, chosen by
 * rendezvous hashing among the alive peers (placement.ts). One snapshot at a time per host, since
 * each one freezes a container; after a failed one the next try waits RETRY_FRACTION of the
 * interval. The result (time, seq, holders, freeze time, bytes) is recorded in FailoverState only if
 * the container is still ours at the same epoch when it completes.
 *
 * Taking a snapshot is the SnapshotTaker's job (agent/failover/snapshotter.ts drives the transfer
 * session); this module decides only when and to whom. Time comes from the caller's `now`.
 *
 *   const schedule = new SnapshotSchedule({ snapshotter, state, replicas, timings, now, busy, metrics, log })
 *   schedule.next(view, name => running(name), now)   // on every tick: starts at most one
 *   schedule.abort('web', new TakeoverRefusedError('fenced'))
 */
import type { PeerEntry } from '../membership/peer-table.js'
import type { Timings } from '../timings.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics/sink.js'
import type { ContainerRecord, FailoverState } from './state.js'
import type { MeshView } from './consensus.js'
import { replicaHolders } from './placement.js'

/** Takes one snapshot of `container` to replica holder `holder` (a member name). */
export interface SnapshotTaker {
  snapshot (container: string, holder: string, meta: { epoch: number, seq: number }, signal: AbortSignal): Promise<{ bytes: number, freezeMs: number, volumeBytes?: number, changesBytes?: number }>
}

/**
 * A snapshot (pre-copy of a large image included, to every holder in turn) may take this long
 * before it is given up; the next one is tried after the retry pause.
 */
export const SNAPSHOT_TIMEOUT_MS = 10 * 60_000
/**
 * After a failed snapshot, the next try waits this fraction of the interval: soon enough that one
 * bad attempt costs at most half an interval of staleness, slow enough not to freeze a container
 * over and over against a holder that keeps failing.
 */
export const RETRY_FRACTION = 0.5

export interface SnapshotScheduleDeps {
  snapshotter: SnapshotTaker
  state: FailoverState
  /** Replica holders per protected container (K). */
  replicas: number
  timings: Pick<Timings, 'snapshotIntervalMs'>
  now: () => number
  /** Containers with a snapshot, takeover, fence or unfence under way (shared with the other parts). */
  busy: Set<string>
  metrics: Pick<Metrics, 'snapshotTaken'>
  log: Logger
}

/**
 * Whether a container is due a snapshot at `now`: a full interval since the last one taken
 * (`lastAt`, 0 if none) and RETRY_FRACTION of it since the last attempt (`triedAt`, 0 if none).
 */
export function isDue (lastAt: number, triedAt: number, now: number, intervalMs: number): boolean {
  return now - lastAt >= intervalMs && now - triedAt >= intervalMs * RETRY_FRACTION
}

export class SnapshotSchedule {
  /** Whether a snapshot is under way (one at a time). */
  private taking = false
  /** Last snapshot attempt per container (success or not), for pacing retries. */
  private readonly attempted = new Map<string, number>()
  /** The abort switch of each snapshot under way, for fencing. */
  private readonly inFlight = new Map<string, AbortController>()

  constructor (private readonly deps: SnapshotScheduleDeps) {}

  /**
   * Starts the next due snapshot unless one is under way or no peer is alive to hold it; returns
   * the promise of the one started (it never rejects), undefined if none.
   */
  next (view: Pick<MeshView, 'alive'>, isRunning: (name: string) => boolean, now: number): Promise<void> | undefined {
    if (this.taking || view.alive.length === 0) return undefined
    const { state, timings, busy } = this.deps
    for (const { name, record } of state.owned()) {
      if (record.fenced === true || busy.has(name) || !isRunning(name)) continue
      const last = record.lastSnapshot === undefined ? 0 : Date.parse(record.lastSnapshot.at)
      if (!isDue(last, this.attempted.get(name) ?? 0, now, timings.snapshotIntervalMs)) continue
      this.taking = true
      busy.add(name)
      this.attempted.set(name, now)
      return this.take(name, record, view.alive).catch(err => {
        this.deps.log.error('snapshot failed', { container: name, error: (err as Error).message })
      }).finally(() => { this.taking = false; busy.delete(name) })
    }
    return undefined
  }

  /** Aborts the snapshot of `name` under way, if any (the container is being fenced). */
  abort (name: string, reason: Error): void {
    this.inFlight.get(name)?.abort(reason)
  }

  private async take (name: string, record: ContainerRecord & { epoch: number }, alive: PeerEntry[]): Promise<void> {
    const { snapshotter, state, replicas, now, metrics, log } = this.deps
    const holders = replicaHolders(name, alive.map(e => e.peerId), replicas)
      .map(id => alive.find(e => e.peerId === id) as PeerEntry)
    record.seq++
    const seq = record.seq
    const epoch = record.epoch
    await state.save()
    const at = new Date(now()).toISOString()
    const stored: string[] = []
    let bytes = 0
    let volumeBytes = 0
    let changesBytes = 0
    let freezeMs = 0
    const ac = new AbortController()
    this.inFlight.set(name, ac)
    const signal = AbortSignal.any([ac.signal, AbortSignal.timeout(SNAPSHOT_TIMEOUT_MS)])
    try {
      for (const h of holders) {
        if (signal.aborted) break
        try {
          const r = await snapshotter.snapshot(name, h.name, { epoch, seq }, signal)
          stored.push(h.name)
          bytes += r.bytes
          volumeBytes += r.volumeBytes ?? 0
          changesBytes += r.changesBytes ?? 0
          freezeMs = Math.max(freezeMs, r.freezeMs)
        } catch (err) {
          log.warn('snapshot not stored', { container: name, holder: h.name, reason: (err as Error).name, error: (err as Error).message })
        }
      }
    } finally {
      this.inFlight.delete(name)
    }
    if (stored.length === 0) return
    // Still ours at the same epoch (not moved, fenced or taken over meanwhile)?
    if (record.epoch !== epoch) return
    record.lastSnapshot = { at, seq, holders: stored, freezeMs, bytes }
    metrics.snapshotTaken(name, Date.parse(at))
    await state.save()
    // bytes: all sent to every holder; volumeBytes: of that, the synced volumes' differences; changesBytes: the changes layers.
    log.info('snapshot taken', { container: name, epoch, seq, holders: stored, freezeMs, bytes, volumeBytes, changesBytes })
  }
}
