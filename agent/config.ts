/**
 * The agent's configuration: flags, a JSON config file (`--config`) and environment variables,
 * merged with flags first, then environment, then file, then defaults. This is the only module of
 * the agent that reads argv and env (main.ts hands them in). Every bad value becomes a ConfigError
 * naming the option.
 */
import { parseArgs } from 'node:util'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import type { Multiaddr } from '@multiformats/multiaddr'
import { parseTcpMultiaddr } from '../protocol/multiaddr.js'
import { ConfigError } from '../protocol/errors.js'
import { DEFAULT_DOCKER, DEFAULT_LISTEN, parseDockerEndpoint, parseLabels, type DockerEndpoint } from '../protocol/options.js'
import { PROFILES, type ProfileName, type Timings } from './timings.js'
import { parseLinkRules, type LinkRule } from './transfer/links.js'

// Shared with the CLI (protocol/options.ts); still exported from here for the agent's modules.
export { DEFAULT_DOCKER, DEFAULT_LISTEN, parseDockerEndpoint, parseLabels, type DockerEndpoint }

export interface AgentConfig {
  bundleDir: string
  listen: Multiaddr[]
  announce: Multiaddr[]
  bootstrap: Multiaddr[]
  /** DOCKER_HOST-style endpoint: unix:///path or tcp://host:port. */
  docker: DockerEndpoint
  /** Must equal the certificate's name when given. */
  name: string | undefined
  labels: Record<string, string>
  /**
   * This host accepts no inbound connections (behind NAT): it announces no direct address, only
   * relayed ones through reservations on reachable members, and does not relay for others.
   */
  noInbound: boolean
  /** Read image layers only through `docker save`, never from the engine's storage directory. */
  dockerSaveOnly: boolean
  /** Send every named volume of a move as an archive inside the freeze (no volume rounds), and offer no rounds to sources. */
  volumeSpoolOnly: boolean
  stateDir: string
  profile: ProfileName
  /** The profile's timings, with the snapshot interval overridden when given. */
  timings: Timings
  /** Replica holders per protected container (failover). */
  replicas: number
  logLevel: string
  /** Where to serve Prometheus metrics; undefined (the default) serves none. */
  metricsListen: MetricsListen | undefined
  /** The mesh's link table (agent/transfer/links.ts); empty: the defaults decide every link. */
  links: LinkRule[]
  /**
   * The CRIU binary the agent checks before a live move (`criu check`, `criu --version`): a path,
   * or a name looked up on PATH. It should be the one the engine's runc runs (on dockerd's PATH).
   */
  criu: string
  /**
   * TEST ONLY (--test-hide-cpu-flags): CPU flags this agent leaves out of what it reports for a
   * live move, as if its CPU lacked them: the lab simulates a destination a source's checkpoint
   * must not restore on. Never set on a real host (a source hiding a flag its processes use would
   * let their checkpoint reach a CPU without it).
   */
  hideCpuFlags?: string[]
}

/** A TCP address for the metrics endpoint. `host` is an IP literal (IPv6 without brackets). */
export interface MetricsListen { host: string, port: number }

export const DEFAULT_STATE_DIR = '/var/lib/goto-agent'
/** `criu` on PATH: where a distribution package puts it, and where runc looks for it. */
export const DEFAULT_CRIU = 'criu'
/**
 * The host a bare `--metrics-listen PORT` binds to. The endpoint has no authentication, so it
 * listens on loopback unless the operator names another address (see docs/threat-model.md).
 */
export const DEFAULT_METRICS_HOST = '127.0.0.1'
/** One replica holder: a protected container survives the death of its host; 2 survive two deaths at once. */
export const DEFAULT_REPLICAS = 1
/** More replicas than this would make every snapshot a broadcast in any realistic mesh. */
const MAX_REPLICAS = 8
/** Snapshots more often than this would keep a container frozen a noticeable share of the time. */
const MIN_SNAPSHOT_INTERVAL_S = 1

export const AGENT_USAGE = `Usage: goto-agent --bundle DIR [options]

Runs the Go-To agent on a Docker host: joins the mesh, answers status, keeps a peer table, moves
containers, snapshots protected ones and runs them again when their host dies.

Options (flag / environment / config-file key; flags win over environment, environment over the file):
  --bundle DIR          identity bundle from 'goto ca issue --role agent'   GOTO_BUNDLE     bundle
  --listen MULTIADDR    address to listen on (default ${DEFAULT_LISTEN})  GOTO_LISTEN  listen
  --announce MULTIADDR  address to tell peers (repeatable; default: the listen addresses)
                                                                            GOTO_ANNOUNCE   announce
  --bootstrap MULTIADDR a mesh member to join through (repeatable; /p2p/<id> optional)
                                                                            GOTO_BOOTSTRAP  bootstrap
  --docker ENDPOINT     unix:///path/docker.sock or tcp://host:port (default ${DEFAULT_DOCKER})
                                                                            DOCKER_HOST     docker
  --name NAME           expected host name; must match the bundle's certificate   GOTO_NAME   name
  --label KEY=VALUE     a label for this host, e.g. provider=aws (repeatable)   GOTO_LABELS labels
  --no-inbound          this host accepts no inbound connections (behind NAT): it is reached
                        through circuit relays on reachable members, which every reachable agent
                        runs for authenticated members (default: off)
                                                                            GOTO_NO_INBOUND=1  noInbound
  --docker-save-only    read image layers to send only through 'docker save' (default: read
                        them from an overlay2 engine's storage on this host, which starts at once;
                        'docker save' first copies the whole image to disk)
                                                                            GOTO_DOCKER_SAVE_ONLY=1  dockerSaveOnly
  --volume-spool-only   copy a moved container's named volumes whole inside the freeze (default:
                        local volumes are synced in rounds while it runs, only the last difference
                        inside the freeze)                    GOTO_VOLUME_SPOOL_ONLY=1  volumeSpoolOnly
  --state-dir DIR       where the agent keeps state (default ${DEFAULT_STATE_DIR})  GOTO_STATE_DIR  stateDir
  --profile NAME        timing profile: default (WAN), lan or test (default: default)
                                                                            GOTO_PROFILE    profile
  --replicas K          replica holders per protected container (default ${DEFAULT_REPLICAS})
                                                                            GOTO_REPLICAS   replicas
  --snapshot-interval SECONDS
                        how often a protected container is snapshotted (default: the profile's,
                        60 s for default, 15 s for lan)                     GOTO_SNAPSHOT_INTERVAL  snapshotInterval
  --log-level LEVEL     error, warn, info or debug (default: info)          GOTO_LOG_LEVEL  logLevel
  --metrics-listen ADDR serve Prometheus metrics on http://ADDR/metrics (default: off).
                        ADDR is PORT (binds ${DEFAULT_METRICS_HOST}:PORT), IP:PORT or [IPv6]:PORT; port 0
                        picks a free port (logged). No authentication: name a non-loopback
                        address only on a network you trust (docs/operations.md).
                                                                            GOTO_METRICS_LISTEN  metricsListen
  --links-json JSON     the mesh's link table: a JSON array of rules {from: {provider?, region?},
                        to: {...}, class: free|cheap|expensive, costPerGiB?, rateMbit?,
                        compress?: none|zstd|auto}; first match wins (default: same provider and
                        region free and uncompressed, anything else expensive with zstd;
                        docs/operations.md)                                 GOTO_LINKS_JSON  links
  --criu PATH           the CRIU binary to check before a live move (goto move --live): the one
                        on dockerd's PATH, which runc runs (default: ${DEFAULT_CRIU} on PATH)
                                                                            GOTO_CRIU       criu
  --test-hide-cpu-flags LIST  TEST ONLY: leave these CPU flags (comma-separated) out of what this
                        agent reports for a live move, as if its CPU lacked them (the lab's
                        CPU-mismatch test); never on a real host
  --config FILE         JSON file with the keys above                       GOTO_CONFIG
  -h, --help            show this help
  --version             print the agent version

Environment lists (GOTO_BOOTSTRAP, GOTO_ANNOUNCE, GOTO_LABELS) are comma-separated.`

export class HelpRequested extends Error {}
export class VersionRequested extends Error {}

interface RawConfig {
  bundle?: string
  listen?: string
  announce?: string[]
  bootstrap?: string[]
  docker?: string
  name?: string
  labels?: string[] | Record<string, string>
  noInbound?: boolean
  dockerSaveOnly?: boolean
  volumeSpoolOnly?: boolean
  stateDir?: string
  profile?: string
  replicas?: number | string
  snapshotInterval?: number | string
  logLevel?: string
  metricsListen?: string | number
  links?: unknown
  criu?: string
}

function list (v: string | undefined): string[] | undefined {
  if (v === undefined || v.trim() === '') return undefined
  return v.split(',').map(s => s.trim()).filter(s => s !== '')
}

/** A boolean environment variable: 1/true/yes or 0/false/no (unset or empty: not given). */
function flag (name: string, v: string | undefined): boolean | undefined {
  if (v === undefined || v.trim() === '') return undefined
  if (/^(1|true|yes)$/i.test(v.trim())) return true
  if (/^(0|false|no)$/i.test(v.trim())) return false
  throw new ConfigError(name, `'${v}' is not 1/true/yes or 0/false/no`)
}

/**
 * `--metrics-listen`: PORT (loopback), IPv4:PORT, [IPv6]:PORT or localhost:PORT. Only IP literals
 * (and localhost) are taken, so what the endpoint binds to never depends on name resolution.
 */
export function parseMetricsListen (option: string, value: string | number): MetricsListen {
  const text = String(value).trim()
  const shape = 'PORT, IP:PORT or [IPv6]:PORT, e.g. 9464 or 127.0.0.1:9464'
  const port = (p: string): number => {
    if (!/^\d{1,5}$/.test(p) || Number(p) > 65535) throw new ConfigError(option, `'${p}' in '${text}' is not a port (0-65535)`)
    return Number(p)
  }
  if (/^\d+$/.test(text)) return { host: DEFAULT_METRICS_HOST, port: port(text) }
  const m = /^(?:\[([^\]]*)\]|([^:[\]]*)):([^:]*)$/.exec(text)
  if (m === null) throw new ConfigError(option, `'${text}' is not ${shape}`)
  const host = m[1] ?? m[2]
  if (host === '') throw new ConfigError(option, `'${text}' names no host; write 127.0.0.1:PORT for loopback or 0.0.0.0:PORT for every interface`)
  if (host === 'localhost') return { host: DEFAULT_METRICS_HOST, port: port(m[3]) }
  const family = isIP(host)
  if (family === 0 || (family === 6) !== (m[1] !== undefined)) {
    throw new ConfigError(option, `'${host}' is not an IPv4 address or a bracketed IPv6 address (${shape})`)
  }
  return { host, port: port(m[3]) }
}

function readConfigFile (path: string, readFile: (p: string) => string): RawConfig {
  let text: string
  try {
    text = readFile(path)
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${path}: ${(err as Error).message}`)
  }
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (err) {
    throw new ConfigError('--config', `${path} is not valid JSON: ${(err as Error).message}`)
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new ConfigError('--config', `${path} must hold a JSON object`)
  const known = new Set(['bundle', 'listen', 'announce', 'bootstrap', 'docker', 'name', 'labels', 'noInbound', 'dockerSaveOnly', 'volumeSpoolOnly', 'stateDir', 'profile', 'replicas', 'snapshotInterval', 'logLevel', 'metricsListen', 'links', 'criu'])
  for (const key of Object.keys(data)) {
    if (!known.has(key)) throw new ConfigError('--config', `${path}: unknown key '${key}' (known: ${[...known].join(', ')})`)
  }
  const d = data as Record<string, unknown>
  for (const key of ['bundle', 'listen', 'docker', 'name', 'stateDir', 'profile', 'logLevel', 'criu']) {
    if (d[key] !== undefined && typeof d[key] !== 'string') throw new ConfigError('--config', `${path}: '${key}' must be a string`)
  }
  if (d.metricsListen !== undefined && typeof d.metricsListen !== 'string' && !Number.isInteger(d.metricsListen)) {
    throw new ConfigError('--config', `${path}: 'metricsListen' must be a string ("127.0.0.1:9464") or a port number`)
  }
  for (const key of ['replicas', 'snapshotInterval']) {
    if (d[key] !== undefined && typeof d[key] !== 'number' && typeof d[key] !== 'string') throw new ConfigError('--config', `${path}: '${key}' must be a number`)
  }
  for (const key of ['noInbound', 'dockerSaveOnly', 'volumeSpoolOnly']) {
    if (d[key] !== undefined && typeof d[key] !== 'boolean') throw new ConfigError('--config', `${path}: '${key}' must be true or false`)
  }
  const lbl = d.labels
  if (lbl !== undefined) {
    const ok = Array.isArray(lbl)
      ? lbl.every(x => typeof x === 'string')
      : typeof lbl === 'object' && lbl !== null && Object.values(lbl).every(x => typeof x === 'string')
    if (!ok) throw new ConfigError('--config', `${path}: 'labels' must be an object of strings or an array of "key=value" strings`)
  }
  for (const key of ['announce', 'bootstrap']) {
    if (d[key] !== undefined && (!Array.isArray(d[key]) || !(d[key] as unknown[]).every(x => typeof x === 'string'))) {
      throw new ConfigError('--config', `${path}: '${key}' must be an array of strings`)
    }
  }
  return d as RawConfig
}

export interface ConfigSources {
  argv: string[]
  env: Record<string, string | undefined>
  readFile?: (path: string) => string
}

export function loadConfig ({ argv, env, readFile = p => readFileSync(p, 'utf8') }: ConfigSources): AgentConfig {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        bundle: { type: 'string' },
        listen: { type: 'string' },
        announce: { type: 'string', multiple: true },
        bootstrap: { type: 'string', multiple: true },
        docker: { type: 'string' },
        name: { type: 'string' },
        label: { type: 'string', multiple: true },
        'no-inbound': { type: 'boolean' },
        'docker-save-only': { type: 'boolean' },
        'volume-spool-only': { type: 'boolean' },
        'state-dir': { type: 'string' },
        profile: { type: 'string' },
        replicas: { type: 'string' },
        'snapshot-interval': { type: 'string' },
        'log-level': { type: 'string' },
        'metrics-listen': { type: 'string' },
        'links-json': { type: 'string' },
        criu: { type: 'string' },
        'test-hide-cpu-flags': { type: 'string' },
        config: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' }
      }
    })
  } catch (err) {
    const msg = (err as Error).message
    const opt = /'(-[^' ]+)/.exec(msg)?.[1] ?? 'arguments'
    throw new ConfigError(opt, msg)
  }
  const f = parsed.values
  if (f.help === true) throw new HelpRequested()
  if (f.version === true) throw new VersionRequested()

  const configPath = f.config ?? env.GOTO_CONFIG
  const file: RawConfig = configPath !== undefined ? readConfigFile(configPath, readFile) : {}

  /** The value from the first source that has one, and the name to blame if it is bad. */
  const pick = <T>(flag: string, envName: string, key: keyof RawConfig, f: T | undefined, e: T | undefined, c: T | undefined): { value: T | undefined, option: string } => {
    if (f !== undefined) return { value: f, option: flag }
    if (e !== undefined) return { value: e, option: envName }
    if (c !== undefined) return { value: c, option: `'${key}' in ${configPath ?? ''}` }
    return { value: undefined, option: flag }
  }

  const bundle = pick('--bundle', 'GOTO_BUNDLE', 'bundle', f.bundle, env.GOTO_BUNDLE, file.bundle)
  if (bundle.value === undefined || bundle.value === '') throw new ConfigError('--bundle', 'required: the directory written by `goto ca issue --role agent`')

  const listenRaw = pick('--listen', 'GOTO_LISTEN', 'listen', f.listen, env.GOTO_LISTEN, file.listen)
  const listen = [parseTcpMultiaddr(listenRaw.option, listenRaw.value ?? DEFAULT_LISTEN)]
  if (listen[0].getComponents().some(c => c.name === 'p2p')) throw new ConfigError(listenRaw.option, 'must not contain /p2p/')

  const announceRaw = pick('--announce', 'GOTO_ANNOUNCE', 'announce', f.announce, list(env.GOTO_ANNOUNCE), file.announce)
  const announce = (announceRaw.value ?? []).map(a => parseTcpMultiaddr(announceRaw.option, a))
  const bootstrapRaw = pick('--bootstrap', 'GOTO_BOOTSTRAP', 'bootstrap', f.bootstrap, list(env.GOTO_BOOTSTRAP), file.bootstrap)
  const bootstrap = (bootstrapRaw.value ?? []).map(a => parseTcpMultiaddr(bootstrapRaw.option, a))
  const dockerRaw = pick('--docker', 'DOCKER_HOST', 'docker', f.docker, env.DOCKER_HOST, file.docker)
  const docker = parseDockerEndpoint(dockerRaw.option, dockerRaw.value ?? DEFAULT_DOCKER)

  const nameRaw = pick('--name', 'GOTO_NAME', 'name', f.name, env.GOTO_NAME, file.name)
  const name = nameRaw.value
  if (name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name)) throw new ConfigError(nameRaw.option, `'${name}' must be 1-63 letters, digits, '.', '_' or '-'`)

  const labelsRaw = pick<string[] | Record<string, string>>('--label', 'GOTO_LABELS', 'labels', f.label, list(env.GOTO_LABELS), file.labels)
  const labels = parseLabels(labelsRaw.option, labelsRaw.value ?? [])

  const noInboundRaw = pick('--no-inbound', 'GOTO_NO_INBOUND', 'noInbound', f['no-inbound'], flag('GOTO_NO_INBOUND', env.GOTO_NO_INBOUND), file.noInbound)
  const noInbound = noInboundRaw.value ?? false
  if (noInbound && announce.length > 0) throw new ConfigError(noInboundRaw.option, `cannot be combined with ${announceRaw.option}: a host without inbound connections has no address of its own to announce`)

  const saveOnlyRaw = pick('--docker-save-only', 'GOTO_DOCKER_SAVE_ONLY', 'dockerSaveOnly', f['docker-save-only'], flag('GOTO_DOCKER_SAVE_ONLY', env.GOTO_DOCKER_SAVE_ONLY), file.dockerSaveOnly)
  const dockerSaveOnly = saveOnlyRaw.value ?? false
  const spoolOnlyRaw = pick('--volume-spool-only', 'GOTO_VOLUME_SPOOL_ONLY', 'volumeSpoolOnly', f['volume-spool-only'], flag('GOTO_VOLUME_SPOOL_ONLY', env.GOTO_VOLUME_SPOOL_ONLY), file.volumeSpoolOnly)
  const volumeSpoolOnly = spoolOnlyRaw.value ?? false

  const profileRaw = pick('--profile', 'GOTO_PROFILE', 'profile', f.profile, env.GOTO_PROFILE, file.profile)
  const profile = profileRaw.value ?? 'default'
  if (!Object.hasOwn(PROFILES, profile)) throw new ConfigError(profileRaw.option, `'${profile}' is not one of ${Object.keys(PROFILES).join(', ')}`)

  const replicasRaw = pick<number | string>('--replicas', 'GOTO_REPLICAS', 'replicas', f.replicas, env.GOTO_REPLICAS, file.replicas)
  const replicas = replicasRaw.value === undefined ? DEFAULT_REPLICAS : Number(replicasRaw.value)
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) throw new ConfigError(replicasRaw.option, `'${String(replicasRaw.value)}' is not a whole number from 1 to ${MAX_REPLICAS}`)

  const intervalRaw = pick<number | string>('--snapshot-interval', 'GOTO_SNAPSHOT_INTERVAL', 'snapshotInterval', f['snapshot-interval'], env.GOTO_SNAPSHOT_INTERVAL, file.snapshotInterval)
  const intervalS = intervalRaw.value === undefined ? undefined : Number(intervalRaw.value)
  if (intervalS !== undefined && (!Number.isFinite(intervalS) || intervalS < MIN_SNAPSHOT_INTERVAL_S || intervalS > 86_400)) {
    throw new ConfigError(intervalRaw.option, `'${String(intervalRaw.value)}' is not a number of seconds from ${MIN_SNAPSHOT_INTERVAL_S} to 86400`)
  }

  const logLevelRaw = pick('--log-level', 'GOTO_LOG_LEVEL', 'logLevel', f['log-level'], env.GOTO_LOG_LEVEL, file.logLevel)
  const logLevel = logLevelRaw.value ?? 'info'
  if (!['error', 'warn', 'info', 'debug'].includes(logLevel)) throw new ConfigError(logLevelRaw.option, `'${logLevel}' is not error, warn, info or debug`)

  const metricsRaw = pick<string | number>('--metrics-listen', 'GOTO_METRICS_LISTEN', 'metricsListen', f['metrics-listen'], env.GOTO_METRICS_LISTEN, file.metricsListen)
  const metricsListen = metricsRaw.value === undefined ? undefined : parseMetricsListen(metricsRaw.option, metricsRaw.value)

  const linksRaw = pick<unknown>('--links-json', 'GOTO_LINKS_JSON', 'links', f['links-json'], env.GOTO_LINKS_JSON, file.links)
  const links = linksRaw.value === undefined ? [] : parseLinkRules(linksRaw.option, linksRaw.value)

  const criuRaw = pick('--criu', 'GOTO_CRIU', 'criu', f.criu, env.GOTO_CRIU, file.criu)
  const criu = criuRaw.value ?? DEFAULT_CRIU
  if (criu === '' || criu.includes('\0')) throw new ConfigError(criuRaw.option, 'must name the criu binary')

  const stateDir = pick('--state-dir', 'GOTO_STATE_DIR', 'stateDir', f['state-dir'], env.GOTO_STATE_DIR, file.stateDir).value ?? DEFAULT_STATE_DIR

  return {
    bundleDir: bundle.value,
    listen,
    announce,
    bootstrap,
    docker,
    name,
    labels,
    noInbound,
    dockerSaveOnly,
    volumeSpoolOnly,
    stateDir,
    profile: profile as ProfileName,
    timings: intervalS === undefined ? PROFILES[profile as ProfileName] : { ...PROFILES[profile as ProfileName], snapshotIntervalMs: intervalS * 1000 },
    replicas,
    logLevel,
    metricsListen,
    links,
    criu,
    ...f['test-hide-cpu-flags'] === undefined ? {} : { hideCpuFlags: list(f['test-hide-cpu-flags']) ?? [] }
  }
}
