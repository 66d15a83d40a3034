/**
 * The destination side of a move, on /goto/transfer/1.0.0 (agents only). A source agent first asks
 * `prepare`: we check we can take the container (architecture, disk, name, volume and host-port
 * conflicts) and say which layers we have. Only then do we accept `layer`s for that move — each is
 * verified into the staging store as it streams, and (until `preload`) fed at the same time into a
 * `docker load` that cannot complete before every layer verified (transfer/live-load.ts) — then
 * `preload` completes that load, and finally `restore`: load the image
 * (thin: only what we lacked), create the volumes and the container with the same spec, copy the
 * volume data in, start it and confirm it runs. Any failure, or an `abort`, removes everything the
 * move made here. `commit` ends the move and drops its staged layers. From the preload on, a move
 * is recorded in the incoming journal (incoming-journal.ts), so that an agent that died while it
 * made the container removes it when it starts again, or, if the container already ran, still
 * takes the source's `commit` or `abort`.
 *
 * A move is prepared only on an operator's signed order (protocol/orders.ts) that names this move,
 * its source, this destination and the digest of its spec: the container is made from that spec
 * and no other (restore refuses another one), with no host-level power the order does not allow,
 * and with volumes that are new here (checked at prepare and again at restore).
 *
 * Volume rounds: for a move whose named volumes are local-driver volumes of an engine on this host,
 * prepare's reply offers `volumeSync`; the source then sends `volume` rounds while its container
 * runs. The first round of a volume creates it here (new, unused until restore) and each round
 * syncs the source's tree into its directory by difference (agent/sync: a staging copy beside it,
 * verified, renamed in); the final round runs inside the source's freeze, and restore mounts the
 * volume as it stands. A rolled-back transfer's synced trees are kept (RETAINED_LAYER_MS, at most
 * RETAINED_VOLUME_BYTES) in `<engine data root>/goto-volume-sync/` — the volumes' filesystem, so
 * keeping is a rename and the retry's sync hard-links unchanged files from it — so that a retry's
 * first round syncs against them and sends only what they lack.
 *
 * A live move (prepare with `live`, allowed by the operator's order) is refused at prepare unless
 * this host can take it (live.ts LiveCheck: CRIU, experimental engine, the source's CPU architecture
 * and flags); after the freeze its checkpoint arrives (`checkpoint`): each file verified against its
 * size and sha256 into `<engine data root>/goto-checkpoints/<move ID>/`, within MAX_CHECKPOINT_BYTES
 * and the free disk. Restore then creates the container as in any move, renames the checkpoint
 * into `<data root>/containers/<new id>/checkpoints/<name>` and starts it from there. A rollback
 * removes the staged checkpoint with the rest.
 *
 * A failover snapshot (agent/failover) is the same exchange prepared with purpose 'snapshot' and
 * ended by `store` instead of `restore`: the layers the image lacks here are loaded into the engine
 * (pre-copy, preload), and the frozen changes, spec and volume data are kept in the SnapshotStore
 * for a takeover, not started. Its local-driver volumes are offered for rounds too (whatever the
 * engine here): each round syncs into the version the store assembles, against the current
 * version's tree, so only the difference since the last snapshot travels; the store makes the
 * version current at `store`, and a rolled-back or expired snapshot's assembly is dropped.
 */
import { createHash } from 'node:crypto'
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Connection } from '@libp2p/interface'
import type { VerifiedPeer } from '../../certs/verify.js'
import type { AuthService } from '../net/auth-service.js'
import type { DockerHost } from '../docker/docker-host.js'
import type { ContainerSpec } from '../docker/types.js'
import type { Logger } from '../log.js'
import { NO_METRICS, type Metrics } from '../metrics/sink.js'
import { counted } from '../transfer/counted.js'
import type { LayerStore } from '../transfer/layer-store.js'
import { LiveLoad } from '../transfer/live-load.js'
import type { HolderFetcher } from '../transfer/holders.js'
import { loadBase, loadedImageId, loadVerified } from '../transfer/load.js'
import type { ImageStore } from '../docker/engine-kind.js'
import { layersToSend } from '../transfer/plan.js'
import type { Timings } from '../timings.js'
import { restoreContainer, tagState, undoRestore, type Made } from './restore.js'
import { planNetworks } from './networks.js'
import { treeBytes } from './rounds.js'
import { HashCache, NO_XATTRS, recoverSyncLeftovers, syncDestination, type SyncResult, type XattrAccess } from '../sync/index.js'
import { syncDuplex } from '../transfer/sync-stream.js'
import type { IncomingJournal, IncomingRecord } from './incoming-journal.js'
import { MAX_CHECKPOINT_BYTES, cpuRefusal, receiveCheckpoint, type LiveCheck } from './live.js'
import { TRANSFER_PROTOCOL } from '../../protocol/ids.js'
import type { JsonStream } from '../../protocol/wire.js'
import { decodableEncodings, receiveEncoded } from '../transfer/encoding.js'
import { checkHostPowers, specDigest, type MoveOrderBody, type OrderVerifier } from '../../protocol/orders.js'
import {
  parseTransferRequest, type FetchLayerRequest, type PrepareRequest, type PrepareReply, type RestoreRequest, type LayerHeader, type LayerReply, type ResumePoint, type PreloadRequest, type StoreRequest,
  type VolumeRoundRequest, type CheckpointRequest, type LiveReport
} from '../../protocol/move-messages.js'

import {
  ArchitectureMismatchError, CheckpointRefusedError, ContainerNotFoundError, HolderRefusedError, LiveUnavailableError, InsufficientDiskError, LayerTooLargeError, MoveInProgressError, NameConflictError,
  OrderMismatchError, OrderMissingError, PortConflictError, SpecMismatchError, SpecTooLargeError, TooManyTransfersError, UnknownMoveError, toWireError,
  VolumeSyncRefusedError, VolumeSyncTooLargeError, VolumeSyncUnavailableError
} from '../../protocol/errors.js'

/** While a preload runs, the engine's filesystem is flushed this often (flushingWhile). */
const FLUSH_INTERVAL_MS = 250
/** Staging copy, docker load's temporary copy, the final layers: ask for three times the image's size. */
const DISK_HEADROOM_FACTOR = 3

/**
 * Pending transfers (prepared, not yet committed, aborted or expired) one source may hold here, and
 * all sources together. An honest source runs one transfer per container it moves or snapshots
 * here at a time (a drain moves a few at once); each pending one holds a spec and a set in memory
 * until it ends or goes idle for moveIdleTimeoutMs, so a rogue member's prepares must stop somewhere.
 */
export const MAX_PENDING_PER_PEER = 16
export const MAX_PENDING_TRANSFERS = 64

/**
 * Largest encoded container spec a prepare may carry. Real specs are a few KiB (env, labels,
 * mounts); the frame limit (1 MiB) would let each pending transfer hold a megabyte.
 */
export const MAX_SPEC_BYTES = 64 * 1024

/**
 * Verified layers of a rolled-back or expired transfer stay staged this long (and at most
 * RETAINED_LAYER_BYTES of them) so that a retry of the move does not resend them; after that, or
 * beyond that size, they are pruned unless a pending transfer wants them. The trade-off: a retry
 * later than this, or of a larger image, resends its layers; a source that rolls back on purpose
 * can fill at most this much of the staging disk for at most this long.
 */
export const RETAINED_LAYER_MS = 15 * 60_000
export const RETAINED_LAYER_BYTES = 4 * 1024 ** 3

/**
 * Synced volume trees of rolled-back transfers are kept as long as staged layers (RETAINED_LAYER_MS)
 * and at most this much of them in all, for the same reason and trade-off: a retry's rounds send
 * only what they lack.
 */
export const RETAINED_VOLUME_BYTES = 8 * 1024 ** 3

/**
 * Most bytes one volume round may carry (never more than the engine's free disk either): a round
 * carries at most the volume's data plus its manifest; this bounds what a rogue source can make
 * this host write in one step.
 */
export const MAX_VOLUME_ROUND_BYTES = 1024 ** 4

/** How long a refused round's last frames may take to go out before its reply is written. */
const ROUND_END_TIMEOUT_MS = 5000

interface Pending {
  moveId: string
  purpose: 'move' | 'snapshot'
  from: string
  spec: ContainerSpec
  /** specDigest(spec): what a later step's spec must match. */
  specDigest: string
  diffIds: string[]
  present: number
  wanted: Set<string>
  /** The committed top layer, the one layer accepted beyond the prepared chain. */
  extraLayer?: string
  volumes: string[]
  made: Made & { preloaded?: string }
  /** The engine's image store, from prepare: the containerd store gets no live load (load.ts). */
  imageStore: ImageStore
  /** The chain the preload loaded (a base the restore's load may build on, on the containerd store too). */
  preloadedChain?: string[]
  /** The engine's load of the prepared chain, fed as its layers arrive (until preload finishes it). */
  live?: LiveLoad
  touched: number
  /** Steps of this transfer running now: a transfer with a step running is never idle. */
  active: number
  /** A layer arrived: a real move, not a dry run's prepare (for the metrics). */
  sentData: boolean
  /** Its incoming-journal record, from the preload (or restore) of a move on. */
  record?: IncomingRecord
  /** Named volumes offered for rounds at prepare. */
  syncable: string[]
  /** Volumes made here by rounds: their directory, the sync's hash cache, whether the final round arrived. */
  synced: Map<string, { dir: string, cache: HashCache, rounds: number, final: boolean }>
  /** Volumes with a round running now (one at a time each). */
  syncing: Set<string>
  /** The restore began: no more rounds. */
  restoring?: boolean
  /** (live move) Prepared live; the checkpoint received, staged until the restore places it. */
  liveMove?: { staged?: { name: string, dir: string } }
}

/**
 * Where the frozen state of a snapshot (prepared with purpose 'snapshot') is kept: failover's
 * snapshot store, passed in by the agent's composition root. `blob(size)` reads the next blob of
 * the request's stream (the changes layer, then each volume archive, in the request's order).
 */
export interface SnapshotSink {
  /** `image`: layers to keep with the version (an engine that cannot restore the image from its own layers). */
  receive: (req: StoreRequest, ownerName: string, blob: (size: number) => AsyncIterable<Uint8Array>, signal: AbortSignal, image?: { store: Pick<LayerStore, 'has' | 'open'>, diffIds: readonly string[] }) => Promise<{ bytes: number }>
  /** Where a snapshot's `volume` round syncs (in the version being assembled) and against what (the current version's tree). */
  volumeTree: (owner: string, name: string, moveId: string, volume: string) => Promise<{ dir: string, base?: string, cache: HashCache }>
  /** Bytes free where versions are assembled (undefined: unknown). */
  freeBytes: () => Promise<number | undefined>
  /** Drops what a rolled-back or expired snapshot assembled. */
  dropIncoming: (moveId: string) => Promise<void>
}

export interface DestinationDeps {
  auth: AuthService
  /** This agent's peer ID: the destination a move order must name. */
  selfId: string
  /** Verifies operators' move orders and remembers them against replay (shared with failover's protect). */
  orders: OrderVerifier
  docker: DockerHost
  store: LayerStore
  /** Blob bytes received and moves ended here (default: none kept). */
  metrics?: Metrics
  /** Where snapshots are kept. */
  snapshots: SnapshotSink
  timings: Pick<Timings, 'moveIdleTimeoutMs' | 'moveExpireCheckMs' | 'transferControlTimeoutMs' | 'restoreStartTimeoutMs'>
  /** Wall clock in ms (default Date.now): when a transfer was last heard from. */
  now?: () => number
  /** Moves whose container is being made here (what a restarted agent must undo or finish). */
  journal: IncomingJournal
  /**
   * Resolves when this host's engine holds every image it is still taking in by other means (the
   * images kept after moves out of here: KeptImages); asked before saying which layers we have.
   */
  kept?: { settled: () => Promise<void> }
  /** Extended attributes of synced volumes (agent/sync attrTools; default: none). */
  xattrs?: XattrAccess
  /** Fetches layers from members near this host that hold them (a source's `fetch` step; default: the step is not offered). */
  holders?: HolderFetcher
  /** False: offer no volume rounds (every volume arrives as an archive inside the freeze; default true). */
  volumeRounds?: boolean
  /** False: synced trees of rolled-back transfers are not kept for a retry (default true). */
  retainVolumeTrees?: boolean
  /** Whether this host can take a live move (default: none: a live prepare is refused). */
  live?: Pick<LiveCheck, 'report'>
  log: Logger
}

/** Where a live move's checkpoint waits, under the engine's data root (the same filesystem as its containers: placing it is a rename). */
const CHECKPOINT_STAGING = 'goto-checkpoints'

export class DestinationService {
  private readonly moves = new Map<string, Pending>()
  /** Staged layers of transfers rolled back here, kept for a retry until the epoch ms given (bounds). */
  private readonly retained = new Map<string, { until: number, bytes: number }>()
  /** Synced volume trees of rolled-back transfers (paths under retainDir), kept until the epoch ms given. */
  private readonly retainedTrees = new Map<string, { until: number, bytes: number }>()
  /** `<engine data root>/goto-volume-sync` when this agent reads the engine's volumes (found at start). */
  private retainDir: string | undefined
  private timer: NodeJS.Timeout | undefined
  private readonly metrics: Metrics
  private readonly now: () => number
  private expiring?: Promise<void>

  constructor (private readonly deps: DestinationDeps) {
    this.metrics = deps.metrics ?? NO_METRICS
    this.now = deps.now ?? Date.now
  }

  async start (): Promise<void> {
    await this.findRetainedTrees()
    await this.recover()
    await this.removeStagedCheckpoints()
    await this.deps.auth.handle(TRANSFER_PROTOCOL, ['agent'], async (js, peer, connection) => { await this.serve(js, peer, connection) })
    this.timer = setInterval(() => { void this.expire() }, this.deps.timings.moveExpireCheckMs)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
  }

  private async serve (js: JsonStream, peer: VerifiedPeer, _connection: Connection): Promise<void> {
    const req = parseTransferRequest(await js.read(AbortSignal.timeout(this.deps.timings.transferControlTimeoutMs)))
    // A step lasts as long as its stream: if the source dies or gives up, the stream closes and
    // whatever the step was doing (a layer half-received, a load) is aborted and cleaned up.
    const ac = new AbortController()
    js.onClose(() => { ac.abort(new UnknownMoveError(`the source closed the ${req.op} stream`)) })
    const signal = ac.signal
    let reply: unknown
    const running = this.moves.get(req.moveId)
    if (running !== undefined) running.active++
    try {
      switch (req.op) {
        case 'prepare': reply = await this.prepare(req, peer, signal); break
        case 'layer': reply = await this.layer(req, js, peer, signal); break
        case 'fetch': reply = await this.fetchLayer(req, peer, signal); break
        case 'preload': reply = await this.preload(req, peer, signal); break
        case 'restore': reply = await this.restore(req, js, peer, signal); break
        case 'store': reply = await this.store(req, js, peer, signal); break
        case 'volume': reply = await this.volumeRound(req, js, peer, signal); break
        case 'checkpoint': reply = await this.checkpoint(req, js, peer, signal); break
        case 'abort': await this.rollback(this.own(req.moveId, peer), 'aborted by the source'); reply = {}; break
        case 'commit': reply = await this.commit(this.own(req.moveId, peer)); break
      }
    } catch (err) {
      this.deps.log.warn('transfer step refused', { op: req.op, moveId: req.moveId, from: peer.name, error: (err as Error).message, reason: (err as Error).name })
      await js.write({ ok: false, error: toWireError(err) })
      await js.close()
      return
    } finally {
      if (running !== undefined) {
        running.active--
        running.touched = this.now()
      }
    }
    await js.write({ ok: true, result: reply })
    await js.close()
  }

  /** Blob payload counts as received once read from the stream, kept or not (docs/operations.md, metrics). */
  private received (data: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
    return counted(data, n => { this.metrics.bytesReceived(n) })
  }

  private own (moveId: string, peer: VerifiedPeer): Pending {
    const p = this.moves.get(moveId)
    if (p === undefined || p.from !== peer.peerId) throw new UnknownMoveError(`no move ${moveId} from ${peer.name} was prepared here`)
    p.touched = this.now()
    return p
  }

  private async prepare (req: PrepareRequest, peer: VerifiedPeer, signal: AbortSignal): Promise<PrepareReply> {
    this.admit(req, peer)
    const { docker } = this.deps
    // A snapshot is only kept here, never started by this exchange; a takeover later runs it, so
    // it may carry no host-level power at all (the snapshotter leaves bind mounts behind).
    const order = req.purpose === 'move' ? await this.checkOrder(req, peer) : undefined
    if (order === undefined) checkHostPowers(req.spec, { binds: [] })
    const live = req.live === undefined ? undefined : await this.checkLive(req.live, order, signal)
    if (this.moves.has(req.moveId)) throw new MoveInProgressError(`transfer ${req.moveId} is already prepared here`)
    const info = await docker.info(signal)
    if (info.architecture !== req.image.architecture || info.os !== req.image.os) {
      throw new ArchitectureMismatchError(`the image is ${req.image.os}/${req.image.architecture}, this engine runs ${info.os}/${info.architecture}`)
    }
    const free = await docker.freeDiskBytes(signal)
    if (free !== null && free < req.image.size * DISK_HEADROOM_FACTOR) {
      throw new InsufficientDiskError(`${Math.round(free / 2 ** 20)} MiB free, the move needs about ${Math.round(req.image.size * DISK_HEADROOM_FACTOR / 2 ** 20)} MiB`)
    }
    if (req.purpose === 'move') await this.checkConflicts(req, signal)
    // What becomes of its networks here; one that exists with other settings refuses the move now, before any freeze.
    const networks = req.purpose === 'move' ? await planNetworks(docker, req.spec, signal) : []
    await this.deps.kept?.settled()
    // The containerd image store and Podman reuse no layer in a load: they are sent every one (loadBase).
    const base = await loadBase(docker, signal)
    const { present, missing } = layersToSend(req.image.diffIds, base.chains)
    const staged: string[] = []
    for (const d of missing) if (await this.deps.store.has(d)) staged.push(d)
    // Whether the image can be named as at the source (restore checks again, and tags only then).
    const ref = req.purpose === 'move' && req.spec.imageRef !== undefined ? await tagState(docker, req.spec.imageRef, undefined, signal) : undefined
    if (this.moves.has(req.moveId)) throw new MoveInProgressError(`transfer ${req.moveId} is already prepared here`)
    // From here the order is spent: the same order cannot prepare a second transfer.
    if (order !== undefined) await this.deps.orders.accept(order)
    // A move's rounds write into this engine's volumes; a snapshot's into the snapshot store's versions (any engine).
    const syncable = this.deps.volumeRounds !== false && (req.purpose === 'snapshot' || await docker.readsVolumes(signal))
      ? req.volumes.filter(v => v.driver === 'local').map(v => v.name)
      : []
    this.moves.set(req.moveId, {
      moveId: req.moveId,
      purpose: req.purpose,
      from: peer.peerId,
      spec: req.spec,
      specDigest: specDigest(req.spec),
      diffIds: req.image.diffIds,
      present,
      wanted: new Set(missing),
      volumes: req.volumes.map(v => v.name),
      made: { volumes: [] },
      imageStore: base.imageStore,
      touched: this.now(),
      active: 0,
      sentData: false,
      syncable,
      synced: new Map(),
      syncing: new Set(),
      ...live === undefined ? {} : { liveMove: {} }
    })
    this.deps.log.info(`${req.purpose} prepared`, { moveId: req.moveId, from: peer.name, container: req.spec.name, present, missing: missing.length, staged: staged.length, imageRef: ref, volumeSync: syncable.length })
    return {
      present, staged, ...ref === undefined ? {} : { imageRef: ref }, volumeSync: syncable, decodes: decodableEncodings(), resumes: true, ...live === undefined ? {} : { live }, ...this.deps.holders === undefined ? {} : { fetchesFromHolders: true },
      ...networks.length === 0 ? {} : { networks }
    }
  }

  /**
   * A live prepare's preflight here: a move (not a snapshot) whose order allows it, this host able
   * to take part (LiveCheck), the source's CPU architecture and flags. Refused before anything is made.
   */
  private async checkLive (cpu: { arch: string, cpuFlags: string[] }, order: MoveOrderBody | undefined, signal: AbortSignal): Promise<LiveReport> {
    if (order === undefined) throw new LiveUnavailableError('a snapshot is never live')
    if (order.allow.live !== true) throw new LiveUnavailableError('the operator\'s order does not allow a live move (--live)')
    if (this.deps.live === undefined) throw new LiveUnavailableError('live move not possible: this agent checks no CRIU')
    const { cpuFlags, ...report } = await this.deps.live.report(signal)
    if (!report.ok) throw new LiveUnavailableError(`live move not possible: ${report.host}: ${report.missing.join('; ')}`)
    const cpuWrong = cpuRefusal(cpu, { host: report.host, arch: report.arch, cpuFlags })
    if (cpuWrong !== undefined) throw new LiveUnavailableError(`live move not possible: ${cpuWrong}`)
    return report
  }

  /**
   * (live move, after the source froze) The checkpoint's files, each verified into the staging
   * directory; refused (the move rolls back here): a move not prepared live, a second checkpoint, a
   * checkpoint once the restore began, more bytes than MAX_CHECKPOINT_BYTES or the free disk, a file
   * not as announced.
   */
  private async checkpoint (req: CheckpointRequest, js: JsonStream, peer: VerifiedPeer, signal: AbortSignal): Promise<{ bytes: number }> {
    const p = this.own(req.moveId, peer)
    const { docker, log } = this.deps
    if (p.liveMove === undefined) throw new CheckpointRefusedError(`move ${p.moveId} was not prepared live`)
    if (p.liveMove.staged !== undefined || p.restoring === true) throw new CheckpointRefusedError(`move ${p.moveId} has its checkpoint already`)
    try {
      const root = (await docker.info(signal)).dockerRootDir
      if (root === '') throw new CheckpointRefusedError('the engine names no data root')
      const dir = join(root, CHECKPOINT_STAGING, p.moveId)
      const free = await docker.freeDiskBytes(signal)
      const max = Math.min(MAX_CHECKPOINT_BYTES, free ?? MAX_CHECKPOINT_BYTES)
      p.liveMove.staged = { name: req.name, dir }
      p.sentData = true
      const blob = (size: number): AsyncIterable<Uint8Array> => this.received(receiveEncoded(js, size, req.encoding, () => new CheckpointRefusedError(`a file of move ${p.moveId}'s checkpoint is larger than announced`), signal))
      const bytes = await receiveCheckpoint(dir, req.files, blob, max, signal)
      p.touched = this.now()
      log.info('checkpoint verified', { moveId: p.moveId, container: p.spec.name, files: req.files.length, bytes })
      return { bytes }
    } catch (err) {
      await this.rollback(p, (err as Error).message)
      throw err
    }
  }

  /** Places the staged checkpoint into the created container's checkpoints and starts it from there. */
  private async startFromStaged (p: Pending, name: string, containerId: string, signal: AbortSignal): Promise<void> {
    const staged = p.liveMove?.staged
    if (staged === undefined || staged.name !== name) throw new CheckpointRefusedError(`move ${p.moveId} restores from checkpoint '${name}', which did not arrive here`)
    const target = await this.deps.docker.checkpointDirectory(containerId, name, signal)
    if (target === undefined) throw new CheckpointRefusedError('the engine\'s containers are not in a directory this agent writes')
    await mkdir(dirname(target), { recursive: true, mode: 0o700 })
    await rename(staged.dir, target)
    // Inside the container's directory now: removing the container removes it.
    if (p.liveMove !== undefined) p.liveMove.staged = undefined
    await this.deps.docker.startFromCheckpoint(containerId, name, signal)
  }

  /** After a restart: no live move is pending any more, so no staged checkpoint is wanted. */
  private async removeStagedCheckpoints (): Promise<void> {
    if (this.deps.live === undefined) return
    const signal = AbortSignal.timeout(this.deps.timings.transferControlTimeoutMs)
    const root = await this.deps.docker.info(signal).then(i => i.dockerRootDir, () => '')
    if (root !== '') await rm(join(root, CHECKPOINT_STAGING), { recursive: true, force: true }).catch(() => {})
  }

  private async dropStagedCheckpoint (p: Pending): Promise<void> {
    const staged = p.liveMove?.staged
    if (staged === undefined) return
    p.liveMove = {}
    await rm(staged.dir, { recursive: true, force: true }).catch(err => { this.deps.log.warn('staged checkpoint not removed', { moveId: p.moveId, error: (err as Error).message }) })
  }

  /**
   * The operator's order for this move, verified (protocol/orders.ts: certificate, role, signature,
   * expiry, replay) and naming exactly it: this transfer's move ID, the source on the other end of
   * this stream, this agent as destination, the container and the digest of the spec sent.
   */
  private async checkOrder (req: PrepareRequest, peer: VerifiedPeer): Promise<MoveOrderBody> {
    if (req.order === undefined) throw new OrderMissingError(`${peer.name} asked to prepare move ${req.moveId} without an operator's order`)
    const body = await this.deps.orders.verify(req.order, ['move'])
    const wrong = body.to !== this.deps.selfId
      ? `is for another destination (${body.to})`
      : body.from !== peer.peerId
        ? `names another source (${body.from}), not ${peer.name}`
        : body.id !== req.moveId
          ? `is for move ${body.id}, not ${req.moveId}`
          : body.container !== req.spec.name
            ? `is for container '${body.container}', not '${req.spec.name}'`
            : body.specDigest !== specDigest(req.spec) ? `names spec ${body.specDigest}, not the one sent (${specDigest(req.spec)})` : undefined
    if (wrong !== undefined) throw new OrderMismatchError(`the order ${wrong}`)
    checkHostPowers(req.spec, body.allow)
    return body
  }

  /** The bounds a prepare must be within: pending transfers per peer and in all, the spec's size. */
  private admit (req: PrepareRequest, peer: VerifiedPeer): void {
    if (this.moves.has(req.moveId)) return // a repeated prepare replaces its own entry
    const pending = [...this.moves.values()]
    const fromPeer = pending.filter(m => m.from === peer.peerId).length
    if (fromPeer >= MAX_PENDING_PER_PEER) throw new TooManyTransfersError(`${peer.name} already has ${fromPeer} transfers pending here (at most ${MAX_PENDING_PER_PEER})`)
    if (pending.length >= MAX_PENDING_TRANSFERS) throw new TooManyTransfersError(`${pending.length} transfers are pending here (at most ${MAX_PENDING_TRANSFERS})`)
    const specBytes = Buffer.byteLength(JSON.stringify(req.spec))
    if (specBytes > MAX_SPEC_BYTES) throw new SpecTooLargeError(`the container spec is ${specBytes} bytes encoded, at most ${MAX_SPEC_BYTES} are taken`)
  }

  /**
   * After a rollback: the transfer's staged layers no pending transfer wants are kept for a retry
   * (RETAINED_LAYER_MS, RETAINED_LAYER_BYTES in all), then pruned by `pruneRetained`.
   */
  private async retain (p: Pending): Promise<void> {
    const until = this.now() + RETAINED_LAYER_MS
    for (const d of p.wanted) {
      const bytes = await this.deps.store.size(d).catch(() => undefined)
      if (bytes !== undefined) this.retained.set(d, { until, bytes })
    }
    await this.pruneRetained()
  }

  /** Removes retained layers past their time or beyond the size bound (oldest first), unless a pending transfer wants them. */
  private async pruneRetained (): Promise<void> {
    const now = this.now()
    const wanted = new Set([...this.moves.values()].flatMap(m => [...m.wanted]))
    let total = 0
    const newestFirst = [...this.retained.entries()].sort((a, b) => b[1].until - a[1].until)
    for (const [d, r] of newestFirst) {
      if (wanted.has(d)) { this.retained.delete(d); continue } // a pending transfer owns it again
      total += r.bytes
      if (r.until > now && total <= RETAINED_LAYER_BYTES) continue
      this.retained.delete(d)
      if (await this.deps.store.remove(d).catch(() => false)) this.deps.log.info('pruned staged layer of a rolled-back transfer', { digest: d, bytes: r.bytes })
    }
  }

  /** A container of that name, one of its volumes' names, or one of its host ports already taken here. */
  private async checkConflicts (req: PrepareRequest, signal: AbortSignal): Promise<void> {
    const { docker } = this.deps
    try {
      await docker.inspectContainer(req.spec.name, signal)
      throw new NameConflictError(`a container named '${req.spec.name}' already exists here`)
    } catch (err) {
      if (!(err instanceof ContainerNotFoundError)) throw err
    }
    await this.checkNewVolumes(req.spec, signal)
    for (const v of req.volumes) {
      if (await docker.volumeExists(v.name, signal)) throw new NameConflictError(`a volume named '${v.name}' already exists here`)
    }
    const wantedPorts = Object.values(req.spec.portBindings).flat().map(b => b.hostPort).filter(p => p !== '')
    if (wantedPorts.length > 0) {
      for (const c of await docker.listContainers(signal)) {
        if (c.state !== 'running' && c.state !== 'paused') continue
        const other = await docker.inspectContainer(c.id, signal)
        const taken = Object.values(other.spec.portBindings).flat().map(b => b.hostPort)
        const clash = wantedPorts.find(p => taken.includes(p))
        if (clash !== undefined) throw new PortConflictError(`host port ${clash} is already bound by container '${other.name}' here`)
      }
    }
  }

  /** Every named volume of the spec must be new here (or made by this transfer): a move never mounts a volume it did not make. */
  private async checkNewVolumes (spec: ContainerSpec, signal: AbortSignal, ours: string[] = []): Promise<void> {
    for (const m of spec.mounts) {
      if (m.type === 'volume' && !ours.includes(m.name) && await this.deps.docker.volumeExists(m.name, signal)) throw new NameConflictError(`a volume named '${m.name}' already exists here`)
    }
  }

  private async layer (req: LayerHeader, js: JsonStream, peer: VerifiedPeer, signal: AbortSignal): Promise<LayerReply> {
    const p = this.own(req.moveId, peer)
    p.sentData = true
    const incoming = (bytes: number): AsyncIterable<Uint8Array> => this.received(receiveEncoded(js, bytes, req.encoding, () => new LayerTooLargeError(`layer ${req.diffId ?? ''} is larger than the announced ${req.size} bytes`), signal))
    const data = incoming(req.size)
    const { store, log } = this.deps
    // A layer of the prepared chain also streams into the engine's load, until preload finished it.
    const stage = async <T extends { diffId: string }>(keep: (s: AsyncIterable<Uint8Array>) => Promise<T>, ofChain: boolean, source = data): Promise<T> =>
      ofChain && p.made.preloaded === undefined && p.imageStore === 'graphdriver' ? await this.liveLoad(p).layer(req.size, source, keep) : await keep(source)
    if (req.diffId === null) {
      // Named only by its content: one of the layers this move needs, or one of the chain we
      // already have (the sender could not tell before hashing it), nothing else.
      const candidates = new Set([...p.wanted, ...p.diffIds.slice(0, p.present)])
      const got = await stage(async s => await store.receiveAny(candidates, req.size, s, signal), true)
      const kept = p.wanted.has(got.diffId)
      if (!kept) await store.remove(got.diffId)
      p.touched = this.now()
      log.info(kept ? 'layer verified' : 'layer already here, dropped', { moveId: req.moveId, digest: got.diffId, bytes: got.bytes })
      return { diffId: got.diffId, bytes: got.bytes, kept }
    }
    // Layers of the prepared chain, plus exactly one more: the container's changes, made at freeze.
    const diffId = req.diffId
    const ofChain = p.wanted.has(diffId) && diffId !== p.extraLayer
    if (!ofChain) {
      if (p.extraLayer !== undefined && p.extraLayer !== diffId) throw new UnknownMoveError(`layer ${diffId} is not part of move ${p.moveId}`)
      p.extraLayer = diffId
      p.wanted.add(diffId)
    }
    if (await store.has(diffId)) {
      // Already verified here: a resuming sender is told it has nothing left to send.
      if (req.resume === true) await js.write({ offset: req.size } satisfies ResumePoint, signal)
      for await (const _ of req.resume === true ? incoming(0) : data) { /* drain */ }
      return { diffId, bytes: 0, kept: true }
    }
    if (req.resume === true) return await this.resumeLayer(req, p, diffId, js, incoming, stage, ofChain, signal)
    const { bytes } = await stage(async s => ({ diffId, ...await store.receive(diffId, req.size, s, signal) }), ofChain)
    p.touched = this.now()
    log.info('layer verified', { moveId: req.moveId, digest: diffId, bytes })
    return { diffId, bytes, kept: true }
  }

  /**
   * A layer the sender continues from the bytes kept here (docs/protocols.md, "Resume inside a
   * layer"): the offset the store verified goes back first, then the rest arrives. A layer resumed
   * past its first byte does not feed the live load (it lacks the prefix): the load reads it from
   * the store, like a layer staged by an earlier try.
   */
  private async resumeLayer (
    req: LayerHeader, p: Pending, diffId: string, js: JsonStream, incoming: (bytes: number) => AsyncIterable<Uint8Array>,
    stage: <T extends { diffId: string }>(keep: (s: AsyncIterable<Uint8Array>) => Promise<T>, ofChain: boolean, source?: AsyncIterable<Uint8Array>) => Promise<T>,
    ofChain: boolean, signal: AbortSignal
  ): Promise<LayerReply> {
    const { store, log } = this.deps
    const partial = await store.resumable(diffId, req.size, signal)
    if (partial.discarded !== undefined) log.warn('partial layer discarded; the layer starts over', { moveId: req.moveId, digest: diffId, why: partial.discarded })
    try {
      await js.write({ offset: partial.offset } satisfies ResumePoint, signal)
    } catch (err) {
      partial.release()
      throw err
    }
    const rest = incoming(req.size - partial.offset)
    const keep = async (s: AsyncIterable<Uint8Array>): Promise<{ diffId: string, bytes: number }> => ({ diffId, ...await partial.receive(s, signal) })
    const { bytes } = partial.offset === 0 ? await stage(keep, ofChain, rest) : await keep(rest)
    p.touched = this.now()
    log.info('layer verified', { moveId: req.moveId, digest: diffId, bytes, ...partial.offset > 0 ? { resumedAt: partial.offset } : {} })
    return { diffId, bytes, kept: true }
  }

  /**
   * A layer of the prepared chain fetched from the holder the source names (agent/transfer/holders.ts),
   * verified into the staging store as it streams (not into the live load: a holder's bad byte must
   * cost only that layer, which the source then sends) — in parts from several holders at once when
   * the source names more than one and the layer is large. Refused: a layer the move does not want,
   * a holder that announces another size than the source was told.
   */
  private async fetchLayer (req: FetchLayerRequest, peer: VerifiedPeer, signal: AbortSignal): Promise<LayerReply> {
    const p = this.own(req.moveId, peer)
    const { store, log, holders } = this.deps
    if (holders === undefined) throw new HolderRefusedError('this agent fetches no layers from holders')
    if (!p.wanted.has(req.diffId) || !p.diffIds.slice(p.present).includes(req.diffId)) throw new UnknownMoveError(`layer ${req.diffId} is not one move ${p.moveId} lacks here`)
    p.sentData = true
    if (await store.has(req.diffId)) return { diffId: req.diffId, bytes: 0, kept: true }
    const stream = await holders.fetch([req.holder, ...req.alsoFrom ?? []], p.moveId, req.diffId, req.size, signal)
    const { bytes } = await store.receive(req.diffId, req.size, this.received(stream), signal)
    // Counted once verified: a refused layer from a holder is sent by the source after all.
    this.metrics.layerBytesFromHolder(bytes)
    p.touched = this.now()
    log.info('layer verified from a holder', { moveId: p.moveId, digest: req.diffId, holder: req.holder, bytes })
    return { diffId: req.diffId, bytes, kept: true }
  }

  /** Loads the image whose layers pre-copy staged, while the source container still runs. */
  private async preload (req: PreloadRequest, peer: VerifiedPeer, signal: AbortSignal): Promise<{ imageId: string }> {
    const p = this.own(req.moveId, peer)
    const { docker } = this.deps
    const config = Buffer.from(req.config, 'base64')
    const base = await loadBase(docker, signal)
    const { present } = layersToSend(req.diffIds, base.chains)
    const input = { config, diffIds: req.diffIds, present, store: this.deps.store, imageStore: base.imageStore }
    await this.journal(p, peer, { stage: 'loading', preloaded: await loadedImageId(input) })
    // Layers that arrived were streamed into the engine as they came; if that load was cut off (or
    // never began: everything was staged before), load from the verified store instead.
    const imageId = await this.flushingWhile(async () => await p.live?.finish(input, signal) ?? await loadVerified(docker, input, signal), signal)
    p.made.preloaded = imageId
    p.preloadedChain = req.diffIds
    p.touched = this.now()
    this.deps.log.info('image preloaded', { moveId: req.moveId, image: imageId })
    return { imageId }
  }

  /**
   * Runs `load` while the engine's filesystem writes out what the load leaves in the page cache
   * (DockerHost.flushDataRoot, over and over while it runs, and once after), so that creating the
   * container at restore, in the downtime, does not wait for those writes.
   */
  private async flushingWhile<T> (load: () => Promise<T>, signal: AbortSignal): Promise<T> {
    const flush = async (): Promise<boolean> => await this.deps.docker.flushDataRoot(signal).catch(() => false)
    const work = load()
    let finished = false
    const ended = work.then(() => {}, () => {}).then(() => { finished = true })
    const flusher = (async () => {
      while (!finished && !signal.aborted) {
        if (!await flush()) return
        await Promise.race([ended, sleep(FLUSH_INTERVAL_MS, undefined, { ref: false })])
      }
    })()
    try {
      return await work
    } finally {
      await flusher
      if (!signal.aborted) await flush()
    }
  }

  private async restore (req: RestoreRequest, js: JsonStream, peer: VerifiedPeer, signal: AbortSignal): Promise<{ containerId: string }> {
    const p = this.own(req.moveId, peer)
    if (p.purpose !== 'move') throw new UnknownMoveError(`transfer ${req.moveId} was prepared as a snapshot, not a move`)
    try {
      // The container is made from the spec the order named at prepare, and no other.
      this.sameSpec(p, req.spec)
      p.restoring = true
      const wantedVolumes = p.spec.mounts.flatMap(m => m.type === 'volume' ? [`${m.name}:${m.destination}`] : [])
      const synced = req.synced ?? []
      const sent = [...req.volumes, ...synced].map(v => `${v.name}:${v.destination}`)
      if ([...sent].sort().join('\n') !== [...wantedVolumes].sort().join('\n')) {
        throw new SpecMismatchError(`the restore of ${req.moveId} sends volumes ${sent.join(', ') || 'none'}, the prepared spec has ${wantedVolumes.join(', ') || 'none'}`)
      }
      // Volumes synced in rounds are ours (made by this transfer) and complete; all others must be new.
      for (const v of synced) {
        if (p.synced.get(v.name)?.final !== true) throw new VolumeSyncRefusedError(`volume ${v.name} of ${req.moveId} has had no final round here`)
      }
      for (const v of req.volumes) {
        if (p.synced.has(v.name)) throw new VolumeSyncRefusedError(`volume ${v.name} of ${req.moveId} was synced in rounds; it cannot also arrive as an archive`)
      }
      await this.checkNewVolumes(p.spec, signal, p.made.volumes)
      const volumes = req.volumes.map(v => ({
        ...v,
        data: () => this.received(receiveEncoded(js, v.size, req.encoding, () => new LayerTooLargeError(`volume ${v.name} archive is larger than announced`), signal))
      }))
      const config = Buffer.from(req.config, 'base64')
      // The ID the restore's load will give the image (the containerd store: its manifest's digest).
      const image = await loadedImageId({ config, diffIds: req.diffIds, store: this.deps.store, imageStore: p.imageStore })
      await this.journal(p, peer, { stage: 'restoring', spec: p.spec, image })
      const checkpoint = req.checkpoint
      if (checkpoint === undefined && p.liveMove?.staged !== undefined) throw new CheckpointRefusedError(`move ${p.moveId} sent a checkpoint but restores without it`)
      const start = checkpoint === undefined ? {} : { start: async (id: string, s: AbortSignal) => { await this.startFromStaged(p, checkpoint, id, s) } }
      const onNetwork = async (name: string): Promise<void> => { await this.journal(p, peer, { networks: [...p.made.networks ?? [], name] }) }
      const containerId = await restoreContainer(this.deps.docker, {
        config, diffIds: req.diffIds, spec: p.spec, store: this.deps.store, volumes, ownLoads: p.preloadedChain === undefined ? [] : [p.preloadedChain], onNetwork, log: this.deps.log, ...start
      }, p.made, signal, this.deps.timings.restoreStartTimeoutMs)
      await this.journal(p, peer, { stage: 'restored' })
      this.deps.log.info('move restored', { moveId: req.moveId, container: p.spec.name, containerId, ...checkpoint === undefined ? {} : { fromCheckpoint: checkpoint } })
      return { containerId }
    } catch (err) {
      await this.rollback(p, (err as Error).message)
      throw err
    }
  }

  /**
   * One round of a named volume's sync (VolumeRoundRequest): the first creates the volume (journaled
   * first, so a restart removes it) and syncs against a retained tree of an earlier try if there is
   * one; every round replaces the volume's directory with the source's tree as it was read, each
   * file verified. Refused (typed errors; the source rolls back): a volume not offered at prepare,
   * a round after the final one or once the restore began, two rounds of one volume at once, a
   * round larger than the free disk.
   */
  private async volumeRound (req: VolumeRoundRequest, js: JsonStream, peer: VerifiedPeer, signal: AbortSignal): Promise<SyncResult> {
    const p = this.own(req.moveId, peer)
    const { docker, log } = this.deps
    const mount = p.spec.mounts.find(m => m.type === 'volume' && m.name === req.name)
    if (mount === undefined || mount.type !== 'volume' || !p.syncable.includes(req.name)) {
      throw new VolumeSyncRefusedError(`volume '${req.name}' is not one of move ${p.moveId}'s named volumes offered for rounds (${p.syncable.join(', ') || 'none'})`)
    }
    if (p.restoring === true) throw new VolumeSyncRefusedError(`move ${p.moveId} is restoring: no more volume rounds`)
    if (p.syncing.has(req.name)) throw new VolumeSyncRefusedError(`a round of volume '${req.name}' is running already`)
    if (p.synced.get(req.name)?.final === true) throw new VolumeSyncRefusedError(`volume '${req.name}' had its final round`)
    p.syncing.add(req.name)
    try {
      let v = p.synced.get(req.name)
      let base: string | undefined
      if (p.purpose === 'snapshot') {
        // Into the snapshot store's version being assembled, against its current version's tree.
        const t = await this.deps.snapshots.volumeTree(peer.peerId, p.spec.name, p.moveId, req.name)
        base = t.base
        v ??= { dir: t.dir, cache: t.cache, rounds: 0, final: false }
        p.synced.set(req.name, v)
      } else if (v === undefined) {
        if (await docker.volumeExists(req.name, signal)) throw new NameConflictError(`a volume named '${req.name}' already exists here`)
        await this.journal(p, peer, { volumes: [...p.made.volumes, req.name] })
        p.made.volumes.push(req.name)
        await docker.createVolume(req.name, mount.driver, mount.labels ?? {}, signal)
        const dir = await docker.volumeDirectory(req.name, signal)
        if (dir === undefined) throw new VolumeSyncUnavailableError(`volume '${req.name}' has no directory this agent can write`)
        v = { dir, cache: new HashCache(), rounds: 0, final: false }
        p.synced.set(req.name, v)
      }
      const kept = p.purpose === 'move' && v.rounds === 0 ? await this.retainedTreeFor(p.from, req.name) : undefined
      base ??= kept
      const free = p.purpose === 'snapshot' ? await this.deps.snapshots.freeBytes() : await docker.freeDiskBytes(signal)
      const max = Math.min(MAX_VOLUME_ROUND_BYTES, free ?? MAX_VOLUME_ROUND_BYTES)
      await js.write({ ready: true }, signal)
      const duplex = syncDuplex(js, signal, max, () => new VolumeSyncTooLargeError(`round ${req.round} of volume '${req.name}' carries more than ${max} bytes`))
      p.sentData = true
      let result: SyncResult
      try {
        result = await syncDestination(v.dir, { source: this.received(duplex.source as AsyncIterable<Uint8Array>), sink: duplex.sink },
          { signal, xattrs: this.deps.xattrs ?? NO_XATTRS, hashCache: v.cache, ...base === undefined ? {} : { base } })
      } finally {
        await Promise.race([duplex.ended, sleep(ROUND_END_TIMEOUT_MS, undefined, { ref: false })])
      }
      v.rounds++
      if (req.final) v.final = true
      if (kept !== undefined) await this.dropRetainedTree(kept)
      p.touched = this.now()
      log.info('volume round synced', { moveId: p.moveId, volume: req.name, round: req.round, final: req.final, bytes: result.bytesReceived, built: result.filesBuilt, linked: result.filesLinked, base: base === undefined ? (p.purpose === 'move' ? 'volume' : 'none') : kept === undefined ? 'previous version' : 'retained' })
      return result
    } finally {
      p.syncing.delete(req.name)
    }
  }

  // --- synced trees kept for a retry ---------------------------------------------------------

  /** Where the tree of volume `name` from source `from` is kept: one per (source, volume). */
  private retainedPath (from: string, name: string): string | undefined {
    if (this.retainDir === undefined) return undefined
    return join(this.retainDir, createHash('sha256').update(`${from}\n${name}`).digest('hex').slice(0, 32))
  }

  private async retainedTreeFor (from: string, name: string): Promise<string | undefined> {
    const path = this.retainedPath(from, name)
    if (path === undefined || !this.retainedTrees.has(path)) return undefined
    return await stat(path).then(st => st.isDirectory() ? path : undefined, () => undefined)
  }

  /** Moves a synced volume's tree out of the volume (which is about to be removed) into retainDir. */
  private async retainTree (from: string, name: string, dir: string): Promise<void> {
    const path = this.retainedPath(from, name)
    if (path === undefined) return
    try {
      await mkdir(this.retainDir as string, { recursive: true, mode: 0o700 })
      await rm(path, { recursive: true, force: true })
      await rename(dir, path)
      await mkdir(dir).catch(() => {})
      this.retainedTrees.set(path, { until: this.now() + RETAINED_LAYER_MS, bytes: await treeBytes(path, AbortSignal.timeout(60_000)).catch(() => 0) })
      this.deps.log.info('kept the synced tree of a rolled-back volume for a retry', { volume: name, path })
      await this.pruneRetainedTrees()
    } catch (err) {
      this.deps.log.warn('synced tree of a rolled-back volume not kept', { volume: name, error: (err as Error).message })
    }
  }

  private async dropRetainedTree (path: string): Promise<void> {
    this.retainedTrees.delete(path)
    await rm(path, { recursive: true, force: true }).catch(() => {})
  }

  /** Removes kept trees past their time or beyond RETAINED_VOLUME_BYTES (oldest first), unless a pending transfer may sync against it. */
  private async pruneRetainedTrees (): Promise<void> {
    const now = this.now()
    const inUse = new Set([...this.moves.values()].flatMap(m => m.syncable.map(n => this.retainedPath(m.from, n))))
    let total = 0
    for (const [path, r] of [...this.retainedTrees.entries()].sort((a, b) => b[1].until - a[1].until)) {
      if (inUse.has(path)) continue
      total += r.bytes
      if (r.until > now && total <= RETAINED_VOLUME_BYTES) continue
      await this.dropRetainedTree(path)
      this.deps.log.info('pruned the kept tree of a rolled-back volume', { bytes: r.bytes })
    }
  }

  /** After a restart: trees kept before it, each for RETAINED_LAYER_MS after it was kept. */
  private async findRetainedTrees (): Promise<void> {
    if (this.deps.retainVolumeTrees === false || this.deps.volumeRounds === false) return
    const signal = AbortSignal.timeout(this.deps.timings.transferControlTimeoutMs)
    const { docker } = this.deps
    const root = await docker.readsVolumes(signal).then(async ok => ok ? (await docker.info(signal)).dockerRootDir : undefined).catch(() => undefined)
    if (root === undefined || root === '') return
    const dir = join(root, 'goto-volume-sync')
    this.retainDir = dir
    for (const n of await readdir(dir).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{32}$/.test(n)) continue
      const path = join(dir, n)
      const st = await stat(path).catch(() => undefined)
      if (st?.isDirectory() !== true) continue
      this.retainedTrees.set(path, { until: st.ctimeMs + RETAINED_LAYER_MS, bytes: await treeBytes(path, AbortSignal.timeout(60_000)).catch(() => 0) })
    }
  }

  /** A snapshot's end: keep the frozen state (snapshot-store.ts) instead of starting it. */
  private async store (req: StoreRequest, js: JsonStream, peer: VerifiedPeer, signal: AbortSignal): Promise<{ bytes: number }> {
    const p = this.own(req.moveId, peer)
    if (p.purpose !== 'snapshot') throw new UnknownMoveError(`transfer ${req.moveId} was prepared as a move, not a snapshot`)
    if (req.owner !== peer.peerId) throw new UnknownMoveError(`${peer.name} sent a snapshot owned by ${req.owner}`)
    this.sameSpec(p, req.spec)
    for (const v of req.synced ?? []) {
      if (p.synced.get(v.name)?.final !== true) throw new VolumeSyncRefusedError(`volume ${v.name} of snapshot ${req.moveId} has had no final round here`)
    }
    const blob = (size: number): AsyncIterable<Uint8Array> => this.received(receiveEncoded(js, size, req.encoding, () => new LayerTooLargeError(`snapshot of ${req.spec.name}: a part is larger than announced`), signal))
    try {
      // The containerd store and Podman load no layer they hold from elsewhere (loadBase): a takeover
      // here restores the whole image from the snapshot, so it keeps the image's layers staged now.
      const image = p.imageStore === 'graphdriver' ? undefined : { store: this.deps.store, diffIds: p.diffIds }
      const { bytes } = await this.deps.snapshots.receive(req, peer.name, blob, signal, image)
      this.deps.log.info('snapshot stored', { moveId: req.moveId, container: req.spec.name, owner: peer.name, epoch: req.epoch, seq: req.seq, bytes })
      return { bytes }
    } finally {
      // The image's layers are in the engine now (preload); the staged copies are not needed.
      await this.end(p)
    }
  }

  private sameSpec (p: Pending, spec: ContainerSpec): void {
    const d = specDigest(spec)
    if (d !== p.specDigest) throw new SpecMismatchError(`the ${p.purpose} ${p.moveId} was prepared with spec ${p.specDigest}, this step sends ${d}`)
  }

  private async commit (p: Pending): Promise<Record<string, never>> {
    await this.end(p)
    this.deps.log.info('move committed', { moveId: p.moveId, container: p.spec.name })
    if (p.purpose === 'move') this.metrics.moveReceived('committed')
    return {}
  }

  /** Forgets a finished transfer and drops its staged layers. */
  private async end (p: Pending): Promise<void> {
    this.moves.delete(p.moveId)
    await this.dropStagedCheckpoint(p)
    await this.forget(p)
    if (p.purpose === 'snapshot') await this.deps.snapshots.dropIncoming(p.moveId)
    for (const d of p.wanted) await this.deps.store.remove(d).catch(() => {})
  }

  /** Removes what the move made here; verified layers stay staged, for a bounded time, so a retry does not resend them. */
  private async rollback (p: Pending, why: string): Promise<void> {
    this.moves.delete(p.moveId)
    p.live?.abort(new UnknownMoveError(`${p.purpose} ${p.moveId} was rolled back: ${why}`))
    if (p.purpose === 'snapshot') await this.deps.snapshots.dropIncoming(p.moveId)
    else if (p.synced.size > 0) {
      // The container (if the restore made one) goes first: a mounted directory cannot be renamed away.
      await undoRestore(this.deps.docker, { ...p.made, volumes: [] }, this.deps.log)
      for (const [name, v] of p.synced) await this.retainTree(p.from, name, v.dir)
    }
    await undoRestore(this.deps.docker, p.made, this.deps.log)
    await this.dropStagedCheckpoint(p)
    await this.forget(p)
    await this.retain(p)
    this.deps.log.warn(`${p.purpose} rolled back here`, { moveId: p.moveId, container: p.spec.name, why })
    if (p.sentData && p.purpose === 'move') this.metrics.moveReceived('rolled_back')
  }

  /** The move's live load, opened at its first layer. */
  private liveLoad (p: Pending): LiveLoad {
    p.live ??= new LiveLoad(this.deps.docker)
    return p.live
  }

  // --- the incoming journal ---------------------------------------------------------------

  /** Records (or moves on) a move's incoming-journal record before the engine makes more for it. */
  private async journal (p: Pending, peer: VerifiedPeer, changes: Partial<IncomingRecord>): Promise<void> {
    if (p.purpose !== 'move') return
    if (p.record === undefined) {
      p.record = { moveId: p.moveId, from: { name: peer.name, peerId: peer.peerId }, stage: 'loading', spec: p.spec, wanted: [], at: new Date().toISOString() }
    }
    await this.deps.journal.update(p.record, { ...changes, wanted: [...p.wanted] })
  }

  private async forget (p: Pending): Promise<void> {
    if (p.record === undefined) return
    await this.deps.journal.remove(p.moveId).catch(err => { this.deps.log.error('incoming-move record not removed', { moveId: p.moveId, error: (err as Error).message }) })
    p.record = undefined
  }

  /**
   * After a restart: a move that died while its container was being made here is undone; one whose
   * container ran is pending again, for the source's `commit` or `abort` (incoming-journal.ts).
   * A record the engine cannot be asked about yet stays for the next start.
   */
  private async recover (): Promise<void> {
    const { docker, journal, log } = this.deps
    const { records, unreadable } = await journal.list()
    for (const u of unreadable) log.error('unreadable incoming-move record left in place; check that container by hand', { path: u.path, error: u.error })
    for (const r of records) {
      // Engine calls only (inspect, removals): twice a control step.
      const signal = AbortSignal.timeout(2 * this.deps.timings.transferControlTimeoutMs)
      try {
        let containerId: string | undefined
        try {
          const c = await docker.inspectContainer(r.spec.name, signal)
          // Only the container the move made: created from the image it loaded.
          if (c.spec.image === r.image) containerId = c.id
          else log.warn('a container of the moved name is not the one the move made; left alone', { moveId: r.moveId, container: r.spec.name })
        } catch (err) {
          if (!(err instanceof ContainerNotFoundError)) throw err
        }
        const volumes = r.stage === 'loading' ? r.volumes ?? [] : r.spec.mounts.flatMap(m => m.type === 'volume' ? [m.name] : [])
        const made = { volumes, networks: r.networks ?? [], containerId, imageId: r.image, preloaded: r.preloaded }
        if (r.stage === 'restored') {
          this.moves.set(r.moveId, {
            moveId: r.moveId, purpose: 'move', from: r.from.peerId, spec: r.spec, specDigest: specDigest(r.spec), diffIds: [], present: 0, wanted: new Set(r.wanted),
            // Restored already: no layer or load comes any more, so the store kind plays no part.
            volumes, made, imageStore: 'graphdriver', touched: this.now(), active: 0, sentData: true, record: r, syncable: [], synced: new Map(), syncing: new Set(), restoring: true
          })
          log.warn('move restored here before this agent stopped: waiting for its source to commit or abort', { moveId: r.moveId, container: r.spec.name, from: r.from.name })
          continue
        }
        if ((r.volumes ?? []).length > 0) await undoRestore(docker, { ...made, volumes: [] }, log)
        for (const name of r.volumes ?? []) {
          const dir = await docker.volumeDirectory(name, signal).catch(() => undefined)
          if (dir === undefined) continue
          // A round cut off between its renames left the last complete tree beside the directory.
          await recoverSyncLeftovers(dir).catch(() => {})
          await this.retainTree(r.from.peerId, name, dir)
        }
        await undoRestore(docker, made, log)
        await journal.remove(r.moveId)
        log.warn('move cut short while its container was being made here: removed what it made', { moveId: r.moveId, container: r.spec.name, from: r.from.name, stage: r.stage })
      } catch (err) {
        log.error('incoming move not recovered; trying again at the next start', { moveId: r.moveId, container: r.spec.name, error: (err as Error).message })
      }
    }
  }

  /**
   * Rolls back every transfer with no step running that has been silent for moveIdleTimeoutMs.
   * One pass at a time: a slow rollback must not let the next pass roll the same transfer back again.
   */
  async expire (): Promise<void> {
    this.expiring ??= (async () => {
      const now = this.now()
      for (const p of [...this.moves.values()]) {
        if (this.moves.get(p.moveId) !== p) continue
        if (p.active === 0 && now - p.touched > this.deps.timings.moveIdleTimeoutMs) await this.rollback(p, 'the source went silent')
      }
      await this.pruneRetained()
      await this.pruneRetainedTrees()
      // Partial layers bridge a cut transfer's retry, as long as verified ones do.
      for (const d of await this.deps.store.prunePartials(RETAINED_LAYER_MS).catch(() => [])) this.deps.log.info('pruned partial layer of a cut transfer', { digest: d })
    })().finally(() => { this.expiring = undefined })
    await this.expiring
  }
}
