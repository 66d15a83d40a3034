/**
 * Messages of a move: the operator's order and the events it streams back (/goto/move), and the
 * source-to-destination steps (/goto/transfer). Checks turn untrusted JSON into these types.
 */
import { HostPowerNotOrderedError, ProtocolError } from './errors.js'
import { count, obj, str } from './parse.js'
import { parseSignedOrder, type BindAllowance, type SignedOrder } from './orders.js'
import type { ContainerSpec, ImageInfo, MountSpec, RestartPolicyName } from './container.js'
import { parseEngineSettings, parseNetworkAttachments } from './fidelity.js'

export interface MoveOrder {
  container: string
  to: string
  dryRun: boolean
  allowBindMounts: boolean
  /** --allow-host-access: carry the container's host-level powers (fidelity.ts `host` fields), named in the signed order. */
  allowHostAccess?: boolean
  /**
   * --max-rate: a cap in bytes per second on what this move puts on the wire (after compression);
   * the source's sender keeps to the lower of it and the link's cap. Absent: the link's cap alone.
   */
  maxRate?: number
  /**
   * --live: the processes move with their memory (a CRIU checkpoint instead of a pause), named in the
   * signed order; a preflight refusal at either end fails the move. 'auto' (--live=auto): such a
   * refusal makes it an ordinary move instead, said in the plan's warnings and the `done` event's
   * `notLive`. (An agent older than 'auto' reads it as no --live: an ordinary move, not said.)
   */
  live?: boolean | 'auto'
  /** --project: `container` names a compose project, whose containers move together (agent/move/source.ts moveProject). */
  project?: boolean
}

/**
 * Whether a host can take part in a live move, as its agent finds it (agent/move/live.ts): `ok`, or
 * `missing` says why not, one phrase each (CRIU absent, too old or failing `criu check`, an engine
 * not in experimental mode or without checkpoints, CPU flags the source uses).
 */
export interface LiveReport {
  host: string
  ok: boolean
  /** `criu --version`'s version, when CRIU answered. */
  criu?: string
  /** GOARCH of the engine's host. */
  arch: string
  missing: string[]
}

/** What a live move took: the checkpoint (its dump), its images and their transfer, the restore from it. */
export interface LiveTimings {
  checkpointMs: number
  checkpointBytes: number
  checkpointFiles: number
  transferMs: number
  restoreMs: number
}

export type MoveStep = 'plan' | 'pre-copy' | 'freeze' | 'hand-over' | 'restore' | 'commit'

export interface MovePlan {
  moveId: string
  container: string
  from: string
  to: string
  image: string
  layersTotal: number
  /** Layers the destination already has (a chain prefix) or holds verified from an earlier try. */
  layersPresent: number
  layersToSend: number
  /** Bytes of the layers to send, as the engine counts them (the top layer is not known until freeze). */
  bytesToSend: number
  volumes: string[]
  /** Host-level powers the container keeps at the destination (with --allow-host-access), e.g. 'HostConfig.CapAdd'. */
  hostPowers?: string[]
  /** The link to the destination as the source's link table decides it (agent/transfer/links.ts). */
  link?: { class: 'free' | 'cheap' | 'expensive', costPerGiB: number, compress: 'none' | 'zstd', rateMbit?: number }
  /** The cap the sender keeps to (bytes/s on the wire): the lower of the link's and the move's (--max-rate), and which it is. */
  rateCap?: { bytesPerSecond: number, by: 'link' | 'move' }
  /**
   * Each layer of the image, base first: its bytes (null: not known before it is read), whether it
   * is sent, its estimated cost; for a layer sent, `from` (the member it comes from: the source, or
   * a member near the destination that holds it) and the class of the link it crosses.
   */
  layers?: Array<{ diffId: string, bytes: number | null, send: boolean, cost: number, from?: string, link?: 'free' | 'cheap' | 'expensive' }>
  /** Bytes of the layers to send on each class of link (a layer from a holder crosses the holder's link). */
  linkBytes?: { free: number, cheap: number, expensive: number }
  /** Each layer to send × the price per GiB of the link it crosses (before compression: an upper bound). */
  estimatedCost?: number
  /** What the move does not do as asked but goes on without, e.g. a tag at the destination that names another image. */
  warnings?: string[]
  /**
   * Each named volume's data and how it travels: `rounds` (synced by difference while the container
   * runs, only the last difference inside the freeze) or `spool` (a tar inside the freeze). `bytes`:
   * the data on disk (holes not counted), null when this agent cannot read the volume directly.
   */
  volumeData?: Array<{ name: string, copy: 'rounds' | 'spool', bytes: number | null }>
  /** (--live) What each end found (both ok: a preflight refusal never gets this far). */
  live?: { source: LiveReport, destination: LiveReport }
  /** The user-defined networks, as the destination will have them (absent: none, or an older destination). */
  networks?: NetworkPlan[]
}

/**
 * What the source asks the operator to sign before the destination hears of the move: the spec the
 * container will be created from (and its digest, which the CLI computes again itself), the move
 * ID and the two members' peer IDs. The CLI answers on the same stream with an OrderReply.
 */
export interface OrderRequest {
  moveId: string
  container: string
  from: string
  fromName: string
  to: string
  toName: string
  spec: ContainerSpec
  specDigest: string
}

/** The operator's answer to an `order` event: the signed move order (protocol/orders.ts). */
export interface OrderReply { order: SignedOrder }

export type MoveEvent =
  | { event: 'order', request: OrderRequest }
  | { event: 'plan', plan: MovePlan }
  | { event: 'step', moveId: string, step: MoveStep }
  | { event: 'progress', moveId: string, step: MoveStep, bytesSent: number, bytesTotal: number }
  /**
   * One round of the volumes' sync: `round` counts from 1; `bytes` of blocks that travelled and
   * `files` built anew at the destination (what changed since the previous round); `final`: the
   * round inside the freeze.
   */
  | { event: 'round', moveId: string, round: number, bytes: number, files: number, final: boolean }
  /**
   * `bytesOnWire`: the blob bytes that crossed the link (compressed where it compresses); absent from
   * an older agent. `bytesFromHolders`: layer bytes the destination took from members near it
   * (not in `bytesSent`); absent when none. A project move's `done` has no moveId (each member's is
   * in its own events) and names the project in `container`. `notLive` (--live=auto): why the move
   * was an ordinary one, not live (the preflight's refusal).
   */
  | { event: 'done', moveId: string | null, container: string, from: string, to: string, bytesSent: number, bytesOnWire?: number, bytesFromHolders?: number, layersSent: number, layersSkipped: number, downtimeMs: number, live?: LiveTimings, notLive?: string }
  /**
   * `rollback`: 'none-needed' (refused before anything changed), 'done' (the source container runs
   * again, the destination removed what it made), 'incomplete' (say what could not be undone).
   */
  | { event: 'failed', moveId: string | null, container: string, error: { name: string, message: string }, rollback: 'none-needed' | 'done' | 'incomplete', resumed?: Resumed }

/**
 * How the source container of a live move runs again after a rollback: 'checkpoint' (restored from
 * its own checkpoint: its processes go on with their memory), 'fresh' (that failed: started anew).
 */
export type Resumed = 'checkpoint' | 'fresh'

/**
 * What the destination needs to judge and prepare a move. `purpose: 'snapshot'`: a failover snapshot
 * (agent/failover) — the destination only stores it (StoreRequest), so it checks architecture and
 * disk but not names or ports, which matter only to a running container.
 */
export interface PrepareRequest {
  op: 'prepare'
  moveId: string
  purpose: 'move' | 'snapshot'
  spec: ContainerSpec
  image: Pick<ImageInfo, 'id' | 'diffIds' | 'os' | 'architecture' | 'size'>
  volumes: Array<{ name: string, driver: string }>
  /** (purpose 'move') The operator's signed order naming this move, its destination and its spec's digest. */
  order?: SignedOrder
  /** (--live) The source's CPU: the destination refuses another architecture, or CPU flags it lacks. */
  live?: { arch: string, cpuFlags: string[] }
}

export interface PrepareReply {
  /** How many layers of the chain the engine has (a prefix). */
  present: number
  /** Diff IDs after that prefix already verified in the staging store (a retry does not resend them). */
  staged: string[]
  /**
   * The spec's imageRef here: 'free' (it will be tagged), 'same' (it names the image already),
   * 'taken' (it names another image, which keeps it). Absent: no imageRef, or an older agent.
   */
  imageRef?: 'free' | 'same' | 'taken'
  /**
   * (move) The named volumes this destination takes in rounds (`volume` steps) instead of as an
   * archive inside the freeze. Absent from agents that do not offer the step: everything spools.
   */
  volumeSync?: string[]
  /** Blob encodings this destination decodes (agent/transfer/encoding.ts); absent: none (an older agent). */
  decodes?: BlobEncoding[]
  /** This destination continues partial layers (LayerHeader `resume`); absent: an older agent, send layers whole. */
  resumes?: true
  /** (live prepare) What this destination found: it takes the live move (a refusal is an error). */
  live?: LiveReport
  /** True: this destination takes `fetch` steps (a layer from a holder near it); absent from older agents. */
  fetchesFromHolders?: boolean
  /** (move) What becomes of each of the spec's user-defined networks here (agent/move/networks.ts). */
  networks?: NetworkPlan[]
}

/**
 * (live move, after freeze) The checkpoint's files, each followed as a blob in this order, verified
 * against its size and sha256 before the destination keeps it; paths are relative, of checked
 * segments (CHECKPOINT_SEGMENT), at most CHECKPOINT_MAX_DEPTH deep.
 */
export interface CheckpointRequest { op: 'checkpoint', moveId: string, name: string, files: CheckpointFile[], encoding?: BlobEncoding }
export interface CheckpointFile { path: string, size: number, digest: string }

/** A checkpoint's name and each segment of its files' paths: no '/', no '.' or '..', no leading dot. */
export const CHECKPOINT_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/
export const CHECKPOINT_MAX_DEPTH = 4
/** CRIU writes a few images per process and per mapping kind: thousands only for huge process trees. */
export const CHECKPOINT_MAX_FILES = 4096

/**
 * A user-defined network of a move at its destination: `exists` (a network of that name with the
 * same settings: the container joins it) or `create`; `subnet` 'kept' (the source's), 'engine' (the
 * source's subnet is taken here: the engine chooses, and a static address on it is not kept) or
 * 'none' (the network has no IPv4 pool to keep).
 */
export interface NetworkPlan { name: string, at: 'exists' | 'create', subnet: 'kept' | 'engine' | 'none', aliases: string[], ipv4Address: string }

/**
 * One round of a named volume's tree sync (agent/sync): after its JSON request the destination
 * answers `{ ready: true }` (or an error envelope), then the sync's own frames travel both ways as
 * raw frames of at most BLOB_FRAME_BYTES, each direction ended by an empty frame, then the envelope
 * with the sync's result. `final`: the round inside the freeze, after which only `restore` follows.
 */
export interface VolumeRoundRequest { op: 'volume', moveId: string, name: string, round: number, final: boolean }

/** At most this many rounds of one volume in one transfer (the source's bound is the timing profile's volumeRoundsMax + 1). */
export const MAX_VOLUME_ROUNDS = 32

/**
 * How the blobs after a request travel (agent/transfer/encoding.ts): absent, as they are; 'zstd',
 * compressed, each blob ended by an empty frame. Only sent to a destination whose prepare named it.
 */
export type BlobEncoding = 'zstd'

/**
 * `diffId` null: the sender streams a layer straight from `docker save`, which names layers by path,
 * before it could hash it; the destination then accepts it only if its sha256 is a layer of the
 * prepared move (and says which it was).
 */
export interface LayerHeader {
  op: 'layer'
  moveId: string
  diffId: string | null
  size: number
  encoding?: BlobEncoding
  /**
   * (named layers only) The sender continues a partial layer the destination kept from an earlier
   * transfer: before any byte the destination answers with a ResumePoint, and the blob that follows
   * is the layer from that offset on (`size - offset` bytes, compressed from there where the link
   * compresses). Absent: the whole layer follows the request at once, as before.
   */
  resume?: true
}

/** The destination's first answer to a `resume` layer: the layer's bytes it holds verified; the sender starts there. */
export interface ResumePoint { offset: number }

export function parseResumePoint (v: unknown, size: number): ResumePoint {
  const o = obj(v, 'resume point')
  const offset = count(o.offset, 'offset')
  if (offset > size) throw new ProtocolError(`resume offset ${offset} is past the layer's ${size} bytes`)
  return { offset }
}

export interface LayerReply { diffId: string, bytes: number, kept: boolean }

export interface RestoreRequest {
  op: 'restore'
  moveId: string
  /** The committed image's config JSON, base64. */
  config: string
  diffIds: string[]
  spec: ContainerSpec
  /** Each volume's archive follows as a blob, in this order. */
  volumes: Array<{ name: string, destination: string, size: number }>
  /** Volumes whose data arrived by `volume` rounds (their final round done): nothing follows for them. */
  synced?: Array<{ name: string, destination: string }>
  /** (live move) Start from the checkpoint of this name, received before by `checkpoint`. */
  checkpoint?: string
  encoding?: BlobEncoding
}

export interface RestoreReply { containerId: string }

/**
 * After pre-copy: load the image the layers belong to (its config from the source's engine), so the
 * restore inside the downtime only loads the container's changes.
 */
export interface PreloadRequest { op: 'preload', moveId: string, config: string, diffIds: string[] }

export interface AbortRequest { op: 'abort' | 'commit', moveId: string }

/**
 * Instead of `restore`, for a snapshot: keep (do not start) the frozen state of the container, in
 * ownership `epoch`, the owner's `seq`-th snapshot of it. Blobs follow: the changes layer `top`, then
 * each volume's archive (verified against `digest`).
 */
export interface StoreRequest {
  op: 'store'
  moveId: string
  /** The owner's peer ID. */
  owner: string
  epoch: number
  seq: number
  /** ISO time of the freeze. */
  takenAt: string
  config: string
  diffIds: string[]
  spec: ContainerSpec
  top: { diffId: string, size: number }
  volumes: Array<{ name: string, destination: string, digest: string, size: number }>
  /**
   * Named volumes synced by difference as trees during this transfer (`volume` rounds, the last
   * one final, inside the freeze) instead of sent as archives: the holder's version keeps their
   * trees. Absent: none (every volume is an archive, as before incremental snapshots).
   */
  synced?: Array<{ name: string, destination: string }>
  encoding?: BlobEncoding
}

/**
 * Source → destination: take layer `diffId` (`size` bytes) of the prepared move from the member
 * `holder` (its peer ID), which the source's `offer` on /goto/holder granted it (holders.ts).
 * Answered like a `layer` (LayerReply) once the layer is verified here, or with the error that
 * stopped it; the source then sends that layer itself. Only to a destination whose prepare reply
 * said `fetchesFromHolders`.
 */
export interface FetchLayerRequest {
  op: 'fetch'
  moveId: string
  diffId: string
  size: number
  holder: string
  /** Other members that hold it too (peer IDs): a large layer is then fetched in parts, one from each at once. */
  alsoFrom?: string[]
}

export type TransferRequest = PrepareRequest | LayerHeader | PreloadRequest | RestoreRequest | AbortRequest | StoreRequest | VolumeRoundRequest | CheckpointRequest | FetchLayerRequest

// --- /goto/holder ------------------------------------------------------------------------

/**
 * Source → a member in the destination's location: which of `diffIds` do you hold? The request
 * carries the operator's signed order of the move (checked as a destination checks it, but not
 * spent), its spec and the image's config (base64; its sha256 is spec.image, and its rootfs names
 * the layers): the holder then grants the order's destination those of the layers it holds, for
 * HOLDER_GRANT_MS. Nobody else may fetch them.
 */
export interface HolderOfferRequest { op: 'offer', order: SignedOrder, spec: ContainerSpec, config: string, diffIds: string[] }
export interface HolderOfferReply { held: Array<{ diffId: string, size: number }> }

/**
 * Destination → holder: layer `diffId` of move `moveId` — or, with `offset` and `length`, that
 * part of it. Answered by an envelope `{ size }` (the bytes that follow; or the error:
 * HolderRefusedError), then `size` bytes as raw frames; the destination verifies the whole layer
 * against the diff ID while it streams.
 */
export interface HolderFetchRequest { op: 'fetch', moveId: string, diffId: string, offset?: number, length?: number }
export interface HolderFetchReply { size: number }

export type HolderRequest = HolderOfferRequest | HolderFetchRequest

// --- checks -----------------------------------------------------------------------------

const DIGEST = /^sha256:[0-9a-f]{64}$/
function digest (v: unknown, what: string): string {
  const s = str(v, what, 80)
  if (!DIGEST.test(s)) throw new ProtocolError(`${what} must be sha256:<64 hex>`)
  return s
}
function digests (v: unknown, what: string): string[] {
  if (!Array.isArray(v) || v.length > 256) throw new ProtocolError(`${what} must be a list of at most 256 digests`)
  return v.map((d, i) => digest(d, `${what}[${i}]`))
}
const MOVE_ID = /^[0-9a-f]{16}$/
function moveId (v: unknown): string {
  const s = str(v, 'moveId', 64)
  if (!MOVE_ID.test(s)) throw new ProtocolError('moveId must be 16 hex digits')
  return s
}

/** At most this many holders of one layer (a few suffice: each is a stream within one location). */
export const MAX_HOLDERS_PER_LAYER = 8
function peerIds (v: unknown, what: string): string[] {
  if (!Array.isArray(v) || v.length > MAX_HOLDERS_PER_LAYER - 1) throw new ProtocolError(`${what} must be a list of at most ${MAX_HOLDERS_PER_LAYER - 1} peer IDs`)
  return v.map((x, i) => str(x, `${what}[${i}]`, 128))
}

export function parseOrderReply (v: unknown): OrderReply {
  return { order: parseSignedOrder(obj(v, 'order reply').order) }
}

export function parseOrderRequest (v: unknown): OrderRequest {
  const o = obj(v, 'order request')
  return {
    moveId: moveId(o.moveId),
    container: str(o.container, 'container', 256),
    from: str(o.from, 'from', 128),
    fromName: str(o.fromName, 'fromName', 256),
    to: str(o.to, 'to', 128),
    toName: str(o.toName, 'toName', 256),
    spec: parseSpec(o.spec),
    specDigest: digest(o.specDigest, 'specDigest')
  }
}

/** The bind mounts of a spec, as an order allows them. */
export function bindsOf (spec: ContainerSpec): BindAllowance[] {
  return spec.mounts.flatMap(m => m.type === 'bind' ? [{ source: m.source, destination: m.destination, readOnly: m.readOnly }] : [])
}

/**
 * Engine fields that give a container power over its host. ContainerSpec has none of them; a spec
 * that carries one anyway is refused, not silently trimmed, so that no version of the agent that
 * learns such a field can be fed it without an order that allows it.
 */
const HOST_POWER_FIELDS = [
  'binds', 'privileged', 'devices', 'deviceRequests', 'deviceCgroupRules', 'capAdd', 'securityOpt', 'networkMode', 'pidMode', 'ipcMode',
  'utsMode', 'usernsMode', 'cgroupnsMode', 'cgroupParent', 'sysctls', 'volumesFrom', 'runtime', 'hostConfig'
]

export function parseMoveOrder (v: unknown): MoveOrder {
  const o = obj(v, 'move order')
  return {
    container: str(o.container, 'container', 256),
    to: str(o.to, 'to', 256),
    dryRun: o.dryRun === true,
    allowBindMounts: o.allowBindMounts === true,
    ...o.allowHostAccess === true ? { allowHostAccess: true } : {},
    ...o.maxRate === undefined ? {} : { maxRate: positive(count(o.maxRate, 'maxRate'), 'maxRate') },
    ...o.live === true || o.live === 'auto' ? { live: o.live } : {},
    ...o.project === true ? { project: true } : {}
  }
}

function positive (n: number, what: string): number {
  if (n === 0) throw new ProtocolError(`${what} must be above 0`)
  return n
}

/** Like a tag `docker tag` takes: [registry[:port]/]name[:tag], lower case path, no digest. */
const IMAGE_REF = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/

/**
 * The spec is re-checked field by field: the destination creates a container from it. The settings
 * carried as is (`engine`) are checked against the fidelity table (FieldRefusedError); whether its
 * host powers are allowed is for the order to say (orders.ts checkHostPowers).
 */
export function parseSpec (v: unknown): ContainerSpec {
  const o = obj(v, 'spec')
  for (const k of Object.keys(o)) {
    if (HOST_POWER_FIELDS.includes(k.replace(/^[A-Z]/, c => c.toLowerCase()))) throw new HostPowerNotOrderedError(`the spec asks for host-level power '${k}', which no order can allow`)
  }
  const strings = (x: unknown, what: string): string[] => {
    if (!Array.isArray(x) || x.length > 4096) throw new ProtocolError(`${what} must be a list`)
    return x.map((s, i) => str(s, `${what}[${i}]`, 65536))
  }
  const optStrings = (x: unknown, what: string): string[] | null => x === null || x === undefined ? null : strings(x, what)
  const record = (x: unknown, what: string): Record<string, string> => {
    const r = obj(x, what)
    return Object.fromEntries(Object.entries(r).map(([k, val]) => [str(k, `${what} key`, 1024), str(val, `${what}.${k}`, 65536)]))
  }
  const bindings = obj(o.portBindings, 'portBindings')
  const portBindings: ContainerSpec['portBindings'] = {}
  for (const [port, list] of Object.entries(bindings)) {
    if (!Array.isArray(list)) throw new ProtocolError(`portBindings.${port} must be a list`)
    portBindings[str(port, 'port', 32)] = list.map((b, i) => {
      const bo = obj(b, `portBindings.${port}[${i}]`)
      return { hostIp: str(bo.hostIp ?? '', 'hostIp', 64), hostPort: str(bo.hostPort ?? '', 'hostPort', 16) }
    })
  }
  const rp = obj(o.restartPolicy, 'restartPolicy')
  const rpName = str(rp.name ?? '', 'restartPolicy.name', 32)
  if (!['', 'no', 'always', 'unless-stopped', 'on-failure'].includes(rpName)) throw new ProtocolError(`restartPolicy.name '${rpName}' is unknown`)
  if (!Array.isArray(o.mounts) || o.mounts.length > 256) throw new ProtocolError('mounts must be a list')
  const mounts = o.mounts.map((m, i): MountSpec => {
    const mo = obj(m, `mounts[${i}]`)
    const destination = str(mo.destination, `mounts[${i}].destination`, 4096)
    if (mo.type === 'volume') {
      return {
        type: 'volume', name: str(mo.name, `mounts[${i}].name`, 256), destination, readOnly: mo.readOnly === true, driver: str(mo.driver ?? 'local', `mounts[${i}].driver`, 256),
        ...mo.labels === undefined ? {} : { labels: record(mo.labels, `mounts[${i}].labels`) }
      }
    }
    if (mo.type === 'bind') return { type: 'bind', source: str(mo.source, `mounts[${i}].source`, 4096), destination, readOnly: mo.readOnly === true }
    if (mo.type === 'tmpfs') return { type: 'tmpfs', destination }
    throw new ProtocolError(`mounts[${i}].type must be volume, bind or tmpfs`)
  })
  return {
    name: str(o.name, 'spec.name', 256),
    image: digest(o.image, 'spec.image'),
    env: strings(o.env, 'env'),
    cmd: optStrings(o.cmd, 'cmd'),
    entrypoint: optStrings(o.entrypoint, 'entrypoint'),
    workingDir: str(o.workingDir ?? '', 'workingDir'),
    user: str(o.user ?? '', 'user', 256),
    labels: record(o.labels ?? {}, 'labels'),
    hostname: str(o.hostname ?? '', 'hostname', 256),
    exposedPorts: strings(o.exposedPorts ?? [], 'exposedPorts'),
    portBindings,
    restartPolicy: { name: rpName as RestartPolicyName, maximumRetryCount: count(rp.maximumRetryCount ?? 0, 'maximumRetryCount') },
    mounts,
    ...o.imageRef === undefined ? {} : { imageRef: imageRef(o.imageRef) },
    ...o.engine === undefined ? {} : { engine: parseEngineSettings(o.engine) },
    ...networksOf(o)
  }
}

/** `networks` and `primaryNetwork` of a spec: the mode names one of the networks. */
function networksOf (o: Record<string, unknown>): Pick<ContainerSpec, 'networks' | 'primaryNetwork'> {
  if (o.networks === undefined) {
    if (o.primaryNetwork !== undefined) throw new ProtocolError('spec.primaryNetwork names a network the spec does not carry')
    return {}
  }
  const networks = parseNetworkAttachments(o.networks)
  if (o.primaryNetwork === undefined) return { networks }
  const primaryNetwork = str(o.primaryNetwork, 'spec.primaryNetwork', 128)
  if (!networks.some(a => a.network.name === primaryNetwork)) throw new ProtocolError(`spec.primaryNetwork '${primaryNetwork}' is not one of spec.networks`)
  return { networks, primaryNetwork }
}

function imageRef (v: unknown): string {
  const s = str(v, 'spec.imageRef', 512)
  if (!IMAGE_REF.test(s)) throw new ProtocolError(`spec.imageRef '${s}' is not an image reference (repo:tag)`)
  return s
}

function syncedVolumes (v: unknown): Array<{ name: string, destination: string }> {
  if (!Array.isArray(v) || v.length > 256) throw new ProtocolError('synced must be a list')
  return v.map((x, i) => { const vo = obj(x, `synced[${i}]`); return { name: str(vo.name, 'volume name', 256), destination: str(vo.destination, 'volume destination') } })
}

function checkpointName (v: unknown): string {
  const s = str(v, 'checkpoint name', 128)
  if (!CHECKPOINT_SEGMENT.test(s)) throw new ProtocolError('checkpoint name must be letters, digits, ., _ or -, not starting with a dot')
  return s
}

/** A relative path of checked segments, at most CHECKPOINT_MAX_DEPTH deep: it cannot leave the checkpoint's directory. */
export function checkpointPath (v: unknown, what: string): string {
  const s = str(v, what, 1024)
  const parts = s.split('/')
  if (parts.length > CHECKPOINT_MAX_DEPTH || !parts.every(p => CHECKPOINT_SEGMENT.test(p))) {
    throw new ProtocolError(`${what} '${s}' must be a relative path of at most ${CHECKPOINT_MAX_DEPTH} plain segments`)
  }
  return s
}

function liveCpu (v: unknown): { arch: string, cpuFlags: string[] } {
  const o = obj(v, 'live')
  if (!Array.isArray(o.cpuFlags) || o.cpuFlags.length > 1024) throw new ProtocolError('live.cpuFlags must be a list')
  return { arch: str(o.arch, 'live.arch', 64), cpuFlags: o.cpuFlags.map((f, i) => str(f, `live.cpuFlags[${i}]`, 64)) }
}

function encodingOf (o: Record<string, unknown>): { encoding?: BlobEncoding } {
  if (o.encoding === undefined || o.encoding === null) return {}
  if (o.encoding !== 'zstd') throw new ProtocolError(`unknown blob encoding '${String(o.encoding)}'`)
  return { encoding: 'zstd' }
}

function syncedOf (o: Record<string, unknown>): { synced?: Array<{ name: string, destination: string }> } {
  if (o.synced === undefined || o.synced === null) return {}
  if (!Array.isArray(o.synced) || o.synced.length > 256) throw new ProtocolError('synced must be a list of at most 256 volumes')
  return { synced: o.synced.map((x, i) => { const vo = obj(x, `synced[${i}]`); return { name: str(vo.name, 'volume name', 256), destination: str(vo.destination, 'volume destination') } }) }
}

export function parseTransferRequest (v: unknown): TransferRequest {
  const o = obj(v, 'transfer request')
  switch (o.op) {
    case 'prepare': {
      const img = obj(o.image, 'image')
      if (!Array.isArray(o.volumes) || o.volumes.length > 256) throw new ProtocolError('volumes must be a list')
      return {
        op: 'prepare',
        moveId: moveId(o.moveId),
        purpose: o.purpose === 'snapshot' ? 'snapshot' : 'move',
        spec: parseSpec(o.spec),
        image: { id: digest(img.id, 'image.id'), diffIds: digests(img.diffIds, 'image.diffIds'), os: str(img.os, 'image.os', 64), architecture: str(img.architecture, 'image.architecture', 64), size: count(img.size, 'image.size') },
        volumes: o.volumes.map((x, i) => { const vo = obj(x, `volumes[${i}]`); return { name: str(vo.name, 'volume name', 256), driver: str(vo.driver ?? 'local', 'volume driver', 256) } }),
        ...o.order === undefined || o.order === null ? {} : { order: parseSignedOrder(o.order) },
        ...o.live === undefined || o.live === null ? {} : { live: liveCpu(o.live) }
      }
    }
    case 'layer':
      return {
        op: 'layer', moveId: moveId(o.moveId), diffId: o.diffId === null ? null : digest(o.diffId, 'diffId'), size: count(o.size, 'size'), ...encodingOf(o),
        ...o.resume === true && o.diffId !== null ? { resume: true } : {}
      }
    case 'restore': {
      if (!Array.isArray(o.volumes) || o.volumes.length > 256) throw new ProtocolError('volumes must be a list')
      return {
        op: 'restore',
        moveId: moveId(o.moveId),
        config: str(o.config, 'config', 4 * 1024 * 1024),
        diffIds: digests(o.diffIds, 'diffIds'),
        spec: parseSpec(o.spec),
        volumes: o.volumes.map((x, i) => { const vo = obj(x, `volumes[${i}]`); return { name: str(vo.name, 'volume name', 256), destination: str(vo.destination, 'volume destination'), size: count(vo.size, 'volume size') } }),
        ...o.synced === undefined || o.synced === null ? {} : { synced: syncedVolumes(o.synced) },
        ...o.checkpoint === undefined || o.checkpoint === null ? {} : { checkpoint: checkpointName(o.checkpoint) },
        ...encodingOf(o)
      }
    }
    case 'checkpoint': {
      if (!Array.isArray(o.files) || o.files.length > CHECKPOINT_MAX_FILES) throw new ProtocolError(`files must be a list of at most ${CHECKPOINT_MAX_FILES}`)
      const seen = new Set<string>()
      const files = o.files.map((x, i): CheckpointFile => {
        const fo = obj(x, `files[${i}]`)
        const path = checkpointPath(fo.path, `files[${i}].path`)
        if (seen.has(path)) throw new ProtocolError(`files[${i}].path ${path} is listed twice`)
        seen.add(path)
        return { path, size: count(fo.size, `files[${i}].size`), digest: digest(fo.digest, `files[${i}].digest`) }
      })
      return { op: 'checkpoint', moveId: moveId(o.moveId), name: checkpointName(o.name), files, ...encodingOf(o) }
    }
    case 'volume': {
      const round = count(o.round, 'round')
      if (round < 1 || round > MAX_VOLUME_ROUNDS) throw new ProtocolError(`round must be 1..${MAX_VOLUME_ROUNDS}`)
      return { op: 'volume', moveId: moveId(o.moveId), name: str(o.name, 'volume name', 256), round, final: o.final === true }
    }
    case 'store': {
      if (!Array.isArray(o.volumes) || o.volumes.length > 256) throw new ProtocolError('volumes must be a list')
      const top = obj(o.top, 'top')
      return {
        op: 'store',
        moveId: moveId(o.moveId),
        owner: str(o.owner, 'owner', 256),
        epoch: count(o.epoch, 'epoch'),
        seq: count(o.seq, 'seq'),
        takenAt: str(o.takenAt, 'takenAt', 64),
        config: str(o.config, 'config', 4 * 1024 * 1024),
        diffIds: digests(o.diffIds, 'diffIds'),
        spec: parseSpec(o.spec),
        top: { diffId: digest(top.diffId, 'top.diffId'), size: count(top.size, 'top.size') },
        volumes: o.volumes.map((x, i) => {
          const vo = obj(x, `volumes[${i}]`)
          return { name: str(vo.name, 'volume name', 256), destination: str(vo.destination, 'volume destination'), digest: digest(vo.digest, 'volume digest'), size: count(vo.size, 'volume size') }
        }),
        ...syncedOf(o),
        ...encodingOf(o)
      }
    }
    case 'fetch':
      return {
        op: 'fetch', moveId: moveId(o.moveId), diffId: digest(o.diffId, 'diffId'), size: count(o.size, 'size'), holder: str(o.holder, 'holder', 128),
        ...o.alsoFrom === undefined || o.alsoFrom === null ? {} : { alsoFrom: peerIds(o.alsoFrom, 'alsoFrom') }
      }
    case 'preload':
      return { op: 'preload', moveId: moveId(o.moveId), config: str(o.config, 'config', 4 * 1024 * 1024), diffIds: digests(o.diffIds, 'diffIds') }
    case 'abort':
    case 'commit':
      return { op: o.op, moveId: moveId(o.moveId) }
    default:
      throw new ProtocolError(`unknown transfer op '${String(o.op)}'`)
  }
}

export function parseHolderRequest (v: unknown): HolderRequest {
  const o = obj(v, 'holder request')
  switch (o.op) {
    case 'offer':
      return { op: 'offer', order: parseSignedOrder(o.order), spec: parseSpec(o.spec), config: str(o.config, 'config', 4 * 1024 * 1024), diffIds: digests(o.diffIds, 'diffIds') }
    case 'fetch': {
      if ((o.offset === undefined) !== (o.length === undefined)) throw new ProtocolError('a part names both offset and length')
      return {
        op: 'fetch', moveId: moveId(o.moveId), diffId: digest(o.diffId, 'diffId'),
        ...o.offset === undefined ? {} : { offset: count(o.offset, 'offset'), length: count(o.length, 'length') }
      }
    }
    default:
      throw new ProtocolError(`unknown holder op '${String(o.op)}'`)
  }
}

/** A holder's reply to an offer, as the source reads it (at most one entry per asked layer). */
export function parseHolderOfferReply (v: unknown, asked: readonly string[]): HolderOfferReply {
  const o = obj(v, 'offer reply')
  if (!Array.isArray(o.held) || o.held.length > asked.length) throw new ProtocolError('held must be a list of at most the layers asked for')
  return {
    held: o.held.map((h, i) => {
      const ho = obj(h, `held[${i}]`)
      const diffId = digest(ho.diffId, `held[${i}].diffId`)
      if (!asked.includes(diffId)) throw new ProtocolError(`held[${i}] names a layer not asked for`)
      return { diffId, size: count(ho.size, `held[${i}].size`) }
    })
  }
}
