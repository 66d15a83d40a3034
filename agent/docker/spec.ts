/**
 * Translation between the Engine API's container JSON and our ContainerSpec: `specFromInspect`
 * reads `GET /containers/{id}/json`, `createBody` writes the body of `POST /containers/create` that
 * makes a container with exactly that spec. Pure functions, so they are tested without an engine.
 *
 * Fidelity notes. `inspect` reports the container's effective config (the image's env, cmd, labels
 * and exposed ports merged in), so a spec read from it recreates the same container from the same
 * image. Named volumes become `Mounts` entries of type volume (with their driver; the engine creates
 * a missing volume on create), bind mounts become `Binds` (`-v` semantics: a missing host directory
 * is created), tmpfs mounts become `Tmpfs` with default options. An anonymous volume is a volume
 * whose name is 64 hex digits; it moves like a named one.
 *
 * Every other field of `Config` and `HostConfig` goes through the fidelity table
 * (protocol/fidelity.ts): what it carries as is lands in `spec.engine` and back in the create body
 * unchanged; what it refuses is listed in `ContainerInfo.fidelity`, for the move to refuse by name.
 * User-defined networks (given as `GET /networks/{id}` by name) become `spec.networks`: the
 * network's definition, the container's aliases and static addresses on it; the create body puts
 * the container on the one NetworkMode names, and the driver connects the others (host.ts).
 */
import { judgeContainer, type EngineNetwork } from '../../protocol/fidelity.js'
import type { ContainerInfo, ContainerSpec, MountSpec, NetworkAttachment, NetworkSpec, PortBinding } from './types.js'

/** The parts of `GET /containers/{id}/json` we read (Engine API 1.41+). */
export interface EngineContainer {
  Id: string
  Name: string
  Image: string
  State?: { Status?: string, Running?: boolean, Paused?: boolean, Pid?: number }
  /** IDs of the execs running in it (null when none). */
  ExecIDs?: string[] | null
  Config?: Record<string, unknown> & {
    Image?: string
    Hostname?: string
    User?: string
    Env?: string[] | null
    Cmd?: string[] | null
    Entrypoint?: string[] | null
    WorkingDir?: string
    Labels?: Record<string, string> | null
    ExposedPorts?: Record<string, unknown> | null
  }
  HostConfig?: Record<string, unknown> & {
    PortBindings?: Record<string, Array<{ HostIp?: string, HostPort?: string }> | null> | null
    RestartPolicy?: { Name?: string, MaximumRetryCount?: number }
    Tmpfs?: Record<string, string> | null
    Mounts?: Array<{ Type?: string, Target?: string }> | null
  }
  Mounts?: Array<{ Type?: string, Name?: string, Source?: string, Destination?: string, Driver?: string, RW?: boolean }> | null
  NetworkSettings?: { Networks?: Record<string, unknown> | null } | null
}

const RESTART_POLICIES = new Set(['', 'no', 'always', 'unless-stopped', 'on-failure'])

/** The spec and state of a container from its inspect JSON. */
export function containerInfoFromInspect (c: EngineContainer, networks: Readonly<Record<string, EngineNetwork>> = {}): ContainerInfo {
  const { refused, hostPowers } = judgeContainer(c, networks)
  return {
    id: c.Id,
    name: c.Name.replace(/^\//, ''),
    state: { status: c.State?.Status ?? 'unknown', running: c.State?.Running === true, paused: c.State?.Paused === true, execs: c.ExecIDs?.length ?? 0, ...typeof c.State?.Pid === 'number' && c.State.Pid > 0 ? { pid: c.State.Pid } : {} },
    spec: specFromInspect(c, networks),
    ...refused.length > 0 || hostPowers.length > 0 ? { fidelity: { refused, hostPowers } } : {}
  }
}

/**
 * The reference `Config.Image` gives (what the operator ran it as), normalized to repo:tag, or
 * undefined when it is an image ID (or a prefix of one) or a digest reference (which no tag can be).
 */
export function imageRefOf (configImage: string | undefined, imageId: string): string | undefined {
  if (configImage === undefined || configImage === '' || configImage.includes('@')) return undefined
  const hex = configImage.replace(/^sha256:/, '')
  if (configImage.startsWith('sha256:') || (/^[0-9a-f]{6,64}$/.test(hex) && imageId.replace(/^sha256:/, '').startsWith(hex))) return undefined
  const lastSlash = configImage.lastIndexOf('/')
  return configImage.slice(lastSlash + 1).includes(':') ? configImage : `${configImage}:latest`
}

/** The user-defined networks of an inspect that need their definition read (`GET /networks/{id}`): name → network ID. */
export function userNetworksOf (c: EngineContainer): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, ep] of Object.entries(c.NetworkSettings?.Networks ?? {})) {
    if (!['bridge', 'host', 'none'].includes(name)) out[name] = String((ep as { NetworkID?: unknown } | null)?.NetworkID ?? name)
  }
  return out
}

export function specFromInspect (c: EngineContainer, networks: Readonly<Record<string, EngineNetwork>> = {}): ContainerSpec {
  const cfg: NonNullable<EngineContainer['Config']> = c.Config ?? {}
  const host: NonNullable<EngineContainer['HostConfig']> = c.HostConfig ?? {}
  const portBindings: Record<string, PortBinding[]> = {}
  for (const [port, list] of Object.entries(host.PortBindings ?? {})) {
    portBindings[port] = (list ?? []).map(b => ({ hostIp: b.HostIp ?? '', hostPort: b.HostPort ?? '' }))
  }
  // The engine knows no other policies; anything else reads as the default ('').
  const restartName = RESTART_POLICIES.has(host.RestartPolicy?.Name ?? '') ? host.RestartPolicy?.Name ?? '' : ''
  const imageRef = imageRefOf(cfg.Image, c.Image)
  const { engine, networks: attached, primaryNetwork } = judgeContainer(c, networks)
  return {
    name: c.Name.replace(/^\//, ''),
    image: c.Image,
    env: cfg.Env ?? [],
    cmd: cfg.Cmd ?? null,
    entrypoint: cfg.Entrypoint ?? null,
    workingDir: cfg.WorkingDir ?? '',
    user: cfg.User ?? '',
    labels: { ...(cfg.Labels ?? {}) },
    hostname: cfg.Hostname ?? '',
    exposedPorts: Object.keys(cfg.ExposedPorts ?? {}).sort(),
    portBindings,
    restartPolicy: {
      name: restartName as ContainerSpec['restartPolicy']['name'],
      maximumRetryCount: host.RestartPolicy?.MaximumRetryCount ?? 0
    },
    mounts: mountsFromInspect(c),
    ...imageRef === undefined ? {} : { imageRef },
    // Absent when nothing is carried as is, so such a spec is the one agents before the table sent.
    ...Object.keys(engine.config).length + Object.keys(engine.hostConfig).length === 0 ? {} : { engine },
    ...attached.length === 0 ? {} : { networks: attached },
    ...primaryNetwork === undefined ? {} : { primaryNetwork }
  }
}

function mountsFromInspect (c: EngineContainer): MountSpec[] {
  const out: MountSpec[] = []
  const seen = new Set<string>()
  for (const m of c.Mounts ?? []) {
    const destination = m.Destination ?? ''
    if (destination === '' || seen.has(destination)) continue
    if (m.Type === 'volume' && m.Name !== undefined) {
      out.push({ type: 'volume', name: m.Name, destination, readOnly: m.RW === false, driver: m.Driver ?? 'local' })
    } else if (m.Type === 'bind' && m.Source !== undefined) {
      out.push({ type: 'bind', source: m.Source, destination, readOnly: m.RW === false })
    } else if (m.Type === 'tmpfs') {
      out.push({ type: 'tmpfs', destination })
    } else {
      continue
    }
    seen.add(destination)
  }
  // `--tmpfs` mounts are in HostConfig.Tmpfs only; `--mount type=tmpfs` ones in HostConfig.Mounts.
  const tmpfs = [
    ...Object.keys(c.HostConfig?.Tmpfs ?? {}),
    ...(c.HostConfig?.Mounts ?? []).filter(m => m.Type === 'tmpfs').map(m => m.Target ?? '')
  ]
  for (const destination of tmpfs) {
    if (destination === '' || seen.has(destination)) continue
    out.push({ type: 'tmpfs', destination })
    seen.add(destination)
  }
  return out.sort((a, b) => a.destination < b.destination ? -1 : a.destination > b.destination ? 1 : 0)
}

/** Body of `POST /containers/create?name=<spec.name>` for a container with exactly `spec`. */
export function createBody (spec: ContainerSpec): Record<string, unknown> {
  const binds: string[] = []
  const mounts: Array<Record<string, unknown>> = []
  const tmpfs: Record<string, string> = {}
  for (const m of spec.mounts) {
    if (m.type === 'volume') {
      mounts.push({ Type: 'volume', Source: m.name, Target: m.destination, ReadOnly: m.readOnly, VolumeOptions: { DriverConfig: { Name: m.driver } } })
    } else if (m.type === 'bind') {
      binds.push(`${m.source}:${m.destination}${m.readOnly ? ':ro' : ''}`)
    } else {
      tmpfs[m.destination] = ''
    }
  }
  const portBindings: Record<string, Array<{ HostIp: string, HostPort: string }>> = {}
  for (const [port, list] of Object.entries(spec.portBindings)) {
    portBindings[port] = list.map(b => ({ HostIp: b.hostIp, HostPort: b.hostPort }))
  }
  const exposed: Record<string, Record<string, never>> = {}
  // Exactly the exposed ports of the spec: the engine does not add bound ports (the CLI does).
  for (const p of spec.exposedPorts) exposed[p] = {}
  const engine = spec.engine ?? { config: {}, hostConfig: {} }
  // The container is created on the network NetworkMode names; the driver connects the others before it starts.
  const primary = spec.primaryNetwork === undefined ? undefined : spec.networks?.find(a => a.network.name === spec.primaryNetwork)
  return {
    // The settings the fidelity table carries as is, under their own names; the spec's own fields
    // (which the table keeps out of spec.engine) are written after them.
    ...engine.config,
    Image: spec.image,
    Hostname: spec.hostname,
    User: spec.user,
    Env: spec.env,
    Cmd: spec.cmd,
    Entrypoint: spec.entrypoint,
    WorkingDir: spec.workingDir,
    Labels: spec.labels,
    ExposedPorts: exposed,
    HostConfig: {
      ...engine.hostConfig,
      Binds: binds,
      Mounts: mounts,
      // --tmpfs options travel in the carried HostConfig.Tmpfs; mounts of the spec add defaults.
      Tmpfs: { ...tmpfs, ...(engine.hostConfig.Tmpfs as Record<string, string> | undefined ?? {}) },
      PortBindings: portBindings,
      RestartPolicy: { Name: spec.restartPolicy.name, MaximumRetryCount: spec.restartPolicy.maximumRetryCount },
      ...primary === undefined ? {} : { NetworkMode: primary.network.name }
    },
    ...primary === undefined ? {} : { NetworkingConfig: { EndpointsConfig: { [primary.network.name]: endpointConfig(primary) } } }
  }
}

/** The endpoint settings of a network attachment (`EndpointsConfig` of create, `EndpointConfig` of connect). */
export function endpointConfig (a: NetworkAttachment): Record<string, unknown> {
  const ipam = { ...a.ipv4Address === '' ? {} : { IPv4Address: a.ipv4Address }, ...a.ipv6Address === '' ? {} : { IPv6Address: a.ipv6Address } }
  return { Aliases: a.aliases, ...Object.keys(ipam).length === 0 ? {} : { IPAMConfig: ipam } }
}

/** Body of `POST /networks/create` for a network with exactly `net` (no subnets: the engine chooses). */
export function networkCreateBody (net: NetworkSpec): Record<string, unknown> {
  return {
    Name: net.name,
    Driver: net.driver,
    CheckDuplicate: true,
    Options: net.options,
    Labels: net.labels,
    Internal: net.internal,
    Attachable: net.attachable,
    EnableIPv6: net.enableIPv6,
    IPAM: {
      Driver: 'default',
      Config: net.subnets.map(p => ({ Subnet: p.subnet, ...p.gateway === '' ? {} : { Gateway: p.gateway }, ...p.ipRange === '' ? {} : { IPRange: p.ipRange } }))
    }
  }
}
