/**
 * The shapes the agent uses for containers and images, independent of dockerode. The move, the
 * transfer and failover work with these; only agent/docker/ translates them to and from the Engine
 * API.
 */

/** A named volume or a bind mount of the container. tmpfs mounts hold nothing to move. */
export type MountSpec =
  | { type: 'volume', name: string, destination: string, readOnly: boolean, driver: string }
  | { type: 'bind', source: string, destination: string, readOnly: boolean }
  | { type: 'tmpfs', destination: string }

export interface PortBinding { hostIp: string, hostPort: string }

/** Everything needed to create the same container on another engine. */
export interface ContainerSpec {
  name: string
  /** Image ID (sha256:<config digest>) the container runs. */
  image: string
  env: string[]
  cmd: string[] | null
  entrypoint: string[] | null
  workingDir: string
  user: string
  labels: Record<string, string>
  hostname: string
  /** e.g. ['80/tcp', '53/udp'] */
  exposedPorts: string[]
  /** e.g. { '80/tcp': [{ hostIp: '', hostPort: '8080' }] } */
  portBindings: Record<string, PortBinding[]>
  restartPolicy: { name: '' | 'no' | 'always' | 'unless-stopped' | 'on-failure', maximumRetryCount: number }
  mounts: MountSpec[]
}

export interface ContainerInfo {
  id: string
  name: string
  state: { status: string, running: boolean, paused: boolean }
  spec: ContainerSpec
}

export interface ImageInfo {
  /** sha256:<digest of the config JSON>. */
  id: string
  /** The layers' diff IDs (sha256 of each uncompressed layer tar), base first. */
  diffIds: string[]
  os: string
  architecture: string
  /** Bytes of all layers, as the engine reports it. */
  size: number
  repoTags: string[]
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
