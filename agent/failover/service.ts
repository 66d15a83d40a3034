/**
 * Failover: protected containers run again elsewhere when their host dies — exactly once, with their
 * latest snapshot. Serves /goto/failover/1.0.0 (claims from agents; protect/unprotect from operators)
 * and runs one tick every failoverTickMs:
 *
 *   scan      (every dockerRefreshMs) which local containers are protected — the goto.protect=true
 *             label or an operator's `goto protect` — and adopt the running ones as owned, at the
 *             epoch their goto.epoch label says (1 if none); drop those gone from this host (moved).
 *   fence     with fewer than a majority of the known members (this host counted) heard within
 *             fenceAfterMs, stop every owned container (timings.ts shows why this ends before the
 *             majority may restore). With fewer than three members nothing is fenced or restored.
 *   stale     a member alive now that owns one of our containers at a higher epoch: our copy is
 *             stopped and renamed `<name>.stale-e<epoch>`, and we no longer own it.
 *   unfence   back in the majority with a fenced container nobody took over: claim epoch+1 for
 *             ourselves and start it again.
 *   orphans   a container whose highest-epoch owner (as gossiped) is dead: among the alive members
 *             that hold its newest snapshot, `assignRestorers` picks one; if it is us, claim
 *             epoch+1 from the majority and restore the snapshot, stamped with the new epoch.
 *   snapshot  each owned container every snapshotIntervalMs, to its `replicas` holders chosen by
 *             rendezvous hashing among alive peers (MoveService.snapshot, a move that is stored).
 *
 * A claim is granted by a member only if it sees the previous owner dead itself and has granted no
 * higher epoch (nor the same one to another claimant) for that name; the grant is persisted before
 * the reply. A claim that wins a majority of the known members owns the container at that epoch, so
 * two claimants can never both win, whatever their views of the mesh.
 */
import type { AuthService } from '../net/auth-service.js'
import { openStream } from '../net/dial.js'
import type { DockerHost } from '../docker/host.js'
import type { PeerTable, PeerEntry } from '../membership/peer-table.js'
import { restoreContainer, undoRestore, type Made } from '../move/restore.js'
import type { Timings } from '../timings.js'
import type { Logger } from '../log.js'
import { NO_METRICS, type Metrics } from '../metrics/sink.js'
import type { FailoverState, ContainerRecord } from './state.js'
import type { SnapshotStore } from './snapshot-store.js'
import type { LayerStore } from '../transfer/layer-store.js'
import {
  assignRestorers, compareVersions, failoverPossible, hasQuorum, isStale, judgeClaim, majority, replicaHolders, type Orphan, type SnapshotVersion
} from './placement.js'
import { FAILOVER_PROTOCOL } from '../../protocol/ids.js'
import { readResult, type JsonStream } from '../../protocol/wire.js'
import type { VerifiedPeer } from '../../certs/verify.js'
import {
  parseClaimReply, parseFailoverRequest, type ClaimReply, type ClaimRequest, type FailoverGossip, type ProtectReply, type ProtectRequest
} from '../../protocol/failover-messages.js'
import type { ContainerRow, FailoverStatus } from '../../protocol/messages.js'
import { ContainerNotFoundError, RoleNotAllowedError, TakeoverRefusedError, UnknownContainerError, toWireError } from '../../protocol/errors.js'

/** The label that protects a container, and the one that stamps its ownership epoch. */
export const PROTECT_LABEL = 'goto.protect'
export const EPOCH_LABEL = 'goto.epoch'
/** Default number of replica holders per protected container. */
export const DEFAULT_REPLICAS = 1
/** How long one claim request or one protect order may take. */
const REQUEST_TIMEOUT_MS = 5000
/** A snapshot (pre-copy included) may take this long before it is given up. */
const SNAPSHOT_TIMEOUT_MS = 10 * 60_000
/** After a failed snapshot, the next try waits this fraction of the interval. */
const RETRY_FRACTION = 0.5

export interface FailoverDeps {
  auth: AuthService
  docker: DockerHost
  table: PeerTable
  /** Takes one snapshot of a container to one replica holder (snapshotter.ts). */
  snapshotter: { snapshot: (container: string, holder: string, meta: { epoch: number, seq: number }, signal: AbortSignal) => Promise<{ bytes: number, freezeMs: number }> }
  state: FailoverState
  snapshots: SnapshotStore
  selfId: string
  selfName: string
  timings: Timings
  /** Replica holders per protected container (K). */
  replicas: number
  /** Snapshots taken, and containers no longer protected here (default: none kept). */
  metrics?: Pick<Metrics, 'snapshotTaken' | 'snapshotForgotten'>
  log: Logger
}

interface View {
  /** Known members, this host counted. */
  members: number
  /** Alive peers. */
  alive: PeerEntry[]
  /** Whether this host hears a majority now. */
  quorum: boolean
}

export class FailoverService {
  private timer: NodeJS.Timeout | undefined
  private lastScan = 0
  private scanning = false
  private startedAt = 0
  /** Containers with a snapshot, takeover, fence or unfence under way. */
  private readonly busy = new Set<string>()
  /** Last snapshot attempt per container (success or not), for pacing retries. */
  private readonly attempted = new Map<string, number>()
  /** Lowest epoch worth claiming next per container, raised by refusals. */
  private readonly claimFloor = new Map<string, number>()
  /** Local containers of the last scan, by name. */
  private local = new Map<string, ContainerRow>()
  private snapshotting = false
  /** The abort switch of each snapshot under way, for fencing. */
  private readonly inFlight = new Map<string, AbortController>()
  private stopped = false

  private readonly metrics: Pick<Metrics, 'snapshotTaken' | 'snapshotForgotten'>

  constructor (private readonly deps: FailoverDeps) {
    this.metrics = deps.metrics ?? NO_METRICS
  }

  async start (): Promise<void> {
    this.stopped = false
    this.startedAt = Date.now()
    for (const { name, record } of this.deps.state.owned()) {
      if (record.lastSnapshot !== undefined) this.metrics.snapshotTaken(name, Date.parse(record.lastSnapshot.at))
    }
    await this.deps.auth.handle(FAILOVER_PROTOCOL, ['agent', 'operator'], async (js, peer) => { await this.serve(js, peer) })
    await this.scan()
    this.timer = setInterval(() => { this.tick() }, this.deps.timings.failoverTickMs)
  }

  async stop (): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
  }

  /** What this host says of itself in heartbeats. */
  gossip (): FailoverGossip {
    return {
      owned: this.deps.state.owned().map(({ name, record }) => ({ name, epoch: record.epoch })),
      held: this.deps.snapshots.list().map(m => ({ name: m.name, owner: m.owner, epoch: m.epoch, seq: m.seq }))
    }
  }

  /** Labels a container of ours carries when it moves: still protected, owned one epoch later. */
  travelLabels (container: string): Record<string, string> | undefined {
    const rec = this.deps.state.peek(container)
    if (rec?.epoch === undefined) return undefined
    return { [PROTECT_LABEL]: 'true', [EPOCH_LABEL]: String(rec.epoch + 1) }
  }

  // --- the tick --------------------------------------------------------------------------

  private tick (): void {
    if (this.stopped) return
    const now = Date.now()
    if (now - this.lastScan >= this.deps.timings.dockerRefreshMs) void this.scan()
    const view = this.view()
    if (!failoverPossible(view.members)) {
      this.snapshots(view, now)
      return
    }
    this.fence(now)
    this.dropStale(view)
    if (!view.quorum) return
    this.unfence(view)
    this.takeOvers(view)
    this.snapshots(view, now)
  }

  private view (): View {
    const entries = this.deps.table.entries()
    const alive = entries.filter(e => e.state === 'alive')
    const members = entries.length + 1
    return { members, alive, quorum: hasQuorum(alive.length + 1, members) }
  }

  /** Reads the local containers; adopts protected running ones, lets go of owned ones that left. */
  private async scan (): Promise<void> {
    if (this.scanning) return
    this.scanning = true
    this.lastScan = Date.now()
    try {
      const rows = await this.deps.docker.listContainers(AbortSignal.timeout(REQUEST_TIMEOUT_MS))
      this.local = new Map(rows.map(r => [r.name, r]))
      const { state, log } = this.deps
      let changed = false
      for (const row of rows) {
        const rec = state.peek(row.name)
        if (!this.isProtected(row.name) || rec?.epoch !== undefined || row.state !== 'running' || this.busy.has(row.name)) continue
        const labelled = Number(row.labels?.[EPOCH_LABEL] ?? '0')
        const epoch = Math.max(Number.isSafeInteger(labelled) ? labelled : 0, state.grant(row.name)?.epoch ?? 0, 1)
        state.container(row.name).epoch = epoch
        changed = true
        log.info('protecting container', { container: row.name, epoch })
      }
      for (const { name } of state.owned()) {
        if (this.busy.has(name)) continue
        if (!this.local.has(name) || !this.isProtected(name)) {
          state.release(name)
          this.metrics.snapshotForgotten(name)
          changed = true
          log.info('no longer owning container', { container: name, why: this.local.has(name) ? 'unprotected' : 'gone from this host' })
        }
      }
      if (changed) await state.save()
    } catch (err) {
      this.deps.log.debug('failover scan failed', { error: (err as Error).message })
    } finally {
      this.scanning = false
    }
  }

  private isProtected (name: string): boolean {
    return this.deps.state.peek(name)?.protect ?? this.local.get(name)?.labels?.[PROTECT_LABEL] === 'true'
  }

  /** Stops every owned container when this host has not heard a majority within fenceAfterMs. */
  private fence (now: number): void {
    const { table, timings, state, docker, log } = this.deps
    if (now - this.startedAt < timings.fenceAfterMs) return
    const heard = table.entries().filter(e => e.lastSeen !== null && now - e.lastSeen < timings.fenceAfterMs).length + 1
    const members = table.entries().length + 1
    if (hasQuorum(heard, members)) return
    for (const { name, record } of state.owned()) {
      // Fencing waits for nothing: a snapshot under way is aborted (a takeover under way stops
      // the container itself once it sees the flag).
      if (record.fenced === true) continue
      this.inFlight.get(name)?.abort(new TakeoverRefusedError('fenced: no majority reachable'))
      record.fenced = true
      log.warn('fencing: no majority reachable, stopping protected container', { container: name, epoch: record.epoch, heard, members })
      void (async () => {
        try {
          await state.save()
          await docker.stop(name, { timeoutS: timings.fenceStopS }, AbortSignal.timeout((timings.fenceStopS + 10) * 1000))
        } catch (err) {
          if (!(err instanceof ContainerNotFoundError)) log.error('fencing: could not stop container', { container: name, error: (err as Error).message })
        }
      })()
    }
  }

  /** Our copies that an alive member owns at a higher epoch: stopped, renamed, no longer ours. */
  private dropStale (view: View): void {
    for (const { name, record } of this.deps.state.owned()) {
      if (this.busy.has(name)) continue
      const theirs = this.highestAliveOwner(name, view)
      if (theirs === undefined || !isStale(record.epoch, theirs.epoch)) continue
      this.busy.add(name)
      void this.retire(name, record, theirs).finally(() => { this.busy.delete(name) })
    }
  }

  private async retire (name: string, record: ContainerRecord & { epoch: number }, theirs: { name: string, epoch: number }): Promise<void> {
    const { state, log } = this.deps
    const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS * 2)
    const mine = record.epoch
    try {
      await this.setAside(name, mine, signal)
      state.release(name)
      this.metrics.snapshotForgotten(name)
      await state.save()
      log.warn('stale copy stopped: another member owns the container at a higher epoch', { container: name, epoch: mine, owner: theirs.name, ownerEpoch: theirs.epoch })
    } catch (err) {
      log.error('could not retire a stale copy', { container: name, error: (err as Error).message })
    }
  }

  /** Stops a local container of that name (if any) and renames it out of the way, keeping its data. */
  private async setAside (name: string, epoch: number, signal: AbortSignal): Promise<void> {
    const { docker } = this.deps
    try {
      await docker.stop(name, { timeoutS: this.deps.timings.fenceStopS }, signal)
      await docker.rename(name, `${name}.stale-e${epoch}-${Date.now().toString(36)}`, signal)
    } catch (err) {
      if (!(err instanceof ContainerNotFoundError)) throw err
    }
  }

  /** Fenced containers nobody took over while we were cut off: reclaim them and start them again. */
  private unfence (view: View): void {
    for (const { name, record } of this.deps.state.owned()) {
      if (record.fenced !== true || this.busy.has(name)) continue
      const theirs = this.highestAliveOwner(name, view)
      if (theirs !== undefined && theirs.epoch >= record.epoch) continue // dropStale's case
      this.busy.add(name)
      void (async () => {
        const { docker, state, log } = this.deps
        try {
          const epoch = await this.claim(name, Math.max(record.epoch + 1, this.nextEpoch(name)), { peerId: this.deps.selfId, epoch: record.epoch }, view)
          record.epoch = epoch
          record.fenced = undefined
          await state.save()
          await docker.start(name, AbortSignal.timeout(REQUEST_TIMEOUT_MS * 2))
          log.info('unfenced: majority reached again, nobody took over; container started', { container: name, epoch })
        } catch (err) {
          log.info('unfence not possible yet', { container: name, reason: (err as Error).name, error: (err as Error).message })
        } finally {
          this.busy.delete(name)
        }
      })()
    }
  }

  /** The highest epoch an alive peer says it owns `name` at. */
  private highestAliveOwner (name: string, view: View): { name: string, peerId: string, epoch: number } | undefined {
    let best: { name: string, peerId: string, epoch: number } | undefined
    for (const e of view.alive) {
      const o = e.failover?.owned.find(x => x.name === name)
      if (o !== undefined && (best === undefined || o.epoch > best.epoch)) best = { name: e.name, peerId: e.peerId, epoch: o.epoch }
    }
    return best
  }

  // --- takeover -----------------------------------------------------------------------------

  /** Finds the orphans of dead owners and takes over those assigned to us. */
  private takeOvers (view: View): void {
    const { table, state, selfId, snapshots } = this.deps
    // The highest-epoch owner of every name, as last gossiped (dead members' last word included).
    const owners = new Map<string, { peerId: string, name: string, epoch: number, dead: boolean }>()
    for (const e of table.entries()) {
      for (const o of e.failover?.owned ?? []) {
        const cur = owners.get(o.name)
        if (cur === undefined || o.epoch > cur.epoch) owners.set(o.name, { peerId: e.peerId, name: e.name, epoch: o.epoch, dead: e.state === 'dead' })
      }
    }
    for (const { name, record } of state.owned()) {
      const cur = owners.get(name)
      if (cur === undefined || record.epoch >= cur.epoch) owners.set(name, { peerId: selfId, name: this.deps.selfName, epoch: record.epoch, dead: false })
    }
    const orphans: Array<Orphan & { owner: { peerId: string, name: string, epoch: number }, newest: SnapshotVersion }> = []
    for (const [name, owner] of owners) {
      if (!owner.dead) continue
      // Who holds its newest snapshot, among the members alive now (us included).
      const held: Array<{ peerId: string, v: SnapshotVersion }> = []
      const mine = snapshots.get(name)?.manifest
      if (mine !== undefined) held.push({ peerId: selfId, v: mine })
      for (const e of view.alive) {
        const h = e.failover?.held.find(x => x.name === name)
        if (h !== undefined) held.push({ peerId: e.peerId, v: h })
      }
      if (held.length === 0) continue
      const newest = held.reduce((a, b) => compareVersions(a.v, b.v) >= 0 ? a : b).v
      orphans.push({ name, owner, newest, holders: held.filter(h => compareVersions(h.v, newest) === 0).map(h => h.peerId) })
    }
    if (orphans.length === 0) return
    const assigned = assignRestorers(orphans)
    for (const o of orphans) {
      if (assigned.get(o.name) !== selfId || this.busy.has(o.name)) continue
      this.busy.add(o.name)
      void this.takeOver(o.name, o.owner, view).finally(() => { this.busy.delete(o.name) })
    }
  }

  private async takeOver (name: string, previous: { peerId: string, name: string, epoch: number }, view: View): Promise<void> {
    const { docker, state, snapshots, log } = this.deps
    const held = snapshots.get(name)
    if (held === undefined) return
    const m = held.manifest
    const started = Date.now()
    const want = Math.max(previous.epoch + 1, m.epoch + 1, this.nextEpoch(name))
    let epoch: number
    try {
      epoch = await this.claim(name, want, previous, view)
    } catch (err) {
      log.info('takeover not granted', { container: name, from: previous.name, epoch: want, reason: (err as Error).message })
      return
    }
    log.warn('taking over container of a dead host', { container: name, from: previous.name, epoch, snapshot: `${m.epoch}.${m.seq}`, takenAt: m.takenAt })
    const signal = AbortSignal.timeout(SNAPSHOT_TIMEOUT_MS)
    const made: Made = { volumes: [] }
    try {
      // A stopped copy of the same name here (an old owner's) is kept, under another name.
      await this.setAside(name, Number(this.local.get(name)?.labels?.[EPOCH_LABEL] ?? '0'), signal)
      const spec = { ...m.spec, labels: { ...m.spec.labels, [PROTECT_LABEL]: 'true', [EPOCH_LABEL]: String(epoch) } }
      const volumes = m.volumes.map(v => ({ ...v, data: () => storedBytes(held.layers, v.digest) }))
      const rec = state.container(name)
      rec.epoch = epoch
      rec.fenced = undefined
      await state.save()
      await restoreContainer(docker, { config: Buffer.from(m.config, 'base64'), diffIds: m.diffIds, spec, store: held.layers, volumes }, made, signal, this.deps.timings.restoreStartTimeoutMs)
      // Lost the majority while restoring: fencing found nothing to stop yet, so stop it now.
      if (rec.fenced === true) await docker.stop(name, { timeoutS: this.deps.timings.fenceStopS }, signal)
      await snapshots.remove(name)
      log.warn('container restored from its snapshot', { container: name, from: previous.name, epoch, ms: Date.now() - started, snapshot: `${m.epoch}.${m.seq}` })
      void this.scan()
    } catch (err) {
      log.error('takeover failed: restore did not complete', { container: name, epoch, error: (err as Error).message })
      await undoRestore(docker, made, log)
      // We won the claim and keep it, fenced, so that nobody else restores a second copy; an
      // operator decides (docs/operations.md).
      const rec = state.container(name)
      rec.fenced = true
      await state.save()
    }
  }

  /** The lowest epoch worth claiming for `name`: past every grant we know of, except our own. */
  private nextEpoch (name: string): number {
    const g = this.deps.state.grant(name)
    const granted = g === undefined ? 0 : g.claimant === this.deps.selfId ? g.epoch : g.epoch + 1
    return Math.max(granted, this.claimFloor.get(name) ?? 0)
  }

  /**
   * Asks every alive peer to grant `name` at `epoch` (or higher, after refusals: up to one retry)
   * and grants it ourselves. Resolves with the epoch won by a majority of the known members;
   * TakeoverRefusedError otherwise.
   */
  private async claim (name: string, epoch: number, previous: { peerId: string, epoch: number }, view: View): Promise<number> {
    const req: ClaimRequest = { op: 'claim', name, epoch, previousOwner: previous.peerId, previousEpoch: previous.epoch }
    const own = await this.decide(req, this.deps.selfId)
    if (!own.granted) {
      this.claimFloor.set(name, Math.max(this.claimFloor.get(name) ?? 0, own.epoch + 1))
      throw new TakeoverRefusedError(`this host already granted epoch ${own.epoch} of '${name}'`)
    }
    const replies = await Promise.all(view.alive.map(async e => {
      try {
        const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS)
        const js = await openStream(this.deps.auth, e.peerId, e.addrs, FAILOVER_PROTOCOL, signal)
        await js.write(req, signal)
        const reply = parseClaimReply(await readResult(js, signal))
        await js.close(signal).catch(() => {})
        return reply
      } catch (err) {
        this.deps.log.debug('claim request failed', { peer: e.name, container: name, error: (err as Error).message })
        return undefined
      }
    }))
    const votes = 1 + replies.filter(r => r?.granted === true).length
    const need = majority(view.members)
    if (votes >= need) return epoch
    // A member that granted this epoch (to another claimant) or a higher one: go past it next time.
    // A refusal below it only means that member does not see the owner dead yet.
    const higher = Math.max(0, ...replies.map(r => r !== undefined && !r.granted ? r.epoch : 0))
    if (higher >= epoch) this.claimFloor.set(name, higher + 1)
    throw new TakeoverRefusedError(`epoch ${epoch} of '${name}' won ${votes} of the ${need} votes needed`)
  }

  /** Whether we grant a claim (ours included); a grant is persisted before it is reported. */
  private async decide (req: ClaimRequest, claimant: string): Promise<ClaimReply> {
    const { state, table, selfId } = this.deps
    const verdict = judgeClaim(req, claimant, {
      self: selfId,
      grant: state.grant(req.name),
      ownEpoch: state.peek(req.name)?.epoch,
      isDead: peerId => (table.get(peerId)?.state ?? 'dead') === 'dead'
    })
    if (verdict.granted) {
      state.setGrant(req.name, { epoch: req.epoch, claimant })
      await state.save()
    }
    return verdict
  }

  // --- snapshots ----------------------------------------------------------------------------

  /** Starts the next due snapshot (one at a time per host: each one freezes a container). */
  private snapshots (view: View, now: number): void {
    if (this.snapshotting || view.alive.length === 0) return
    const { state, timings } = this.deps
    for (const { name, record } of state.owned()) {
      if (record.fenced === true || this.busy.has(name) || this.local.get(name)?.state !== 'running') continue
      const last = record.lastSnapshot === undefined ? 0 : Date.parse(record.lastSnapshot.at)
      const tried = this.attempted.get(name) ?? 0
      if (now - last < timings.snapshotIntervalMs || now - tried < timings.snapshotIntervalMs * RETRY_FRACTION) continue
      this.snapshotting = true
      this.busy.add(name)
      this.attempted.set(name, now)
      void this.snapshot(name, record, view).finally(() => { this.snapshotting = false; this.busy.delete(name) })
      return
    }
  }

  private async snapshot (name: string, record: ContainerRecord & { epoch: number }, view: View): Promise<void> {
    const { snapshotter, state, replicas, log } = this.deps
    const holders = replicaHolders(name, view.alive.map(e => e.peerId), replicas)
      .map(id => view.alive.find(e => e.peerId === id) as PeerEntry)
    record.seq++
    const seq = record.seq
    const epoch = record.epoch
    await state.save()
    const at = new Date().toISOString()
    const stored: string[] = []
    let bytes = 0
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
    this.metrics.snapshotTaken(name, Date.parse(at))
    await state.save()
    log.info('snapshot taken', { container: name, epoch, seq, holders: stored, freezeMs, bytes })
  }

  // --- requests -------------------------------------------------------------------------------

  private async serve (js: JsonStream, peer: VerifiedPeer): Promise<void> {
    const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS)
    let reply
    try {
      const req = parseFailoverRequest(await js.read(signal))
      if (req.op === 'claim') {
        if (peer.role !== 'agent') throw new RoleNotAllowedError('only agents claim containers')
        const r = await this.decide(req, peer.peerId)
        this.deps.log.info(r.granted ? 'takeover claim granted' : 'takeover claim refused', { container: req.name, epoch: req.epoch, claimant: peer.name, highest: r.epoch })
        reply = { ok: true, result: r }
      } else {
        if (peer.role !== 'operator') throw new RoleNotAllowedError('only operators protect or unprotect containers')
        reply = { ok: true, result: await this.protect(req, peer) }
      }
    } catch (err) {
      reply = { ok: false, error: toWireError(err) }
    }
    await js.write(reply, signal).catch(() => {})
    await js.close(signal).catch(() => {})
  }

  private async protect (req: ProtectRequest, peer: VerifiedPeer): Promise<ProtectReply> {
    const { docker, state, log } = this.deps
    let info
    try {
      info = await docker.inspectContainer(req.container, AbortSignal.timeout(REQUEST_TIMEOUT_MS))
    } catch (err) {
      if (err instanceof ContainerNotFoundError) throw new UnknownContainerError(`no container '${req.container}' on ${this.deps.selfName}`, { cause: err })
      throw err
    }
    const rec = state.container(info.name)
    rec.protect = req.op === 'protect'
    await state.save()
    log.info(req.op === 'protect' ? 'container protected by operator' : 'container unprotected by operator', { container: info.name, by: peer.name })
    await this.scan()
    return { container: info.name, protected: rec.protect, epoch: state.peek(info.name)?.epoch ?? 0 }
  }

  // --- status ---------------------------------------------------------------------------------

  status (): FailoverStatus {
    const view = this.view()
    const now = Date.now()
    const safe = failoverPossible(view.members) && view.quorum
    const reason = !failoverPossible(view.members)
      ? `failover is not safe: ${view.members} member(s), fewer than three, so no majority survives a death (see docs/operations.md for recovery by hand)`
      : !view.quorum ? `this host reaches ${view.alive.length + 1} of ${view.members} members, not a majority (${majority(view.members)}): its protected containers are fenced` : null
    const names = new Set([...this.local.keys(), ...this.deps.state.owned().map(o => o.name)])
    return {
      safe,
      reason,
      members: view.members,
      reachable: view.alive.length + 1,
      majority: majority(view.members),
      replicas: this.deps.replicas,
      snapshotIntervalS: this.deps.timings.snapshotIntervalMs / 1000,
      containers: [...names].sort().map(name => {
        const rec = this.deps.state.peek(name)
        const last = rec?.lastSnapshot
        return {
          name,
          protected: this.isProtected(name),
          owner: rec?.epoch !== undefined ? this.deps.selfName : null,
          epoch: rec?.epoch ?? null,
          fenced: rec?.fenced === true,
          lastSnapshotAt: last?.at ?? null,
          snapshotAgeS: last === undefined ? null : Math.round((now - Date.parse(last.at)) / 100) / 10,
          snapshotSeq: last?.seq ?? null,
          holders: last?.holders ?? [],
          freezeMs: last?.freezeMs ?? null,
          snapshotBytes: last?.bytes ?? null
        }
      }),
      held: this.deps.snapshots.list().map(m => ({
        name: m.name, owner: m.ownerName, epoch: m.epoch, seq: m.seq, takenAt: m.takenAt, ageS: Math.round((now - Date.parse(m.takenAt)) / 100) / 10
      }))
    }
  }
}

/** The bytes of a stored blob, opened when first read. */
async function * storedBytes (store: LayerStore, digest: string): AsyncGenerator<Uint8Array> {
  const { stream } = await store.open(digest)
  yield * stream
}
