/**
 * Typed errors shared by the agent, the CLI and the CA. Callers branch on the class or on `name`
 * (which survives the wire: agents send `{ error: { name, message } }`), never on message text.
 */
export class GotoError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

// --- certificates (certs/) ---------------------------------------------------------------
/** The certificate does not chain to the mesh CA (foreign CA, bad signature, not issued by it). */
export class CertificateUntrustedError extends GotoError {}
/** The certificate's validity window ended. */
export class CertificateExpiredError extends GotoError {}
/** The certificate's validity window has not started. */
export class CertificateNotYetValidError extends GotoError {}
/** A CA certificate was presented where a leaf is required. */
export class CertificateNotLeafError extends GotoError {}
/** The certificate names another peer ID than the one Noise authenticated. */
export class CertificatePeerMismatchError extends GotoError {}
/** The certificate is on the mesh's revocation list. */
export class CertificateRevokedError extends GotoError {}
/** The certificate cannot be parsed or lacks the Go-To fields (name, role, peer ID). */
export class CertificateMalformedError extends GotoError {}
/** A revocation list that is not signed by the mesh CA or cannot be parsed. */
export class RevocationListInvalidError extends GotoError {}
/** The certificate's role may not make this call (e.g. an agent ordering an operator action). */
export class RoleNotAllowedError extends GotoError {}
/** A CA directory or bundle directory is missing files or holds unusable ones. */
export class BundleError extends GotoError {}

// --- mesh and protocols -----------------------------------------------------------------
/** The connection did not complete the auth protocol, so no other protocol serves it. */
export class PeerNotAuthenticatedError extends GotoError {}
/** The remote refused our certificate. */
export class PeerRejectedUsError extends GotoError {}
/** The agent could not be reached or the connection dropped. */
export class AgentUnreachableError extends GotoError {}
/** No peer of that name is in the peer table. */
export class UnknownPeerError extends GotoError {}
/** A message was malformed, too large or of the wrong type. */
export class ProtocolError extends GotoError {}
/** Bad configuration: names the option at fault. */
export class ConfigError extends GotoError {
  constructor (readonly option: string, message: string) {
    super(`${option}: ${message}`)
  }
}

/**
 * A mistake on a command line that names no single option (a missing or extra word, two options
 * that exclude each other): the CLIs report it with exit status 2 before doing anything.
 */
export class UsageError extends GotoError {}

// --- docker ---------------------------------------------------------------------------
/**
 * The Docker Engine could not be reached: no socket, connection refused, or the connection dropped
 * before the engine answered in full. (An engine that answers with an error status gives one of
 * the DockerEngineError classes below instead.)
 */
export class DockerUnavailableError extends GotoError {}
/** The engine answered with an error status; `status` is the HTTP status when known. */
export class DockerEngineError extends GotoError {
  readonly status: number | undefined
  constructor (message: string, options?: { cause?: unknown, status?: number }) {
    super(message, options)
    this.status = options?.status
  }
}
/** No container of that name or ID on the engine (HTTP 404). */
export class ContainerNotFoundError extends DockerEngineError {}
/** No image of that reference or ID on the engine (HTTP 404). */
export class ImageNotFoundError extends DockerEngineError {}
/** No volume of that name on the engine (HTTP 404). */
export class VolumeNotFoundError extends DockerEngineError {}
/** The container exists but holds no file at the path asked for (archive endpoints, HTTP 404). */
export class ContainerPathNotFoundError extends DockerEngineError {}
/** No network of that name or ID on the engine (HTTP 404). */
export class NetworkNotFoundError extends DockerEngineError {}
/** The request conflicts with the engine's state (HTTP 409): name in use, container paused or running, image in use. */
export class DockerConflictError extends DockerEngineError {}
/** `docker load` failed: an error status, or an `error` inside the streamed answer of an HTTP 200. */
export class DockerLoadError extends DockerEngineError {}
/**
 * The engine and the agent share no Engine API version (agent/docker/api-version.ts): `engine` and
 * `agent` are the two ranges (`1.44-1.52`), and the message names which side is too old.
 */
export class DockerApiVersionError extends GotoError {
  readonly engine: string | undefined
  readonly agent: string | undefined
  constructor (message: string, options?: { cause?: unknown, engine?: string, agent?: string }) {
    super(message, options)
    this.engine = options?.engine
    this.agent = options?.agent
  }
}
/** A `docker save` stream that is not a readable image archive (classic or OCI layout): bad tar, no manifest, bad blob. */
export class SavedImageFormatError extends GotoError {}
/** An engine's archive of a container path (`GET /containers/{id}/archive`) that is not a readable tar. */
export class ArchiveFormatError extends GotoError {}
/** A layer read from the engine's storage (agent/docker/layer-files.ts) does not match the engine's record of it. */
export class LayerFilesError extends GotoError {}

// --- transfer (agent/transfer/) ----------------------------------------------------------
/** A layer transfer or image load failed; the classes below are its specific cases. */
export class TransferError extends GotoError {}
/** A received layer's sha256 is not the diff ID it was announced as; nothing of it was kept. */
export class LayerDigestMismatchError extends TransferError {}
/** A received layer went past the size its sender announced; refused before the extra bytes were written. */
export class LayerTooLargeError extends TransferError {}
/** A received layer ended before the size its sender announced (e.g. the stream was cut). */
export class LayerTruncatedError extends TransferError {}
/** A layer that should be in the staging store is not there. */
export class LayerMissingError extends TransferError {}
/** A compressed blob (agent/transfer/zstd.ts) is not a valid zstd stream: corrupt, cut, or the decoder failed. */
export class CompressedStreamError extends TransferError {}
/** The engine refused to load an image (e.g. a layer assumed present on it was not). */
export class ImageLoadError extends TransferError {}
/** The config does not match the image ID or layers it came with, or the engine holds another image than expected after a load. */
export class ImageIdMismatchError extends TransferError {}

// --- moves (agent/move) ---------------------------------------------------------------
/** The container is not on this host (or on any member, for locate). */
export class UnknownContainerError extends GotoError {}
/** The destination is not a live member. */
export class DestinationUnavailableError extends GotoError {}
/** The container is already moving. */
export class MoveInProgressError extends GotoError {}
/** The container bind-mounts a host path, which cannot follow it (unless the operator allows it). */
export class BindMountRefusedError extends GotoError {}
/** The destination's engine runs another CPU architecture or OS. */
export class ArchitectureMismatchError extends GotoError {}
/** Not enough free disk at the destination. */
export class InsufficientDiskError extends GotoError {}
/** The destination holds as many pending transfers as it takes (from that peer, or in all): try again later. */
export class TooManyTransfersError extends GotoError {}
/** A container spec larger than a destination accepts (MAX_SPEC_BYTES). */
export class SpecTooLargeError extends GotoError {}
/** A container or volume of that name already exists at the destination. */
export class NameConflictError extends GotoError {}
/** A host port the container binds is already bound at the destination. */
export class PortConflictError extends GotoError {}
/**
 * A user-defined network the container is on exists at the destination with other settings (driver,
 * options, internal/IPv6 flags, subnet): the container would not find its peers as at the source.
 */
export class NetworkConflictError extends GotoError {}
/** No container of that compose project (`com.docker.compose.project`) on the engine asked. */
export class UnknownProjectError extends GotoError {}
/** A compose project whose services depend on each other in a circle: no start order exists. */
export class ProjectCycleError extends GotoError {}
/** A compose project whose containers run on more than one member: a project move takes it from one host. */
export class ProjectSpreadError extends GotoError {}
/** A transfer step arrived for a move the destination did not agree to. */
export class UnknownMoveError extends GotoError {}
/** The container did not reach `running` at the destination. */
export class RestoreFailedError extends GotoError {}
/** Only a running container moves (a stopped one has nothing to keep running: copy its image instead). */
export class ContainerNotRunningError extends GotoError {}
/** A layer the move needed was not in the engine's save stream. */
export class TransferIncompleteError extends GotoError {}
/**
 * A holder (a member near the destination that has a layer: agent/transfer/holders.ts) will not
 * serve it: no grant from the source's signed move names the asking member and that layer, the
 * grant expired, or it no longer holds the layer. The destination then takes it from the source.
 */
export class HolderRefusedError extends GotoError {}
/** A transfer session's steps were called out of order (a bug of the caller, never a network input). */
export class TransferStateError extends GotoError {}

// --- operator orders (protocol/orders.ts) -----------------------------------------------------
/** A change on this host that only an operator may order came without a signed order. */
export class OrderMissingError extends GotoError {}
/** The order's signature does not verify with the key its certificate names, or it is not of the kind asked for. */
export class OrderSignatureError extends GotoError {}
/** The order is signed with a certificate that is not an operator's (an agent's key, say). */
export class OrderSignerNotOperatorError extends GotoError {}
/** The order's expiry passed, or its validity is not a short window around now. */
export class OrderExpiredError extends GotoError {}
/** An order with this ID was already carried out here. */
export class OrderReplayedError extends GotoError {}
/** The agent could not write down that it accepted an order, so it refuses to carry it out (a restart could not refuse its replay). */
export class OrderNotRecordedError extends GotoError {}
/** The order names another change: another destination, source, move, container or spec. */
export class OrderMismatchError extends GotoError {}
/** The spec asks for a host-level power (a bind mount, privileges, devices, host namespaces...) the order does not allow. */
export class HostPowerNotOrderedError extends GotoError {}
/** A later step of a transfer carries another spec than the one accepted at prepare. */
export class SpecMismatchError extends GotoError {}
/**
 * A setting of the container that cannot move (protocol/fidelity.ts: refused with its name, e.g.
 * `HostConfig.NetworkMode` container:x, `NetworkSettings.Networks.appnet`), or one the table does not
 * know yet: the message names every such field. Nothing is dropped silently instead.
 */
export class FieldRefusedError extends GotoError {}
/** The container has host-level powers (added capabilities, privileged, devices, host namespaces...) and the operator did not pass --allow-host-access. */
export class HostAccessRefusedError extends GotoError {}

// --- installing agents on hosts (control/install.ts) ---------------------------------------
/** No SSH connection to the host: unreachable, refused, timed out, or not an SSH server. */
export class SshConnectError extends GotoError {}
/** The SSH server refused our key for that user (wrong key, wrong user, or key not authorized). */
export class SshAuthError extends GotoError {}
/** The host's SSH key is not in known_hosts and no --host-key or --accept-new-host-key was given. */
export class HostKeyUnknownError extends GotoError {}
/** The host's SSH key differs from the one known_hosts (or --host-key) names: maybe another machine. */
export class HostKeyMismatchError extends GotoError {}
/** The SSH user is not root and cannot use sudo without a password. */
export class RemotePrivilegeError extends GotoError {}
/** The host lacks something the agent needs (Node.js, Docker Engine, disk); nothing was changed. */
export class PrerequisiteMissingError extends GotoError {
  constructor (message: string, readonly missing: string[]) {
    super(message)
  }
}
/** A command on the host (the install script) failed; `output` holds its last lines. */
export class RemoteCommandError extends GotoError {}
/** The installed agent did not show up `alive` in the mesh in time. */
export class AgentNotAliveError extends GotoError {}
/** A release tarball that is missing or not a Go-To release. */
export class ReleaseError extends GotoError {}

// --- failover (agent/failover) ----------------------------------------------------------
/** A replica holder already holds a snapshot of the container at least as new as the one offered. */
export class SnapshotOutdatedError extends GotoError {}
/**
 * A snapshot was put off because a `docker exec` runs in the container: pausing it then can hang
 * the engine (the exec's process frozen half-started holds the container), so it waits for the next try.
 */
export class ContainerBusyError extends GotoError {}
/** A takeover claim did not win a majority of the mesh (or lost to a higher epoch). */
export class TakeoverRefusedError extends GotoError {}
/**
 * An epoch certificate (protocol/epoch-certs.ts) that does not prove its epoch: a forged or
 * mismatched grant, a grantor without a valid agent certificate, or fewer grants than a majority.
 */
export class EpochCertificateInvalidError extends GotoError {}
/** A store of a snapshot that would replace another owner's, with no epoch certificate that the ownership changed. */
export class SnapshotOwnerMismatchError extends GotoError {}
/** An owner already has as many snapshots held here as a holder keeps for one owner. */
export class SnapshotLimitError extends GotoError {}
/**
 * A snapshot whose parts do not make a whole version: a volume of its spec neither sent as an
 * archive nor synced as a tree (with its final round), sent twice, or not of the spec; or a held
 * version that cannot be read back (its tree archived for a restore failed).
 */
export class SnapshotIncompleteError extends GotoError {}

// --- directory tree sync (agent/sync/) -------------------------------------------------
/** A path from the sync wire that is absolute, empty, has a `.`/`..`/empty component, a NUL or is too long. */
export class SyncPathRefusedError extends GotoError {}
/** A sync entry whose parent is not a directory of the tree already listed: it would escape the root (through a symlink or a file). */
export class SyncPathEscapeError extends GotoError {}
/** A sync entry that is malformed for its kind: unknown type, bad mode or device, duplicate path, a hard-link group or xattr it may not carry. */
export class SyncEntryRefusedError extends GotoError {}
/** The sync wire went past one of its bounds (entries, blocks, name, link target, xattr sizes). */
export class SyncLimitError extends GotoError {}
/** A block's bytes do not hash to what the source announced: the file is not kept. */
export class SyncBlockMismatchError extends GotoError {}
/** A tree sync needs a tool the host lacks (getfattr/setfattr of Debian's `attr`, mknod). */
export class SyncToolMissingError extends GotoError {}
/**
 * A volume round (/goto/transfer `volume`) the destination will not take: no prepared move of that
 * source, a volume that is not one of the prepared spec's named volumes or was not offered for
 * rounds, a round after the restore began, a second round of one volume at a time, too many rounds.
 */
export class VolumeSyncRefusedError extends GotoError {}
/** The volume's directory cannot be read or written by the agent on its host (not a local-driver volume of a local engine). */
export class VolumeSyncUnavailableError extends GotoError {}
/** A volume round carried more bytes than the destination's disk (or the round bound) takes. */
export class VolumeSyncTooLargeError extends GotoError {}

// --- live moves (agent/move/live.ts) -------------------------------------------------------
/**
 * A live move (--live) is not possible between these hosts: CRIU missing, too old or failing its
 * check, an engine not in experimental mode or of a kind without checkpoints, another CPU
 * architecture, CPU flags the destination lacks, an order that does not allow it. Refused before
 * anything freezes; the message names the host and what it lacks.
 */
export class LiveUnavailableError extends GotoError {}
/** The engine could not checkpoint the container (CRIU's dump failed): the move rolls back. */
export class CheckpointFailedError extends GotoError {}
/**
 * A checkpoint (/goto/transfer `checkpoint`) the destination will not keep: a path outside its
 * directory or of an unexpected form, too many files, more bytes than the bound or the free disk,
 * a file whose sha256 is not the one announced, a checkpoint for a move not prepared live.
 */
export class CheckpointRefusedError extends GotoError {}

/**
 * Known error classes by name, so an error that crossed the wire is rebuilt as its own class. A Map
 * (built from the object below), so a peer's name is looked up among these and nothing else: on a
 * plain object 'constructor' or '__proto__' would find Object's own.
 */
const KNOWN = new Map<string, new (message: string) => GotoError>(Object.entries({
  UnknownContainerError,
  DestinationUnavailableError,
  LiveUnavailableError,
  CheckpointFailedError,
  CheckpointRefusedError,
  MoveInProgressError,
  BindMountRefusedError,
  ArchitectureMismatchError,
  InsufficientDiskError,
  NameConflictError,
  PortConflictError,
  NetworkConflictError,
  UnknownProjectError,
  ProjectCycleError,
  ProjectSpreadError,
  UnknownMoveError,
  RestoreFailedError,
  ContainerNotRunningError,
  TransferIncompleteError,
  HolderRefusedError,
  SnapshotOutdatedError,
  ContainerBusyError,
  TakeoverRefusedError,
  OrderMissingError,
  OrderSignatureError,
  OrderSignerNotOperatorError,
  OrderExpiredError,
  OrderReplayedError,
  OrderNotRecordedError,
  OrderMismatchError,
  HostPowerNotOrderedError,
  SpecMismatchError,
  FieldRefusedError,
  HostAccessRefusedError,
  EpochCertificateInvalidError,
  SnapshotOwnerMismatchError,
  SnapshotLimitError,
  SnapshotIncompleteError,
  CertificateUntrustedError,
  CertificateExpiredError,
  CertificateNotYetValidError,
  CertificateNotLeafError,
  CertificatePeerMismatchError,
  CertificateRevokedError,
  CertificateMalformedError,
  RevocationListInvalidError,
  RoleNotAllowedError,
  BundleError,
  PeerNotAuthenticatedError,
  PeerRejectedUsError,
  AgentUnreachableError,
  UnknownPeerError,
  ProtocolError,
  DockerUnavailableError,
  DockerEngineError,
  ContainerNotFoundError,
  ImageNotFoundError,
  VolumeNotFoundError,
  ContainerPathNotFoundError,
  NetworkNotFoundError,
  DockerConflictError,
  DockerLoadError,
  DockerApiVersionError,
  SavedImageFormatError,
  ArchiveFormatError,
  LayerFilesError,
  TransferError,
  LayerDigestMismatchError,
  LayerTooLargeError,
  LayerTruncatedError,
  LayerMissingError,
  CompressedStreamError,
  ImageLoadError,
  ImageIdMismatchError,
  SyncPathRefusedError,
  SyncPathEscapeError,
  SyncEntryRefusedError,
  SyncLimitError,
  SyncBlockMismatchError,
  SyncToolMissingError,
  VolumeSyncRefusedError,
  VolumeSyncUnavailableError,
  VolumeSyncTooLargeError
}))

export interface WireError { name: string, message: string }

export function toWireError (err: unknown): WireError {
  if (err instanceof Error) return { name: err.name, message: err.message }
  return { name: 'Error', message: String(err) }
}

/** The error a peer sent, as our class of that name, or a GotoError carrying the name it gave. */
export function fromWireError (wire: WireError): GotoError {
  const Ctor = typeof wire.name === 'string' ? KNOWN.get(wire.name) : undefined
  if (Ctor !== undefined) return new Ctor(String(wire.message))
  const err = new GotoError(String(wire.message))
  err.name = typeof wire.name === 'string' ? wire.name : 'GotoError'
  return err
}
