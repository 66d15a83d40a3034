/**
 * The shapes the agent uses for containers and images, independent of dockerode. The move, the
 * transfer and failover work with these; only agent/docker/ translates them to and from the Engine
 * API.
 */

import type { ContainerSpec } from '../../protocol/container.js'
import type { Refusal } from '../../protocol/fidelity.js'

// The shapes that travel on the wire live in protocol/container.ts; re-exported so that driver code
// keeps importing its types from one place.
export type { ContainerSpec, EngineSettings, ImageInfo, MountSpec, NetworkAttachment, NetworkSpec, PortBinding, RestartPolicy, RestartPolicyName } from '../../protocol/container.js'

export interface ContainerInfo {
  id: string
  name: string
  /** `execs`: how many `docker exec` processes run in it now; `pid`: its first process on this host, while it runs (absent: not said). */
  state: { status: string, running: boolean, paused: boolean, execs: number, pid?: number }
  spec: ContainerSpec
  /**
   * What of its inspect the spec does not carry (protocol/fidelity.ts): fields refused by name, and
   * the host powers among the carried settings. Absent: nothing refused, no host powers.
   */
  fidelity?: { refused: Refusal[], hostPowers: string[] }
}

/** What `docker save` produced, read entry by entry (classic or OCI layout). */
export type SavedEntry =
  /** The image config JSON, exactly as stored (its sha256 is the image ID). */
  | { kind: 'config', digest: string, bytes: Uint8Array }
  /**
   * One layer as an uncompressed tar stream (gzip blobs are inflated on the way). `size` is the
   * uncompressed size when the layout states it (classic: always), else undefined. The stream must be
   * consumed (or drained) before the next entry arrives.
   */
  | { kind: 'layer', path: string, size: number | undefined, compressed: boolean, stream: AsyncIterable<Uint8Array> }
  /** Once all entries are read: which config and which layer paths, in chain order. */
  | { kind: 'manifest', config: string, layers: string[] }

/** One path a container changed relative to its image (`GET /containers/{id}/changes`). */
export interface ContainerChange {
  /** Absolute path in the container. */
  path: string
  kind: 'modified' | 'added' | 'deleted'
}

/** What the archive endpoints tell of a path in a container (`X-Docker-Container-Path-Stat`). */
export interface PathStat {
  /** Base name. */
  name: string
  size: number
  /** Unix st_mode: the type bits (S_IFDIR, S_IFREG, ...) and permissions with setuid/setgid/sticky. */
  mode: number
  type: 'file' | 'directory' | 'symlink' | 'char-device' | 'block-device' | 'fifo' | 'socket'
  mtime: Date
  /** A symlink's target as the engine resolves it in the container (else ''). */
  linkTarget: string
}

/** A container's changes written as a layer tar. */
export interface ExportedChanges {
  /** Bytes of the tar. */
  size: number
  /** sha256:<hex of the tar>: the layer's diff ID. */
  diffId: string
  /** Entries in the tar (whiteouts included). */
  entries: number
  /** Engine requests it took (list, inspect, HEADs and archive GETs). */
  requests: number
}

/** One step of an image's history, as in an image config (oldest first there). */
export interface ImageHistoryEntry {
  created?: string
  created_by?: string
  comment?: string
  author?: string
  /** True for a step that made no layer (ENV, CMD, ...). */
  empty_layer?: boolean
}

/** What it takes to write a new image config for "this image plus one more layer". */
export interface ImageConfigInfo {
  /** sha256:<digest of the config JSON>. */
  id: string
  /** As the image says it (GOARCH: amd64, arm64, ...). */
  architecture: string
  os: string
  variant?: string
  osVersion?: string
  /** The image's container config exactly as inspect reports it: Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal, ... */
  config: Record<string, unknown>
  /** The layers' diff IDs, base first. */
  diffIds: string[]
  /** RFC 3339. */
  created: string
  author: string
  /** Oldest first; its non-empty steps match `diffIds` one to one. */
  history: ImageHistoryEntry[]
}
