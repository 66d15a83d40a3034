/**
 * The outbound transfer session: the one object that drives the source half of /goto/transfer for
 * one container — a move (agent/move/source.ts) or a failover snapshot (agent/failover/snapshotter.ts)
 * — and owns its state and its rollback. Its caller holds the container's lock and calls the steps
 * in order; each step is one method:
 *
 *   connect    an authenticated connection to the destination member (alive, not ourselves)
 *   prepare    the destination checks it can take the container and says which layers it has
 *              (a move carries the operator's signed order, which the destination verifies)
 *   precopy    the layers it lacks stream to it while the container runs; it loads them (preload).
 *              Across a paid link, layers that a member in the destination's location holds
 *              (found at prepare: transfer/holders.ts) are fetched by the destination from that
 *              member instead; any it could not take that way are sent from here
 *   volumeRound named volumes both ends can read directly (local driver, engine on the
 *              agent's host; the destination offered it in prepare's reply) are synced by
 *              difference (agent/sync) while the container runs, one round at a time (rounds.ts
 *              decides how many); the final round runs inside the freeze. (snapshot) the holder
 *              syncs them against its current version's trees: only the change since it travels
 *   freeze     a freeze record (freeze-journal.ts), the pause — or, live, a CRIU checkpoint that
 *              stops the container with its processes' memory kept — the container's changes as one layer
 *   handOver   (move) that layer to the destination
 *   handOverCheckpoint (live move) the checkpoint's files, each verified there (live.ts)
 *   volumes    each other named volume's data spooled while the container is frozen
 *   thaw       (snapshot) the container runs again here, its frozen state spooled
 *   restore    (move) the destination makes and starts the container and confirms it runs
 *   store      (snapshot) the holder keeps the frozen state for a takeover
 *   commit     (move) the destination keeps it; the copy here goes
 *   abort      any failure: the destination removes what it made, the container here runs again
 *              (live: restored from its own checkpoint, or started afresh if that fails);
 *              what cannot be done now stays in the freeze journal for recovery to finish
 *
 * `close()` always ends a session (it removes the spool unless the moved image is still being
 * kept here). Steps called out of order throw TransferStateError: a caller bug, never a network input.
 */
import { randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { AuthService } from '../net/auth-service.js'
import { connectTo } from '../net/dial.js'
import type { DockerHost } from '../docker/docker-host.js'
import type { ContainerInfo, ContainerSpec, ImageInfo, RestartPolicy } from '../docker/types.js'
import { buildLayeredConfig } from '../docker/layered-config.js'
import type { LayerStore } from '../transfer/layer-store.js'
import { loadVerified } from '../transfer/load.js'
import { TransferLink, type Blob } from '../transfer/link.js'
import { LinkTable, locationOf, type LinkPolicy } from '../transfer/links.js'
import { chainIds } from '../transfer/plan.js'
import { bytesPerSecondToMbit, mbitToBytesPerSecond } from '../transfer/rate.js'
import type { LayerSender } from '../transfer/layer-sender.js'
import type { HeldBy, HolderLocator } from '../transfer/holders.js'
import type { PeerEntry, PeerTable } from '../membership/peer-table.js'
import { spoolToFile } from '../transfer/spool.js'
import { HashCache, NO_XATTRS, syncSource, type XattrAccess } from '../sync/index.js'
import type { RoundTally } from './rounds.js'
import type { Timings } from '../timings.js'
import type { Logger } from '../log.js'
import { NO_METRICS, type Metrics } from '../metrics/sink.js'
import type { FreezeJournal, FrozenRecord } from './freeze-journal.js'
import { letGo } from './let-go.js'
import { listCheckpoint, restartsByItself, resumeSource } from './live.js'
import type { CheckpointFile, LiveReport, NetworkPlan, PrepareReply, Resumed } from '../../protocol/move-messages.js'
import type { SignedOrder } from '../../protocol/orders.js'
import { CheckpointFailedError, ContainerNotFoundError, DestinationUnavailableError, TransferStateError, UnknownContainerError, UnknownMoveError } from '../../protocol/errors.js'

export interface SessionDeps {
  auth: AuthService
  docker: DockerHost
  table: PeerTable
  /** This host's member name (a container is never moved to where it is). */
  selfName: string
  layers: LayerSender
  /** Containers frozen here, recorded before each pause (what a restarted agent must finish). */
  journal: FreezeJournal
  /** Verified layers, to load a moved image back into this engine (keepImage). */
  store: LayerStore
  /** Where layers and volume archives are spooled while they are identified and sent. */
  spoolDir: string
  timings: Pick<Timings, 'transferControlTimeoutMs'>
  /** Blob bytes sent (default: none kept). */
  metrics?: Pick<Metrics, 'bytesSent' | 'wireBytes'>
  /** Extended attributes of synced volumes (agent/sync attrTools; default: none travel). */
  xattrs?: XattrAccess
  /** False: every volume spools inside the freeze, as before volume rounds (default true). */
  volumeRounds?: boolean
  /** Members near a destination that hold layers it lacks (default: none asked; every layer comes from here). */
  holders?: HolderLocator
  /** The mesh's link table and this host's labels: how blobs cross to each destination (default: the table's defaults, unlabelled). */
  links?: { table: LinkTable, selfLabels: Record<string, string> }
  log: Logger
}

/** A named volume of the container: its data travels (bind mounts and tmpfs do not). */
export interface VolumeRef { name: string, driver: string, destination: string }

/** A volume copied in rounds: its directory here, and what the sync keeps between rounds. */
export interface SyncedVolume extends VolumeRef { dir: string, cache: HashCache }

/** A volume's data, spooled while the container was frozen. */
export interface VolumeArchive extends VolumeRef { path: string, size: number, digest: string }

/** What `prepare` learned: which layers the destination lacks. */
export interface PreparedTransfer {
  image: ImageInfo
  /** Diff IDs to send (not in the destination's engine, nor verified there from an earlier try). */
  toSend: string[]
  volumes: VolumeRef[]
  /** What the spec's imageRef names at the destination (PrepareReply.imageRef). */
  imageRef?: 'free' | 'same' | 'taken'
  /** The volumes that go in rounds (the others spool inside the freeze). */
  synced: SyncedVolume[]
  /** (live) What the destination found: it takes the live move. */
  live?: LiveReport
  /** Layers of `toSend` the destination is to fetch from a member near it (the others go from here). */
  fromHolders: Map<string, HeldBy>
  /** What becomes of the spec's user-defined networks at the destination (PrepareReply.networks). */
  networks: NetworkPlan[]
}

/**
 * The frozen state: the container's changes as a layer, and the config of "image + that layer";
 * for a live move also its checkpoint (the engine's directory of it here, how long the dump took).
 */
interface Frozen {
  topPath: string
  top: { diffId: string, size: number }
  config: Uint8Array
  diffIds: string[]
  takenAt: string
  at: number
  checkpoint?: { name: string, dir: string, ms: number, sent?: { bytes: number, files: number } }
}

export class TransferSession {
  readonly moveId: string
  private link?: TransferLink
  /** The destination's member name. */
  private to = ''
  /** The destination holds something of this transfer: it must hear `abort` if it fails. */
  private prepared = false
  /** The container is paused here by this session. */
  private paused = false
  /** The pause call failed: the container may be paused or not (the rollback looks). */
  private pauseUnsure = false
  /** (live) The checkpoint this session asked for (it may have stopped the container): the rollback resumes from it. */
  private checkpointed?: string
  /** (live) How the rollback had the container run again. */
  private how?: Resumed
  /** (live) The restart policy set to `no` for the checkpoint, to give back on rollback. */
  private policy0?: RestartPolicy
  /** This transfer's freeze record, from the pause until both ends agree on the outcome. */
  private record?: FrozenRecord
  private plan?: PreparedTransfer & { spec: ContainerSpec }
  private frozen?: Frozen
  private archives: VolumeArchive[] = []
  private rounds = 0
  private finalRoundDone = false
  private readonly spool: string
  private spoolMade = false
  /** The spool stays for keepImage, which removes it. */
  private keeping = false
  private bytes = 0
  private policy?: LinkPolicy
  private toEntry?: PeerEntry
  private fromHolder = 0

  /**
   * `opts.maxRate`: the move's own cap (bytes/s on the wire, `goto move --max-rate`); the sender
   * keeps to the lower of it and the link's cap. `opts.hashCache(volume)`: the hash cache a synced
   * volume's sync keeps (a snapshotter keeps one per volume between snapshots, so unchanged files are
   * not hashed again); default a new one per transfer.
   */
  constructor (private readonly deps: SessionDeps, readonly purpose: 'move' | 'snapshot', readonly info: ContainerInfo, private readonly opts: { maxRate?: number, hashCache?: (volume: string) => HashCache } = {}) {
    this.moveId = randomBytes(8).toString('hex')
    this.spool = join(deps.spoolDir, this.moveId)
  }

  /** Payload bytes this transfer needed sent so far: the layers the destination lacked, the changes layer, volume archives. */
  get bytesSent (): number {
    return this.bytes
  }

  /** Layer bytes the destination took from members near it instead of from here. */
  get bytesFromHolders (): number {
    return this.fromHolder
  }

  /** Blob bytes handed to the wire so far (compressed where the link compresses). */
  get wireBytes (): number {
    return this.link?.wireBytes ?? 0
  }

  /** The link to the destination as the link table decides it (after connect). */
  get linkPolicy (): LinkPolicy {
    if (this.policy === undefined) throw new TransferStateError(`transfer ${this.moveId}: linkPolicy before connect`)
    return this.policy
  }

  /** The cap the sender keeps to (after connect): the lower of the link's and the move's; undefined when neither has one. */
  get rateCap (): { bytesPerSecond: number, by: 'link' | 'move' } | undefined {
    const link = this.linkPolicy.rateMbit === undefined ? undefined : mbitToBytesPerSecond(this.linkPolicy.rateMbit)
    const move = this.opts.maxRate
    if (move !== undefined && (link === undefined || move < link)) return { bytesPerSecond: move, by: 'move' }
    return link === undefined ? undefined : { bytesPerSecond: link, by: 'link' }
  }

  /** Size of the frozen changes layer (0 before freeze). */
  get changesBytes (): number {
    return this.frozen?.top.size ?? 0
  }

  /** The destination's peer ID (after connect). */
  get destinationId (): string {
    return this.linkFor('destinationId').peerId
  }

  /** An authenticated connection to the alive member named `to` (not this host). */
  async connect (to: string, signal: AbortSignal): Promise<void> {
    if (to === this.deps.selfName) throw new DestinationUnavailableError(`the container is already on ${to}`)
    const entry = this.deps.table.byName(to)
    if (entry === undefined) throw new DestinationUnavailableError(`no member named '${to}' (known: ${this.deps.table.entries().map(e => e.name).join(', ') || 'none'})`)
    if (entry.state !== 'alive') throw new DestinationUnavailableError(`${to} is ${entry.state}`)
    try {
      this.link = new TransferLink(await connectTo(this.deps.auth, entry.peerId, entry.addrs, signal), this.deps.metrics ?? NO_METRICS)
      this.to = to
      this.toEntry = entry
      const links = this.deps.links ?? { table: new LinkTable(), selfLabels: {} }
      this.policy = links.table.between(locationOf(links.selfLabels), locationOf(entry.labels))
    } catch (err) {
      throw new DestinationUnavailableError(`cannot reach ${to}: ${(err as Error).message}`, { cause: err })
    }
  }

  /**
   * Asks the destination to take a container of `spec` (its image inspected here); it says which
   * layers it has. A move passes the operator's `order` naming this move and that spec.
   */
  async prepare (spec: ContainerSpec, signal: AbortSignal, order?: SignedOrder, live?: { arch: string, cpuFlags: string[] }): Promise<PreparedTransfer> {
    const link = this.linkFor('prepare')
    const image = await this.deps.docker.inspectImage(this.info.spec.image, signal)
    const volumes = volumesOf(spec)
    const prep = await link.call({
      op: 'prepare', moveId: this.moveId, purpose: this.purpose, spec, image: { id: image.id, diffIds: image.diffIds, os: image.os, architecture: image.architecture, size: image.size },
      volumes: volumes.map(v => ({ name: v.name, driver: v.driver })), ...order === undefined ? {} : { order }, ...live === undefined ? {} : { live }
    }, [], signal) as PrepareReply
    // A prepare cut off before its reply is not aborted: the destination expires it when idle.
    this.prepared = true
    const policy = this.linkPolicy
    const cap = this.rateCap
    link.shape({
      linkClass: policy.class,
      costPerGiB: policy.costPerGiB,
      ...policy.compress === 'zstd' && prep.decodes?.includes('zstd') === true ? { encoding: 'zstd' } : {},
      ...cap === undefined ? {} : { rateMbit: bytesPerSecondToMbit(cap.bytesPerSecond) },
      resumes: prep.resumes === true
    })
    const toSend = image.diffIds.slice(prep.present).filter(d => !prep.staged.includes(d))
    const synced = await this.syncable(volumes, prep, signal)
    const took = live === undefined ? {} : { live: prep.live ?? { host: this.to, ok: true, arch: '', missing: [] } }
    // Across a paid link, ask the members next to the destination first (a move's order proves to them who may fetch).
    const { holders } = this.deps
    const fromHolders = holders !== undefined && order !== undefined && this.toEntry !== undefined && policy.class !== 'free' && prep.fetchesFromHolders === true && toSend.length > 0
      ? await holders.find({ to: this.toEntry, order, spec, image, diffIds: toSend }, signal)
      : new Map<string, HeldBy>()
    const networks = Array.isArray(prep.networks) ? prep.networks : []
    this.plan = { image, toSend, volumes, synced, spec, fromHolders, networks, ...took }
    return { image, toSend, volumes, synced, fromHolders, networks, ...prep.imageRef === undefined ? {} : { imageRef: prep.imageRef }, ...took }
  }

  /** The volumes both ends can sync directly (a destination without the step offers none). */
  private async syncable (volumes: VolumeRef[], prep: PrepareReply, signal: AbortSignal): Promise<SyncedVolume[]> {
    const offered = Array.isArray(prep.volumeSync) ? prep.volumeSync.filter(n => typeof n === 'string') : []
    if (this.deps.volumeRounds === false || offered.length === 0) return []
    const synced: SyncedVolume[] = []
    for (const v of volumes) {
      if (v.driver !== 'local' || !offered.includes(v.name)) continue
      const dir = await this.deps.docker.volumeDirectory(v.name, signal).catch(() => undefined)
      if (dir !== undefined) synced.push({ ...v, dir, cache: this.opts.hashCache?.(v.name) ?? new HashCache() })
    }
    return synced
  }

  /**
   * One round of every synced volume: each is synced by difference into the destination's copy
   * (the HashCache of each volume kept between rounds, so unchanged files are not hashed again).
   * `final`: the round inside the freeze, after which restore takes the destination's copies as
   * they are. Returns what travelled, all volumes together.
   */
  async volumeRound (final: boolean, signal: AbortSignal): Promise<RoundTally> {
    const link = this.linkFor('volumeRound')
    const plan = this.planFor('volumeRound')
    if (final) this.frozenFor('the final volume round')
    else if (this.frozen !== undefined || this.paused) throw new TransferStateError(`transfer ${this.moveId}: a volume round before the final one after freeze`)
    if (this.finalRoundDone) throw new TransferStateError(`transfer ${this.moveId}: a volume round after the final one`)
    const round = ++this.rounds
    const tally: RoundTally = { round, bytes: 0, files: 0 }
    for (const v of plan.synced) {
      const result = await link.sync({ op: 'volume', moveId: this.moveId, name: v.name, round, final },
        async duplex => await syncSource(v.dir, duplex, { signal, xattrs: this.deps.xattrs ?? NO_XATTRS, hashCache: v.cache }), signal)
      tally.bytes += result.bytesReceived
      tally.files += result.filesBuilt
    }
    this.bytes += tally.bytes
    if (final) this.finalRoundDone = true
    return tally
  }

  /**
   * Each layer's size as the engine's storage states it (diff ID → bytes); undefined where the
   * layers cannot be read from storage (docker save only: sizes show only as it streams).
   */
  async layerBytes (signal: AbortSignal): Promise<Map<string, number> | undefined> {
    const plan = this.planFor('layerBytes')
    const files = await this.deps.docker.layerFiles(signal)
    if (files === undefined) return undefined
    const chain = chainIds(plan.image.diffIds)
    const out = new Map<string, number>()
    for (const [i, d] of plan.image.diffIds.entries()) {
      const f = await files.open(chain[i])
      if (f === undefined) return undefined
      out.set(d, f.size)
    }
    return out
  }

  /** Sends the layers the destination lacks while the container runs, and has it load the image. */
  async precopy (onBytes: (n: number) => void, signal: AbortSignal): Promise<{ bytes: number, layers: number }> {
    const link = this.linkFor('precopy')
    const plan = this.planFor('precopy')
    await this.makeSpool()
    if (plan.toSend.length === 0) return { bytes: 0, layers: 0 }
    const fetched = await this.fetchFromHolders(link, plan.fromHolders, signal)
    const sent = await this.deps.layers.send(link, this.moveId, plan.image, new Set(plan.toSend.filter(d => !fetched.has(d))), this.spool, onBytes, signal)
    this.bytes += sent.bytes
    if (sent.config !== undefined) {
      // Into the destination's engine now, while the container runs: restore then loads only its changes.
      await link.call({ op: 'preload', moveId: this.moveId, config: Buffer.from(sent.config).toString('base64'), diffIds: plan.image.diffIds }, [], signal)
    }
    return { bytes: sent.bytes, layers: sent.layers }
  }

  /**
   * Has the destination fetch each layer a member near it holds; returns those it took. One it could
   * not take (refused, cut, a wrong byte: the destination verified it) is left for this host to send.
   */
  private async fetchFromHolders (link: TransferLink, fromHolders: ReadonlyMap<string, HeldBy>, signal: AbortSignal): Promise<Set<string>> {
    const fetched = new Set<string>()
    for (const [diffId, h] of fromHolders) {
      try {
        await link.call({ op: 'fetch', moveId: this.moveId, diffId, size: h.size, holder: h.peerId, ...h.others === undefined ? {} : { alsoFrom: h.others.map(o => o.peerId) } }, [], signal)
        fetched.add(diffId)
        this.fromHolder += h.size
        this.deps.log.info('layer taken from a member near the destination', { moveId: this.moveId, digest: diffId, holder: h.name, bytes: h.size })
      } catch (err) {
        if (signal.aborted) throw err
        this.deps.log.warn('layer not taken from a member near the destination; sending it from here', { moveId: this.moveId, digest: diffId, holder: h.name, reason: (err as Error).name, error: (err as Error).message })
      }
    }
    return fetched
  }

  /**
   * Records the freeze, pauses the container and exports what it changed as one layer tar (built
   * from the engine's change list: its cost follows the change, not the image), with the config of
   * "image + that layer". The image's config is read while the changes are exported.
   */
  async freeze (comment: string, signal: AbortSignal, opts: { live?: boolean } = {}): Promise<void> {
    const link = this.linkFor('freeze')
    const plan = this.planFor('freeze')
    if (this.frozen !== undefined || this.paused || this.checkpointed !== undefined) throw new TransferStateError(`transfer ${this.moveId} is frozen already`)
    const live = opts.live === true
    if (live && (this.purpose !== 'move' || plan.live === undefined)) throw new TransferStateError(`transfer ${this.moveId}: a live freeze of a transfer not prepared live`)
    await this.makeSpool()
    const { info, deps } = this
    const checkpointName = `goto-${this.moveId}`
    // The engine restarts a checkpointed container of policy `always` at once: set `no` for the checkpoint.
    const policy = live && restartsByItself(info.spec.restartPolicy) ? info.spec.restartPolicy : undefined
    const record: FrozenRecord = {
      containerId: info.id, name: info.name, purpose: this.purpose, moveId: this.moveId, to: { name: this.to, peerId: link.peerId }, stage: 'frozen',
      volumes: this.purpose === 'move' ? plan.volumes.map(v => v.name) : [], at: new Date().toISOString(), ...live ? { checkpoint: checkpointName } : {},
      ...policy === undefined ? {} : { restartPolicy: policy }
    }
    await deps.journal.put(record)
    this.record = record
    const at = performance.now()
    const takenAt = new Date().toISOString()
    let checkpoint: Frozen['checkpoint']
    if (live) {
      // From here on the container may be stopped with its checkpoint, or lack its policy: the rollback looks.
      this.checkpointed = checkpointName
      this.policy0 = policy
      if (policy !== undefined) await deps.docker.setRestartPolicy(info.id, { name: 'no', maximumRetryCount: 0 }, signal)
      try {
        await deps.docker.checkpoint(info.id, checkpointName, signal)
      } catch (err) {
        throw new CheckpointFailedError(`the engine could not checkpoint '${info.name}': ${(err as Error).message}`, { cause: err })
      }
      const dir = await deps.docker.checkpointDirectory(info.id, checkpointName, signal)
      if (dir === undefined) throw new CheckpointFailedError(`the checkpoint of '${info.name}' is not in a directory this agent reads`)
      checkpoint = { name: checkpointName, dir, ms: Math.round(performance.now() - at) }
    } else {
      try {
        await deps.docker.pause(info.id, signal)
      } catch (err) {
        // The engine may have paused it all the same (an answer lost to a timeout or an abort):
        // the rollback asks the engine instead of trusting this call.
        this.pauseUnsure = true
        throw err
      }
      this.paused = true
    }
    const topPath = join(this.spool, 'top.tar')
    const [top, imageConfig] = await Promise.all([
      deps.docker.exportChanges(info.id, topPath, signal),
      deps.docker.inspectImageConfig(plan.image.id, signal)
    ])
    const config = buildLayeredConfig(imageConfig, top.diffId, { comment })
    this.frozen = { topPath, top: { diffId: top.diffId, size: top.size }, config, diffIds: [...plan.image.diffIds, top.diffId], takenAt, at, ...checkpoint === undefined ? {} : { checkpoint } }
  }

  /**
   * (live move) Sends the checkpoint's files, read from the engine's directory of it here, each
   * with its size and sha256 (the destination verifies every one before it keeps it).
   */
  async handOverCheckpoint (onBytes: (n: number) => void, signal: AbortSignal): Promise<{ bytes: number, files: number, ms: number }> {
    const f = this.frozenFor('handOverCheckpoint')
    if (f.checkpoint === undefined) throw new TransferStateError(`transfer ${this.moveId}: handOverCheckpoint of a freeze without a checkpoint`)
    const t0 = performance.now()
    const files: CheckpointFile[] = await listCheckpoint(f.checkpoint.dir, signal)
    await this.linkFor('handOverCheckpoint').call({ op: 'checkpoint', moveId: this.moveId, name: f.checkpoint.name, files },
      files.map(x => ({ size: x.size, path: join(f.checkpoint?.dir ?? '', x.path) })), signal, onBytes)
    const bytes = files.reduce((n, x) => n + x.size, 0)
    this.bytes += bytes
    f.checkpoint.sent = { bytes, files: files.length }
    return { bytes, files: files.length, ms: Math.round(performance.now() - t0) }
  }

  /** (live move) How long the checkpoint's dump took (0 before freeze or without one). */
  get checkpointMs (): number {
    return this.frozen?.checkpoint?.ms ?? 0
  }

  /** (live move, after a rollback) How the container runs here again: from its checkpoint or afresh. */
  get resumed (): Resumed | undefined {
    return this.how
  }

  /** (move) Sends the frozen changes layer. */
  async handOver (onBytes: (n: number) => void, signal: AbortSignal): Promise<{ bytes: number, layers: number }> {
    const f = this.frozenFor('handOver')
    await this.linkFor('handOver').call({ op: 'layer', moveId: this.moveId, diffId: f.top.diffId, size: f.top.size }, [{ size: f.top.size, path: f.topPath }], signal, onBytes)
    this.bytes += f.top.size
    return { bytes: f.top.size, layers: 1 }
  }

  /** Each named volume's data not synced in rounds as a tar spooled to disk (the container is frozen: a consistent copy). */
  async spoolVolumes (signal: AbortSignal): Promise<VolumeArchive[]> {
    this.frozenFor('spoolVolumes')
    const plan = this.planFor('spoolVolumes')
    const archives: VolumeArchive[] = []
    const synced = new Set(plan.synced.map(v => v.name))
    for (const v of plan.volumes) {
      if (synced.has(v.name)) continue
      const path = join(this.spool, `volume-${archives.length}.tar`)
      const { digest, size } = await spoolToFile(await this.deps.docker.getArchive(this.info.id, v.destination, signal), path, signal)
      archives.push({ ...v, path, size, digest })
    }
    this.archives = archives
    return archives
  }

  /**
   * (snapshot) The container runs here again, its frozen state spooled; returns how long it was
   * frozen. Nothing will run at the holder, so the freeze record goes: a snapshot left unfinished
   * there expires by itself.
   */
  async thaw (signal: AbortSignal): Promise<number> {
    const f = this.frozenFor('thaw')
    await this.deps.docker.unpause(this.info.id, signal)
    this.paused = false
    const freezeMs = Math.round(performance.now() - f.at)
    if (this.record !== undefined) await this.deps.journal.remove(this.moveId)
    this.record = undefined
    return freezeMs
  }

  /** (move) The destination loads, creates, copies the volume data, starts and confirms `running`. Returns the downtime so far. */
  async restore (signal: AbortSignal): Promise<number> {
    const f = this.frozenFor('restore')
    const plan = this.planFor('restore')
    if (plan.synced.length > 0 && !this.finalRoundDone) throw new TransferStateError(`transfer ${this.moveId}: restore before the final volume round`)
    if (f.checkpoint !== undefined && f.checkpoint.sent === undefined) throw new TransferStateError(`transfer ${this.moveId}: restore before the checkpoint was handed over`)
    await this.linkFor('restore').call({
      op: 'restore', moveId: this.moveId, config: Buffer.from(f.config).toString('base64'), diffIds: f.diffIds, spec: plan.spec,
      volumes: this.archives.map(a => ({ name: a.name, destination: a.destination, size: a.size })),
      ...plan.synced.length === 0 ? {} : { synced: plan.synced.map(v => ({ name: v.name, destination: v.destination })) },
      ...f.checkpoint === undefined ? {} : { checkpoint: f.checkpoint.name }
    }, this.blobs(this.archives), signal)
    this.bytes += sum(this.archives)
    return Math.round(performance.now() - f.at)
  }

  /** (snapshot) The holder keeps the frozen state, owned at `epoch`, the owner's `seq`-th snapshot. */
  async store (meta: { owner: string, epoch: number, seq: number }, signal: AbortSignal): Promise<void> {
    const f = this.frozenFor('store')
    const plan = this.planFor('store')
    if (plan.synced.length > 0 && !this.finalRoundDone) throw new TransferStateError(`transfer ${this.moveId}: store before the final volume round`)
    await this.linkFor('store').call({
      op: 'store', moveId: this.moveId, owner: meta.owner, epoch: meta.epoch, seq: meta.seq, takenAt: f.takenAt,
      config: Buffer.from(f.config).toString('base64'), diffIds: f.diffIds, spec: plan.spec, top: f.top,
      volumes: this.archives.map(a => ({ name: a.name, destination: a.destination, digest: a.digest, size: a.size })),
      ...plan.synced.length === 0 ? {} : { synced: plan.synced.map(v => ({ name: v.name, destination: v.destination })) }
    }, [{ size: f.top.size, path: f.topPath }, ...this.blobs(this.archives)], signal)
    this.bytes += f.top.size + sum(this.archives)
    this.prepared = false
  }

  /**
   * (move) The destination runs the container: from here on its fate here is removal, never an
   * unpause, even if this agent dies (the record moves to `committing` first). Telling the
   * destination and removing the copy here do not depend on each other; what fails of either is
   * left to freeze recovery. Runs on its own timeout, not the caller's signal. Never throws once
   * the record is updated.
   */
  async commit (): Promise<void> {
    const record = this.record
    if (record === undefined || this.frozen === undefined) throw new TransferStateError(`transfer ${this.moveId} cannot commit before freeze`)
    // The outcome is settled: neither the operator's Ctrl-C nor its stream closing cuts this short,
    // and a hung engine or peer cannot hold the container's lock for more than a control step.
    const signal = AbortSignal.timeout(this.deps.timings.transferControlTimeoutMs)
    await this.deps.journal.update(record, { stage: 'committing' })
    this.prepared = false
    this.paused = false
    this.checkpointed = undefined
    const log = this.deps.log.child({ moveId: this.moveId, container: this.info.name })
    const [committed, gone] = await Promise.allSettled([
      this.linkFor('commit').call({ op: 'commit', moveId: this.moveId }, [], signal),
      letGo(this.deps.docker, record, log, signal)
    ])
    if (committed.status === 'rejected') log.warn('destination did not confirm commit; telling it again later', { error: (committed.reason as Error).message })
    try {
      if (gone.status === 'rejected') throw gone.reason
      await (committed.status === 'fulfilled' ? this.deps.journal.remove(this.moveId) : this.deps.journal.update(record, { stage: 'committed' }))
      this.record = undefined
    } catch (err) {
      // The move is done (the destination runs it); the freeze record has recovery finish here.
      log.warn('moved container not yet removed here; trying again later', { error: (err as Error).message })
    }
  }

  /**
   * Undoes whatever this session changed: the destination hears `abort` (if it is gone, it rolls
   * back by itself when the transfer goes idle), the container here is unpaused. What could not be
   * done now stays in the freeze journal for recovery to retry.
   */
  async abort (): Promise<'none-needed' | 'done' | 'incomplete'> {
    if (!this.prepared && !this.paused && !this.pauseUnsure && this.checkpointed === undefined) return 'none-needed'
    const signal = AbortSignal.timeout(this.deps.timings.transferControlTimeoutMs)
    let ok = true
    let told = true
    if (this.prepared && this.link !== undefined) {
      told = await this.link.call({ op: 'abort', moveId: this.moveId }, [], signal).then(() => true, err => err instanceof UnknownMoveError)
      this.prepared = false
    }
    if (this.paused || this.pauseUnsure) {
      try {
        if (this.paused || (await this.deps.docker.inspectContainer(this.info.id, signal)).state.paused) await this.deps.docker.unpause(this.info.id, signal)
        this.paused = false
        this.pauseUnsure = false
      } catch (err) {
        ok = false
        this.deps.log.error('rollback: could not unpause the source container; trying again later', { container: this.info.name, moveId: this.moveId, error: (err as Error).message })
      }
    }
    if (this.checkpointed !== undefined) {
      try {
        const how = await resumeSource(this.deps.docker, this.info.id, this.checkpointed, this.deps.log.child({ container: this.info.name, moveId: this.moveId }), signal, this.policy0)
        if (how !== 'running') this.how = how
        this.checkpointed = undefined
      } catch (err) {
        ok = false
        this.deps.log.error('rollback: could not start the source container again; trying again later', { container: this.info.name, moveId: this.moveId, error: (err as Error).message })
      }
    }
    if (ok && this.record !== undefined) {
      const record = this.record
      await (told ? this.deps.journal.remove(record.moveId) : this.deps.journal.update(record, { stage: 'aborting' }))
        .catch(err => { this.deps.log.error('freeze record not updated', { container: record.name, moveId: record.moveId, error: (err as Error).message }) })
      this.record = undefined
    }
    return ok ? 'done' : 'incomplete'
  }

  /**
   * (after commit) Loads the image the container now runs there into this engine too — same config,
   * so the same image ID; only the new top layer travels to the engine — so that moving it back
   * later sends only what changed since. Never rejects; the spool goes once it is done.
   */
  async keepImage (): Promise<void> {
    const f = this.frozenFor('keepImage')
    const plan = this.planFor('keepImage')
    this.keeping = true
    const signal = AbortSignal.timeout(this.deps.timings.transferControlTimeoutMs)
    try {
      // The containerd image store and Podman take no thin load of layers they hold from elsewhere
      // (load.ts), and this agent has no other copy of the base layers: nothing is kept there.
      const { imageStore } = await this.deps.docker.info(signal)
      if (imageStore !== 'graphdriver') {
        this.deps.log.info(`moved image not kept here: the ${imageStore} image store loads no thin image`, { moveId: this.moveId, container: this.info.name })
        return
      }
      const size = (await stat(f.topPath)).size
      await this.deps.store.receive(f.top.diffId, size, createReadStream(f.topPath), signal)
      try {
        await loadVerified(this.deps.docker, { config: f.config, diffIds: f.diffIds, present: plan.image.diffIds.length, store: this.deps.store }, signal)
      } finally {
        await this.deps.store.remove(f.top.diffId)
      }
    } catch (err) {
      this.deps.log.warn('could not keep the moved image here', { moveId: this.moveId, container: this.info.name, error: (err as Error).message })
    } finally {
      await rm(this.spool, { recursive: true, force: true }).catch(() => {})
    }
  }

  /** Ends the session: the spool goes (unless keepImage has it). Call it whatever happened. */
  async close (): Promise<void> {
    if (!this.keeping && this.spoolMade) await rm(this.spool, { recursive: true, force: true }).catch(() => {})
  }

  private blobs (archives: VolumeArchive[]): Blob[] {
    return archives.map(a => ({ size: a.size, path: a.path }))
  }

  private async makeSpool (): Promise<void> {
    if (this.spoolMade) return
    await mkdir(this.spool, { recursive: true, mode: 0o700 })
    this.spoolMade = true
  }

  private linkFor (step: string): TransferLink {
    if (this.link === undefined) throw new TransferStateError(`transfer ${this.moveId}: ${step} before connect`)
    return this.link
  }

  /** The volumes that go in rounds (after prepare; empty before). */
  get syncedVolumes (): SyncedVolume[] {
    return this.plan?.synced ?? []
  }

  private planFor (step: string): PreparedTransfer & { spec: ContainerSpec } {
    if (this.plan === undefined) throw new TransferStateError(`transfer ${this.moveId}: ${step} before prepare`)
    return this.plan
  }

  private frozenFor (step: string): Frozen {
    if (this.frozen === undefined) throw new TransferStateError(`transfer ${this.moveId}: ${step} before freeze`)
    return this.frozen
  }
}

function sum (archives: VolumeArchive[]): number {
  return archives.reduce((n, a) => n + a.size, 0)
}

/** The container a transfer starts from: UnknownContainerError (naming this host) when the engine has none of that name. */
export async function inspectSource (docker: DockerHost, container: string, selfName: string, signal: AbortSignal): Promise<ContainerInfo> {
  try {
    return await docker.inspectContainer(container, signal)
  } catch (err) {
    if (err instanceof ContainerNotFoundError) throw new UnknownContainerError(`no container '${container}' on ${selfName}`, { cause: err })
    throw err
  }
}

/** The named volumes of a spec (their data travels; bind mounts and tmpfs do not). */
export function volumesOf (spec: ContainerSpec): VolumeRef[] {
  return spec.mounts.flatMap(m => m.type === 'volume' ? [{ name: m.name, driver: m.driver, destination: m.destination }] : [])
}
