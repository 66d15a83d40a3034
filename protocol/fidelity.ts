/**
 * Full fidelity by policy, not by list: the one table that decides, for every field of a container's
 * `docker inspect` (`Config`, `HostConfig`, `NetworkSettings`, and the top level), what a move does
 * with it. Both ends use it: the source (agent/docker/spec.ts) reads the whole inspect through
 * `judgeContainer` and carries what the table allows; the destination (move-messages.ts parseSpec,
 * orders.ts checkHostPowers) re-checks every carried setting against the same table, whatever the
 * source says. docs/operations.md holds the same table (`fidelityTableMarkdown`, checked by a test).
 *
 *   const j = judgeContainer(inspectJson)
 *   j.refused      // [{ field: 'NetworkSettings.Networks.appnet', why: '...' }]: the move is refused
 *   j.hostPowers   // ['HostConfig.CapAdd']: carried only with --allow-host-access, named in the order
 *   j.engine       // { config: { StopSignal: 'SIGINT', ... }, hostConfig: { Memory: 67108864, ... } }
 *
 * A field that is set (not null, '', 0, false, [] or {}) and not in the table is refused with its
 * name: a newer engine's new field stops the move until the table covers it, it is never lost.
 */
import type { EngineSettings, NetworkAttachment, NetworkSpec } from './container.js'
import { FieldRefusedError, ProtocolError } from './errors.js'
import { obj, str } from './parse.js'

/**
 * - `spec`: carried in a ContainerSpec field of its own (translated: env, cmd, mounts, ports...).
 * - `carry`: carried as is (ContainerSpec.engine), given to the destination's engine unchanged.
 * - `host`: a host-level power: refused unless the operator passes --allow-host-access, which the
 *   signed order names (`allow.hostAccess`); then carried as is.
 * - `refuse`: refused with the field's name when set (it names something of the source host or
 *   another container, or the destination may lack it).
 * - `state`: host-specific by nature (IDs, paths, addresses, timestamps, run state): the
 *   destination's engine makes its own.
 * - `client`: how the docker client that made it attached to it: nothing a started container keeps.
 * - `derived`: the engine derives it from other fields; the destination's engine derives it again.
 */
export type Policy = 'spec' | 'carry' | 'host' | 'refuse' | 'state' | 'client' | 'derived'

/** What one value of a field falls under: a policy, or 'default' (not set: nothing to carry). */
export type Verdict = Policy | 'default'

export interface FieldRule {
  policy: Policy
  /** For docs/operations.md: what it is and why this policy. */
  note: string
  /** Fields whose policy depends on the value (NetworkMode 'host' is a host power, 'none' is carried). */
  judge?: (v: unknown) => Verdict
}

const spec = (note: string): FieldRule => ({ policy: 'spec', note })
const carry = (note: string): FieldRule => ({ policy: 'carry', note })
const host = (note: string): FieldRule => ({ policy: 'host', note })
const refuse = (note: string): FieldRule => ({ policy: 'refuse', note })
const state = (note: string): FieldRule => ({ policy: 'state', note })
const client = (note: string): FieldRule => ({ policy: 'client', note })
const derived = (note: string): FieldRule => ({ policy: 'derived', note })
/** A namespace mode: '' is the default, 'host' a host power, 'container:x' names another container. */
const namespace = (what: string, carried: readonly string[]): FieldRule => ({
  policy: 'carry',
  note: `${what} namespace: ${carried.length > 0 ? `${carried.join(', ')} carried; ` : ''}host is a host power; container:<name> is refused (names another container)`,
  judge: v => v === '' || v === undefined || v === null ? 'default' : carried.includes(String(v)) ? 'carry' : v === 'host' ? 'host' : 'refuse'
})

/** Log drivers that keep logs on the host the container runs on, which every engine has. */
export const CARRIED_LOG_DRIVERS = ['json-file', 'local', 'none']

/** `Config` (the container's own settings, API 1.41). */
export const CONFIG_RULES: Readonly<Record<string, FieldRule>> = {
  Hostname: spec('hostname (the source\'s, also when the engine made it from the container ID)'),
  Domainname: carry('domain name'),
  User: spec('user[:group]'),
  AttachStdin: client('docker run without -d'),
  AttachStdout: client('docker run without -d'),
  AttachStderr: client('docker run without -d'),
  ExposedPorts: spec('exposed ports (the image\'s and --expose)'),
  Tty: carry('-t'),
  OpenStdin: carry('-i'),
  StdinOnce: carry('--attach stdin once'),
  Env: spec('environment (the image\'s merged in)'),
  Cmd: spec('command'),
  Healthcheck: carry('--health-cmd, --health-interval, ...'),
  ArgsEscaped: carry('Windows command line escaping'),
  Image: spec('the image: its ID travels as spec.image, the reference as spec.imageRef, tagged at the destination when free there'),
  Volumes: carry('anonymous volume mount points (the image\'s VOLUME and -v /path)'),
  WorkingDir: spec('-w'),
  Entrypoint: spec('--entrypoint'),
  NetworkDisabled: carry('no network at all'),
  MacAddress: refuse('--mac-address: an address of the source\'s network'),
  OnBuild: carry('image ONBUILD triggers'),
  Labels: spec('labels (the image\'s merged in)'),
  StopSignal: carry('--stop-signal'),
  StopTimeout: carry('--stop-timeout'),
  Shell: carry('image SHELL')
}

/** `HostConfig` (how the engine runs it, API 1.41). */
export const HOST_CONFIG_RULES: Readonly<Record<string, FieldRule>> = {
  Binds: spec('-v: named volumes move with their data; bind mounts (host paths) only with --allow-bind-mounts, which moves the container without them'),
  ContainerIDFile: client('--cidfile, written by the client'),
  LogConfig: {
    policy: 'carry',
    note: `--log-driver and --log-opt: ${CARRIED_LOG_DRIVERS.join(', ')} carried; other drivers are refused (they ship logs to endpoints the source knows, or need a plugin the destination may lack)`,
    judge: v => {
      const type = (v as { Type?: unknown } | null)?.Type
      return type === undefined || type === '' ? 'default' : CARRIED_LOG_DRIVERS.includes(String(type)) ? 'carry' : 'refuse'
    }
  },
  NetworkMode: {
    policy: 'carry',
    note: 'default and bridge: the destination\'s default bridge; none carried; host is a host power; container:<name> is refused; a user-defined network\'s name is translated (the network moves with it: NetworkSettings.Networks)',
    judge: v => v === '' || v === 'default' || v === 'bridge' || v === undefined ? 'default' : v === 'none' ? 'carry' : v === 'host' ? 'host' : String(v).startsWith('container:') ? 'refuse' : 'spec'
  },
  PortBindings: spec('-p'),
  RestartPolicy: spec('--restart'),
  AutoRemove: carry('--rm'),
  VolumeDriver: { policy: 'refuse', note: '--volume-driver other than local (the destination may lack the plugin, the data stays with it)', judge: v => v === '' || v === 'local' || v === undefined ? 'default' : 'refuse' },
  VolumesFrom: refuse('--volumes-from: another container\'s volumes'),
  CapAdd: host('--cap-add'),
  CapDrop: carry('--cap-drop'),
  Capabilities: host('the full capability set'),
  CgroupnsMode: {
    policy: 'carry',
    note: '--cgroupns: private carried; host is the engine\'s default on cgroup v1 and is left to the destination\'s default',
    judge: v => v === 'private' ? 'carry' : 'default'
  },
  Dns: carry('--dns'),
  DnsOptions: carry('--dns-option'),
  DnsSearch: carry('--dns-search'),
  ExtraHosts: carry('--add-host'),
  GroupAdd: carry('--group-add'),
  IpcMode: namespace('--ipc', ['private', 'shareable', 'none']),
  Cgroup: refuse('--cgroup container:<name>'),
  Links: refuse('--link: names other containers'),
  OomScoreAdj: carry('--oom-score-adj'),
  PidMode: namespace('--pid', []),
  Privileged: host('--privileged'),
  PublishAllPorts: carry('-P (the destination picks the host ports)'),
  ReadonlyRootfs: carry('--read-only'),
  SecurityOpt: host('--security-opt (seccomp, apparmor, label, no-new-privileges, systempaths)'),
  StorageOpt: refuse('--storage-opt: options of the source\'s storage driver'),
  Tmpfs: carry('--tmpfs with its options'),
  UTSMode: namespace('--uts', []),
  UsernsMode: namespace('--userns', []),
  ShmSize: carry('--shm-size'),
  Sysctls: host('--sysctl'),
  Runtime: { policy: 'refuse', note: '--runtime other than runc (the destination may lack it)', judge: v => v === '' || v === 'runc' || v === undefined ? 'default' : 'refuse' },
  ConsoleSize: client('the client\'s terminal size'),
  Isolation: { policy: 'refuse', note: '--isolation (Windows) other than default', judge: v => v === '' || v === 'default' || v === undefined ? 'default' : 'refuse' },
  CpuShares: carry('--cpu-shares'),
  Memory: carry('--memory'),
  NanoCpus: carry('--cpus'),
  CgroupParent: host('--cgroup-parent: a place in the host\'s cgroup tree'),
  BlkioWeight: carry('--blkio-weight'),
  BlkioWeightDevice: host('--blkio-weight-device: names host devices'),
  BlkioDeviceReadBps: host('--device-read-bps: names host devices'),
  BlkioDeviceWriteBps: host('--device-write-bps: names host devices'),
  BlkioDeviceReadIOps: host('--device-read-iops: names host devices'),
  BlkioDeviceWriteIOps: host('--device-write-iops: names host devices'),
  CpuPeriod: carry('--cpu-period'),
  CpuQuota: carry('--cpu-quota'),
  CpuRealtimePeriod: carry('--cpu-rt-period'),
  CpuRealtimeRuntime: carry('--cpu-rt-runtime'),
  CpusetCpus: carry('--cpuset-cpus (the destination must have those CPUs, or the create fails)'),
  CpusetMems: carry('--cpuset-mems'),
  Devices: host('--device'),
  DeviceCgroupRules: host('--device-cgroup-rule'),
  DeviceRequests: host('--gpus'),
  KernelMemory: carry('--kernel-memory (deprecated)'),
  KernelMemoryTCP: carry('kernel TCP memory limit'),
  MemoryReservation: carry('--memory-reservation'),
  MemorySwap: carry('--memory-swap'),
  MemorySwappiness: carry('--memory-swappiness'),
  OomKillDisable: carry('--oom-kill-disable'),
  PidsLimit: carry('--pids-limit'),
  Ulimits: carry('--ulimit'),
  CpuCount: carry('--cpu-count (Windows)'),
  CpuPercent: carry('--cpu-percent (Windows)'),
  IOMaximumIOps: carry('--io-maxiops (Windows)'),
  IOMaximumBandwidth: carry('--io-maxbandwidth (Windows)'),
  Mounts: spec('--mount: volumes, binds and tmpfs as with -v and --tmpfs; options the spec cannot hold (BindOptions, TmpfsOptions, VolumeOptions other than the local driver) are refused by name'),
  MaskedPaths: derived('from --privileged and --security-opt systempaths'),
  ReadonlyPaths: derived('from --privileged and --security-opt systempaths'),
  Init: carry('--init')
}

/** `NetworkSettings`: which networks the container is on, with what; the rest is addresses. */
export const NETWORK_RULES: Readonly<Record<string, FieldRule>> = {
  Networks: spec('the networks it is on: the one HostConfig.NetworkMode names (default bridge, host, none) moves with it; each user-defined local bridge network moves with its definition (Network[<name>].*), the container\'s aliases and static addresses there (NetworkSettings.Networks.<name>.*); another driver, the default bridge as a second network, or a network whose definition cannot be read is refused by name'),
  Bridge: state('address'),
  SandboxID: state('ID'),
  HairpinMode: state('address'),
  LinkLocalIPv6Address: state('address'),
  LinkLocalIPv6PrefixLen: state('address'),
  Ports: derived('from HostConfig.PortBindings'),
  SandboxKey: state('path'),
  SecondaryIPAddresses: state('address'),
  SecondaryIPv6Addresses: state('address'),
  EndpointID: state('ID'),
  Gateway: state('address'),
  GlobalIPv6Address: state('address'),
  GlobalIPv6PrefixLen: state('address'),
  IPAddress: state('address'),
  IPPrefixLen: state('address'),
  IPv6Gateway: state('address'),
  MacAddress: state('address')
}

/** The container's endpoint on a user-defined network: `NetworkSettings.Networks.<name>.<field>`. */
export const ENDPOINT_RULES: Readonly<Record<string, FieldRule>> = {
  IPAMConfig: {
    policy: 'spec',
    note: '--ip and --ip6: the static addresses, kept where the destination\'s network has the source\'s subnet (the plan warns when one is not); --link-local-ip is refused',
    judge: v => isUnset(v) ? 'default' : isUnset((v as { LinkLocalIPs?: unknown }).LinkLocalIPs) ? 'spec' : 'refuse'
  },
  Aliases: spec('--network-alias (and compose\'s service name); the engine\'s own alias, the short container ID, is the new container\'s at the destination'),
  Links: refuse('--link on a user network: names other containers'),
  DriverOpts: refuse('endpoint driver options (--network name=...,driver-opt=...)'),
  NetworkID: state('ID'),
  EndpointID: state('ID'),
  Gateway: state('address'),
  IPAddress: state('address'),
  IPPrefixLen: state('address'),
  IPv6Gateway: state('address'),
  GlobalIPv6Address: state('address'),
  GlobalIPv6PrefixLen: state('address'),
  MacAddress: state('address'),
  DNSNames: derived('from the name, aliases and ID (engine 25+)')
}

/** Bridge driver options (`docker network create -o`) that mean the same on any host. */
export const CARRIED_BRIDGE_OPTIONS = [
  'com.docker.network.bridge.enable_icc', 'com.docker.network.bridge.enable_ip_masquerade', 'com.docker.network.driver.mtu', 'com.docker.network.container_iface_prefix'
]

/** A user-defined network the container is on, as `docker network inspect` shows it: `Network[<name>].<field>`. */
export const NETWORK_DEFINITION_RULES: Readonly<Record<string, FieldRule>> = {
  Name: spec('the network\'s name: the destination uses its network of that name when it has the same settings (a conflict when not), else creates it'),
  Driver: { policy: 'spec', note: 'bridge moves (created at the destination); overlay, macvlan, ipvlan and other drivers are refused (they span or name the source\'s hosts and interfaces)', judge: v => v === 'bridge' ? 'spec' : 'refuse' },
  Scope: { policy: 'spec', note: 'local only (a swarm-scoped network is refused)', judge: v => v === 'local' || isUnset(v) ? 'default' : 'refuse' },
  Options: {
    policy: 'spec',
    note: `driver options: ${CARRIED_BRIDGE_OPTIONS.join(', ')} carried; others are refused by name (com.docker.network.bridge.name names an interface of the source host)`,
    judge: v => isUnset(v) ? 'default' : Object.keys(v as Record<string, unknown>).every(k => CARRIED_BRIDGE_OPTIONS.includes(k)) ? 'spec' : 'refuse'
  },
  Labels: spec('labels (compose\'s com.docker.compose.network and .project among them)'),
  IPAM: {
    policy: 'spec',
    note: 'the default IPAM driver\'s subnets, gateways and ranges: kept when the subnet is free at the destination, else the engine chooses (said in the plan); another IPAM driver, IPAM options and auxiliary addresses are refused',
    judge: v => {
      const ipam = (v ?? {}) as { Driver?: unknown, Options?: unknown, Config?: Array<{ AuxiliaryAddresses?: unknown }> | null }
      return !['', 'default', undefined].includes(ipam.Driver as string | undefined) || !isUnset(ipam.Options) || (ipam.Config ?? []).some(c => !isUnset(c.AuxiliaryAddresses)) ? 'refuse' : 'spec'
    }
  },
  EnableIPv6: spec('--ipv6'),
  EnableIPv4: { policy: 'spec', note: 'engine 28: an IPv4-less network is refused', judge: v => v === false ? 'refuse' : 'default' },
  Internal: spec('--internal'),
  Attachable: spec('--attachable'),
  Ingress: refuse('the swarm routing mesh'),
  ConfigFrom: { policy: 'refuse', note: '--config-from: another network\'s configuration', judge: v => isUnset(v) ? 'default' : 'refuse' },
  ConfigOnly: refuse('--config-only: a template for other networks'),
  Id: state('ID'),
  Created: state('timestamp'),
  Containers: state('the containers on it now'),
  Peers: state('swarm peers'),
  Services: state('swarm services')
}

/** The top level of the inspect: the sections above, and what the engine made. */
export const INSPECT_RULES: Readonly<Record<string, FieldRule>> = {
  Id: state('ID'),
  Created: state('timestamp'),
  Path: derived('from Config.Entrypoint and Cmd'),
  Args: derived('from Config.Entrypoint and Cmd'),
  State: state('run state (a move needs a running container)'),
  Image: spec('image ID'),
  ResolvConfPath: state('path'),
  HostnamePath: state('path'),
  HostsPath: state('path'),
  LogPath: state('path'),
  Name: spec('name'),
  RestartCount: state('counter'),
  Driver: state('storage driver of the source'),
  Platform: state('the image\'s OS (checked against the destination\'s)'),
  MountLabel: derived('from SecurityOpt label'),
  ProcessLabel: derived('from SecurityOpt label'),
  AppArmorProfile: derived('from SecurityOpt apparmor'),
  ExecIDs: state('execs running now'),
  GraphDriver: state('paths of the source\'s storage'),
  SizeRw: state('size'),
  SizeRootFs: state('size'),
  Mounts: spec('volumes (data moves), bind mounts (--allow-bind-mounts), tmpfs; a volume driver other than local is refused as Mounts[i].Driver'),
  Config: spec('the section above'),
  HostConfig: spec('the section above'),
  NetworkSettings: spec('the section above')
}

export const SECTIONS = { Config: CONFIG_RULES, HostConfig: HOST_CONFIG_RULES } as const
export type Section = keyof typeof SECTIONS

/** Not set: null, '', 0, false, or an array or object of nothing but such values. */
export function isUnset (v: unknown): boolean {
  if (v === null || v === undefined || v === '' || v === 0 || v === false) return true
  if (Array.isArray(v)) return v.every(isUnset)
  if (typeof v === 'object') return Object.values(v as Record<string, unknown>).every(isUnset)
  return false
}

/** What the value `v` of `section.field` falls under (an unknown field: 'refuse' when set). */
export function verdictOf (section: Section, field: string, v: unknown): Verdict {
  const rule = Object.hasOwn(SECTIONS[section], field) ? SECTIONS[section][field] : undefined
  if (rule?.judge !== undefined) return rule.judge(v)
  if (isUnset(v)) return 'default'
  return rule?.policy ?? 'refuse'
}

/** Why `section.field` is refused (the table's note, or that the table does not know it). */
function whyRefused (section: Section, field: string): string {
  return Object.hasOwn(SECTIONS[section], field) ? SECTIONS[section][field].note : UNKNOWN_FIELD
}

const UNKNOWN_FIELD = 'a setting this agent does not know yet (a newer engine\'s?): refused until the fidelity table covers it'

export interface Refusal { field: string, why: string }

export interface Judgement {
  /** The settings carried as is (host powers among them). */
  engine: EngineSettings
  /** Fields carried only with the operator's --allow-host-access, e.g. 'HostConfig.CapAdd'. */
  hostPowers: string[]
  /** Fields that stop the move, with the table's reason. */
  refused: Refusal[]
  /** The user-defined networks it is on, translated (those refused are not here); the one NetworkMode names first. */
  networks: NetworkAttachment[]
  /** The user-defined network HostConfig.NetworkMode names (absent: another mode). */
  primaryNetwork?: string
}

/** What `GET /networks/{id}` says of a network (the parts the translation reads; every field is judged by name). */
export type EngineNetwork = Record<string, unknown> & {
  Name?: string
  Driver?: string
  Options?: Record<string, string> | null
  Labels?: Record<string, string> | null
  IPAM?: { Driver?: string, Options?: Record<string, string> | null, Config?: Array<{ Subnet?: string, Gateway?: string, IPRange?: string }> | null } | null
  Internal?: boolean
  Attachable?: boolean
  EnableIPv6?: boolean
}

/** The parts of an inspect the judgement reads. */
export interface InspectSections {
  Id?: string
  Config?: Record<string, unknown>
  HostConfig?: Record<string, unknown>
  NetworkSettings?: { Networks?: Record<string, unknown> | null } | null
  Mounts?: Array<{ Type?: string, Driver?: string, Name?: string }> | null
}

/** The networks a move carries by HostConfig.NetworkMode alone (nothing to create, no endpoint settings). */
const MODE_NETWORKS = ['bridge', 'host', 'none']

/**
 * Every field of the inspect's Config, HostConfig, networks and mounts, judged by the table.
 * `networks`: each user-defined network's `GET /networks/{id}`, by the name the container knows it
 * by (one not given is refused: its definition could not be read).
 */
export function judgeContainer (c: InspectSections, networks: Readonly<Record<string, EngineNetwork>> = {}): Judgement {
  const engine: EngineSettings = { config: {}, hostConfig: {} }
  const hostPowers: string[] = []
  const refused: Refusal[] = []
  const endpoints = (c.NetworkSettings?.Networks ?? {}) as Record<string, Record<string, unknown> | null>
  const names = Object.keys(endpoints)
  const mode = String(c.HostConfig?.NetworkMode ?? '')
  for (const section of ['Config', 'HostConfig'] as const) {
    const out = section === 'Config' ? engine.config : engine.hostConfig
    for (const [field, v] of Object.entries(c[section] ?? {})) {
      const verdict = verdictOf(section, field, v)
      const name = `${section}.${field}`
      if (verdict === 'carry' || verdict === 'host') out[field] = v
      if (verdict === 'host') hostPowers.push(name)
      if (verdict === 'refuse') refused.push({ field: name, why: whyRefused(section, field) })
      if (verdict === 'spec' && field === 'NetworkMode' && !names.includes(mode)) refused.push({ field: name, why: `names the network '${mode}', which the container is not on` })
    }
  }
  // The network NetworkMode names when it is not a user network: it moves as that mode.
  const own = ['', 'default', 'bridge'].includes(mode) ? 'bridge' : mode === 'host' || mode === 'none' ? mode : undefined
  const attached: NetworkAttachment[] = []
  for (const n of names) {
    if (n === own) continue
    const field = `NetworkSettings.Networks.${n}`
    if (MODE_NETWORKS.includes(n)) { refused.push({ field, why: `the ${n} network as a second network of the container` }); continue }
    const def = networks[n]
    if (def === undefined) { refused.push({ field, why: 'a user-defined network whose definition could not be read from the engine' }); continue }
    const before = refused.length
    judgeFields(endpoints[n] ?? {}, ENDPOINT_RULES, field, refused)
    judgeFields(def, NETWORK_DEFINITION_RULES, `Network[${n}]`, refused)
    for (const k of Object.keys(def.Options ?? {})) {
      if (!CARRIED_BRIDGE_OPTIONS.includes(k)) refused.push({ field: `Network[${n}].Options.${k}`, why: 'a driver option that names or depends on the source host' })
    }
    if (refused.length === before) attached.push(attachmentOf(n, endpoints[n] ?? {}, def, c.Id))
  }
  for (const [i, m] of (c.HostConfig?.Mounts as Array<Record<string, unknown>> | undefined ?? []).entries()) {
    for (const opt of ['BindOptions', 'TmpfsOptions']) {
      if (!isUnset(m[opt])) refused.push({ field: `HostConfig.Mounts[${i}].${opt}`, why: 'mount options the spec cannot hold yet' })
    }
    const vo = (m.VolumeOptions ?? {}) as { NoCopy?: unknown, Labels?: unknown, DriverConfig?: { Name?: unknown, Options?: unknown } }
    if (!isUnset(vo.NoCopy) || !isUnset(vo.Labels) || !isUnset(vo.DriverConfig?.Options) || !['', 'local', undefined].includes(vo.DriverConfig?.Name as string | undefined)) {
      refused.push({ field: `HostConfig.Mounts[${i}].VolumeOptions`, why: 'volume options other than the local driver\'s defaults' })
    }
  }
  for (const [i, m] of (c.Mounts ?? []).entries()) {
    if (m.Type === 'volume' && m.Driver !== undefined && m.Driver !== 'local') refused.push({ field: `Mounts[${i}].Driver`, why: `volume ${m.Name ?? ''} uses the driver ${m.Driver}: only local volumes move with their data` })
    if (m.Type !== undefined && !['volume', 'bind', 'tmpfs'].includes(m.Type)) refused.push({ field: `Mounts[${i}].Type`, why: `a ${m.Type} mount cannot move` })
  }
  const primaryNetwork = own === undefined && attached.some(a => a.network.name === mode) ? mode : undefined
  // The network NetworkMode names goes first: the container is created on it, the others connected.
  attached.sort((a, b) => a.network.name === primaryNetwork ? -1 : b.network.name === primaryNetwork ? 1 : 0)
  return { engine, hostPowers, refused, networks: attached, ...primaryNetwork === undefined ? {} : { primaryNetwork } }
}

/** Each set field of `fields` judged by `rules` (an unknown one refused), its refusals named `prefix.field`. */
function judgeFields (fields: Record<string, unknown>, rules: Readonly<Record<string, FieldRule>>, prefix: string, refused: Refusal[]): void {
  for (const [field, v] of Object.entries(fields)) {
    const rule = Object.hasOwn(rules, field) ? rules[field] : undefined
    const verdict = rule?.judge !== undefined ? rule.judge(v) : isUnset(v) ? 'default' : rule?.policy ?? 'refuse'
    if (verdict === 'refuse') refused.push({ field: `${prefix}.${field}`, why: rule?.note ?? UNKNOWN_FIELD })
  }
}

/** A network's definition from `GET /networks/{id}`, in the spec's words (its name as given: the container's name for it). */
export function networkSpecOf (name: string, def: EngineNetwork): NetworkSpec {
  return {
    name,
    driver: String(def.Driver ?? ''),
    options: { ...def.Options ?? {} },
    labels: { ...def.Labels ?? {} },
    subnets: (def.IPAM?.Config ?? []).map(p => ({ subnet: p.Subnet ?? '', gateway: p.Gateway ?? '', ipRange: p.IPRange ?? '' })).filter(p => p.subnet !== ''),
    internal: def.Internal === true,
    attachable: def.Attachable === true,
    enableIPv6: def.EnableIPv6 === true
  }
}

/** A user network judged carried, translated: its definition, the aliases (not the engine's own short ID), static addresses. */
function attachmentOf (name: string, endpoint: Record<string, unknown>, def: EngineNetwork, containerId: string | undefined): NetworkAttachment {
  const shortId = containerId?.slice(0, 12)
  const ipam = (endpoint.IPAMConfig ?? {}) as { IPv4Address?: string, IPv6Address?: string }
  const network = networkSpecOf(name, def)
  const aliases = ((endpoint.Aliases ?? []) as string[]).filter(a => a !== shortId)
  return { network, aliases, ipv4Address: ipam.IPv4Address ?? '', ipv6Address: ipam.IPv6Address ?? '' }
}

/** The host powers among carried settings (as names like 'HostConfig.CapAdd'). */
export function hostPowersOf (engine: EngineSettings | undefined): string[] {
  if (engine === undefined) return []
  const out: string[] = []
  for (const section of ['Config', 'HostConfig'] as const) {
    for (const [field, v] of Object.entries(section === 'Config' ? engine.config : engine.hostConfig)) {
      if (verdictOf(section, field, v) === 'host') out.push(`${section}.${field}`)
    }
  }
  return out
}

/** A refusal list as one line: "HostConfig.Links (why); ...". */
export function describeRefusals (refused: readonly Refusal[]): string {
  return refused.map(r => `${r.field} (${r.why})`).join('; ')
}

/**
 * Untrusted `spec.engine` to EngineSettings: only fields the table carries (as is or as host
 * powers), with values it carries; anything else is a FieldRefusedError naming the field. Whether
 * the host powers are allowed is the order's business (orders.ts checkHostPowers).
 */
export function parseEngineSettings (v: unknown): EngineSettings {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new FieldRefusedError('spec.engine must be an object')
  const o = v as Record<string, unknown>
  const out: EngineSettings = { config: {}, hostConfig: {} }
  for (const k of Object.keys(o)) if (k !== 'config' && k !== 'hostConfig') throw new FieldRefusedError(`spec.engine.${k} is not a section of the spec`)
  for (const [key, section] of [['config', 'Config'], ['hostConfig', 'HostConfig']] as const) {
    const fields = o[key] ?? {}
    if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) throw new FieldRefusedError(`spec.engine.${key} must be an object`)
    for (const [field, value] of Object.entries(fields)) {
      const rule = Object.hasOwn(SECTIONS[section], field) ? SECTIONS[section][field] : undefined
      const verdict = verdictOf(section, field, value)
      const carried = rule !== undefined && (rule.policy === 'carry' || rule.policy === 'host')
      if (!carried || verdict === 'refuse' || verdict === 'spec' || verdict === 'state' || verdict === 'client' || verdict === 'derived') {
        throw new FieldRefusedError(`the spec carries ${section}.${field}, which a move does not carry as is: ${whyRefused(section, field)}`)
      }
      out[key][field] = value
    }
  }
  return out
}

/** A network name as the engine takes it (`docker network create`). */
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/
/** An IPv4 or IPv6 address or CIDR, loosely: the engine refuses a malformed one itself. */
const ADDRESS = /^[0-9a-fA-F.:]{2,45}(?:\/[0-9]{1,3})?$/

/**
 * Untrusted `spec.networks` to NetworkAttachments: local bridge networks only, with the options the
 * table carries; anything else is a FieldRefusedError naming it (as the source's judgement would).
 */
export function parseNetworkAttachments (v: unknown): NetworkAttachment[] {
  if (!Array.isArray(v) || v.length > 64) throw new ProtocolError('spec.networks must be a list of at most 64')
  const names = new Set<string>()
  return v.map((x, i): NetworkAttachment => {
    const a = obj(x, `spec.networks[${i}]`)
    const n = obj(a.network, `spec.networks[${i}].network`)
    const name = str(n.name, `spec.networks[${i}].network.name`, 128)
    if (!NETWORK_NAME.test(name) || MODE_NETWORKS.includes(name) || names.has(name)) throw new ProtocolError(`spec.networks[${i}]: '${name}' is not a user-defined network name (or it is listed twice)`)
    names.add(name)
    if (n.driver !== 'bridge') throw new FieldRefusedError(`the spec carries Network[${name}].Driver '${String(n.driver)}': ${NETWORK_DEFINITION_RULES.Driver.note}`)
    const record = (r: unknown, what: string): Record<string, string> => Object.fromEntries(Object.entries(obj(r ?? {}, what)).map(([k, val]) => [str(k, `${what} key`, 256), str(val, `${what}.${k}`, 1024)]))
    const options = record(n.options, `Network[${name}].Options`)
    for (const k of Object.keys(options)) if (!CARRIED_BRIDGE_OPTIONS.includes(k)) throw new FieldRefusedError(`the spec carries Network[${name}].Options.${k}, which a move does not carry`)
    const address = (s: unknown, what: string): string => {
      const out = str(s ?? '', what, 64)
      if (out !== '' && !ADDRESS.test(out)) throw new ProtocolError(`${what} '${out}' is not an address`)
      return out
    }
    if (!Array.isArray(n.subnets) || n.subnets.length > 16) throw new ProtocolError(`Network[${name}] subnets must be a list`)
    const subnets = n.subnets.map((p, j) => {
      const po = obj(p, `Network[${name}].subnets[${j}]`)
      return { subnet: address(po.subnet, 'subnet'), gateway: address(po.gateway, 'gateway'), ipRange: address(po.ipRange, 'ipRange') }
    })
    if (!Array.isArray(a.aliases) || a.aliases.length > 64) throw new ProtocolError(`spec.networks[${i}].aliases must be a list`)
    return {
      network: {
        name, driver: 'bridge', options, labels: record(n.labels, `Network[${name}].Labels`), subnets,
        internal: n.internal === true, attachable: n.attachable === true, enableIPv6: n.enableIPv6 === true
      },
      aliases: a.aliases.map((al, j) => str(al, `spec.networks[${i}].aliases[${j}]`, 256)),
      ipv4Address: address(a.ipv4Address, 'ipv4Address'),
      ipv6Address: address(a.ipv6Address, 'ipv6Address')
    }
  })
}

// --- the table as docs/operations.md shows it ---------------------------------------------------

export const TABLE_BEGIN = '<!-- fidelity-table: generated from protocol/fidelity.ts by fidelityTableMarkdown(); test/unit/fidelity.test.ts checks it -->'
export const TABLE_END = '<!-- /fidelity-table -->'

/** The table in Markdown, one row per field, section by section. */
export function fidelityTableMarkdown (): string {
  const rows = ['| Field | Policy | What and why |', '|---|---|---|']
  const sections: Array<[string, Readonly<Record<string, FieldRule>>]> = [
    ['', INSPECT_RULES], ['Config.', CONFIG_RULES], ['HostConfig.', HOST_CONFIG_RULES], ['NetworkSettings.', NETWORK_RULES],
    ['NetworkSettings.Networks.<name>.', ENDPOINT_RULES], ['Network[<name>].', NETWORK_DEFINITION_RULES]
  ]
  for (const [prefix, rules] of sections) {
    for (const [field, rule] of Object.entries(rules)) rows.push(`| \`${prefix}${field}\` | ${rule.policy}${rule.judge !== undefined ? ' (by value)' : ''} | ${rule.note.replace(/\|/g, '\\|')} |`)
  }
  return [TABLE_BEGIN, ...rows, TABLE_END].join('\n')
}
