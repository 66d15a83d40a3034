/**
 * The command lines of `goto install`, `goto uninstall` and `goto cloud-init`: parses and checks
 * every option (a bad one, or one with a control character, is a ConfigError naming it, before any
 * connection), then calls
 * install.ts / cloud-init.ts. control/main.ts hands in argv, the environment and the output.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { isIP } from 'node:net'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { readBundle, type Bundle } from '../certs/index.js'
import { validatePeerName } from '../certs/format.js'
import { DEFAULT_DOCKER, DEFAULT_LISTEN, parseDockerEndpoint, parseLabels } from '../protocol/options.js'
import { parseTcpMultiaddr } from '../protocol/multiaddr.js'
import { GOTO_VERSION } from '../protocol/version.js'
import { BundleError, ConfigError, GotoError } from '../protocol/errors.js'
import { printable } from './format.js'
import { INSTALL_DIR, installAgent, uninstallAgent, type Out } from './install.js'
import { cloudInitUserData, USER_DATA_LIMIT_BYTES } from './cloud-init.js'
import { parseTarget, type SshTarget } from './ssh.js'
import type { HostKeyPolicy } from './known-hosts.js'

/** How long `goto install` waits for the new agent to be alive (a first start on a slow VM). */
export const DEFAULT_WAIT_S = 90
const SUPERVISORS = ['auto', 'systemd', 'background']

export const INSTALL_USAGE = `Usage: goto install USER@HOST --ca-dir DIR --name NAME [options]
       goto uninstall USER@HOST [--keep-state] [--revoke --ca-dir DIR [--bundle DIR]] [ssh options]
       goto cloud-init --name NAME --ca-dir DIR --release-url URL (--release FILE | --sha256 HEX) [agent options]

install    connects over SSH (key authentication, host key checked), checks the host (OS, Docker
           Engine, Node.js, free disk), issues the host's certificate from the CA in DIR on this
           machine, uploads the release and the bundle, installs the agent as a systemd service
           (or a supervised background process where systemd is not running), starts it and waits
           until the mesh sees NAME alive. Running it again upgrades in place and keeps a valid
           certificate; nothing restarts when nothing changed.
uninstall  stops the agent and removes it from the host (/opt/goto, /etc/goto, /var/lib/goto).
cloud-init prints cloud-init user-data that makes a fresh Ubuntu VM (EC2, Azure) the member NAME;
           the VM fetches the release from URL and checks its sha256.

SSH options (install, uninstall):
  --port N                SSH port (default 22)
  --identity KEYFILE      private key (default ~/.ssh/id_ed25519)
  --known-hosts FILE      known hosts file (default ~/.ssh/known_hosts)
  --host-key SHA256:...   trust exactly this host key fingerprint (check it with
                          'ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub' on the host)
  --accept-new-host-key   trust a host key known_hosts has no entry for, and add it there;
                          a changed key is still refused (pass its --host-key instead)

Agent options (install, cloud-init):
  --ca-dir DIR            the mesh CA directory (required; its key never leaves this machine)
  --name NAME             the host's name in the mesh (required)
  --label KEY=VALUE       a label, e.g. provider=aws (repeatable)
  --bootstrap MULTIADDR   a member to join through (repeatable; none for the first host)
  --announce MULTIADDR    address to tell peers, e.g. the public IP (repeatable)
  --listen MULTIADDR      (default ${DEFAULT_LISTEN})
  --docker ENDPOINT       the host's Docker Engine (default ${DEFAULT_DOCKER})
  --supervisor KIND       auto, systemd or background (default auto: systemd when it runs)
  --days N                validity of a newly issued certificate (default 365)

install only:
  --release FILE          release from 'npm run release' (default release/go-to-${GOTO_VERSION}.tar.gz)
  --bundle DIR            operator bundle to ask the mesh with (env GOTO_BUNDLE)
  --agent MULTIADDR       member to ask whether NAME is alive (env GOTO_AGENT; default the new
                          agent itself at HOST and the --listen port)
  --wait SECONDS          how long to wait for alive (default ${DEFAULT_WAIT_S})
  --no-wait               do not wait (no operator bundle needed)

uninstall only:
  --keep-state            keep /var/lib/goto (the agent's state)
  --revoke                also revoke the host's certificate in --ca-dir (copies the new list into
                          --bundle if given; run any goto command with it to spread the list)

cloud-init only:
  --release-url URL       where the VM fetches the release (https://...; file:// for tests)
  --release FILE          the same release here, to compute its sha256; or give --sha256 HEX

Exit status: 0 done, 1 failed (host key, SSH login, missing prerequisite, install script, not
alive in time), 2 usage.`

const SSH_OPTIONS = {
  port: { type: 'string' },
  identity: { type: 'string' },
  'known-hosts': { type: 'string' },
  'host-key': { type: 'string' },
  'accept-new-host-key': { type: 'boolean' }
} as const

const AGENT_OPTIONS = {
  'ca-dir': { type: 'string' },
  name: { type: 'string' },
  label: { type: 'string', multiple: true },
  bootstrap: { type: 'string', multiple: true },
  announce: { type: 'string', multiple: true },
  listen: { type: 'string' },
  docker: { type: 'string' },
  supervisor: { type: 'string' },
  days: { type: 'string' }
} as const

type Values = Record<string, string | boolean | string[] | undefined>

function str (v: Values, key: string): string | undefined {
  const x = v[key]
  return typeof x === 'string' && x !== '' ? x : undefined
}

function required (v: Values, key: string, what: string): string {
  const x = str(v, key)
  if (x === undefined) throw new ConfigError(`--${key}`, `required: ${what}`)
  return x
}

function positiveInt (v: Values, key: string, max: number): number | undefined {
  const x = str(v, key)
  if (x === undefined) return undefined
  if (!/^[0-9]+$/.test(x) || Number(x) < 1 || Number(x) > max) throw new ConfigError(`--${key}`, `'${x}' must be a whole number from 1 to ${max}`)
  return Number(x)
}

function sshOptions (v: Values, positionals: string[], env: NodeJS.ProcessEnv, command: string): { target: SshTarget, identityFile: string, hostKey: HostKeyPolicy } {
  if (positionals.length !== 1) throw new ConfigError('USER@HOST', `'goto ${command}' takes exactly one USER@HOST (got ${positionals.length})`)
  const port = positiveInt(v, 'port', 65535) ?? 22
  const target = parseTarget(positionals[0], port)
  if (target === undefined) throw new ConfigError('USER@HOST', `'${positionals[0]}' is not USER@HOST (e.g. ubuntu@203.0.113.7)`)
  const home = env.HOME ?? '/root'
  const fp = str(v, 'host-key')
  if (fp !== undefined && !/^SHA256:[A-Za-z0-9+/]{43}=?$/.test(fp)) throw new ConfigError('--host-key', `'${fp}' is not a SHA256:... fingerprint as 'ssh-keygen -lf' prints it`)
  if (fp !== undefined && v['accept-new-host-key'] === true) throw new ConfigError('--accept-new-host-key', 'give either --host-key or --accept-new-host-key, not both')
  return {
    target,
    identityFile: str(v, 'identity') ?? join(home, '.ssh', 'id_ed25519'),
    hostKey: { knownHostsFile: str(v, 'known-hosts') ?? join(home, '.ssh', 'known_hosts'), fingerprint: fp, acceptNew: v['accept-new-host-key'] === true }
  }
}

/**
 * The agent options, checked here, as goto-install.sh / provision.sh arguments: the config the
 * agent gets as one JSON object (--config-json; the script merges it into agent.json), then the
 * supervisor. JSON, not words the host's shell sorts into lines: no value can add a config key.
 */
function agentArgs (v: Values): { args: string[], docker: string, listen: Multiaddr } {
  const config: { labels?: string[], bootstrap?: string[], announce?: string[], listen?: string } = {}
  const labels = (v.label as string[] | undefined) ?? []
  parseLabels('--label', labels)
  if (labels.length > 0) config.labels = labels
  for (const key of ['bootstrap', 'announce'] as const) {
    const addrs = (v[key] as string[] | undefined) ?? []
    for (const a of addrs) parseTcpMultiaddr(`--${key}`, a)
    if (addrs.length > 0) config[key] = addrs
  }
  const listenRaw = str(v, 'listen')
  const listen = parseTcpMultiaddr('--listen', listenRaw ?? DEFAULT_LISTEN)
  if (listenRaw !== undefined) config.listen = listenRaw
  const args = Object.keys(config).length > 0 ? ['--config-json', JSON.stringify(config)] : []
  const docker = str(v, 'docker') ?? DEFAULT_DOCKER
  parseDockerEndpoint('--docker', docker)
  const sup = str(v, 'supervisor')
  if (sup !== undefined) {
    if (!SUPERVISORS.includes(sup)) throw new ConfigError('--supervisor', `'${sup}' is not one of ${SUPERVISORS.join(', ')}`)
    args.push('--supervisor', sup)
  }
  return { args, docker, listen }
}

/** The multiaddr of the new agent: the SSH host and the --listen port. */
function newAgentAddr (host: string, listen: Multiaddr): Multiaddr {
  const port = listen.getComponents().find(c => c.name === 'tcp')?.value ?? '4001'
  const kind = isIP(host) === 4 ? 'ip4' : isIP(host) === 6 ? 'ip6' : 'dns4'
  return multiaddr(`/${kind}/${host}/tcp/${port}`)
}

async function operatorBundle (dir: string): Promise<Bundle> {
  let b: Bundle
  try {
    b = await readBundle(dir)
  } catch (err) {
    throw new BundleError(`operator bundle ${(err as Error).message}`, { cause: err })
  }
  if (b.role !== 'operator') throw new ConfigError('--bundle', `${dir} holds an ${b.role} certificate; waiting for the new agent needs one issued with --role operator`)
  return b
}

async function sha256File (file: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer)
  return h.digest('hex')
}

function parse (argv: string[], options: Record<string, { type: 'string' | 'boolean', multiple?: boolean }>): { values: Values, positionals: string[] } {
  let r
  try {
    r = parseArgs({ args: argv, strict: true, allowPositionals: true, options: { ...options, help: { type: 'boolean', short: 'h' } } })
  } catch (err) {
    const msg = printable((err as Error).message)
    throw new ConfigError(/'(-[^' ]+)/.exec(msg)?.[1] ?? 'arguments', msg)
  }
  for (const [key, value] of Object.entries(r.values)) {
    for (const x of Array.isArray(value) ? value : [value]) if (typeof x === 'string') plainText(`--${key}`, x)
  }
  for (const p of r.positionals) plainText('USER@HOST', p)
  return { values: r.values as Values, positionals: r.positionals }
}

/**
 * Refuses a value with a control character (a newline, an escape, C1): names, labels and addresses
 * end up in the host's config and in what the CLI prints, and none of them needs one.
 */
function plainText (option: string, value: string): void {
  if (/[\u0000-\u001f\u007f-\u009f]/.test(value)) throw new ConfigError(option, `'${printable(value)}' has a control character; refused before anything was changed`)
}

/** Runs `goto install|uninstall|cloud-init ...`; returns the exit status or throws a GotoError. */
export async function runInstallCommand (command: 'install' | 'uninstall' | 'cloud-init', argv: string[], env: NodeJS.ProcessEnv, out: Out, signal: AbortSignal): Promise<number> {
  if (command === 'install') {
    const { values: v, positionals } = parse(argv, { ...SSH_OPTIONS, ...AGENT_OPTIONS, release: { type: 'string' }, bundle: { type: 'string' }, agent: { type: 'string' }, wait: { type: 'string' }, 'no-wait': { type: 'boolean' } })
    if (v.help === true) { out.stdout(INSTALL_USAGE + '\n'); return 0 }
    const ssh = sshOptions(v, positionals, env, command)
    const caDir = required(v, 'ca-dir', 'the mesh CA directory (goto ca init)')
    const name = required(v, 'name', "the host's name in the mesh")
    validatePeerName(name)
    const days = positiveInt(v, 'days', 36500)
    const agent = agentArgs(v)
    const releaseFile = str(v, 'release') ?? join(INSTALL_DIR, '..', 'release', `go-to-${GOTO_VERSION}.tar.gz`)
    let wait
    if (v['no-wait'] !== true) {
      const bundleDir = str(v, 'bundle') ?? env.GOTO_BUNDLE
      if (bundleDir === undefined || bundleDir === '') throw new ConfigError('--bundle', 'required to wait for the new agent (or set GOTO_BUNDLE, or pass --no-wait)')
      const agentRaw = str(v, 'agent') ?? (env.GOTO_AGENT !== '' ? env.GOTO_AGENT : undefined)
      const via = agentRaw !== undefined ? parseTcpMultiaddr(str(v, 'agent') !== undefined ? '--agent' : 'GOTO_AGENT', agentRaw) : newAgentAddr(ssh.target.host, agent.listen)
      wait = { operatorBundle: await operatorBundle(bundleDir), via, needOthers: agentRaw === undefined && (v.bootstrap as string[] | undefined ?? []).length > 0, timeoutMs: (positiveInt(v, 'wait', 86_400) ?? DEFAULT_WAIT_S) * 1000 }
    }
    await installAgent({ ssh, caDir, name, days, releaseFile, agentArgs: agent.args, docker: agent.docker, wait }, out, signal)
    return 0
  }
  if (command === 'uninstall') {
    const { values: v, positionals } = parse(argv, { ...SSH_OPTIONS, 'keep-state': { type: 'boolean' }, revoke: { type: 'boolean' }, 'ca-dir': { type: 'string' }, bundle: { type: 'string', multiple: true } })
    if (v.help === true) { out.stdout(INSTALL_USAGE + '\n'); return 0 }
    const ssh = sshOptions(v, positionals, env, command)
    let revoke
    if (v.revoke === true) revoke = { caDir: required(v, 'ca-dir', 'the CA directory to revoke the certificate in'), bundles: (v.bundle as string[] | undefined) ?? [] }
    else if (v['ca-dir'] !== undefined || v.bundle !== undefined) throw new ConfigError('--revoke', '--ca-dir and --bundle belong to --revoke')
    await uninstallAgent({ ssh, keepState: v['keep-state'] === true, revoke }, out, signal)
    return 0
  }
  const { values: v, positionals } = parse(argv, { ...AGENT_OPTIONS, 'release-url': { type: 'string' }, release: { type: 'string' }, sha256: { type: 'string' } })
  if (v.help === true) { out.stdout(INSTALL_USAGE + '\n'); return 0 }
  if (positionals.length > 0) throw new ConfigError(positionals[0], "'goto cloud-init' takes no positional arguments")
  const caDir = required(v, 'ca-dir', 'the mesh CA directory (goto ca init)')
  const name = required(v, 'name', "the VM's name in the mesh")
  validatePeerName(name)
  const releaseUrl = required(v, 'release-url', 'where the VM fetches the release from (https://...)')
  if (!/^(https?|file):\/\/\S+$/.test(releaseUrl)) throw new ConfigError('--release-url', `'${releaseUrl}' is not an https://, http:// or file:// URL`)
  const file = str(v, 'release')
  let sha = str(v, 'sha256')
  if ((file === undefined) === (sha === undefined)) throw new ConfigError('--sha256', 'give exactly one of --release FILE (its sha256 is computed) or --sha256 HEX')
  if (sha !== undefined && !/^[0-9a-f]{64}$/.test(sha)) throw new ConfigError('--sha256', `'${sha}' is not 64 lowercase hex digits`)
  if (file !== undefined) {
    try { sha = await sha256File(file) } catch (err) { throw new ConfigError('--release', `cannot read ${file}: ${(err as Error).message}`) }
  }
  const agent = agentArgs(v)
  if (agent.docker !== DEFAULT_DOCKER) agent.args.push('--docker', agent.docker)
  const ud = await cloudInitUserData({ caDir, name, days: positiveInt(v, 'days', 36500), releaseUrl, sha256: sha as string, agentArgs: agent.args })
  if (ud.bytes > USER_DATA_LIMIT_BYTES) throw new GotoError(`the user-data is ${ud.bytes} bytes, over EC2's ${USER_DATA_LIMIT_BYTES}; use fewer or shorter options`)
  out.stdout(ud.text)
  out.stderr(`goto cloud-init: user-data for ${name} (peer ${ud.peerId}), ${ud.bytes} bytes; it holds ${name}'s private key: pass it to the VM only (see docs/clouds.md)\n`)
  return 0
}
