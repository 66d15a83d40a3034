/**
 * The container and image shapes that travel on the wire (a move's prepare, restore and store
 * requests carry them). They belong to the protocol, not to the Docker driver: agent/docker/
 * translates them to and from the Engine API and re-exports them for its own code.
 */

/**
 * A named volume or a bind mount of the container. tmpfs mounts hold nothing to move. A volume's
 * `labels` are the volume's own (`docker volume inspect`, e.g. compose's project and volume names),
 * which the destination gives the volume it creates; absent when it has none.
 */
export type MountSpec =
  | { type: 'volume', name: string, destination: string, readOnly: boolean, driver: string, labels?: Record<string, string> }
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

/**
 * A user-defined network as the source's engine defines it (`GET /networks/{id}`): what the
 * destination creates when it has no network of that name, and compares with the one it has.
 * Only local bridge networks travel (protocol/fidelity.ts refuses other drivers by name).
 */
export interface NetworkSpec {
  name: string
  /** Always 'bridge' today. */
  driver: string
  /** Driver options (`-o`), only those the fidelity table carries. */
  options: Record<string, string>
  labels: Record<string, string>
  /** The IPAM pools (default IPAM driver): subnets with their gateway and range ('' when unset). */
  subnets: Array<{ subnet: string, gateway: string, ipRange: string }>
  internal: boolean
  attachable: boolean
  enableIPv6: boolean
}

/** The container on a user-defined network: the network, its aliases there, its static addresses. */
export interface NetworkAttachment {
  network: NetworkSpec
  /** `--network-alias` (and compose's service name); the engine's own alias, the short container ID, is not carried. */
  aliases: string[]
  /** `--ip` / `--ip6` (the endpoint's IPAMConfig): kept where the destination's network has the source's subnet. '' when none. */
  ipv4Address: string
  ipv6Address: string
}

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
  /**
   * The user-defined networks the container is on (absent: none, only the network
   * HostConfig.NetworkMode names, default bridge, host or none, which engine.hostConfig carries).
   */
  networks?: NetworkAttachment[]
  /** The user-defined network HostConfig.NetworkMode names, one of `networks` (absent: the default bridge is the container's first network). */
  primaryNetwork?: string
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
