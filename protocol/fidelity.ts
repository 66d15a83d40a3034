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
import type { EngineSettings } from './container.js'
import { FieldRefusedError } from './errors.js'

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
    note: 'default and bridge: the destination\'s default bridge; none carried; host is a host power; container:<name> is refused; a user network is refused as NetworkSettings.Networks.<name>',
    judge: v => v === '' || v === 'default' || v === 'bridge' || v === undefined ? 'default' : v === 'none' ? 'carry' : v === 'host' ? 'host' : 'refuse'
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

/** `NetworkSettings`: only which networks the container is on matters; the rest is addresses. */
export const NETWORK_RULES: Readonly<Record<string, FieldRule>> = {
  Networks: refuse('the networks it is on: the one HostConfig.NetworkMode names (default bridge, host, none) moves with it; any other (a user-defined network) is refused as NetworkSettings.Networks.<name> until networks are translated'),
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
  return Object.hasOwn(SECTIONS[section], field) ? SECTIONS[section][field].note : 'a setting this agent does not know yet (a newer engine\'s?): refused until the fidelity table covers it'
}

export interface Refusal { field: string, why: string }

export interface Judgement {
  /** The settings carried as is (host powers among them). */
  engine: EngineSettings
  /** Fields carried only with the operator's --allow-host-access, e.g. 'HostConfig.CapAdd'. */
  hostPowers: string[]
  /** Fields that stop the move, with the table's reason. */
  refused: Refusal[]
}

/** The parts of an inspect the judgement reads. */
export interface InspectSections {
  Config?: Record<string, unknown>
  HostConfig?: Record<string, unknown>
  NetworkSettings?: { Networks?: Record<string, unknown> | null } | null
  Mounts?: Array<{ Type?: string, Driver?: string, Name?: string }> | null
}

/** Every field of the inspect's Config, HostConfig, networks and mounts, judged by the table. */
export function judgeContainer (c: InspectSections): Judgement {
  const engine: EngineSettings = { config: {}, hostConfig: {} }
  const hostPowers: string[] = []
  const refused: Refusal[] = []
  const networks = Object.keys(c.NetworkSettings?.Networks ?? {})
  const mode = String(c.HostConfig?.NetworkMode ?? '')
  for (const section of ['Config', 'HostConfig'] as const) {
    const out = section === 'Config' ? engine.config : engine.hostConfig
    for (const [field, v] of Object.entries(c[section] ?? {})) {
      const verdict = verdictOf(section, field, v)
      const name = `${section}.${field}`
      if (verdict === 'carry' || verdict === 'host') out[field] = v
      if (verdict === 'host') hostPowers.push(name)
      // A user network is refused below, by the network's own name.
      if (verdict === 'refuse' && !(field === 'NetworkMode' && networks.includes(mode))) refused.push({ field: name, why: whyRefused(section, field) })
    }
  }
  // The one network a move carries: the one NetworkMode names, if it is not a user network.
  const own = ['', 'default', 'bridge'].includes(mode) ? 'bridge' : mode === 'host' || mode === 'none' ? mode : undefined
  for (const n of networks) {
    if (n !== own) refused.push({ field: `NetworkSettings.Networks.${n}`, why: 'a user-defined network: networks are not carried yet (the container would land on the default bridge, without its aliases and peers)' })
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
  return { engine, hostPowers, refused }
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

// --- the table as docs/operations.md shows it ---------------------------------------------------

export const TABLE_BEGIN = '<!-- fidelity-table: generated from protocol/fidelity.ts by fidelityTableMarkdown(); test/unit/fidelity.test.ts checks it -->'
export const TABLE_END = '<!-- /fidelity-table -->'

/** The table in Markdown, one row per field, section by section. */
export function fidelityTableMarkdown (): string {
  const rows = ['| Field | Policy | What and why |', '|---|---|---|']
  const sections: Array<[string, Readonly<Record<string, FieldRule>>]> = [['', INSPECT_RULES], ['Config.', CONFIG_RULES], ['HostConfig.', HOST_CONFIG_RULES], ['NetworkSettings.', NETWORK_RULES]]
  for (const [prefix, rules] of sections) {
    for (const [field, rule] of Object.entries(rules)) rows.push(`| \`${prefix}${field}\` | ${rule.policy}${rule.judge !== undefined ? ' (by value)' : ''} | ${rule.note.replace(/\|/g, '\\|')} |`)
  }
  return [TABLE_BEGIN, ...rows, TABLE_END].join('\n')
}
