/**
 * The container and image shapes that travel on the wire (a move's prepare, restore and store
 * requests carry them). They belong to the protocol, not to the Docker driver: agent/docker/
 * translates them to and from the Engine API and re-exports them for its own code.
 */

/** A named volume or a bind mount of the container. tmpfs mounts hold nothing to move. */
export type MountSpec =
  | { type: 'volume', name: string, destination: string, readOnly: boolean, driver: string }
  | { type: 'bind', source: string, destination: string, readOnly: boolean }
  | { type: 'tmpfs', destination: string }

export interface PortBinding { hostIp: string, hostPort: string }

/** The engine's restart policies ('' is the engine's default, the same as 'no'). */
export type RestartPolicyName = '' | 'no' | 'always' | 'unless-stopped' | 'on-failure'

export interface RestartPolicy { name: RestartPolicyName, maximumRetryCount: number }

/**
 * Engine settings carried as is, under their Engine API names (`Config.StopSignal`,
 * `HostConfig.Memory`, ...): protocol/fidelity.ts decides which fields may be here.
 */
export interface EngineSettings { config: Record<string, unknown>, hostConfig: Record<string, unknown> }

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
  restartPolicy: RestartPolicy
  mounts: MountSpec[]
  /**
   * The reference the container's image has at the source (`Config.Image`, e.g. 'app:v1'), when it
   * still names that image there; the destination tags the image it makes with it when the tag is
   * free there (or names that image already), so `docker ps` shows the name. Absent: none.
   */
  imageRef?: string
  /** Every other setting the fidelity table carries (absent in specs of agents before it). */
  engine?: EngineSettings
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
