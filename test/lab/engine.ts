/**
 * One Docker Engine per simulated host: dockerd started inside the host's network namespace with
 * its own data root, exec root, socket and pidfile; and the offline base image `gotolab/base:latest`
 * (Debian's static busybox and its applet links) imported into every engine from one tarball.
 *
 * Engine kinds (ENGINE_KINDS): Debian 12's dockerd 20.10 (which starts its own containerd), and the
 * newer engines that `.ci/engines` extracts from Debian 13's and unstable's packages into
 * `<enginesDir>/docker-26` and `docker-28`. Those run with Debian 12's runc (theirs needs a newer
 * glibc) and a containerd of their own package that the lab starts itself, in the host's namespace,
 * with its root under the data root and its state and socket under the exec root, where dockerd
 * 20.10 would put its own: `<execRoot>/containerd/containerd.sock`.
 *
 * Kind 'podman' is Debian 12's Podman 4.3 (`.ci/setup` installs the package): `podman system
 * service` serving the Docker API on the host's socket, in the host's namespace, with a
 * configuration of its own (containers.conf, storage.conf, registries.conf and a CNI network
 * directory under the host's directory, named by CONTAINERS_* variables) so that it never reads or
 * writes the machine's own Podman state: storage under the data root, run state and file locks
 * under the exec root, cgroupfs (no systemd here), and no registry at all — Podman pulls from
 * public registries when an image is missing, so it knows none and searches none.
 *
 * Live moves (EngineSpec.criuDir, a Docker kind): dockerd runs with `--experimental` (checkpoints)
 * and the `criu` wrapper of `.ci/criu` (Debian unstable's CRIU 4.2 in a root of its own) first on
 * its PATH, which its containerd, shim and runc inherit: runc runs `criu` from PATH.
 */
import { copyFile, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises'
import { createReadStream, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import Docker from 'dockerode'
import { run, inNetns, spawnDetached, labPath } from './sys.js'
import { isAlive, type ProcRecord } from './procs.js'
import { waitFor } from './wait.js'
import { LabError, LabProcessExitedError } from './errors.js'

export const BASE_IMAGE = 'gotolab/base:latest'
/** dockerd here is ready in well under a second; allow for a loaded 2-core CI machine. */
export const ENGINE_READY_TIMEOUT_MS = 30_000

/** The engines a lab host can run; the default is Debian 12's. */
export const ENGINE_KINDS = ['docker-20', 'docker-26', 'docker-28', 'docker-28-containerd', 'podman'] as const
export type EngineKind = typeof ENGINE_KINDS[number]
export const DEFAULT_ENGINE_KIND: EngineKind = 'docker-20'
/** Where `.ci/engines` extracts the newer engines. */
export const DEFAULT_ENGINES_DIR = '/var/cache/goto-lab/engines'
/** Where `.ci/criu` builds CRIU's root and its wrapper (`bin/criu`). */
export const DEFAULT_CRIU_DIR = '/var/cache/goto-lab/criu'

/** The `criu` wrapper `.ci/criu` writes into a CRIU directory. */
export function criuWrapper (criuDir: string): string {
  return join(criuDir, 'bin', 'criu')
}

export function isEngineKind (s: string): s is EngineKind {
  return (ENGINE_KINDS as readonly string[]).includes(s)
}

/** The extracted package directory of a kind (undefined: the system's own engine). */
function packageDir (kind: EngineKind, enginesDir: string): string | undefined {
  switch (kind) {
    case 'docker-20':
    case 'podman': return undefined
    case 'docker-26': return join(enginesDir, 'docker-26')
    case 'docker-28':
    case 'docker-28-containerd': return join(enginesDir, 'docker-28')
  }
}

export interface EngineSpec {
  kind: EngineKind
  /** Where `.ci/engines` put the newer engines (DEFAULT_ENGINES_DIR). */
  enginesDir: string
  netns: string
  dataRoot: string
  execRoot: string
  socket: string
  pidfile: string
  logFile: string
  /** Path of the dockerd binary of kind 'docker-20' (Debian's engine 20.10). */
  dockerd: string
  /** Path of the podman binary of kind 'podman' (default Debian's /usr/bin/podman). */
  podman?: string
  /** Live moves: `--experimental` and `<criuDir>/bin` first on dockerd's PATH (`.ci/criu`'s directory). */
  criuDir?: string
}

/** The processes of one engine: dockerd, and the containerd the lab started for it (newer kinds). */
export interface EngineProcs {
  dockerd: ProcRecord
  containerd?: ProcRecord
}

/** containerd's socket for dockerd: where dockerd 20.10 puts the one it starts itself. */
export function containerdSocket (e: EngineSpec): string {
  return join(e.execRoot, 'containerd', 'containerd.sock')
}

function containerdConfig (e: EngineSpec): string {
  // version 2 is read by containerd 1.7 and 2.1 alike.
  return [
    'version = 2',
    `root = "${join(e.dataRoot, 'containerd', 'daemon')}"`,
    `state = "${join(e.execRoot, 'containerd', 'daemon')}"`,
    // No CRI (no Kubernetes here; 2.x splits it into several plugins), no /opt/containerd, and no
    // NRI, whose socket would be the machine's shared /var/run/nri/nri.sock.
    'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",',
    '  "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri"]',
    '[grpc]',
    `  address = "${containerdSocket(e)}"`,
    '[ttrpc]',
    `  address = "${containerdSocket(e)}.ttrpc"`,
    '[debug]',
    '  address = ""',
    ''
  ].join('\n')
}

export function dockerdArgv (e: EngineSpec): string[] {
  const dir = packageDir(e.kind, e.enginesDir)
  const dockerd = dir === undefined ? e.dockerd : join(dir, 'usr/sbin/dockerd')
  return [
    dockerd, '--data-root', e.dataRoot, '--exec-root', e.execRoot, '-H', `unix://${e.socket}`, '--pidfile', e.pidfile,
    '--config-file', join(dirname(e.logFile), 'daemon.json'),
    ...dir === undefined ? [] : ['--containerd', containerdSocket(e)],
    ...e.criuDir === undefined ? [] : ['--experimental']
  ]
}

/**
 * PATH of an engine: its own package's binaries (containerd, its shim, docker-proxy, docker-init)
 * first, then the system's, whose runc (Debian 12's) every kind runs with.
 */
function enginePath (e: EngineSpec): string {
  const dir = packageDir(e.kind, e.enginesDir)
  const path = dir === undefined ? labPath() : labPath(`${join(dir, 'usr/sbin')}:${join(dir, 'usr/bin')}:${process.env.PATH ?? ''}`)
  return e.criuDir === undefined ? path : `${dirname(criuWrapper(e.criuDir))}:${path}`
}

/** Podman's own configuration files of a host (its CONTAINERS_* variables name them). */
function podmanConfDir (e: EngineSpec): string {
  return join(dirname(e.logFile), 'podman')
}

/** The subnet of Podman's default network inside a host's namespace (each host has its own). */
const PODMAN_SUBNET = '10.88.0.0/16'

/**
 * Writes the host's Podman configuration and returns the environment that makes Podman read only
 * it. Everything Podman keeps lives under the host's data root (images, containers, volumes,
 * libpod's database), exec root (run state, file locks, CNI's IP allocations) or its directory.
 */
async function writePodmanConfig (e: EngineSpec): Promise<Record<string, string>> {
  const dir = podmanConfDir(e)
  const limits = await hardLimits()
  const cni = join(dir, 'cni')
  await mkdir(cni, { recursive: true })
  const files = {
    CONTAINERS_CONF: join(dir, 'containers.conf'),
    CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'),
    CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf')
  }
  await writeFile(files.CONTAINERS_CONF, [
    '[containers]',
    // Podman's default would be journald logs and a systemd cgroup: neither runs here.
    'log_driver = "k8s-file"',
    // Podman raises a rootful container's open files to 1048576, which runc may not do here (a
    // machine that is itself a container): keep this machine's own hard limits.
    `default_ulimits = [${limits.map(l => `"${l}"`).join(', ')}]`,
    '[engine]',
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    `events_logfile_path = "${join(dirname(e.logFile), 'podman-events.log')}"`,
    // File locks, not the machine-wide /libpod_lock shared-memory segment another Podman would share.
    'lock_type = "file"',
    `tmp_dir = "${join(e.execRoot, 'libpod')}"`,
    `static_dir = "${join(e.dataRoot, 'libpod')}"`,
    `volume_path = "${join(e.dataRoot, 'volumes')}"`,
    'runtime = "runc"',
    '[network]',
    'network_backend = "cni"',
    'cni_plugin_dirs = ["/usr/lib/cni"]',
    `network_config_dir = "${cni}"`,
    ''
  ].join('\n'))
  await writeFile(files.CONTAINERS_STORAGE_CONF, [
    '[storage]',
    'driver = "overlay"',
    `graphroot = "${join(e.dataRoot, 'storage')}"`,
    `runroot = "${join(e.execRoot, 'storage')}"`,
    ''
  ].join('\n'))
  // No registry: an image that is not here is an error, never a pull.
  await writeFile(files.CONTAINERS_REGISTRIES_CONF, 'unqualified-search-registries = []\n')
  // Podman's default network, written here so that its IP allocations (CNI host-local) stay under
  // the exec root instead of the machine's /var/lib/cni.
  await writeFile(join(cni, 'podman.conflist'), JSON.stringify({
    cniVersion: '0.4.0',
    name: 'podman',
    plugins: [
      {
        type: 'bridge', bridge: 'cni-podman0', isGateway: true, ipMasq: true, hairpinMode: true,
        ipam: { type: 'host-local', routes: [{ dst: '0.0.0.0/0' }], ranges: [[{ subnet: PODMAN_SUBNET, gateway: '10.88.0.1' }]], dataDir: join(e.execRoot, 'cni-ipam') }
      },
      { type: 'portmap', capabilities: { portMappings: true } },
      { type: 'firewall' },
      { type: 'tuning' }
    ]
  }, null, 2) + '\n')
  return files
}

/**
 * Podman 4.3 sets its own process limit to 32768 processes when it starts (measured: the service
 * runs with 32768 whatever it inherited), and a container cannot be given more than that.
 */
const PODMAN_OWN_NPROC = 32768

/** `nofile=N:N` and `nproc=M:M`: hard limits this process and Podman's service have, which a container may have too. */
async function hardLimits (): Promise<string[]> {
  const text = await readFile('/proc/self/limits', 'utf8')
  const out: string[] = []
  for (const [name, row, cap] of [['nofile', 'Max open files', Infinity], ['nproc', 'Max processes', PODMAN_OWN_NPROC]] as const) {
    const m = new RegExp(`^${row}\\s+\\S+\\s+(\\d+)`, 'm').exec(text)
    if (m !== null) {
      const n = Math.min(Number(m[1]), cap)
      out.push(`${name}=${n}:${n}`)
    }
  }
  return out
}

/** Where CNI (as Podman 4.3 drives it) caches each container's attachment, whatever Podman's roots. */
const CNI_RESULTS_DIR = '/var/lib/cni/results'

/**
 * What a Podman host leaves outside the lab's roots, found from its data root after its processes
 * are gone: the network namespaces of its containers (Podman 4.3 as root puts them in /run/netns
 * as `netns-<uuid>`, named in its libpod database) and CNI's cached results
 * (`/var/lib/cni/results/podman-<container id>-eth0`). Removes them; returns how many.
 */
export async function removePodmanLeftovers (dataRoot: string): Promise<number> {
  let removed = 0
  const db = join(dataRoot, 'storage', 'libpod', 'bolt_state.db')
  if (existsSync(db)) {
    const names = new Set((await readFile(db)).toString('latin1').match(/\/run\/netns\/netns-[0-9a-f-]{36}/g) ?? [])
    for (const path of names) {
      if (!existsSync(path)) continue
      await run(['ip', 'netns', 'del', path.slice('/run/netns/'.length)], { allowFail: true })
      removed++
    }
  }
  let ids: string[] = []
  try {
    ids = (await readdir(join(dataRoot, 'storage', 'overlay-containers'))).filter(n => /^[0-9a-f]{64}$/.test(n))
  } catch { /* no containers */ }
  let cached: string[] = []
  try {
    cached = await readdir(CNI_RESULTS_DIR)
  } catch { /* no CNI cache */ }
  for (const f of cached) {
    if (ids.some(id => f.startsWith(`podman-${id}-`))) {
      await rm(join(CNI_RESULTS_DIR, f), { force: true })
      removed++
    }
  }
  return removed
}

/** `podman system service` on the host's socket, with no idle timeout. */
export function podmanArgv (e: EngineSpec): string[] {
  return [
    e.podman ?? '/usr/bin/podman', '--root', join(e.dataRoot, 'storage'), '--runroot', join(e.execRoot, 'storage'),
    '--storage-driver', 'overlay', '--log-level', 'info', 'system', 'service', '--time', '0', `unix://${e.socket}`
  ]
}

/** Starts the engine (and for the newer kinds its containerd first, waiting for its socket). */
export async function startEngine (e: EngineSpec, signal?: AbortSignal): Promise<EngineProcs> {
  await mkdir(e.dataRoot, { recursive: true })
  await mkdir(e.execRoot, { recursive: true })
  await mkdir(dirname(e.logFile), { recursive: true })
  if (e.criuDir !== undefined) {
    if (e.kind === 'podman') throw new LabError(`live moves (criu) need a Docker engine; ${e.netns} runs podman`)
    if (!existsSync(criuWrapper(e.criuDir))) throw new LabError(`${criuWrapper(e.criuDir)} does not exist: run .ci/criu (or .ci/setup) for a host with criu`)
  }
  if (e.kind === 'podman') {
    const bin = e.podman ?? '/usr/bin/podman'
    if (!existsSync(bin)) throw new LabError(`${bin} does not exist: run .ci/setup (it installs Debian's podman) for the engine of kind podman`)
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: labPath(), ...await writePodmanConfig(e) }
    delete env.DOCKER_HOST
    delete env.XDG_CONFIG_HOME
    delete env.XDG_RUNTIME_DIR
    await rm(e.socket, { force: true })
    return { dockerd: await spawnDetached(inNetns(e.netns, []), podmanArgv(e), e.logFile, env) }
  }
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: enginePath(e) }
  delete env.DOCKER_HOST
  const features = e.kind === 'docker-28-containerd' ? { 'containerd-snapshotter': true } : {}
  await writeFile(join(dirname(e.logFile), 'daemon.json'), JSON.stringify({ features }) + '\n')
  const dir = packageDir(e.kind, e.enginesDir)
  let containerd: ProcRecord | undefined
  if (dir !== undefined) {
    const bin = join(dir, 'usr/bin/containerd')
    if (!existsSync(bin)) throw new LabError(`${bin} does not exist: run .ci/engines (or .ci/setup) to fetch the engine of kind ${e.kind}`)
    const config = join(dirname(e.logFile), 'containerd.toml')
    await writeFile(config, containerdConfig(e))
    await rm(containerdSocket(e), { force: true })
    const log = join(dirname(e.logFile), 'containerd.log')
    const proc = await spawnDetached(inNetns(e.netns, []), [bin, '--config', config], log, env)
    containerd = proc
    await waitFor(async () => {
      if (!await isAlive(proc.pid)) throw new LabProcessExitedError(`containerd of ${e.netns} exited while starting; last lines of ${log}:\n${await logTail(log)}`)
      return existsSync(containerdSocket(e))
    }, { timeoutMs: ENGINE_READY_TIMEOUT_MS, intervalMs: 20, what: `containerd of ${e.netns} to listen on ${containerdSocket(e)}`, signal })
  }
  const dockerd = await spawnDetached(inNetns(e.netns, []), dockerdArgv(e), e.logFile, env)
  return { dockerd, containerd }
}

/** A dockerode client for an engine's socket; `timeoutMs` bounds each request (for pings). */
export function engineClient (socket: string, timeoutMs?: number): Docker {
  return new Docker({ socketPath: socket, timeout: timeoutMs })
}

export async function logTail (file: string, lines = 15): Promise<string> {
  try {
    const text = await readFile(file, 'utf8')
    return text.trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

/** Polls `/_ping` until the engine answers; fails at once if dockerd exits. */
export async function waitEngineReady (name: string, e: EngineSpec, proc: ProcRecord, signal?: AbortSignal, timeoutMs = ENGINE_READY_TIMEOUT_MS): Promise<void> {
  const docker = engineClient(e.socket, 2000)
  await waitFor(async () => {
    if (!await isAlive(proc.pid)) {
      throw new LabProcessExitedError(`dockerd of ${name} exited while starting; last lines of ${e.logFile}:\n${await logTail(e.logFile)}`)
    }
    try {
      await docker.ping()
      return true
    } catch {
      return false
    }
  }, { timeoutMs, intervalMs: 50, what: `the engine of ${name} to answer /_ping on ${e.socket}`, signal })
}

/**
 * Writes the base image's root filesystem as a tar file: /bin/busybox plus one symlink per applet
 * (`busybox --list-full`), a few directories and a passwd file. The tar is deterministic (sorted,
 * fixed owner and mtime), so every engine records the same layer diff ID for it.
 */
export async function buildBaseTar (workDir: string, busybox: string): Promise<string> {
  const rootfs = join(workDir, 'rootfs')
  const tar = join(workDir, 'base.tar')
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'root', 'tmp', 'var', 'proc', 'sys', 'dev']) {
    await mkdir(join(rootfs, d), { recursive: true })
  }
  await run(['chmod', '1777', join(rootfs, 'tmp')])
  await copyFile(busybox, join(rootfs, 'bin/busybox'))
  await run(['chmod', '0755', join(rootfs, 'bin/busybox')])
  const list = (await run([busybox, '--list-full'])).stdout.split('\n').map(l => l.trim()).filter(l => l !== '')
  for (const applet of list) {
    if (applet === 'bin/busybox' || applet.includes('..')) continue
    await mkdir(join(rootfs, dirname(applet)), { recursive: true })
    await symlink('/bin/busybox', join(rootfs, applet))
  }
  await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n')
  await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n')
  await run(['tar', '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', rootfs, '-cf', tar, '.'])
  return tar
}

/** `docker import` of the tar as BASE_IMAGE, reading the whole progress stream for errors. */
export async function importBase (docker: Docker, tar: string): Promise<void> {
  const [repo, tag] = BASE_IMAGE.split(':')
  const stream = await docker.importImage(createReadStream(tar), { repo, tag })
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, events: Array<{ error?: string, errorDetail?: { message?: string } }>) => {
      if (err !== null) { reject(err); return }
      const bad = events.find(e => e.error !== undefined || e.errorDetail !== undefined)
      if (bad !== undefined) reject(new LabError(`docker import of ${BASE_IMAGE} failed: ${bad.error ?? bad.errorDetail?.message}`))
      else resolve()
    })
  })
  await docker.getImage(BASE_IMAGE).inspect()
}
