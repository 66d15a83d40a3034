/**
 * Failover: protected containers run again elsewhere when their host dies — exactly once, with their
 * latest snapshot. Serves /goto/failover/1.0.0 (claims from agents; protect/unprotect from operators)
 * and runs one tick every failoverTickMs, each step its own part:
 *
 *   scan      (every dockerRefreshMs, here) which local containers are protected — the goto.protect=true
 *             label or an operator's `goto protect` — and adopt the running ones as owned, at the
 *             epoch their goto.epoch label says (1 if none); drop those gone from this host (moved).
 *   fence, stale, unfence   fencing.ts: stop what we own without a majority; give way to a higher
 *             epoch; reclaim what nobody took over once back in the majority.
 *   orphans   takeover.ts: restore the containers of dead owners assigned to us, after a claim.
 *   snapshot  snapshot-schedule.ts: each owned container every snapshotIntervalMs, one at a time,
 *             to its replica holders (through the SnapshotTaker).
 *
 * Claims (ours and our peers') are decided by the claim round, consensus.ts: a claim that wins a
 * majority of the known members owns the container at that epoch, so two claimants can never both
 * win, whatever their views of the mesh. The signed grants of the majority are the epoch's
 * certificate: kept with the ownership, shown in heartbeats, and verified (certificates.ts) by every
 * member before a gossiped epoch changes anything there (stale copies, takeovers, grants, stores). With fewer than three members nothing is fenced or restored.
 * Every time decision reads the injected clock `now` (Date.now by default); the timers are real.
 */
import type { AuthService } from '../net/auth-service.js'
import type { DockerHost } from '../docker/docker-host.js'
import type { PeerTable } from '../membership/peer-table.js'
import type { Timings } from '../timings.js'
import type { Logger } from '../log.js'
import { NO_METRICS, type Metrics } from '../metrics/sink.js'
import type { FailoverState } from './state.js'
import type { SnapshotStore } from './snapshot-store.js'
import { ClaimRound, meshView, type ClaimPeers, type GrantSigner } from './consensus.js'
import { EpochCertificates, type CertificateTrust } from './certificates.js'
import { Libp2pClaimPeers } from './claim-peers.js'
import { Fencing } from './fencing.js'
import { SnapshotSchedule, type SnapshotTaker } from './snapshot-schedule.js'
import { Takeover } from './takeover.js'
import { EPOCH_LABEL, PROTECT_LABEL } from './labels.js'
import { failoverPossible, majority } from './placement.js'
import { FAILOVER_PROTOCOL } from '../../protocol/ids.js'
import type { JsonStream } from '../../protocol/wire.js'
import type { VerifiedPeer } from '../../certs/verify.js'
import { MAX_OWNED_GOSSIP, parseFailoverRequest, type FailoverGossip, type ProtectReply, type ProtectRequest } from '../../protocol/failover-messages.js'
import type { ContainerRow, FailoverStatus } from '../../protocol/messages.js'
import { ContainerNotFoundError, OrderMismatchError, OrderMissingError, RoleNotAllowedError, TakeoverRefusedError, UnknownContainerError, toWireError } from '../../protocol/errors.js'
import type { OrderVerifier } from '../../protocol/orders.js'
import { unprotectable } from './snapshotter.js'

/** How long one engine listing or inspection, or answering one request on our stream, may take. */
const REQUEST_TIMEOUT_MS = 5000

export interface FailoverDeps {
  auth: AuthService
  docker: DockerHost
  table: PeerTable
  /** Takes the snapshots the schedule decides on. */
  snapshotter: SnapshotTaker
  state: FailoverState
  snapshots: SnapshotStore
  selfId: string
  selfName: string
  /** Verifies the operator's signed protect/unprotect orders (shared with the move destination). */
  orders: OrderVerifier
  /** Signs this host's grants (its identity key and agent certificate). */
  signer: GrantSigner
  /** The mesh CA and revocation list that epoch certificates are verified against. */
  trust: CertificateTrust
  timings: Timings
  /** Replica holders per protected container (K). */
  replicas: number
  /** Snapshots taken, and containers no longer protected here (default: none kept). */
  metrics?: Pick<Metrics, 'snapshotTaken' | 'snapshotForgotten'>
  /** The clock of every time decision (default Date.now), as PeerTable's. */
  now?: () => number
  /** How claims reach the peers (default: /goto/failover streams through `auth`). */
  claimPeers?: ClaimPeers
  log: Logger
}

export class FailoverService {
  private timer: NodeJS.Timeout | undefined
  private lastScan = 0
  private scanning = false
  /** Containers with a snapshot, takeover, fence or unfence under way. */
  private readonly busy = new Set<string>()
  /** Local containers of the last scan, by name. */
  private local = new Map<string, ContainerRow>()
  private stopped = false

  private readonly now: () => number
  private readonly metrics: Pick<Metrics, 'snapshotTaken' | 'snapshotForgotten'>
  private readonly certs: EpochCertificates
  private readonly claims: ClaimRound
  private readonly fencing: Fencing
  private readonly schedule: SnapshotSchedule
  private readonly takeover: Takeover

  constructor (private readonly deps: FailoverDeps) {
    const { auth, docker, table, state, snapshots, selfId, selfName, timings, replicas, log } = deps
    const now = this.now = deps.now ?? Date.now
    const metrics = this.metrics = deps.metrics ?? NO_METRICS
    const busy = this.busy
    const certs = this.certs = new EpochCertificates(deps.trust, log)
    this.claims = new ClaimRound({ state, table, selfId, signer: deps.signer, certs, peers: deps.claimPeers ?? new Libp2pClaimPeers(auth), log })
    this.fencing = new Fencing({ docker, table, state, claims: this.claims, certs, selfId, timings, now, busy, metrics, log })
    this.schedule = new SnapshotSchedule({ snapshotter: deps.snapshotter, state, replicas, timings, now, busy, metrics, log })
    this.takeover = new Takeover({
      docker, table, state, snapshots, claims: this.claims, certs, fencing: this.fencing, selfId, selfName, timings, now, busy, log,
      onRestored: () => { void this.scan() }
    })
    snapshots.setOwnership({
      shown: (name, owner, epoch) => this.ownershipShown(name, owner, epoch),
      owners: name => this.deps.table.entries().filter(e => e.state !== 'dead' && e.failover?.owned.some(o => o.name === name) === true).map(e => e.peerId)
    })
  }

  /** Whether `owner` shows (in its gossip, by a verified certificate) that it owns `name` at `epoch`. */
  private ownershipShown (name: string, owner: string, epoch: number): boolean {
    const o = this.deps.table.get(owner)?.failover?.owned.find(x => x.name === name && x.epoch === epoch)
    return o !== undefined && epoch > 1 && this.certs.shows(name, epoch, owner, o.cert)
  }

  async start (): Promise<void> {
    this.stopped = false
    this.fencing.armAt(this.now())
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

  /** What this host says of itself in heartbeats: at most MAX_OWNED_GOSSIP owned containers, with their certificates. */
  gossip (): FailoverGossip {
    return {
      owned: this.deps.state.owned().slice(0, MAX_OWNED_GOSSIP).map(({ name, record }) => ({ name, epoch: record.epoch, ...record.cert === undefined ? {} : { cert: record.cert } })),
      held: this.deps.snapshots.list().map(m => ({ name: m.name, owner: m.owner, epoch: m.epoch, seq: m.seq }))
    }
  }

  // --- the tick --------------------------------------------------------------------------

  private tick (): void {
    if (this.stopped) return
    const now = this.now()
    if (now - this.lastScan >= this.deps.timings.dockerRefreshMs) void this.scan()
    const view = meshView(this.deps.table)
    const running = (name: string): boolean => this.local.get(name)?.state === 'running'
    if (!failoverPossible(view.members)) {
      void this.schedule.next(view, running, now)
      return
    }
    for (const name of this.fencing.fence(now).names) this.schedule.abort(name, new TakeoverRefusedError('fenced: no majority reachable'))
    void this.fencing.dropStale(view)
    if (!view.quorum) return
    void this.fencing.unfence(view)
    void this.takeover.tick(view, this.local)
    void this.schedule.next(view, running, now)
  }

  /** Reads the local containers; adopts protected running ones, lets go of owned ones that left. */
  private async scan (): Promise<void> {
    if (this.scanning) return
    this.scanning = true
    this.lastScan = this.now()
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
        // Adopted without a claim: epoch 1 needs none; a higher label (a move's) is not shown to
        // others until a claim certifies it.
        state.own(row.name, epoch)
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

  // --- requests -------------------------------------------------------------------------------

  private async serve (js: JsonStream, peer: VerifiedPeer): Promise<void> {
    const signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS)
    let reply
    try {
      const req = parseFailoverRequest(await js.read(signal))
      if (req.op === 'claim') {
        if (peer.role !== 'agent') throw new RoleNotAllowedError('only agents claim containers')
        const r = await this.claims.decide(req, peer.peerId)
        this.deps.log.info(r.granted ? 'takeover claim granted' : 'takeover claim refused', { container: req.name, epoch: req.epoch, claimant: peer.name, highest: r.epoch, why: r.why })
        reply = { ok: true, result: { granted: r.granted, epoch: r.epoch, ...r.grant === undefined ? {} : { grant: r.grant } } }
      } else {
        if (peer.role !== 'operator') throw new RoleNotAllowedError('only operators protect or unprotect containers')
        reply = { ok: true, result: await this.protect(req, peer) }
      }
    } catch (err) {
      this.deps.log.warn('failover request refused', { from: peer.name, reason: (err as Error).name, error: (err as Error).message })
      reply = { ok: false, error: toWireError(err) }
    }
    await js.write(reply, signal).catch(() => {})
    await js.close(signal).catch(() => {})
  }

  /**
   * Changes a container's protection here, on an operator's signed order naming this agent, this
   * container and this change (protocol/orders.ts): the connection's operator role alone is not
   * enough, so that the proof an operator asked travels with the request.
   */
  private async protect (req: ProtectRequest, peer: VerifiedPeer): Promise<ProtectReply> {
    const { docker, state, log } = this.deps
    if (req.order === undefined) throw new OrderMissingError(`${peer.name} asked to ${req.op} '${req.container}' without a signed order`)
    const order = await this.deps.orders.verify(req.order, [req.op])
    if (order.host !== this.deps.selfId) throw new OrderMismatchError(`the ${req.op} order is for another agent (${order.host})`)
    if (order.container !== req.container) throw new OrderMismatchError(`the ${req.op} order is for '${order.container}', not '${req.container}'`)
    let info
    try {
      info = await docker.inspectContainer(req.container, AbortSignal.timeout(REQUEST_TIMEOUT_MS))
    } catch (err) {
      if (err instanceof ContainerNotFoundError) throw new UnknownContainerError(`no container '${req.container}' on ${this.deps.selfName}`, { cause: err })
      throw err
    }
    const refusal = req.op === 'protect' ? unprotectable(info) : undefined
    if (refusal !== undefined) throw refusal
    await this.deps.orders.accept(order)
    const rec = state.container(info.name)
    rec.protect = req.op === 'protect'
    await state.save()
    log.info(req.op === 'protect' ? 'container protected by operator' : 'container unprotected by operator', { container: info.name, by: peer.name })
    await this.scan()
    return { container: info.name, protected: rec.protect, epoch: state.peek(info.name)?.epoch ?? 0 }
  }

  // --- status ---------------------------------------------------------------------------------

  status (): FailoverStatus {
    const view = meshView(this.deps.table)
    const now = this.now()
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
