/**
 * Where an operator orders a move (/goto/move/1.0.0, operators only), and the move's script: the
 * container's lock, then the six steps of a move, each one call on a TransferSession (session.ts),
 * each logged with the move ID and reported to the operator as an event:
 *
 *   plan      inspect the container; refuse a stopped one, any setting the fidelity table refuses
 *             (protocol/fidelity.ts, each by its name), host-level powers (unless
 *             --allow-host-access), bind mounts (unless allowed), a user-defined network that
 *             exists at the destination with other settings (networks.ts), a second
 *             move of the same container, a destination that is unknown, dead or ourselves; the
 *             operator is sent the spec to sign (an `order` event, answered with the signed order:
 *             protocol/orders.ts); the destination verifies that order, checks architecture, disk,
 *             names and ports and says which layers it has. A dry run stops here.
 *   pre-copy  the container keeps running while the image layers the destination lacks stream to it;
 *             then named volumes both ends can read directly are synced in rounds (rounds.ts: each
 *             round sends what changed since the previous one, a `round` event each), until a
 *             round's difference is small enough or stops shrinking.
 *   freeze    pause; what the container changed becomes one layer (from the engine's change list).
 *             --live: a CRIU checkpoint instead of the pause (it stops the container with its
 *             processes' memory kept); both ends were asked first (live.ts: CRIU, experimental
 *             engine, CPU) and the move is refused before anything freezes if either cannot.
 *   hand-over that layer, the final volume round (only the last difference), the other volumes' data,
 *             and (live) the checkpoint's files, verified one by one at the destination.
 *   restore   the destination loads, creates, copies the volume data, starts (live: from the
 *             checkpoint, the processes going on where they were) and confirms `running`.
 *   commit    only then is the source container removed (with its moved volumes).
 * Any failure before the destination confirmed: the session rolls back — the destination removes
 * what it made, the source container is unpaused (live: restored from its own checkpoint, or
 * started afresh if that fails — the log and the `failed` event say which), nothing is lost. Downtime is pause → running at
 * the destination. If this agent dies meanwhile, freeze recovery (recovery.ts) finishes the job.
 */
import type { AuthService } from '../net/auth-service.js'
import type { DockerHost } from '../docker/docker-host.js'
import type { ContainerInfo, ContainerSpec } from '../docker/types.js'
import type { Logger } from '../log.js'
import type { Timings } from '../timings.js'
import { NO_METRICS, type Metrics } from '../metrics/sink.js'
import type { ContainerLocks } from './locks.js'
import type { KeptImages } from './kept-images.js'
import { TransferSession, inspectSource, type PreparedTransfer, type SessionDeps } from './session.js'
import { nextAfterRound, treeBytes, type RoundTally, type RoundTimings } from './rounds.js'
import { costOf } from '../transfer/links.js'
import { networkWarnings } from './networks.js'
import { projectMembers } from './project.js'
import { MOVE_PROTOCOL } from '../../protocol/ids.js'
import { parseMoveOrder, parseOrderReply, type LiveTimings, type MoveEvent, type MoveOrder, type MovePlan, type MoveStep, type OrderRequest, type Resumed } from '../../protocol/move-messages.js'
import { specDigest, type SignedOrder } from '../../protocol/orders.js'
import { describeRefusals } from '../../protocol/fidelity.js'
import { outsideConnections, type LiveCheck } from './live.js'
import {
  BindMountRefusedError, ContainerNotRunningError, DestinationUnavailableError, FieldRefusedError, HostAccessRefusedError, ImageNotFoundError,
  LiveUnavailableError, MoveInProgressError, toWireError
} from '../../protocol/errors.js'

/** Progress events at most this often, so a fast transfer does not flood the operator's terminal. */
const PROGRESS_INTERVAL_MS = 200

/** Labels a container carries when it leaves this host (failover's owner and epoch stamps). */
export interface TravelLabels {
  travelLabels: (container: string) => Record<string, string> | undefined
}

export interface MoveDeps {
  auth: AuthService
  /** This agent's peer ID (the source a move order names). */
  selfId: string
  docker: DockerHost
  /** What every transfer session of this agent is built with. */
  sessions: SessionDeps
  /** One transfer per container (shared with snapshots and freeze recovery). */
  locks: ContainerLocks
  /** Images loaded back here after a move out (a destination waits for them). */
  kept: KeptImages
  /** Labels to add to the spec of a container that leaves (default: none). */
  labels?: TravelLabels
  timings: Pick<Timings, 'transferControlTimeoutMs'> & RoundTimings
  /** Moves started, ended and their durations (default: none kept). */
  metrics?: Pick<Metrics, 'moveStarted' | 'moveEnded'>
  /** Whether this host can take part in a live move (default: none: every --live move is refused). */
  live?: Pick<LiveCheck, 'require'>
  log: Logger
}

type Emit = (event: MoveEvent) => Promise<void>

/** One container of a move (a project move has several) between its steps. */
interface Member {
  info: ContainerInfo
  session: TransferSession
  log: Logger
  plan: MovePlan
  layersSent: number
  /** (--live) This host's part of the preflight; the move freezes by a checkpoint. */
  live?: Awaited<ReturnType<LiveCheck['require']>>
  /** (--live) What the checkpoint took, once handed over. */
  liveTimings?: LiveTimings
  /** (--live=auto) Why the move is an ordinary one: the preflight's refusal. */
  notLive?: string
}

/** The operator's signature on what a move will do (on /goto/move: an `order` event and its reply). */
export type SignMove = (request: OrderRequest, signal: AbortSignal) => Promise<SignedOrder>

/** How long the operator's CLI may take to answer an `order` event with the signed order. */
const ORDER_REPLY_TIMEOUT_MS = 30_000

export class MoveService {
  private readonly metrics: Pick<Metrics, 'moveStarted' | 'moveEnded'>

  constructor (private readonly deps: MoveDeps) {
    this.metrics = deps.metrics ?? NO_METRICS
  }

  async start (): Promise<void> {
    await this.deps.auth.handle(MOVE_PROTOCOL, ['operator'], async (js, peer) => {
      const order = parseMoveOrder(await js.read(AbortSignal.timeout(this.deps.timings.transferControlTimeoutMs)))
      // The move goes on as long as the operator's stream is open; closing it (Ctrl-C) aborts it,
      // and an aborted move rolls back like a failed one.
      const ac = new AbortController()
      js.onClose(() => { ac.abort(new DestinationUnavailableError('the operator closed the move stream')) })
      this.deps.log.info('move ordered', { by: peer.name, container: order.container, to: order.to, dryRun: order.dryRun, maxRate: order.maxRate })
      const sign: SignMove = async (request, signal) => {
        await js.write({ event: 'order', request } satisfies MoveEvent, signal)
        return parseOrderReply(await js.read(AbortSignal.any([signal, AbortSignal.timeout(ORDER_REPLY_TIMEOUT_MS)]))).order
      }
      await this.move(order, async ev => { await js.write(ev, ac.signal).catch(() => {}) }, ac.signal, sign)
      await js.close().catch(() => {})
    })
  }

  async stop (): Promise<void> {}

  /**
   * Runs one move to its end; reports through `emit`; never throws (failures are events). `sign`
   * gets the operator's signed order for the spec before the destination is asked to prepare.
   */
  async move (order: MoveOrder, emit: Emit, signal: AbortSignal, sign: SignMove): Promise<void> {
    if (order.project === true) { await this.moveProject(order, emit, signal, sign); return }
    let info: ContainerInfo
    try {
      info = await inspectSource(this.deps.docker, order.container, this.deps.sessions.selfName, signal)
      if (!this.deps.locks.take(info.id)) throw new MoveInProgressError(`container '${info.name}' is already being moved`)
    } catch (err) {
      await this.failed(order, emit, err, null, 'none-needed')
      return
    }
    // From here on this move holds the container's lock, until its rollback (if any) is over.
    const session = new TransferSession(this.deps.sessions, 'move', info, order.maxRate === undefined ? {} : { maxRate: order.maxRate })
    const startedAt = performance.now()
    if (!order.dryRun) this.metrics.moveStarted()
    try {
      await this.steps(order, info, session, startedAt, emit, sign, signal)
    } catch (err) {
      const rollback = await session.abort()
      if (!order.dryRun) this.metrics.moveEnded('failed', { seconds: secondsSince(startedAt), reason: toWireError(err).name })
      await this.failed(order, emit, err, session.moveId, rollback, session.resumed)
    } finally {
      this.deps.locks.release(info.id)
      await session.close()
    }
  }

  /**
   * A compose project (order.container names it) as one transaction: every member's container locked
   * or none, each phase for every member before the next, freeze in reverse start order, restore in
   * start order (project.ts), commit only once all run there; any failure rolls every member back, in
   * reverse start order. Reports the members' own events, then one `done` or `failed` naming the
   * project, with the project's downtime (first freeze to last restore). Never throws.
   */
  private async moveProject (order: MoveOrder, emit: Emit, signal: AbortSignal, sign: SignMove): Promise<void> {
    const held: string[] = []
    const members: Member[] = []
    const startedAt = performance.now()
    let infos: ContainerInfo[]
    try {
      if (order.live !== undefined) throw new LiveUnavailableError(`project '${order.container}' moves with a pause, not live: move its containers one by one with --live`)
      const rows = await this.deps.docker.listContainers(signal)
      infos = []
      for (const p of projectMembers(rows, order.container)) infos.push(await inspectSource(this.deps.docker, p.id, this.deps.sessions.selfName, signal))
      for (const info of infos) {
        if (!this.deps.locks.take(info.id)) throw new MoveInProgressError(`container '${info.name}' of project '${order.container}' is already being moved`)
        held.push(info.id)
      }
    } catch (err) {
      for (const id of held) this.deps.locks.release(id)
      await this.failed(order, emit, err, null, 'none-needed')
      return
    }
    const sessions = infos.map(info => new TransferSession(this.deps.sessions, 'move', info, order.maxRate === undefined ? {} : { maxRate: order.maxRate }))
    if (!order.dryRun) this.metrics.moveStarted()
    try {
      for (const [i, info] of infos.entries()) members.push(await this.planMember({ ...order, container: info.name }, info, sessions[i], emit, sign, signal))
      if (order.dryRun) {
        for (const s of [...sessions].reverse()) await s.abort()
        await emit({ event: 'done', moveId: null, container: order.container, from: this.deps.sessions.selfName, to: order.to, bytesSent: 0, layersSent: 0, layersSkipped: sum(members.map(m => m.plan.layersPresent)), downtimeMs: 0 })
        return
      }
      for (const m of members) await this.precopyMember(m, emit, signal)
      const frozenAt = performance.now()
      for (const m of [...members].reverse()) await this.freezeMember(m, emit, signal)
      for (const m of members) await this.handOverMember(m, emit, signal)
      for (const m of members) await this.restoreMember(m, emit, signal)
      const downtimeMs = Math.round(performance.now() - frozenAt)
      for (const m of members) await this.commitMember(m, emit)
      const bytesSent = sum(sessions.map(s => s.bytesSent))
      const bytesOnWire = sum(sessions.map(s => s.wireBytes))
      this.deps.log.info('project move done', { project: order.container, to: order.to, containers: members.length, bytesSent, downtimeMs })
      this.metrics.moveEnded('succeeded', { seconds: secondsSince(startedAt), downtimeSeconds: downtimeMs / 1000 })
      await emit({ event: 'done', moveId: null, container: order.container, from: this.deps.sessions.selfName, to: order.to, bytesSent, bytesOnWire, layersSent: sum(members.map(m => m.layersSent)), layersSkipped: sum(members.map(m => m.plan.layersPresent)), downtimeMs })
    } catch (err) {
      const results: Array<'none-needed' | 'done' | 'incomplete'> = []
      for (const s of [...sessions].reverse()) results.push(await s.abort())
      const rollback = results.includes('incomplete') ? 'incomplete' : results.includes('done') ? 'done' : 'none-needed'
      if (!order.dryRun) this.metrics.moveEnded('failed', { seconds: secondsSince(startedAt), reason: toWireError(err).name })
      await this.failed(order, emit, err, null, rollback)
    } finally {
      for (const id of held) this.deps.locks.release(id)
      for (const s of sessions) await s.close()
    }
  }

  private async failed (order: MoveOrder, emit: Emit, err: unknown, moveId: string | null, rollback: 'none-needed' | 'done' | 'incomplete', resumed?: Resumed): Promise<void> {
    const error = toWireError(err)
    this.deps.log.warn('move failed', { moveId, container: order.container, to: order.to, reason: error.name, error: error.message, rollback, resumed })
    await emit({ event: 'failed', moveId, container: order.container, error, rollback, ...resumed === undefined ? {} : { resumed } })
  }

  /** The six steps of one container; throws on failure (the caller rolls back). */
  private async steps (order: MoveOrder, info: ContainerInfo, session: TransferSession, startedAt: number, emit: Emit, sign: SignMove, signal: AbortSignal): Promise<void> {
    const m = await this.planMember(order, info, session, emit, sign, signal)
    if (order.dryRun) {
      await session.abort()
      await emit({ event: 'done', moveId: session.moveId, container: info.name, from: m.plan.from, to: order.to, bytesSent: 0, layersSent: 0, layersSkipped: m.plan.layersPresent, downtimeMs: 0, ...m.notLive === undefined ? {} : { notLive: m.notLive } })
      return
    }
    await this.precopyMember(m, emit, signal)
    await this.freezeMember(m, emit, signal)
    await this.handOverMember(m, emit, signal)
    const downtimeMs = await this.restoreMember(m, emit, signal)
    await this.commitMember(m, emit)
    const { bytesSent, wireBytes: bytesOnWire, bytesFromHolders } = session
    const liveTimings = m.liveTimings
    m.log.info('move done', { bytesSent, bytesOnWire, bytesFromHolders, downtimeMs, ...liveTimings })
    this.metrics.moveEnded('succeeded', { seconds: secondsSince(startedAt), downtimeSeconds: downtimeMs / 1000 })
    await emit({
      event: 'done', moveId: session.moveId, container: info.name, from: m.plan.from, to: order.to, bytesSent, bytesOnWire, ...bytesFromHolders > 0 ? { bytesFromHolders } : {},
      layersSent: m.layersSent, layersSkipped: m.plan.layersPresent, downtimeMs,
      ...liveTimings === undefined ? {} : { live: liveTimings }, ...m.notLive === undefined ? {} : { notLive: m.notLive }
    })
  }

  /**
   * This host's part of a live move's preflight (live.ts): CRIU and the engine here, and nothing in
   * the container a checkpoint cannot carry to another address (an established TCP connection to a
   * peer outside it); or LiveUnavailableError saying what is wrong.
   */
  private async liveHere (info: ContainerInfo, signal: AbortSignal): Promise<Awaited<ReturnType<LiveCheck['require']>>> {
    if (this.deps.live === undefined) throw new LiveUnavailableError(`live move not possible: ${this.deps.sessions.selfName}: this agent checks no CRIU`)
    const report = await this.deps.live.require(signal)
    const held = info.state.pid === undefined ? [] : await outsideConnections(info.state.pid, signal)
    if (held.length > 0) {
      throw new LiveUnavailableError(`live move not possible: container '${info.name}' holds an established TCP connection to a peer outside it (${held.slice(0, 4).join(', ')}${held.length > 4 ? `, and ${held.length - 4} more` : ''}), which cannot follow it to another address: close it, or move without --live`)
    }
    return report
  }

  private async step (m: Pick<Member, 'session' | 'log'>, s: MoveStep, emit: Emit): Promise<void> {
    m.log.info('move step', { step: s })
    await emit({ event: 'step', moveId: m.session.moveId, step: s })
  }

  /** plan: the spec, the operator's signature, the destination's prepare; emits the plan. */
  private async planMember (order: MoveOrder, info: ContainerInfo, session: TransferSession, emit: Emit, sign: SignMove, signal: AbortSignal): Promise<Member> {
    const { moveId } = session
    const from = this.deps.sessions.selfName
    const log = this.deps.log.child({ moveId, container: info.name, to: order.to })
    await this.step({ session, log }, 'plan', emit)
    const warnings: string[] = []
    const spec = await this.planSpec(info, order, warnings, signal)
    // A live move asks this host first, before anything reaches the destination; the destination
    // answers for itself at prepare (and refuses there, before it takes anything).
    // --live=auto: a refusal at either end makes it an ordinary move, said in the plan and `done`.
    let notLive: string | undefined
    const fallBack = (err: unknown): undefined => {
      if (order.live !== 'auto' || !(err instanceof LiveUnavailableError)) throw err
      notLive = err.message
      warnings.push(`not live (--live=auto): ${err.message}: an ordinary move instead, its processes start afresh at ${order.to}`)
      return undefined
    }
    let live = order.live === undefined ? undefined : await this.liveHere(info, signal).catch(fallBack)
    await session.connect(order.to, signal)
    const signed = await sign({
      moveId, container: info.name, from: this.deps.selfId, fromName: from, to: session.destinationId, toName: order.to, spec, specDigest: specDigest(spec)
    }, signal)
    let prepared: PreparedTransfer
    try {
      prepared = await session.prepare(spec, signal, signed, live === undefined ? undefined : { arch: live.arch, cpuFlags: live.cpuFlags })
    } catch (err) {
      // The destination refused the live part before it made anything: ask it again for an ordinary move.
      if (live === undefined) throw err
      live = fallBack(err)
      prepared = await session.prepare(spec, signal, signed)
    }
    const { image, toSend } = prepared
    const plan: MovePlan = {
      moveId, container: info.name, from, to: order.to, image: image.id,
      layersTotal: image.diffIds.length, layersPresent: image.diffIds.length - toSend.length, layersToSend: toSend.length,
      bytesToSend: toSend.length === 0 ? 0 : image.size, volumes: prepared.volumes.map(v => v.name),
      ...info.fidelity !== undefined && info.fidelity.hostPowers.length > 0 ? { hostPowers: info.fidelity.hostPowers } : {},
      volumeData: await Promise.all(prepared.volumes.map(async v => {
        const synced = prepared.synced.find(s => s.name === v.name)
        const bytes = synced === undefined ? null : await treeBytes(synced.dir, signal).catch(() => null)
        return { name: v.name, copy: synced === undefined ? 'spool' as const : 'rounds' as const, bytes }
      }))
    }
    const cap = session.rateCap
    if (cap !== undefined) plan.rateCap = cap
    if (live !== undefined && prepared.live !== undefined) {
      const { cpuFlags: _, ...source } = live
      plan.live = { source, destination: prepared.live }
    }
    if (prepared.networks.length > 0) plan.networks = prepared.networks
    warnings.push(...networkWarnings(prepared.networks, order.to))
    if (prepared.imageRef === 'taken' && spec.imageRef !== undefined) {
      warnings.push(`${order.to} has a tag ${spec.imageRef} on another image, which keeps it: the container runs there as image ${image.id.slice(7, 19)} with no name`)
    }
    if (order.dryRun) await this.costPlan(plan, session, prepared, signal)
    if (warnings.length > 0) {
      plan.warnings = warnings
      for (const w of warnings) log.warn('move plan', { warning: w })
    }
    await emit({ event: 'plan', plan })
    return { info, session, log, plan, layersSent: 0, ...live === undefined ? {} : { live }, ...notLive === undefined ? {} : { notLive } }
  }

  /** pre-copy: the layers the destination lacks, then volume rounds while the container runs. */
  private async precopyMember (m: Member, emit: Emit, signal: AbortSignal): Promise<void> {
    await this.step(m, 'pre-copy', emit)
    const pre = await m.session.precopy(this.progress(m.session.moveId, 'pre-copy', m.plan.bytesToSend, emit), signal)
    m.layersSent += pre.layers
    const rounds: RoundTally[] = []
    if (m.session.syncedVolumes.length > 0) {
      do rounds.push(await this.round(m, false, emit, signal)); while (nextAfterRound(rounds, this.deps.timings) === 'again')
    }
  }

  private async round (m: Member, final: boolean, emit: Emit, signal: AbortSignal): Promise<RoundTally> {
    const r = await m.session.volumeRound(final, signal)
    m.log.info('volume round', { round: r.round, bytes: r.bytes, files: r.files, final })
    await emit({ event: 'round', moveId: m.session.moveId, round: r.round, bytes: r.bytes, files: r.files, final })
    return r
  }

  private async freezeMember (m: Member, emit: Emit, signal: AbortSignal): Promise<void> {
    await this.step(m, 'freeze', emit)
    await m.session.freeze(`go-to move ${m.session.moveId}`, signal, { live: m.live !== undefined })
    if (m.live !== undefined) m.log.info('checkpoint taken', { ms: m.session.checkpointMs })
  }

  /** hand-over: the changes layer, the final volume round, the other volumes' data; (live) the checkpoint. */
  private async handOverMember (m: Member, emit: Emit, signal: AbortSignal): Promise<void> {
    await this.step(m, 'hand-over', emit)
    const hand = await m.session.handOver(this.progress(m.session.moveId, 'hand-over', m.session.changesBytes, emit), signal)
    m.layersSent += hand.layers
    if (m.session.syncedVolumes.length > 0) await this.round(m, true, emit, signal)
    await m.session.spoolVolumes(signal)
    if (m.live !== undefined) {
      const cp = await m.session.handOverCheckpoint(this.progress(m.session.moveId, 'hand-over', 0, emit), signal)
      m.log.info('checkpoint handed over', { bytes: cp.bytes, files: cp.files, ms: cp.ms })
      m.liveTimings = { checkpointMs: m.session.checkpointMs, checkpointBytes: cp.bytes, checkpointFiles: cp.files, transferMs: cp.ms, restoreMs: 0 }
    }
  }

  /** restore: the destination runs it; returns the downtime so far. */
  private async restoreMember (m: Member, emit: Emit, signal: AbortSignal): Promise<number> {
    await this.step(m, 'restore', emit)
    const restoreAt = performance.now()
    const downtimeMs = await m.session.restore(signal)
    if (m.liveTimings !== undefined) m.liveTimings.restoreMs = Math.round(performance.now() - restoreAt)
    return downtimeMs
  }

  private async commitMember (m: Member, emit: Emit): Promise<void> {
    await this.step(m, 'commit', emit)
    await m.session.commit()
    // The move is over without the image kept here (reported done meanwhile); this host, as a
    // destination, waits for it before it says which layers it has (KeptImages.settled).
    this.deps.kept.track(m.session.keepImage(), m.log)
  }

  /**
   * The spec that travels: a running container only, none of its settings refused by the fidelity
   * table, host powers only with --allow-host-access, bind mounts refused or dropped, the image's
   * reference only if it still names the container's image here, failover's labels added.
   */
  private async planSpec (info: ContainerInfo, order: MoveOrder, warnings: string[], signal: AbortSignal): Promise<ContainerSpec> {
    if (!info.state.running) throw new ContainerNotRunningError(`container '${info.name}' is ${info.state.status}; only a running container moves`)
    const refused = info.fidelity?.refused ?? []
    if (refused.length > 0) throw new FieldRefusedError(`container '${info.name}' has settings a move cannot carry: ${describeRefusals(refused)}`)
    const powers = info.fidelity?.hostPowers ?? []
    if (powers.length > 0 && order.allowHostAccess !== true) {
      throw new HostAccessRefusedError(`container '${info.name}' has host-level powers: ${powers.join(', ')}; pass --allow-host-access to move it with them (the signed order names that allowance)`)
    }
    const withRef = await this.checkImageRef(info, warnings, signal)
    const binds = info.spec.mounts.filter(m => m.type === 'bind')
    if (binds.length > 0 && !order.allowBindMounts) {
      throw new BindMountRefusedError(`container '${info.name}' bind-mounts ${binds.map(b => b.type === 'bind' ? b.source : '').join(', ')} from this host, which cannot follow it; pass --allow-bind-mounts to move it without that data`)
    }
    const spec = order.allowBindMounts ? { ...withRef, mounts: withRef.mounts.filter(m => m.type !== 'bind') } : withRef
    const extra = this.deps.labels?.travelLabels(spec.name)
    return extra === undefined ? spec : { ...spec, labels: { ...spec.labels, ...extra } }
  }

  /**
   * (dry run) The link's class and price; each layer's bytes, where it comes from (here, or a member
   * near the destination that holds it), the link it crosses and the estimated cost; bytes per class of link.
   */
  private async costPlan (plan: MovePlan, session: TransferSession, prepared: PreparedTransfer, signal: AbortSignal): Promise<void> {
    const link = session.linkPolicy
    const sizes = await session.layerBytes(signal)
    const send = new Set(prepared.toSend)
    plan.link = { class: link.class, costPerGiB: link.costPerGiB, compress: link.compress, ...link.rateMbit === undefined ? {} : { rateMbit: link.rateMbit } }
    const linkBytes = { free: 0, cheap: 0, expensive: 0 }
    plan.layers = prepared.image.diffIds.map(d => {
      if (!send.has(d)) return { diffId: d, bytes: sizes?.get(d) ?? null, send: false, cost: 0 }
      const held = prepared.fromHolders.get(d)
      const bytes = sizes?.get(d) ?? held?.size ?? null
      const via = held === undefined ? { from: plan.from, link: link.class, costPerGiB: link.costPerGiB } : { from: held.name, link: held.link, costPerGiB: held.costPerGiB }
      linkBytes[via.link] += bytes ?? 0
      return { diffId: d, bytes, send: true, cost: bytes === null ? 0 : costOf(bytes, via.costPerGiB), from: via.from, link: via.link }
    })
    if (sizes !== undefined) plan.bytesToSend = plan.layers.reduce((n, l) => n + (l.send ? l.bytes ?? 0 : 0), 0)
    plan.linkBytes = linkBytes
    // Layers of unknown size (docker save only) are priced as the image's size on the source's link.
    plan.estimatedCost = sizes === undefined ? costOf(plan.bytesToSend, link.costPerGiB) : plan.layers.reduce((n, l) => n + l.cost, 0)
  }

  /** The spec without its imageRef when that tag names another image here now (the container's was retagged). */
  private async checkImageRef (info: ContainerInfo, warnings: string[], signal: AbortSignal): Promise<ContainerSpec> {
    const ref = info.spec.imageRef
    if (ref === undefined) return info.spec
    const { imageRef: _, ...without } = info.spec
    try {
      if ((await this.deps.docker.inspectImage(ref, signal)).id === info.spec.image) return info.spec
    } catch (err) {
      if (!(err instanceof ImageNotFoundError)) throw err
    }
    warnings.push(`${ref} no longer names the container's image here: the destination does not tag it`)
    return without
  }

  private progress (moveId: string, step: MoveStep, total: number, emit: Emit): (n: number) => void {
    let sent = 0
    let last = 0
    return (n: number) => {
      sent += n
      const now = Date.now()
      if (now - last < PROGRESS_INTERVAL_MS) return
      last = now
      void emit({ event: 'progress', moveId, step, bytesSent: sent, bytesTotal: Math.max(total, sent) })
    }
  }
}

function sum (xs: number[]): number {
  return xs.reduce((n, x) => n + x, 0)
}

/** Seconds since a performance.now() reading. */
function secondsSince (t: number): number {
  return (performance.now() - t) / 1000
}
