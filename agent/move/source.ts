/**
 * The source side of a move, and where an operator orders one (/goto/move/1.0.0, operators only).
 * Also answers /goto/locate/1.0.0: which member runs a container.
 *
 * The state machine, each step logged with the move ID and reported to the operator as an event:
 *   plan      inspect the container and its image chain; refuse bind mounts (unless allowed), a
 *             second move of the same container, a destination that is unknown, dead or ourselves;
 *             ask the destination to `prepare` (it checks architecture, disk, names, ports and says
 *             which layers it has). A dry run stops here.
 *   pre-copy  the container keeps running while the image layers the destination lacks stream to it.
 *   freeze    pause; export what the container changed as one layer (from the engine's change list).
 *   hand-over that layer, an image config for "image + that layer", the spec and the volumes' data.
 *   restore   the destination loads, creates, copies the volume data, starts and confirms `running`.
 *   commit    only then is the source container removed (with its moved volumes).
 * Any failure before the destination confirmed: the destination removes what it made, the source
 * container is unpaused — nothing is lost. Downtime is pause → running at the destination.
 * The same holds if this agent dies while the container is frozen: the freeze journal
 * (freeze-journal.ts) tells the restarted agent whether to unpause it or to finish letting it go.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { once } from 'node:events'
import type { Connection } from '@libp2p/interface'
import type { AuthService } from '../net/auth-service.js'
import { connectTo, openStream } from '../net/dial.js'
import type { DockerHost } from '../docker/host.js'
import type { ContainerInfo, ContainerSpec, ExportedChanges, ImageInfo } from '../docker/types.js'
import { buildLayeredConfig } from '../docker/layered-config.js'
import type { LayerStore } from '../transfer/layer-store.js'
import type { FreezeJournal, FrozenRecord } from './freeze-journal.js'
import { MOVE_IDLE_TIMEOUT_MS } from './destination.js'
import { loadVerified } from '../transfer/load.js'
import { chainIds } from '../transfer/plan.js'
import type { PeerTable } from '../membership/peer-table.js'
import { counted } from '../transfer/counted.js'
import type { Logger } from '../log.js'
import { NO_METRICS, type Metrics } from '../metrics/sink.js'
import type { MemberInfo } from '../../protocol/messages.js'
import { LOCATE_PROTOCOL, MOVE_PROTOCOL, STATUS_PROTOCOL, TRANSFER_PROTOCOL } from '../../protocol/ids.js'
import { JsonStream, readResult, sendBlob } from '../../protocol/wire.js'
import { parseAgentStatus } from '../../protocol/messages.js'
import {
  parseMoveOrder, type MoveEvent, type MoveOrder, type MovePlan, type MoveStep, type LayerReply, type PrepareReply, type TransferRequest
} from '../../protocol/move-messages.js'
import {
  BindMountRefusedError, ContainerBusyError, ContainerNotFoundError, ContainerNotRunningError, DestinationUnavailableError, MoveInProgressError,
  TransferIncompleteError, UnknownContainerError, UnknownMoveError, VolumeNotFoundError, toWireError
} from '../../protocol/errors.js'

/** Progress events at most this often, so a fast transfer does not flood the operator's terminal. */
const PROGRESS_INTERVAL_MS = 200
/** One transfer step (a prepare, an abort) that carries no data may take this long. */
const CONTROL_TIMEOUT_MS = 30_000
/** How many images' save-stream layer names to remember (a few hundred bytes each). */
const LAYER_PATH_CACHE_IMAGES = 64
/** How often containers left frozen by an interrupted move or snapshot are looked at again. */
const SETTLE_INTERVAL_MS = 5_000
/**
 * How long the destination of an interrupted move is told its outcome before this side gives up:
 * past its idle timeout it has rolled back a move it never heard of by itself.
 */
const SETTLE_GIVE_UP_MS = 2 * MOVE_IDLE_TIMEOUT_MS

export interface MoveDeps {
  auth: AuthService
  docker: DockerHost
  table: PeerTable
  self: () => MemberInfo
  /** Where layers and volume archives are spooled while they are identified and sent. */
  spoolDir: string
  /** Verified layers (shared with the destination side), to load the moved image here too. */
  store: LayerStore
  /** Containers frozen here, recorded before each pause (what a restarted agent must finish). */
  journal: FreezeJournal
  /** Moves started, ended and their durations; blob bytes sent (default: none kept). */
  metrics?: Metrics
  /** Labels to add to the spec of a container that leaves this host (failover's owner and epoch stamps). */
  travelLabels?: (container: string) => Record<string, string> | undefined
  log: Logger
}

type Emit = (event: MoveEvent) => Promise<void>

interface Blob { size: number, path?: string, source?: AsyncIterable<Uint8Array> }

export class MoveService {
  /** Container IDs with a move under way: one move per container at a time. */
  private readonly moving = new Set<string>()
  /** Per image: save-stream path → diff ID, learned from the destination's replies (see sendLayers). */
  private readonly layerPaths = new Map<string, Map<string, string>>()
  /** Moved images being loaded back into this engine after their move ended. */
  private readonly keeping = new Set<Promise<void>>()
  private readonly metrics: Metrics
  private settleTimer?: NodeJS.Timeout
  private settling?: Promise<void>
  private readonly stopping = new AbortController()

  constructor (private readonly deps: MoveDeps) {
    this.metrics = deps.metrics ?? NO_METRICS
  }

  async start (): Promise<void> {
    // A container this agent left frozen when it died runs again (or is let go of) before any new
    // move or snapshot can see it; telling its destination waits for the mesh (settle, below).
    const { unreadable } = await this.deps.journal.list()
    for (const u of unreadable) this.deps.log.error('unreadable freeze record left in place; check that container by hand', { path: u.path, error: u.error })
    await this.settle()
    this.settleTimer = setInterval(() => { this.settling ??= this.settle().finally(() => { this.settling = undefined }) }, SETTLE_INTERVAL_MS)
    this.settleTimer.unref()
    await this.deps.auth.handle(MOVE_PROTOCOL, ['operator'], async (js, peer) => {
      const order = parseMoveOrder(await js.read(AbortSignal.timeout(CONTROL_TIMEOUT_MS)))
      // The move goes on as long as the operator's stream is open; closing it (Ctrl-C) aborts it,
      // and an aborted move rolls back like a failed one.
      const ac = new AbortController()
      js.onClose(() => { ac.abort(new DestinationUnavailableError('the operator closed the move stream')) })
      this.deps.log.info('move ordered', { by: peer.name, container: order.container, to: order.to, dryRun: order.dryRun })
      await this.move(order, async ev => { await js.write(ev, ac.signal).catch(() => {}) }, ac.signal)
      await js.close().catch(() => {})
    })
    await this.deps.auth.handle(LOCATE_PROTOCOL, ['agent', 'operator'], async js => {
      const signal = AbortSignal.timeout(CONTROL_TIMEOUT_MS)
      const { container } = await js.read(signal) as { container?: unknown }
      let reply
      try {
        if (typeof container !== 'string') throw new UnknownContainerError('locate needs a container name')
        reply = { ok: true, result: await this.locate(container, signal) }
      } catch (err) {
        reply = { ok: false, error: toWireError(err) }
      }
      await js.write(reply, signal)
      await js.close(signal)
    })
  }

  async stop (): Promise<void> {
    clearInterval(this.settleTimer)
    this.stopping.abort()
    await this.settling
    await this.settled()
  }

  /** Which member runs `container`: this host first, then every alive peer (asked for its status). */
  async locate (container: string, signal: AbortSignal): Promise<{ name: string, peerId: string, addrs: string[] }> {
    const self = this.deps.self()
    try {
      await this.deps.docker.inspectContainer(container, signal)
      return { name: self.name, peerId: self.peerId, addrs: self.addrs }
    } catch (err) {
      if (!(err instanceof ContainerNotFoundError)) throw err
    }
    const alive = this.deps.table.entries().filter(e => e.state === 'alive')
    const found = await Promise.all(alive.map(async e => {
      try {
        const js = await this.open(e.peerId, e.addrs, STATUS_PROTOCOL, signal)
        await js.write({}, signal)
        const status = parseAgentStatus(await readResult(js, signal))
        await js.close(signal)
        return status.containers.some(c => c.name === container || c.id.startsWith(container)) ? e : undefined
      } catch {
        return undefined
      }
    }))
    const owner = found.find(e => e !== undefined)
    if (owner === undefined) throw new UnknownContainerError(`no container '${container}' on any alive member (${[self.name, ...alive.map(e => e.name)].join(', ')})`)
    return { name: owner.name, peerId: owner.peerId, addrs: owner.addrs }
  }

  /** Runs one move to its end; reports through `emit`; never throws (failures are events). */
  async move (order: MoveOrder, emit: Emit, signal: AbortSignal): Promise<void> {
    const self = this.deps.self()
    let moveId: string | null = null
    let info: ContainerInfo | undefined
    let connection: Connection | undefined
    let paused = false
    let destinationPrepared = false
    /** This move's freeze record, from the pause on (freeze-journal.ts). */
    let frozen: FrozenRecord | undefined
    /** Whether this move holds the container's lock (a refused second move must not release it). */
    let locked = false
    /** Loading the moved image into this engine, after the move (see commit). */
    let keep: Promise<void> | undefined
    /** When a move that counts in the metrics (not a dry run) started. */
    let startedAt: number | undefined
    const spool = join(this.deps.spoolDir, randomBytes(8).toString('hex'))
    try {
      info = await this.inspect(order.container, signal)
      if (this.moving.has(info.id)) throw new MoveInProgressError(`container '${info.name}' is already being moved`)
      this.moving.add(info.id)
      locked = true
      moveId = randomBytes(8).toString('hex')
      if (!order.dryRun) {
        startedAt = performance.now()
        this.metrics.moveStarted()
      }
      const log = this.deps.log.child({ moveId, container: info.name, to: order.to })
      const step = async (s: MoveStep): Promise<void> => { log.info('move step', { step: s }); await emit({ event: 'step', moveId: moveId as string, step: s }) }

      // --- plan --------------------------------------------------------------------------
      await step('plan')
      if (!info.state.running) throw new ContainerNotRunningError(`container '${info.name}' is ${info.state.status}; only a running container moves`)
      const binds = info.spec.mounts.filter(m => m.type === 'bind')
      if (binds.length > 0 && !order.allowBindMounts) {
        throw new BindMountRefusedError(`container '${info.name}' bind-mounts ${binds.map(b => b.type === 'bind' ? b.source : '').join(', ')} from this host, which cannot follow it; pass --allow-bind-mounts to move it without that data`)
      }
      const spec = this.withLabels(order.allowBindMounts ? { ...info.spec, mounts: info.spec.mounts.filter(m => m.type !== 'bind') } : info.spec)
      connection = await this.destination(order.to, signal)
      const image = await this.deps.docker.inspectImage(info.spec.image, signal)
      const volumes = volumesOf(spec)
      const prep = await this.prepare(connection, moveId, 'move', spec, image, signal)
      destinationPrepared = true
      const toSend = image.diffIds.slice(prep.present).filter(d => !prep.staged.includes(d))
      const plan: MovePlan = {
        moveId, container: info.name, from: self.name, to: order.to, image: image.id,
        layersTotal: image.diffIds.length, layersPresent: image.diffIds.length - toSend.length, layersToSend: toSend.length,
        bytesToSend: toSend.length === 0 ? 0 : image.size, volumes: volumes.map(v => v.name)
      }
      await emit({ event: 'plan', plan })
      if (order.dryRun) {
        await this.call(connection, { op: 'abort', moveId }, [], signal).catch(() => {})
        destinationPrepared = false
        await emit({ event: 'done', moveId, container: info.name, from: self.name, to: order.to, bytesSent: 0, layersSent: 0, layersSkipped: plan.layersPresent, downtimeMs: 0 })
        return
      }
      await mkdir(spool, { recursive: true, mode: 0o700 })

      // --- pre-copy (the container keeps running) -----------------------------------------
      await step('pre-copy')
      const pre = await this.precopy(connection, moveId, image, toSend, spool, this.progress(moveId, 'pre-copy', plan.bytesToSend, emit), signal)

      // --- freeze ----------------------------------------------------------------------------
      await step('freeze')
      frozen = await this.recordFreeze(info, 'move', moveId, order.to, connection, volumes.map(v => v.name))
      const frozenAt = performance.now()
      await this.deps.docker.pause(info.id, signal)
      paused = true
      const { topPath, top, config, diffIds } = await this.freeze(info, image, spool, `go-to move ${moveId}`, signal)

      // --- hand-over -------------------------------------------------------------------------
      await step('hand-over')
      const handProgress = this.progress(moveId, 'hand-over', top.size, emit)
      await this.call(connection, { op: 'layer', moveId, diffId: top.diffId, size: top.size }, [{ size: top.size, path: topPath }], signal, handProgress)
      const hand = { bytes: top.size, layers: 1 }
      const archives = await this.spoolVolumes(info, volumes, spool, signal)

      // --- restore at the destination --------------------------------------------------------
      await step('restore')
      await this.call(connection, {
        op: 'restore', moveId, config: Buffer.from(config).toString('base64'), diffIds, spec,
        volumes: archives.map(a => ({ name: a.name, destination: a.destination, size: a.size }))
      }, archives, signal)
      const downtimeMs = Math.round(performance.now() - frozenAt)

      // --- commit: the destination runs it; only now does the source let go -----------------
      await step('commit')
      // From here on the container's fate is removal here, never an unpause, even if this agent dies.
      await this.deps.journal.update(frozen, { stage: 'committing' })
      destinationPrepared = false
      paused = false
      // Telling the destination and removing the copy here do not depend on each other.
      const [committed, letGo] = await Promise.allSettled([this.call(connection, { op: 'commit', moveId }, [], signal), this.letGo(frozen)])
      if (committed.status === 'rejected') log.warn('destination did not confirm commit; telling it again later', { error: (committed.reason as Error).message })
      try {
        if (letGo.status === 'rejected') throw letGo.reason
        await (committed.status === 'fulfilled' ? this.deps.journal.remove(frozen.moveId) : this.deps.journal.update(frozen, { stage: 'committed' }))
      } catch (err) {
        // The move is done (the destination runs it); the freeze record has settle finish here.
        log.warn('moved container not yet removed here; trying again later', { error: (err as Error).message })
      }
      // Keep here the image the container now runs there (same config, so the same image ID): moving
      // it back later then sends only what changed since. `docker image prune` removes it. The move
      // is over without it (reported done meanwhile); the spool stays until it is loaded, and this
      // host, as a destination, waits for it before it says which layers it has (`settled`).
      keep = this.track(this.keepImage(config, diffIds, image.diffIds.length, top.diffId, topPath)
        .catch(err => { log.warn('could not keep the moved image here', { error: (err as Error).message }) })
        .then(async () => { await rm(spool, { recursive: true, force: true }).catch(() => {}) }))
      const bytesSent = pre.bytes + hand.bytes + archives.reduce((n, a) => n + a.size, 0)
      log.info('move done', { bytesSent, downtimeMs })
      this.metrics.moveEnded('succeeded', { seconds: secondsSince(startedAt), downtimeSeconds: downtimeMs / 1000 })
      await emit({ event: 'done', moveId, container: info.name, from: self.name, to: order.to, bytesSent, layersSent: pre.layers + hand.layers, layersSkipped: plan.layersPresent, downtimeMs })
    } catch (err) {
      const error = toWireError(err)
      this.deps.log.warn('move failed', { moveId, container: order.container, to: order.to, reason: error.name, error: error.message })
      const changed = paused || destinationPrepared
      const undone = changed ? await this.rollback({ moveId, info, connection, paused, destinationPrepared, frozen }) : true
      if (startedAt !== undefined) this.metrics.moveEnded('failed', { seconds: secondsSince(startedAt), reason: error.name })
      await emit({ event: 'failed', moveId, container: order.container, error, rollback: !changed ? 'none-needed' : undone ? 'done' : 'incomplete' })
    } finally {
      if (locked && info !== undefined) this.moving.delete(info.id)
      // After a successful move the spool goes once the image is kept here (above).
      if (keep === undefined) await rm(spool, { recursive: true, force: true }).catch(() => {})
    }
  }

  /** Resolves once the images being kept after moves out of here (keepImage) are in the engine. */
  async settled (): Promise<void> {
    await Promise.all([...this.keeping])
  }

  private track (work: Promise<void>): Promise<void> {
    this.keeping.add(work)
    void work.finally(() => { this.keeping.delete(work) })
    return work
  }

  /**
   * A snapshot for failover (agent/failover): the move's plan, pre-copy and freeze towards replica
   * holder `to`, whose end is `store` instead of `restore`; the container is unpaused as soon as its
   * changes and volume data are spooled, and keeps running here. Returns the bytes sent and how long
   * the container stayed frozen. Throws on failure, after unpausing and telling the holder to abort.
   */
  async snapshot (container: string, to: string, meta: { epoch: number, seq: number }, signal: AbortSignal): Promise<{ bytes: number, freezeMs: number }> {
    const info = await this.inspect(container, signal)
    if (!info.state.running || info.state.paused) throw new ContainerNotRunningError(`container '${info.name}' is ${info.state.status}; only a running container is snapshotted`)
    if (this.moving.has(info.id)) throw new MoveInProgressError(`container '${info.name}' is being moved`)
    this.moving.add(info.id)
    const moveId = randomBytes(8).toString('hex')
    const spool = join(this.deps.spoolDir, moveId)
    let connection: Connection | undefined
    let paused = false
    let prepared = false
    let frozen: FrozenRecord | undefined
    try {
      const spec = this.withLabels({ ...info.spec, mounts: info.spec.mounts.filter(m => m.type !== 'bind') })
      connection = await this.destination(to, signal)
      const image = await this.deps.docker.inspectImage(info.spec.image, signal)
      const prep = await this.prepare(connection, moveId, 'snapshot', spec, image, signal)
      prepared = true
      await mkdir(spool, { recursive: true, mode: 0o700 })
      const toSend = image.diffIds.slice(prep.present).filter(d => !prep.staged.includes(d))
      const pre = await this.precopy(connection, moveId, image, toSend, spool, () => {}, signal)
      // An exec half-started when the container freezes can hang the engine (exec and unpause both
      // wait on it): put the snapshot off while one runs. This shrinks the race to milliseconds.
      const execs = (await this.deps.docker.inspectContainer(info.id, signal)).state.execs
      if (execs > 0) throw new ContainerBusyError(`container '${info.name}' has ${execs} exec(s) running; snapshot put off`)
      frozen = await this.recordFreeze(info, 'snapshot', moveId, to, connection, [])
      const frozenAt = performance.now()
      const takenAt = new Date().toISOString()
      await this.deps.docker.pause(info.id, signal)
      paused = true
      const { topPath, top, config, diffIds } = await this.freeze(info, image, spool, `go-to snapshot ${meta.epoch}.${meta.seq}`, signal)
      const archives = await this.spoolVolumes(info, volumesOf(spec), spool, signal)
      await this.deps.docker.unpause(info.id, signal)
      paused = false
      const freezeMs = Math.round(performance.now() - frozenAt)
      // Nothing runs at the holder: a snapshot left unfinished there expires by itself.
      await this.deps.journal.remove(moveId)
      frozen = undefined
      await this.call(connection, {
        op: 'store', moveId, owner: this.deps.self().peerId, epoch: meta.epoch, seq: meta.seq, takenAt,
        config: Buffer.from(config).toString('base64'), diffIds, spec, top: { diffId: top.diffId, size: top.size },
        volumes: archives.map(a => ({ name: a.name, destination: a.destination, digest: a.digest, size: a.size }))
      }, [{ size: top.size, path: topPath }, ...archives], signal)
      prepared = false
      return { bytes: pre.bytes + top.size + archives.reduce((n, a) => n + a.size, 0), freezeMs }
    } catch (err) {
      if (prepared || paused) await this.rollback({ moveId, info, connection, paused, destinationPrepared: prepared, frozen })
      throw err
    } finally {
      this.moving.delete(info.id)
      await rm(spool, { recursive: true, force: true }).catch(() => {})
    }
  }

  /** The spec as it travels: with the labels failover stamps on a protected container (owner, epoch). */
  private withLabels (spec: ContainerSpec): ContainerSpec {
    const extra = this.deps.travelLabels?.(spec.name)
    return extra === undefined ? spec : { ...spec, labels: { ...spec.labels, ...extra } }
  }

  /** Asks the destination to take a container of this spec and image; it says which layers it has. */
  private async prepare (connection: Connection, moveId: string, purpose: 'move' | 'snapshot', spec: ContainerSpec, image: ImageInfo, signal: AbortSignal): Promise<PrepareReply> {
    return await this.call(connection, {
      op: 'prepare', moveId, purpose, spec, image: { id: image.id, diffIds: image.diffIds, os: image.os, architecture: image.architecture, size: image.size },
      volumes: volumesOf(spec).map(v => ({ name: v.name, driver: v.driver }))
    }, [], signal) as PrepareReply
  }

  /** Sends the layers the destination lacks while the container runs, and has it load the image. */
  private async precopy (connection: Connection, moveId: string, image: ImageInfo, toSend: string[], spool: string, progress: (n: number) => void, signal: AbortSignal): Promise<{ bytes: number, layers: number }> {
    if (toSend.length === 0) return { bytes: 0, layers: 0 }
    const pre = await this.sendLayerFiles(connection, moveId, image, new Set(toSend), progress, signal) ??
      await this.sendLayers(connection, moveId, image, new Set(toSend), spool, progress, signal)
    if (pre.config !== undefined) {
      // Into the destination's engine now, while the container runs: restore then loads only its changes.
      await this.call(connection, { op: 'preload', moveId, config: Buffer.from(pre.config).toString('base64'), diffIds: image.diffIds }, [], signal)
    }
    return pre
  }

  /**
   * With the container paused by the caller: what it changed, as one layer tar built from the
   * engine's change list (its cost follows the change, not the image — a commit + save would read
   * the whole image), and the config of "image + that layer". The image's config is read while the
   * changes are exported: the container stays frozen for the export only.
   */
  private async freeze (info: ContainerInfo, image: ImageInfo, spool: string, comment: string, signal: AbortSignal): Promise<{ topPath: string, top: ExportedChanges, config: Uint8Array, diffIds: string[] }> {
    const topPath = join(spool, 'top.tar')
    const [top, imageConfig] = await Promise.all([
      this.deps.docker.exportChanges(info.id, topPath, signal),
      this.deps.docker.inspectImageConfig(image.id, signal)
    ])
    const config = buildLayeredConfig(imageConfig, top.diffId, { comment })
    return { topPath, top, config, diffIds: [...image.diffIds, top.diffId] }
  }

  /** Each named volume's data as a tar spooled to disk (the container is paused: a consistent copy). */
  private async spoolVolumes (info: ContainerInfo, volumes: VolumeRef[], spool: string, signal: AbortSignal): Promise<Array<Blob & VolumeRef & { path: string, digest: string }>> {
    const archives: Array<Blob & VolumeRef & { path: string, digest: string }> = []
    for (const v of volumes) {
      const path = join(spool, `volume-${archives.length}.tar`)
      const { digest, size } = await this.spool(await this.deps.docker.getArchive(info.id, v.destination, signal), path, signal)
      archives.push({ ...v, path, size, digest })
    }
    return archives
  }

  private async inspect (container: string, signal: AbortSignal): Promise<ContainerInfo> {
    try {
      return await this.deps.docker.inspectContainer(container, signal)
    } catch (err) {
      if (err instanceof ContainerNotFoundError) throw new UnknownContainerError(`no container '${container}' on ${this.deps.self().name}`, { cause: err })
      throw err
    }
  }

  /** An authenticated connection to a live member of that name, other than us. */
  private async destination (name: string, signal: AbortSignal): Promise<Connection> {
    const self = this.deps.self()
    if (name === self.name) throw new DestinationUnavailableError(`the container is already on ${name}`)
    const entry = this.deps.table.byName(name)
    if (entry === undefined) throw new DestinationUnavailableError(`no member named '${name}' (known: ${this.deps.table.entries().map(e => e.name).join(', ') || 'none'})`)
    if (entry.state !== 'alive') throw new DestinationUnavailableError(`${name} is ${entry.state}`)
    try {
      return await connectTo(this.deps.auth, entry.peerId, entry.addrs, signal)
    } catch (err) {
      throw new DestinationUnavailableError(`cannot reach ${name}: ${(err as Error).message}`, { cause: err })
    }
  }

  private async open (peerId: string, addrs: string[], protocol: string, signal: AbortSignal): Promise<JsonStream> {
    return await openStream(this.deps.auth, peerId, addrs, protocol, signal)
  }

  /** One transfer step on its own stream: the request, then any blobs, then the reply. */
  private async call (connection: Connection, req: TransferRequest, blobs: Blob[], signal: AbortSignal, onBytes?: (n: number) => void): Promise<unknown> {
    const js = new JsonStream(await connection.newStream(TRANSFER_PROTOCOL, { signal }))
    try {
      await js.write(req, signal)
      for (const b of blobs) {
        const source = b.source ?? createReadStream(b.path ?? '')
        // Blob payload counts as sent once handed to the stream (docs/operations.md, metrics).
        await sendBlob(js, counted(source, n => { this.metrics.bytesSent(n); onBytes?.(n) }), b.size, signal)
      }
      const result = await readResult(js, signal)
      await js.close(signal)
      return result
    } catch (err) {
      js.abort(err as Error)
      throw err
    }
  }

  /**
   * Sends the layers in `want` read straight from the engine's storage (DockerHost.layerFiles), in
   * chain order, each named by its diff ID: no `docker save`, whose engine first writes the whole
   * save to disk. Undefined when a layer or the config cannot be read that way before anything was
   * sent (then `sendLayers` does it through the engine). The destination verifies each layer as
   * always; a file that turns out unreadable midway fails the move like any cut-off transfer.
   */
  private async sendLayerFiles (connection: Connection, moveId: string, image: ImageInfo, want: Set<string>, onBytes: (n: number) => void, signal: AbortSignal): Promise<{ config: Uint8Array, bytes: number, layers: number } | undefined> {
    const files = await this.deps.docker.layerFiles(signal)
    if (files === undefined) return undefined
    const config = await files.config(image.id)
    const chain = chainIds(image.diffIds)
    const layers = await Promise.all(image.diffIds.map(async (d, i) => want.has(d) ? { diffId: d, file: await files.open(chain[i]) } : undefined))
    if (config === undefined || layers.some(l => l !== undefined && l.file === undefined)) {
      this.deps.log.info('layers not readable from the engine\'s storage; using docker save', { image: image.id })
      return undefined
    }
    let bytes = 0
    let sent = 0
    for (const l of layers) {
      if (l?.file === undefined) continue
      const { size } = l.file
      const reply = await this.call(connection, { op: 'layer', moveId, diffId: l.diffId, size }, [{ size, source: l.file.stream(signal) }], signal, onBytes) as LayerReply
      if (reply.diffId !== l.diffId) throw new TransferIncompleteError(`the destination took layer ${l.diffId} for ${reply.diffId}`)
      bytes += size
      sent++
    }
    return { config, bytes, layers: sent }
  }

  /**
   * Streams `docker save` of `image` and sends the layers in `want` as they come out of the engine.
   * A save stream names layers by path, not diff ID; which path is which layer is learned from the
   * destination's reply (it hashes every layer to verify it) and remembered per image, so a layer
   * known to be unwanted (already at the destination, or verified there before a cut) is skipped
   * without crossing the network. A layer not yet known is sent unnamed, straight from the engine
   * without a detour through disk, and the destination keeps it only if it is one the move needs.
   * Returns what was sent.
   */
  private async sendLayers (connection: Connection, moveId: string, image: ImageInfo, want: Set<string>, spool: string, onBytes: (n: number) => void, signal: AbortSignal): Promise<{ config?: Uint8Array, bytes: number, layers: number }> {
    let config: Uint8Array | undefined
    let bytes = 0
    let layers = 0
    const left = new Set(want)
    const known = this.layerPaths.get(image.id) ?? new Map<string, string>()
    this.rememberPaths(image.id, known)
    for await (const entry of this.deps.docker.saveImage(image.id, signal)) {
      if (entry.kind === 'config') config = entry.bytes
      if (entry.kind !== 'layer') continue
      const name = known.get(entry.path)
      if (left.size === 0 || (name !== undefined && !left.has(name))) { for await (const _ of entry.stream) { /* not needed: drain */ } continue }
      let size = entry.size
      let source: AsyncIterable<Uint8Array> = entry.stream
      let path: string | undefined
      if (size === undefined) {
        // A layout that does not state sizes (OCI, compressed): spool to learn it.
        path = join(spool, `layer-${randomBytes(4).toString('hex')}.tar`)
        size = (await this.spool(entry.stream, path, signal)).size
        source = createReadStream(path)
      }
      const reply = await this.call(connection, { op: 'layer', moveId, diffId: name ?? null, size }, [{ size, source }], signal, onBytes) as LayerReply
      if (path !== undefined) await rm(path, { force: true })
      // The destination hashed the layer to verify it and says which it was: no need to hash it here
      // too. Were it to lie, the only effect would be on its own move (a layer wrongly skipped later
      // leaves the image incomplete there, and its load fails).
      if (!image.diffIds.includes(reply.diffId)) throw new TransferIncompleteError(`the destination took layer ${entry.path} for ${reply.diffId}, which is not a layer of ${image.id}`)
      known.set(entry.path, reply.diffId)
      if (left.delete(reply.diffId)) { bytes += size; layers++ }
    }
    if (left.size > 0) throw new TransferIncompleteError(`the engine's save of ${image.id} lacked layer(s) ${[...left].join(', ')}`)
    return { config, bytes, layers }
  }

  /** Loads the moved image into this engine too (only the new top layer travels to the engine). */
  private async keepImage (config: Uint8Array, diffIds: string[], present: number, top: string, topPath: string): Promise<void> {
    const signal = AbortSignal.timeout(CONTROL_TIMEOUT_MS)
    const size = (await stat(topPath)).size
    await this.deps.store.receive(top, size, createReadStream(topPath), signal)
    try {
      await loadVerified(this.deps.docker, { config, diffIds, present, store: this.deps.store }, signal)
    } finally {
      await this.deps.store.remove(top)
    }
  }

  /** Remembers which save-stream path holds which layer, for the last few images moved. */
  private rememberPaths (imageId: string, paths: Map<string, string>): void {
    this.layerPaths.delete(imageId)
    this.layerPaths.set(imageId, paths)
    while (this.layerPaths.size > LAYER_PATH_CACHE_IMAGES) this.layerPaths.delete(this.layerPaths.keys().next().value as string)
  }

  /** Writes a stream to a file with backpressure, hashing it; returns sha256:<hex> and the size. */
  private async spool (source: AsyncIterable<Uint8Array>, path: string, signal: AbortSignal): Promise<{ digest: string, size: number }> {
    const hash = createHash('sha256')
    const out = createWriteStream(`${path}.part`, { mode: 0o600 })
    let size = 0
    try {
      for await (const chunk of source) {
        signal.throwIfAborted()
        hash.update(chunk)
        size += chunk.byteLength
        if (!out.write(chunk)) await once(out, 'drain', { signal })
      }
      out.end()
      await once(out, 'finish', { signal })
    } catch (err) {
      out.destroy()
      await rm(`${path}.part`, { force: true })
      throw err
    }
    await rename(`${path}.part`, path)
    return { digest: `sha256:${hash.digest('hex')}`, size }
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

  /**
   * Undoes a failed move: the destination removes what it made, the source container runs again.
   * Whatever could not be done now stays in the freeze journal for `settle` to retry.
   */
  private async rollback (s: { moveId: string | null, info?: ContainerInfo, connection?: Connection, paused: boolean, destinationPrepared: boolean, frozen?: FrozenRecord }): Promise<boolean> {
    const signal = AbortSignal.timeout(CONTROL_TIMEOUT_MS)
    let ok = true
    let told = true
    if (s.destinationPrepared && s.connection !== undefined && s.moveId !== null) {
      // If the destination is gone, it rolls back by itself when the move goes idle.
      told = await this.call(s.connection, { op: 'abort', moveId: s.moveId }, [], signal).then(() => true, err => err instanceof UnknownMoveError)
    }
    if (s.paused && s.info !== undefined) {
      try {
        await this.deps.docker.unpause(s.info.id, signal)
      } catch (err) {
        ok = false
        this.deps.log.error('rollback: could not unpause the source container; trying again later', { container: s.info.name, error: (err as Error).message })
      }
    }
    if (ok && s.frozen !== undefined) {
      await (told ? this.deps.journal.remove(s.frozen.moveId) : this.deps.journal.update(s.frozen, { stage: 'aborting' }))
        .catch(err => { this.deps.log.error('freeze record not updated', { container: s.frozen?.name, error: (err as Error).message }) })
    }
    return ok
  }

  // --- containers left frozen -------------------------------------------------------------

  /** Writes the freeze record of a container about to be paused (before the pause, on disk). */
  private async recordFreeze (info: ContainerInfo, purpose: FrozenRecord['purpose'], moveId: string, to: string, connection: Connection, volumes: string[]): Promise<FrozenRecord> {
    const record: FrozenRecord = {
      containerId: info.id, name: info.name, purpose, moveId, to: { name: to, peerId: connection.remotePeer.toString() }, stage: 'frozen', volumes, at: new Date().toISOString()
    }
    await this.deps.journal.put(record)
    return record
  }

  /** Removes a moved container here, with the named volumes that went with it; gone already is fine. */
  private async letGo (r: FrozenRecord): Promise<void> {
    const signal = AbortSignal.timeout(CONTROL_TIMEOUT_MS)
    await this.deps.docker.remove(r.containerId, { force: true, volumes: false }, signal).catch(err => { if (!(err instanceof ContainerNotFoundError)) throw err })
    for (const v of r.volumes) {
      await this.deps.docker.removeVolume(v, signal).catch(err => {
        if (!(err instanceof VolumeNotFoundError)) this.deps.log.warn('moved volume not removed here', { volume: v, error: (err as Error).message })
      })
    }
  }

  /**
   * Finishes what a move or snapshot left undone when it was cut short — by this agent dying, or by
   * a step that failed (see freeze-journal.ts): a frozen container runs again, a moved one is
   * removed, and then its destination hears `abort` or `commit`. Retried every SETTLE_INTERVAL_MS.
   */
  private async settle (): Promise<void> {
    let records: FrozenRecord[]
    try {
      records = (await this.deps.journal.list()).records
    } catch (err) {
      this.deps.log.error('cannot read the freeze journal', { error: (err as Error).message })
      return
    }
    for (const r of records) {
      if (this.stopping.signal.aborted) return
      // A move or snapshot still running here holds the container's lock, and owns its record.
      if (this.moving.has(r.containerId)) continue
      try {
        await this.settleOne(r)
      } catch (err) {
        this.deps.log.warn('container left by an interrupted transfer not settled yet; trying again', { container: r.name, moveId: r.moveId, stage: r.stage, error: (err as Error).message })
      }
    }
  }

  private async settleOne (r: FrozenRecord): Promise<void> {
    const { docker, journal, log } = this.deps
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(CONTROL_TIMEOUT_MS)])
    if (r.stage === 'frozen') {
      try {
        const state = (await docker.inspectContainer(r.containerId, signal)).state
        if (state.paused) await docker.unpause(r.containerId, signal)
        log.warn(`${r.purpose} cut short while the container was frozen: it runs here again`, { container: r.name, moveId: r.moveId, to: r.to.name })
      } catch (err) {
        if (!(err instanceof ContainerNotFoundError)) throw err
        log.warn(`${r.purpose} cut short while the container was frozen, and it is gone here`, { container: r.name, moveId: r.moveId })
      }
      await journal.update(r, { stage: 'aborting' })
    }
    if (r.stage === 'committing') {
      await this.letGo(r)
      log.warn('move cut short after the destination ran the container: removed here', { container: r.name, moveId: r.moveId, to: r.to.name })
      await journal.update(r, { stage: 'committed' })
    }
    const op = r.stage === 'aborting' ? 'abort' : 'commit'
    if (Date.now() - Date.parse(r.at) > SETTLE_GIVE_UP_MS) {
      log.warn(`gave up telling ${r.to.name} to ${op}; it has ended the ${r.purpose} by itself`, { container: r.name, moveId: r.moveId })
      await journal.remove(r.moveId)
      return
    }
    const entry = this.deps.table.get(r.to.peerId)
    if (entry?.state !== 'alive') return
    const connection = await connectTo(this.deps.auth, entry.peerId, entry.addrs, signal)
    try {
      await this.call(connection, { op, moveId: r.moveId }, [], signal)
    } catch (err) {
      // It ended the transfer itself (went idle, restarted) or already heard this.
      if (!(err instanceof UnknownMoveError)) throw err
    }
    await journal.remove(r.moveId)
    log.info(`${r.to.name} told to ${op} ${r.purpose} ${r.moveId}`, { container: r.name, moveId: r.moveId })
  }
}

/** Seconds since a performance.now() reading (0 without one). */
function secondsSince (t: number | undefined): number {
  return t === undefined ? 0 : (performance.now() - t) / 1000
}

interface VolumeRef { name: string, driver: string, destination: string }

/** The named volumes of a spec (their data travels; bind mounts and tmpfs do not). */
function volumesOf (spec: ContainerSpec): VolumeRef[] {
  return spec.mounts.flatMap(m => m.type === 'volume' ? [{ name: m.name, driver: m.driver, destination: m.destination }] : [])
}
