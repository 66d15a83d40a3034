/**
 * The lab: simulated Docker hosts on one Linux machine, for integration tests, benchmarks and the
 * demo. Each host is a network namespace `<prefix>-<name>` with its own address on a private
 * bridge, its own dockerd and its own Go-To agent holding a bundle from one lab CA.
 *
 *   const lab = new Lab()
 *   await lab.down()                 // whatever an earlier run left behind
 *   await lab.up(3)                  // vagrant-1, aws-1, azure-1
 *   await lab.partition('vagrant-1') // vagrant-1 | aws-1, azure-1
 *   await lab.cli(['peers', '--json'])
 *   await lab.down()
 *
 * Everything the lab makes is recorded in `<root>/lab.json`, so another process (the lab CLI) can
 * act on it; `down` also finds leftovers of a crashed run by the lab's prefix.
 */
import { mkdir, readdir, rm, rmdir } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { spawn } from 'node:child_process'
import { connect } from 'node:net'
import { basename, dirname, isAbsolute, join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'
import type Docker from 'dockerode'
import { CA_FILES, initCa, issueCertificate } from '../../certs/index.js'
import {
  LabAlreadyUpError, LabConfigError, LabError, LabNotBuiltError, LabNotRootError, LabNotUpError,
  LabProcessExitedError, UnknownLabHostError
} from './errors.js'
import {
  applyPartition, bridgeForwardRule, createBridge, createHostNetwork, createNatHostNetwork, deleteLink, deleteNetns, deleteRule,
  gatewayIp, hostIp, insertRule, listLinks, listNetns, parseSubnet, removePartition
} from './net.js'
import {
  containerIdsOf, isAlive, isOurs, killAndWait, mountsUnder, pidsInContainers, pidsInNetns, signalIfOurs,
  unmountAllUnder, type ProcRecord
} from './procs.js'
import {
  BASE_IMAGE, DEFAULT_CRIU_DIR, DEFAULT_ENGINES_DIR, DEFAULT_ENGINE_KIND, buildBaseTar, criuWrapper, engineClient, importBase, isEngineKind, logTail, removePodmanLeftovers, startEngine, waitEngineReady,
  type EngineKind, type EngineSpec
} from './engine.js'
import { readState, writeState, STATE_VERSION, type AgentRecord, type HostState, type LabState } from './state.js'
import { inNetns, labPath, run, spawnDetached, type RunResult } from './sys.js'
import { HOST_PRIVATE_PATHS, SSHD_PRIVSEP_DIR, SSH_PORT, backingDir, prepareSshd, prepareUsers, sshdCommand, type LabUser } from './sshd.js'
import { waitFor } from './wait.js'

export { BASE_IMAGE, type EngineKind }

export const DEFAULT_PREFIX = 'gotolab'
export const DEFAULT_SUBNET = '10.213.0.0/24'
/** Private subnet behind the routers of NAT'd hosts: router .1, host i (0-based) .10+i. */
export const DEFAULT_NAT_SUBNET = '10.213.1.0/24'
export const DEFAULT_AGENT_PORT = 4001
/** Cloud-like names and provider labels, handed out round robin: vagrant-1, aws-1, azure-1, vagrant-2, ... */
export const PROVIDERS = ['vagrant', 'aws', 'azure'] as const
/** An agent of the test profile listens within a second or two; allow for a loaded CI machine. */
export const AGENT_READY_TIMEOUT_MS = 30_000
/** How long a stopped agent gets to exit on SIGTERM before it is killed. */
export const AGENT_STOP_GRACE_MS = 5_000
/** Default limit for one operator CLI call. */
export const CLI_TIMEOUT_MS = 60_000

export interface LabOptions {
  /** Names everything the lab makes: namespaces `<prefix>-<host>`, bridge `<prefix>0`, veths `<prefix>-v<i>`. */
  prefix?: string
  /** Bridge in the root namespace (default `<prefix>0`). */
  bridge?: string
  /** The bridge gets .1, host i (0-based) gets .10+i (default 10.213.0.0/24). */
  subnet?: string
  /**
   * Private subnet of hosts behind NAT (HostSpec.nat): their routers get .1 there, host i .10+i
   * (default 10.213.1.0/24). Must not overlap `subnet`.
   */
  natSubnet?: string
  /** Data: engines' data roots, CA, bundles, agent state, logs, lab.json (default /var/lib/<prefix>). */
  root?: string
  /** Engines' exec roots and sockets, kept short for unix socket paths (default /run/<prefix>). */
  runRoot?: string
  /** Repository root holding dist/ (default: found from this file). */
  repo?: string
  /** Start an agent on every host when dist/agent/main.js exists (default true). */
  agents?: boolean
  /** Port of every host's main agent (default 4001). */
  agentPort?: number
  /** Timing profile of the agents (default 'test': short timings; the benchmark uses 'default' and 'lan'). */
  agentProfile?: 'test' | 'lan' | 'default'
  /**
   * Extra command-line arguments for a host's main agent, appended whenever it starts (up, start,
   * startAgent), e.g. `h => ['--metrics-listen', `${h.ip}:9464`]`. Not recorded in lab.json: a
   * restart from another process (the lab CLI) starts the agent without them.
   */
  agentArgs?: (host: LabHost) => string[]
  /** dockerd binary of kind 'docker-20' (default Debian's /usr/sbin/dockerd). */
  dockerd?: string
  /** Where `.ci/engines` extracted the newer engine kinds (default /var/cache/goto-lab/engines). */
  enginesDir?: string
  /** Where `.ci/criu` built CRIU for hosts with `criu: true` (default /var/cache/goto-lab/criu). */
  criuDir?: string
  /** Static busybox for the base image (default Debian's /bin/busybox from busybox-static). */
  busybox?: string
  /** Progress lines ("engine of aws-1 ready in 420 ms"); default silent. */
  log?: (line: string) => void
}

export interface HostSpec {
  name: string
  provider: string
  /** false: no main agent on this host (a fresh host to install one on); default true. */
  agent?: boolean
  /**
   * true puts the host behind NAT: its namespace sits on a private subnet behind a router namespace
   * `<prefix>-<name>.gw` that masquerades it and lets no connection in; its agent runs with
   * `--no-inbound`. The router takes the host's place on the bridge.
   */
  nat?: boolean
  /** The host's engine (default 'docker-20', Debian 12's); engines of a lab start in parallel. */
  engine?: EngineKind
  /**
   * true: the host takes live moves — its engine runs with `--experimental` and `.ci/criu`'s
   * wrapper first on its PATH, and its main agent is given that wrapper (`--criu`). Default false:
   * no CRIU anywhere on the host's paths.
   */
  criu?: boolean
}

export interface SshdOptions {
  /** Public key lines (`ssh-ed25519 AAAA... comment`) each user may log in with. */
  authorizedKeys: Record<string, string[]>
  /**
   * Non-root users the host has (in its own copies of /etc/passwd, group, shadow and sudoers.d;
   * needs Debian's sudo for `sudo: true`). Default none: only the machine's accounts.
   */
  users?: LabUser[]
}

/** A lab host's OpenSSH server. */
export interface SshdHandle {
  host: string
  ip: string
  port: number
  pid: number
  /** `ssh-ed25519 AAAA...`. */
  hostKey: string
  /** The line an operator's known_hosts holds for it: `<ip> ssh-ed25519 AAAA...`. */
  knownHostsLine: string
  logFile: string
  stop: () => Promise<void>
}

/** A simulated host as callers see it. */
export interface LabHost {
  name: string
  provider: string
  index: number
  /** The host's own address (for a NAT'd host: its private one, which no other host can reach). */
  ip: string
  netns: string
  /** Behind NAT: the router's namespace and its address on the bridge (the host's public face). */
  nat?: { router: string, publicIp: string }
  /** `<root>/<name>`. */
  dir: string
  dockerSocket: string
  /** DOCKER_HOST form of the socket: unix:///run/gotolab/<name>/docker.sock. */
  dockerHost: string
  /** Multiaddr of the host's main agent: /ip4/<ip>/tcp/4001. */
  agentAddr: string
  bundleDir: string
  /** Peer ID of the host's agent bundle (when agents were set up). */
  peerId?: string
  agentLog: string
  dockerLog: string
  dockerdPid?: number
  agentPid?: number
  engine: EngineKind
  /** Takes live moves (HostSpec.criu): experimental engine, CRIU on its PATH, the agent told where. */
  criu: boolean
}

export interface ExtraAgentOptions {
  /** Bundle the agent presents (e.g. from issueBundle, or from a foreign CA). */
  bundleDir: string
  port: number
  /** Multiaddrs to bootstrap from (default: the first host's main agent). */
  bootstrap?: string[]
  /** Appended to the agent's command line. */
  extraArgs?: string[]
  /** provider label (default: the host's). */
  provider?: string
}

export interface AgentHandle {
  host: string
  pid: number
  port: number
  /** Multiaddr it listens on. */
  addr: string
  logFile: string
  stateDir: string
  /** SIGTERM (default) with a grace period, then SIGKILL; resolves when the process is gone. */
  stop: (signal?: NodeJS.Signals) => Promise<void>
}

export interface CliOptions {
  /** Operator bundle (default: the lab's operator bundle). */
  bundle?: string
  /** Agent to dial (default: the first host's main agent). */
  agent?: string
  timeoutMs?: number
  /** Extra environment for the CLI process. */
  env?: Record<string, string>
}

export interface CliResult { code: number | null, stdout: string, stderr: string }

export interface HostStatus {
  name: string
  provider: string
  ip: string
  netns: boolean
  dockerd: 'running' | 'stopped'
  engine: 'answering' | 'not answering'
  agent: 'listening' | 'running' | 'stopped' | 'disabled'
  agentAddr: string
  dockerdPid?: number
  agentPid?: number
  /** 'A' for the named side of a partition, 'B' for the rest, undefined when healed. */
  side?: 'A' | 'B'
}

export interface DownReport {
  killed: number
  unmounted: number
  namespaces: string[]
  links: string[]
  rules: number
  removed: string[]
}

interface Config {
  prefix: string
  bridge: string
  subnet: string
  natSubnet: string
  root: string
  runRoot: string
  repo: string
  agents: boolean
  agentPort: number
  agentProfile: 'test' | 'lan' | 'default'
  agentArgs: (host: LabHost) => string[]
  dockerd: string
  enginesDir: string
  criuDir: string
  busybox: string
  log: (line: string) => void
}

const HOST_NAME = /^[a-z][a-z0-9-]{0,23}$/
/** Directories of `<root>` that are not hosts. */
const RESERVED_DIRS = ['ca', 'operator', 'extra', 'base']

/** Default host names and providers for n hosts: vagrant-1, aws-1, azure-1, vagrant-2, ... */
export function defaultHosts (n: number): HostSpec[] {
  return Array.from({ length: n }, (_, i) => {
    const provider = PROVIDERS[i % PROVIDERS.length]
    return { name: `${provider}-${Math.floor(i / PROVIDERS.length) + 1}`, provider }
  })
}

function defaultRepo (): string {
  // This file runs as <repo>/dist/test/lab/lab.js.
  return fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, '')
}

function assertSafeRoot (option: string, path: string, prefix: string): void {
  if (!isAbsolute(path) || normalize(path) !== path || path === '/' || !basename(path).startsWith(prefix)) {
    // down() removes these directories recursively: only accept paths that are plainly the lab's.
    throw new LabConfigError(`${option} '${path}' must be an absolute, normalized path whose last component starts with '${prefix}'`)
  }
}

function resolveConfig (o: LabOptions): Config {
  const prefix = o.prefix ?? DEFAULT_PREFIX
  // Interface names hold 15 characters: '<prefix>-v<i>' and '<prefix>-v<i>p' must fit.
  if (!/^[a-z][a-z0-9]{0,8}$/.test(prefix)) throw new LabConfigError(`prefix '${prefix}' must be 1-9 lowercase letters or digits, starting with a letter`)
  const cfg: Config = {
    prefix,
    bridge: o.bridge ?? `${prefix}0`,
    subnet: o.subnet ?? DEFAULT_SUBNET,
    natSubnet: o.natSubnet ?? DEFAULT_NAT_SUBNET,
    root: o.root ?? `/var/lib/${prefix}`,
    runRoot: o.runRoot ?? `/run/${prefix}`,
    repo: o.repo ?? defaultRepo(),
    agents: o.agents ?? true,
    agentPort: o.agentPort ?? DEFAULT_AGENT_PORT,
    agentProfile: o.agentProfile ?? 'test',
    agentArgs: o.agentArgs ?? (() => []),
    dockerd: o.dockerd ?? '/usr/sbin/dockerd',
    enginesDir: o.enginesDir ?? DEFAULT_ENGINES_DIR,
    criuDir: o.criuDir ?? DEFAULT_CRIU_DIR,
    busybox: o.busybox ?? '/bin/busybox',
    log: o.log ?? (() => {})
  }
  if (cfg.bridge.length > 15) throw new LabConfigError(`bridge name '${cfg.bridge}' is longer than 15 characters`)
  const a = parseSubnet(cfg.subnet)
  const b = parseSubnet(cfg.natSubnet)
  const len = Math.min(a.prefixLen, b.prefixLen)
  const mask = (~0 << (32 - len)) >>> 0
  if (((a.base & mask) >>> 0) === ((b.base & mask) >>> 0)) throw new LabConfigError(`natSubnet ${cfg.natSubnet} overlaps subnet ${cfg.subnet}`)
  assertSafeRoot('root', cfg.root, prefix)
  assertSafeRoot('runRoot', cfg.runRoot, prefix)
  return cfg
}

function assertRoot (): void {
  if (process.getuid?.() !== 0) throw new LabNotRootError('the lab needs root (network namespaces, iptables, dockerd); run it with sudo')
}

/** True when a TCP connection to host:port is accepted within timeoutMs. */
export async function tcpOpen (host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const sock = connect({ host, port })
    const done = (ok: boolean): void => { sock.destroy(); resolve(ok) }
    sock.setTimeout(timeoutMs, () => done(false))
    sock.once('connect', () => done(true))
    sock.once('error', () => done(false))
  })
}

/** Directories outside the lab's roots that the engines (or iproute2) create when absent. */
async function sharedDirCandidates (): Promise<string[]> {
  // Removal goes in this order: children first, and /run/mount (libmount's utab, which umount
  // recreates) after /run/netns, whose removal unmounts it.
  const dirs = ['/run/docker/plugins', '/run/docker', '/run/containerd/s', '/run/containerd', '/run/netns', '/run/mount', '/sys/fs/cgroup/docker',
    // Podman's: CNI's cache, and cgroupfs parents of its containers (libpod_parent/libpod-<id>).
    '/var/lib/cni/results', '/var/lib/cni', '/sys/fs/cgroup/libpod_parent']
  try {
    for (const e of await readdir('/sys/fs/cgroup', { withFileTypes: true })) {
      if (e.isDirectory()) dirs.push(`/sys/fs/cgroup/${e.name}/docker`)
    }
  } catch { /* no cgroup fs */ }
  return dirs
}

/**
 * containerd 1.6 puts every shim's socket in /run/containerd/s/ whatever its own state directory;
 * the name is sha256(<containerd address>/<namespace>/<id>). A killed shim leaves it behind.
 */
function shimSocket (execRoot: string, containerId: string): string {
  const hash = createHash('sha256').update(join(execRoot, 'containerd/containerd.sock', 'moby', containerId)).digest('hex')
  return `/run/containerd/s/${hash}`
}

export class Lab {
  readonly config: Readonly<Config>
  private state: LabState | undefined
  private saving: Promise<void> = Promise.resolve()

  constructor (options: LabOptions = {}) {
    this.config = resolveConfig(options)
  }

  /** A Lab for the lab that an earlier `up` (maybe in another process) made; LabNotUpError if none. */
  static async open (options: LabOptions = {}): Promise<Lab> {
    const lab = new Lab(options)
    await lab.load()
    return lab
  }

  get stateFile (): string { return join(this.config.root, 'lab.json') }
  get caDir (): string { return join(this.config.root, 'ca') }
  get operatorBundle (): string { return join(this.config.root, 'operator') }
  get agentMain (): string { return join(this.config.repo, 'dist/agent/main.js') }
  get controlMain (): string { return join(this.config.repo, 'dist/control/main.js') }
  private get partitionChain (): string { return `${this.config.prefix.toUpperCase()}-PART` }

  /** The hosts of the lab, in order (the first is the bootstrap host). */
  get hosts (): LabHost[] {
    return this.requireState().hosts.map(h => this.view(h))
  }

  host (name: string): LabHost {
    return this.view(this.hostState(name))
  }

  /** Reads lab.json; LabNotUpError when there is no lab. */
  async load (): Promise<LabState> {
    const s = await readState(this.stateFile)
    if (s === undefined) throw new LabNotUpError(`no lab is up (no ${this.stateFile}); run \`npm run lab -- up\` first`)
    this.state = s
    return s
  }

  // --- up ----------------------------------------------------------------------------------

  /**
   * Builds n hosts (default names) or the given ones: network, engines, base image, CA, agents.
   * Aborting `signal` stops it between steps (what exists by then is for `down`).
   */
  async up (hosts: number | HostSpec[] = 3, opts: { signal?: AbortSignal } = {}): Promise<LabHost[]> {
    const signal = opts.signal
    assertRoot()
    const cfg = this.config
    const specs = typeof hosts === 'number' ? defaultHosts(hosts) : hosts
    this.checkSpecs(specs)
    const leftovers = [
      ...(existsSync(this.stateFile) ? [this.stateFile] : []),
      ...await listNetns(cfg.prefix),
      ...(await listLinks()).filter(l => l === cfg.bridge)
    ]
    if (leftovers.length > 0) throw new LabAlreadyUpError(`a lab is already up or was left behind (${leftovers.join(', ')}); run \`npm run lab -- down\` first`)
    const t0 = Date.now()

    const createdDirs: string[] = []
    for (const d of await sharedDirCandidates()) if (!existsSync(d)) createdDirs.push(d)
    await mkdir(cfg.root, { recursive: true })
    await mkdir(cfg.runRoot, { recursive: true })
    const subnet = parseSubnet(cfg.subnet)
    const gateway = gatewayIp(subnet)
    this.state = {
      version: STATE_VERSION,
      prefix: cfg.prefix,
      bridge: cfg.bridge,
      subnet: cfg.subnet,
      gateway,
      root: cfg.root,
      runRoot: cfg.runRoot,
      repo: cfg.repo,
      agents: cfg.agents,
      agentPort: cfg.agentPort,
      createdAt: new Date().toISOString(),
      caDir: this.caDir,
      operatorBundle: this.operatorBundle,
      rules: [],
      createdDirs,
      hosts: specs.map((s, index) => ({ ...this.newHostState(s, index, hostIp(subnet, index)), ...(s.agent === false ? { noAgent: true } : {}) }))
    }
    await this.save()

    // Network: bridge, the FORWARD rule, one namespace per host.
    await createBridge(cfg.bridge, `${gateway}/${subnet.prefixLen}`)
    const rule = bridgeForwardRule(cfg.bridge)
    await insertRule(undefined, rule)
    this.state.rules.push(rule)
    await this.save()
    for (const h of this.state.hosts) {
      signal?.throwIfAborted()
      await mkdir(h.dir, { recursive: true })
      if (h.nat === undefined) {
        await createHostNetwork({ netns: h.netns, veth: h.veth, bridge: cfg.bridge, ip: h.ip, prefixLen: subnet.prefixLen, gateway })
      } else {
        await createNatHostNetwork({
          netns: h.netns, router: h.nat.router, veth: h.veth, bridge: cfg.bridge, publicIp: h.nat.publicIp, prefixLen: subnet.prefixLen,
          gateway, privateIp: h.ip, privateSubnet: cfg.natSubnet, privateGateway: gatewayIp(parseSubnet(cfg.natSubnet))
        })
      }
    }
    cfg.log(`network: bridge ${cfg.bridge} ${gateway}/${subnet.prefixLen}, ${this.state.hosts.length} namespaces (${Date.now() - t0} ms)`)

    // Engines start while the base image tarball and the certificates are made.
    const withAgents = cfg.agents && existsSync(this.agentMain)
    if (cfg.agents && !withAgents) cfg.log(`agents: ${this.agentMain} is not built; starting engines only`)
    const t1 = Date.now()
    const [tar] = await Promise.all([
      buildBaseTar(join(cfg.root, 'base'), cfg.busybox),
      Promise.all(this.state.hosts.map(async h => await this.startEngineOf(h, signal))),
      withAgents ? this.makeBundles() : Promise.resolve()
    ])
    cfg.log(`engines: ${this.state.hosts.length} answering /_ping (${Date.now() - t1} ms)`)
    signal?.throwIfAborted()
    const t2 = Date.now()
    await Promise.all(this.state.hosts.map(async h => { await importBase(engineClient(h.dockerSocket), tar) }))
    cfg.log(`base image: ${BASE_IMAGE} imported into every engine (${Date.now() - t2} ms)`)

    if (withAgents) {
      signal?.throwIfAborted()
      const t3 = Date.now()
      const [first, ...rest] = this.state.hosts.filter(h => h.noAgent !== true)
      if (first !== undefined) await this.startMainAgent(first, true, signal)
      signal?.throwIfAborted()
      await Promise.all(rest.map(async h => { await this.startMainAgent(h, true, signal) }))
      cfg.log(`agents: ${rest.length + (first === undefined ? 0 : 1)} listening (${Date.now() - t3} ms)`)
    }
    cfg.log(`lab up: ${this.state.hosts.length} hosts in ${Date.now() - t0} ms`)
    return this.hosts
  }

  private checkSpecs (specs: HostSpec[]): void {
    if (specs.length < 1) throw new LabConfigError('a lab needs at least one host')
    if (specs[0].agent === false) throw new LabConfigError(`the first host (${specs[0].name}) is the others' bootstrap: it must run an agent`)
    if (specs[0].nat === true) throw new LabConfigError(`the first host (${specs[0].name}) is every agent's bootstrap host and must be reachable: put a NAT'd host later`)
    const seen = new Set<string>()
    for (const s of specs) {
      if (!HOST_NAME.test(s.name)) throw new LabConfigError(`host name '${s.name}' must be 1-24 lowercase letters, digits or '-', starting with a letter`)
      if (seen.has(s.name)) throw new LabConfigError(`host name '${s.name}' is given twice`)
      if (s.engine !== undefined && !isEngineKind(s.engine)) throw new LabConfigError(`engine '${String(s.engine)}' of ${s.name} is not one of the lab's kinds`)
      if (RESERVED_DIRS.includes(s.name)) throw new LabConfigError(`host name '${s.name}' is taken by the lab's own ${s.name}/ directory`)
      seen.add(s.name)
    }
    hostIp(parseSubnet(this.config.subnet), specs.length - 1)
  }

  private newHostState (s: HostSpec, index: number, ip: string): HostState {
    const dir = join(this.config.root, s.name)
    const execRoot = join(this.config.runRoot, s.name)
    const netns = `${this.config.prefix}-${s.name}`
    return {
      name: s.name,
      provider: s.provider,
      index,
      // Behind NAT the bridge address is the router's; the host has a private one.
      ip: s.nat === true ? hostIp(parseSubnet(this.config.natSubnet), index) : ip,
      // '.' cannot appear in a host name, so the router's namespace never collides with a host's.
      nat: s.nat === true ? { router: `${netns}.gw`, publicIp: ip } : undefined,
      netns,
      veth: `${this.config.prefix}-v${index}`,
      dir,
      dataRoot: join(dir, 'docker'),
      execRoot,
      dockerSocket: join(execRoot, 'docker.sock'),
      dockerPidfile: join(execRoot, 'docker.pid'),
      dockerLog: join(dir, 'dockerd.log'),
      bundleDir: join(dir, 'bundle'),
      extraAgents: [],
      engine: s.engine ?? DEFAULT_ENGINE_KIND,
      ...s.criu === true ? { criu: true } : {}
    }
  }

  private async makeBundles (): Promise<void> {
    const s = this.requireState()
    const t0 = Date.now()
    await this.ensureCa()
    await issueCertificate(this.caDir, { role: 'operator', name: 'operator', out: this.operatorBundle })
    for (const h of s.hosts) {
      const info = await issueCertificate(this.caDir, { role: 'agent', name: h.name, out: h.bundleDir })
      h.peerId = info.peerId
    }
    await this.save()
    this.config.log(`certificates: lab CA, operator and ${s.hosts.length} agent bundles (${Date.now() - t0} ms)`)
  }

  private async ensureCa (): Promise<void> {
    if (!existsSync(join(this.caDir, CA_FILES.cert))) await initCa(this.caDir, { name: `${this.config.prefix} lab CA` })
  }

  // --- engines -----------------------------------------------------------------------------

  private engineSpec (h: HostState): EngineSpec {
    return {
      kind: h.engine ?? DEFAULT_ENGINE_KIND,
      enginesDir: this.config.enginesDir,
      netns: h.netns,
      dataRoot: h.dataRoot,
      execRoot: h.execRoot,
      socket: h.dockerSocket,
      pidfile: h.dockerPidfile,
      logFile: h.dockerLog,
      dockerd: this.config.dockerd,
      ...h.criu === true ? { criuDir: this.config.criuDir } : {}
    }
  }

  private async startEngineOf (h: HostState, signal?: AbortSignal): Promise<void> {
    const spec = this.engineSpec(h)
    // A containerd left running by a dockerd that died alone would hold the socket.
    if (h.containerd !== undefined && await isOurs(h.containerd)) await killAndWait([h.containerd.pid])
    const procs = await startEngine(spec, signal)
    h.dockerd = procs.dockerd
    h.containerd = procs.containerd
    await this.save()
    await waitEngineReady(h.name, spec, h.dockerd, signal)
  }

  /** A dockerode client for the host's engine. */
  docker (name: string): Docker {
    return engineClient(this.hostState(name).dockerSocket)
  }

  // --- agents ------------------------------------------------------------------------------

  private agentEnv (): NodeJS.ProcessEnv {
    // The agent reads GOTO_* and DOCKER_HOST too: only its command line may configure it.
    const env: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GOTO_') && k !== 'DOCKER_HOST') env[k] = v
    env.PATH = labPath()
    return env
  }

  private agentArgv (h: HostState, o: { bundleDir: string, port: number, stateDir: string, bootstrap: string[], provider: string, extraArgs: string[] }): string[] {
    return [
      process.execPath, this.agentMain,
      '--bundle', o.bundleDir,
      '--listen', `/ip4/${h.ip}/tcp/${o.port}`,
      '--docker', `unix://${h.dockerSocket}`,
      '--state-dir', o.stateDir,
      '--profile', this.config.agentProfile,
      '--label', `lab=${this.config.prefix}`,
      '--label', `provider=${o.provider}`,
      ...h.nat !== undefined ? ['--no-inbound'] : [],
      ...h.criu === true ? ['--criu', criuWrapper(this.config.criuDir)] : [],
      ...o.bootstrap.flatMap(b => ['--bootstrap', b]),
      ...o.extraArgs
    ]
  }

  private async spawnAgent (h: HostState, o: { bundleDir: string, port: number, stateDir: string, logFile: string, bootstrap: string[], provider: string, extraArgs: string[] }): Promise<AgentRecord> {
    if (!existsSync(this.agentMain)) throw new LabNotBuiltError(`${this.agentMain} does not exist; run \`npm run build\``)
    await mkdir(o.stateDir, { recursive: true })
    const argv = this.agentArgv(h, o)
    const proc = await spawnDetached(inNetns(h.netns, []), argv, o.logFile, this.agentEnv())
    return { ...proc, addr: `/ip4/${h.ip}/tcp/${o.port}`, port: o.port, logFile: o.logFile, stateDir: o.stateDir, bundleDir: o.bundleDir }
  }

  private async waitAgentListening (h: HostState, a: AgentRecord, signal?: AbortSignal): Promise<void> {
    await waitFor(async () => {
      if (!await isAlive(a.pid)) {
        throw new LabProcessExitedError(`agent ${a.addr} on ${h.name} exited while starting; last lines of ${a.logFile}:\n${await logTail(a.logFile)}`)
      }
      return await this.agentListening(h, a.port)
    }, { timeoutMs: AGENT_READY_TIMEOUT_MS, intervalMs: 100, what: `agent ${a.addr} on ${h.name} to accept TCP connections`, signal })
  }

  /**
   * True when something listens on the host's TCP port. A NAT'd host cannot be reached from here,
   * so it is asked inside its namespace.
   */
  private async agentListening (h: HostState, port: number): Promise<boolean> {
    if (h.nat === undefined) return await tcpOpen(h.ip, port)
    const r = await run(inNetns(h.netns, ['ss', '-Hltn', `sport = :${port}`]), { allowFail: true })
    return r.code === 0 && r.stdout.trim() !== ''
  }

  /** Bootstrap list of a host's main agent: the first host's agent; for the first host, the others'. */
  private mainBootstrap (h: HostState, initial: boolean): string[] {
    const s = this.requireState()
    const addr = (x: HostState): string => `/ip4/${x.ip}/tcp/${s.agentPort}`
    if (h.index !== 0) return [addr(s.hosts[0])]
    // On `up` the first host has nobody to join; restarted later, it rejoins through the others.
    return initial ? [] : s.hosts.slice(1).map(addr)
  }

  private async startMainAgent (h: HostState, initial = true, signal?: AbortSignal): Promise<void> {
    h.agent = await this.spawnAgent(h, {
      bundleDir: h.bundleDir,
      port: this.requireState().agentPort,
      stateDir: join(h.dir, 'state'),
      logFile: join(h.dir, 'agent.log'),
      bootstrap: this.mainBootstrap(h, initial),
      provider: h.provider,
      extraArgs: this.config.agentArgs(this.view(h))
    })
    await this.save()
    await this.waitAgentListening(h, h.agent, signal)
  }

  private handle (h: HostState, a: AgentRecord): AgentHandle {
    return {
      host: h.name,
      pid: a.pid,
      port: a.port,
      addr: a.addr,
      logFile: a.logFile,
      stateDir: a.stateDir,
      stop: async (signal: NodeJS.Signals = 'SIGTERM') => { await this.stopAgentProcess(h.name, a, signal) }
    }
  }

  /**
   * Without options: (re)starts the host's main agent (a no-op when it runs). With options: starts
   * another agent in the host's namespace, e.g. a rogue one with a foreign bundle on port 4002.
   * Resolves once the agent accepts TCP connections.
   */
  async startAgent (name: string, opts?: ExtraAgentOptions): Promise<AgentHandle> {
    const s = await this.load()
    const h = this.hostState(name)
    if (opts === undefined) {
      if (h.agent === undefined || !await isOurs(h.agent)) await this.startMainAgent(h, false)
      if (h.agent === undefined) throw new LabError(`the agent of ${name} did not start`)
      return this.handle(h, h.agent)
    }
    if (opts.port === s.agentPort) throw new LabConfigError(`port ${opts.port} is the main agent's; give an extra agent another port`)
    const a = await this.spawnAgent(h, {
      bundleDir: opts.bundleDir,
      port: opts.port,
      stateDir: join(h.dir, `agent-${opts.port}`, 'state'),
      logFile: join(h.dir, `agent-${opts.port}.log`),
      bootstrap: opts.bootstrap ?? [`/ip4/${s.hosts[0].ip}/tcp/${s.agentPort}`],
      provider: opts.provider ?? h.provider,
      extraArgs: opts.extraArgs ?? []
    })
    h.extraAgents.push(a)
    await this.save()
    await this.waitAgentListening(h, a)
    return this.handle(h, a)
  }

  /** Kills the host's main agent (SIGKILL by default: a crash); the engine keeps running. */
  async killAgent (name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.load()
    const h = this.hostState(name)
    if (h.agent !== undefined) await this.stopAgentProcess(name, h.agent, signal)
  }

  private async stopAgentProcess (name: string, a: AgentRecord, signal: NodeJS.Signals): Promise<void> {
    if (await signalIfOurs(a, signal)) {
      if (signal === 'SIGKILL') {
        await killAndWait([a.pid])
      } else {
        try {
          await waitFor(async () => !await isAlive(a.pid), { timeoutMs: AGENT_STOP_GRACE_MS, intervalMs: 50, what: `agent ${a.addr} to exit on ${signal}` })
        } catch {
          if (await isOurs(a)) await killAndWait([a.pid])
        }
      }
    }
    // The lab may be gone by now (a test's after() stopping an agent after down): nothing to record.
    const s = await readState(this.stateFile)
    if (s === undefined) return
    this.state = s
    const h = this.hostState(name)
    if (h.agent?.pid === a.pid) h.agent = undefined
    h.extraAgents = h.extraAgents.filter(x => x.pid !== a.pid)
    await this.save()
  }

  /** Issues a bundle from the lab CA into `<root>/extra/<name>` and returns its directory. */
  async issueBundle (name: string, role: 'agent' | 'operator'): Promise<string> {
    await this.load()
    await this.ensureCa()
    const out = join(this.config.root, 'extra', name)
    await mkdir(dirname(out), { recursive: true })
    await issueCertificate(this.caDir, { role, name, out })
    return out
  }

  // --- SSH ----------------------------------------------------------------------------------

  /**
   * Starts an OpenSSH server on the host (port 22 of its address) in its own mount namespace, with
   * the host's own /opt/goto, /etc/goto and /var/lib/goto (see sshd.ts). Restarts it if it runs.
   */
  async startSshd (name: string, opts: SshdOptions): Promise<SshdHandle> {
    assertRoot()
    const s = await this.load()
    const h = this.hostState(name)
    if (h.sshd !== undefined && await isOurs(h.sshd)) await killAndWait([h.sshd.pid])
    const dir = join(h.dir, 'ssh')
    const fsDir = join(h.dir, 'fs')
    for (const p of [SSHD_PRIVSEP_DIR, ...HOST_PRIVATE_PATHS]) {
      // Mount points on the real machine; the lab removes the ones it made (when empty) on down.
      if (!existsSync(p)) {
        await mkdir(p, { recursive: true, mode: 0o755 })
        s.createdDirs.push(p)
      }
      if (p !== SSHD_PRIVSEP_DIR) await mkdir(backingDir(fsDir, p), { recursive: true })
    }
    await this.save()
    const prepared = await prepareSshd({ dir, runDir: h.execRoot, ip: h.ip, authorizedKeys: opts.authorizedKeys })
    const logFile = join(h.dir, 'sshd.log')
    const binds: Array<[string, string]> = HOST_PRIVATE_PATHS.map(p => [backingDir(fsDir, p), p])
    if ((opts.users ?? []).length > 0) binds.push(...await prepareUsers(fsDir, opts.users ?? []))
    const cmd = sshdCommand(h.netns, binds, prepared.configFile, logFile)
    const proc = await spawnDetached(cmd.prefix, cmd.argv, join(h.dir, 'sshd.out'), { ...process.env, PATH: labPath() })
    if (proc.startTime === '') throw new LabError(`sshd on ${name} (pid ${proc.pid}) exited at once; see ${join(h.dir, 'sshd.out')}`)
    // sshd rewrites its command line ("sshd: ... [listener] 0 of 10-100 startups"): it is known by
    // its PID and start time alone (an empty argv matches any command line).
    h.sshd = { ...proc, argv: [], port: SSH_PORT, configFile: prepared.configFile, logFile, hostKey: prepared.hostKey, fsDir }
    await this.save()
    const rec = h.sshd
    await waitFor(async () => {
      if (!await isAlive(rec.pid)) throw new LabProcessExitedError(`sshd on ${name} exited while starting:\n${await logTail(join(h.dir, 'sshd.out'))}\n${await logTail(logFile)}`)
      return await tcpOpen(h.ip, SSH_PORT)
    }, { timeoutMs: AGENT_READY_TIMEOUT_MS, intervalMs: 50, what: `sshd on ${name} to accept connections` })
    return {
      host: name,
      ip: h.ip,
      port: SSH_PORT,
      pid: rec.pid,
      hostKey: rec.hostKey,
      knownHostsLine: `${h.ip} ${rec.hostKey}`,
      logFile,
      stop: async () => { if (await isOurs(rec)) await killAndWait([rec.pid]) }
    }
  }

  /**
   * Runs `argv` on the host as its sshd's sessions do: in its network namespace and in the mount
   * namespace with its own /opt/goto, /etc/goto and /var/lib/goto. Needs startSshd first.
   */
  async hostExec (name: string, argv: string[], opts: { input?: string, allowFail?: boolean, signal?: AbortSignal } = {}): Promise<RunResult> {
    await this.load()
    const h = this.hostState(name)
    if (h.sshd === undefined || !await isOurs(h.sshd)) throw new LabError(`host ${name} has no running sshd (its mount namespace); call startSshd first`)
    return await run(['nsenter', '-t', String(h.sshd.pid), '--net', '--mount', '--', ...argv], { ...opts, env: { ...this.agentEnv() } })
  }

  /** Where a path of HOST_PRIVATE_PATHS on the host lives on this machine (to inspect it). */
  hostPath (name: string, path: string): string {
    const h = this.hostState(name)
    const base = HOST_PRIVATE_PATHS.find(p => path === p || path.startsWith(`${p}/`))
    if (base === undefined) throw new LabConfigError(`${path} is not one of the host's own paths (${HOST_PRIVATE_PATHS.join(', ')})`)
    return join(backingDir(join(h.dir, 'fs'), base), path.slice(base.length))
  }

  // --- host failure --------------------------------------------------------------------------

  /**
   * The host dies: SIGKILL for its agents, its dockerd, every process in its namespace and every
   * process of its containers. Its namespace, disk and mounts stay, as a crashed machine's would.
   */
  async kill (name: string): Promise<void> {
    assertRoot()
    await this.load()
    const h = this.hostState(name)
    const t0 = Date.now()
    const recorded = [h.agent, ...h.extraAgents, h.dockerd, h.containerd, h.sshd]
    const ids = await containerIdsOf([h.dataRoot])
    const n = await this.killRounds(async () => {
      const pids: number[] = []
      for (const r of recorded) if (r !== undefined && await isOurs(r)) pids.push(r.pid)
      pids.push(...(await pidsInNetns([h.netns])).get(h.netns) ?? [])
      pids.push(...await pidsInContainers(ids))
      return pids
    })
    // Left by SIGKILL; a live process that reused the PID would make the restarted engine give up.
    for (const f of [h.dockerPidfile, join(h.execRoot, 'containerd/containerd.pid'), ...[...ids].map(id => shimSocket(h.execRoot, id))]) {
      await rm(f, { force: true })
    }
    h.dockerd = undefined
    h.containerd = undefined
    h.agent = undefined
    h.extraAgents = []
    await this.save()
    this.config.log(`kill ${name}: ${n} processes killed (${Date.now() - t0} ms)`)
  }

  /** Brings a killed host back: engine first (waits for /_ping), then its main agent. */
  async start (name: string): Promise<void> {
    assertRoot()
    const s = await this.load()
    const h = this.hostState(name)
    if (!(await listNetns(s.prefix)).includes(h.netns)) throw new LabError(`namespace ${h.netns} is gone; the lab is broken, run down and up`)
    const t0 = Date.now()
    if (!await isOurs(h.dockerd)) await this.startEngineOf(h)
    // A restarted dockerd re-inserts its FORWARD rules; put the partition's jumps first again.
    if (s.partition !== undefined) await this.applyPartitionTo(h, s.partition)
    this.config.log(`start ${name}: engine answering (${Date.now() - t0} ms)`)
    if (s.agents && h.noAgent !== true && existsSync(this.agentMain) && !await isOurs(h.agent)) {
      await this.startMainAgent(h, false)
      this.config.log(`start ${name}: agent listening on ${h.agent?.addr ?? '?'} (${Date.now() - t0} ms)`)
    }
  }

  /** Kills what `pids()` finds, again and again, until it finds nothing (forks race the first round). */
  private async killRounds (pids: () => Promise<number[]>): Promise<number> {
    const all = new Set<number>()
    for (let round = 0; round < 5; round++) {
      const found = await pids()
      if (found.length === 0) return all.size
      found.forEach(p => all.add(p))
      await killAndWait(found)
    }
    const left = await pids()
    if (left.length > 0) throw new LabError(`processes keep appearing: ${left.join(', ')}`)
    return all.size
  }

  // --- partitions --------------------------------------------------------------------------

  /**
   * The named hosts form one side, all other hosts the other; packets between the sides are
   * dropped inside each host's namespace, so the root namespace still reaches every host.
   * Replaces any earlier partition.
   */
  async partition (...names: string[]): Promise<void> {
    const s = await this.load()
    for (const n of names) this.hostState(n)
    const side = new Set(names)
    if (side.size === 0 || side.size === s.hosts.length) {
      throw new LabConfigError(`a partition needs hosts on both sides; name some but not all of: ${s.hosts.map(h => h.name).join(', ')}`)
    }
    for (const h of s.hosts) await this.applyPartitionTo(h, [...side])
    s.partition = [...side]
    await this.save()
    const other = s.hosts.filter(h => !side.has(h.name)).map(h => h.name)
    this.config.log(`partition: ${[...side].join(', ')} | ${other.join(', ')}`)
  }

  /** The addresses a host's packets carry: its own, and behind NAT its router's too. */
  private faces (h: HostState): string[] {
    return h.nat === undefined ? [h.ip] : [h.ip, h.nat.publicIp]
  }

  private async applyPartitionTo (h: HostState, sideA: string[]): Promise<void> {
    const s = this.requireState()
    const inA = sideA.includes(h.name)
    const blocked = s.hosts.filter(x => sideA.includes(x.name) !== inA).flatMap(x => this.faces(x))
    await applyPartition(h.netns, this.partitionChain, blocked)
  }

  /**
   * Cuts the direct path between two hosts only: packets between them are dropped in both their
   * namespaces (a NAT'd host's public face too), every other path stays, e.g. through a relay.
   * Replaces any earlier partition or cut; heal() undoes it.
   */
  async cut (a: string, b: string): Promise<void> {
    const s = await this.load()
    const ha = this.hostState(a)
    const hb = this.hostState(b)
    if (ha === hb) throw new LabConfigError('a cut needs two different hosts')
    for (const h of s.hosts) if (h !== ha && h !== hb) await removePartition(h.netns, this.partitionChain)
    await applyPartition(ha.netns, this.partitionChain, this.faces(hb))
    await applyPartition(hb.netns, this.partitionChain, this.faces(ha))
    s.partition = undefined
    await this.save()
    this.config.log(`cut: ${a} -/- ${b}`)
  }

  /** Removes the partition: every host reaches every other again. */
  async heal (): Promise<void> {
    const s = await this.load()
    for (const h of s.hosts) await removePartition(h.netns, this.partitionChain)
    s.partition = undefined
    await this.save()
    this.config.log('heal: partition removed')
  }

  // --- operator CLI ------------------------------------------------------------------------

  /** Runs `node dist/control/main.js ...args` from the root namespace as the lab's operator. */
  async cli (args: string[], opts: CliOptions = {}): Promise<CliResult> {
    const s = await this.load()
    if (!existsSync(this.controlMain)) throw new LabNotBuiltError(`${this.controlMain} does not exist; run \`npm run build\``)
    const env: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GOTO_')) env[k] = v
    Object.assign(env, {
      GOTO_BUNDLE: opts.bundle ?? s.operatorBundle,
      GOTO_AGENT: opts.agent ?? `/ip4/${s.hosts[0].ip}/tcp/${s.agentPort}`,
      ...opts.env
    })
    const child = spawn(process.execPath, [this.controlMain, ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      signal: AbortSignal.timeout(opts.timeoutMs ?? CLI_TIMEOUT_MS),
      killSignal: 'SIGKILL'
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', (err) => {
        if (err.name === 'AbortError') resolve(null)
        else reject(err)
      })
      child.once('close', (c) => resolve(c))
    })
    if (code === null && stderr === '') stderr = `goto ${args.join(' ')}: no answer within ${opts.timeoutMs ?? CLI_TIMEOUT_MS} ms, killed`
    return { code, stdout, stderr }
  }

  // --- status ------------------------------------------------------------------------------

  async status (): Promise<HostStatus[]> {
    const s = await this.load()
    const namespaces = await listNetns(s.prefix)
    return await Promise.all(s.hosts.map(async (h): Promise<HostStatus> => {
      const dockerdUp = await isOurs(h.dockerd)
      let answering = false
      if (dockerdUp) {
        try {
          await engineClient(h.dockerSocket, 2000).ping()
          answering = true
        } catch { /* not answering */ }
      }
      const agentUp = await isOurs(h.agent)
      const agent = !s.agents || h.noAgent === true ? 'disabled' : !agentUp ? 'stopped' : await this.agentListening(h, s.agentPort) ? 'listening' : 'running'
      return {
        name: h.name,
        provider: h.provider,
        ip: h.ip,
        netns: namespaces.includes(h.netns),
        dockerd: dockerdUp ? 'running' : 'stopped',
        engine: answering ? 'answering' : 'not answering',
        agent,
        agentAddr: `/ip4/${h.ip}/tcp/${s.agentPort}`,
        dockerdPid: dockerdUp ? h.dockerd?.pid : undefined,
        agentPid: agentUp ? h.agent?.pid : undefined,
        side: s.partition === undefined ? undefined : s.partition.includes(h.name) ? 'A' : 'B'
      }
    }))
  }

  // --- down --------------------------------------------------------------------------------

  /**
   * Removes everything the lab made, and what a crashed earlier run left, found by the prefix:
   * processes, mounts, namespaces, links, iptables rules, directories. Safe to run twice and when
   * nothing exists.
   */
  async down (): Promise<DownReport> {
    assertRoot()
    const t0 = Date.now()
    const recordedState = await readState(this.stateFile)
    const s = recordedState
    const prefix = this.config.prefix
    const root = s?.root ?? this.config.root
    const runRoot = s?.runRoot ?? this.config.runRoot
    const bridge = s?.bridge ?? this.config.bridge
    const report: DownReport = { killed: 0, unmounted: 0, namespaces: [], links: [], rules: 0, removed: [] }

    // 1. Processes: recorded ones (still ours), everything in the lab's namespaces, containers' processes.
    const namespaces = await listNetns(prefix)
    const hostDirs = await this.hostDirsUnder(root)
    const dataRoots = hostDirs.map(d => join(root, d, 'docker'))
    const ids = await containerIdsOf(dataRoots)
    const recorded: ProcRecord[] = []
    for (const h of s?.hosts ?? []) for (const r of [h.agent, ...h.extraAgents, h.dockerd, h.containerd, h.sshd]) if (r !== undefined) recorded.push(r)
    report.killed = await this.killRounds(async () => {
      const pids: number[] = []
      for (const r of recorded) if (await isOurs(r)) pids.push(r.pid)
      for (const list of (await pidsInNetns(namespaces)).values()) pids.push(...list)
      pids.push(...await pidsInContainers(ids))
      return pids
    })

    // 2. Mounts under the data and run roots (overlays, container netns and shm), deepest first.
    report.unmounted = await unmountAllUnder([root, runRoot], async (paths) => {
      await run(['umount', '-l', ...paths], { allowFail: true })
    })

    // 3. What the engines left outside the roots, named by our container IDs.
    for (const d of hostDirs) {
      for (const id of await containerIdsOf([join(root, d, 'docker')])) await rm(shimSocket(join(runRoot, d), id), { force: true })
    }
    // Podman hosts: their containers' namespaces in /run/netns and CNI's cache (engine.ts).
    for (const d of hostDirs) await removePodmanLeftovers(join(root, d, 'docker'))
    for (const parent of await sharedDirCandidates()) {
      if (!parent.startsWith('/sys/fs/cgroup/')) continue
      for (const id of ids) await rmdir(join(parent, id)).catch(() => {})
    }

    // 4. Network: namespaces (their veth ends go with them), leftover veths, the bridge, our rules.
    for (const ns of namespaces) {
      await deleteNetns(ns)
      report.namespaces.push(ns)
    }
    const vethName = new RegExp(`^${prefix}-v\\d+p?$`)
    for (const link of await listLinks()) {
      if (link === bridge || vethName.test(link)) {
        await deleteLink(link)
        report.links.push(link)
      }
    }
    const rules = [...(s?.rules ?? []), bridgeForwardRule(bridge)]
    for (const r of rules) report.rules += await deleteRule(undefined, r)

    // 5. Directories: shared ones the lab created (only if empty), then the lab's roots.
    for (const d of s?.createdDirs ?? []) {
      if (await this.removeIfEmpty(d)) report.removed.push(d)
    }
    const stillMounted = await mountsUnder([root, runRoot])
    if (stillMounted.length > 0) throw new LabError(`not removing ${root} and ${runRoot}: still mounted: ${stillMounted.join(', ')}`)
    for (const d of [runRoot, root]) {
      if (existsSync(d)) {
        await rm(d, { recursive: true, force: true })
        report.removed.push(d)
      }
    }
    this.state = undefined
    this.config.log(`lab down: ${report.killed} processes killed, ${report.unmounted} mounts, ${report.namespaces.length} namespaces, ` +
      `${report.links.length} links, ${report.rules} iptables rules removed (${Date.now() - t0} ms)`)
    return report
  }

  private async hostDirsUnder (root: string): Promise<string[]> {
    try {
      const entries = await readdir(root, { withFileTypes: true })
      return entries.filter(e => e.isDirectory() && existsSync(join(root, e.name, 'docker'))).map(e => e.name)
    } catch {
      return []
    }
  }

  /** rmdir (after unmounting it if it is a mount point, like iproute2's /run/netns) when empty. */
  private async removeIfEmpty (dir: string): Promise<boolean> {
    // A cgroup directory always lists its control files; the kernel refuses rmdir while it has
    // child cgroups or tasks, which is the emptiness that counts there.
    if (!dir.startsWith('/sys/fs/cgroup/')) {
      try {
        if ((await readdir(dir)).length > 0) return false
      } catch {
        return false
      }
    }
    if ((await mountsUnder([dir])).includes(dir)) await run(['umount', '-l', dir], { allowFail: true })
    try {
      await rmdir(dir)
      return true
    } catch {
      return false
    }
  }

  // --- helpers -----------------------------------------------------------------------------

  private requireState (): LabState {
    if (this.state === undefined) throw new LabNotUpError(`no lab is loaded; call up() or load() (or run \`npm run lab -- up\`)`)
    return this.state
  }

  private hostState (name: string): HostState {
    const s = this.requireState()
    const h = s.hosts.find(x => x.name === name)
    if (h === undefined) throw new UnknownLabHostError(`no host '${name}' in the lab; hosts: ${s.hosts.map(x => x.name).join(', ')}`)
    return h
  }

  private view (h: HostState): LabHost {
    const s = this.requireState()
    return {
      name: h.name,
      provider: h.provider,
      index: h.index,
      ip: h.ip,
      netns: h.netns,
      nat: h.nat,
      dir: h.dir,
      dockerSocket: h.dockerSocket,
      dockerHost: `unix://${h.dockerSocket}`,
      agentAddr: `/ip4/${h.ip}/tcp/${s.agentPort}`,
      bundleDir: h.bundleDir,
      peerId: h.peerId,
      agentLog: join(h.dir, 'agent.log'),
      dockerLog: h.dockerLog,
      dockerdPid: h.dockerd?.pid,
      agentPid: h.agent?.pid,
      engine: h.engine ?? DEFAULT_ENGINE_KIND,
      criu: h.criu === true
    }
  }

  /** Writes lab.json; calls are serialised so concurrent steps of `up` never interleave writes. */
  private async save (): Promise<void> {
    const s = this.requireState()
    const next = this.saving.then(async () => { await writeState(this.stateFile, s) })
    this.saving = next.catch(() => {})
    await next
  }
}
