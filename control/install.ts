/**
 * `goto install USER@HOST` and `goto uninstall USER@HOST`: put an agent on a host over SSH, or take
 * it off. Everything that changes the host is done by install/goto-install.sh (the same script the
 * Vagrant provisioner and cloud-init run), uploaded with each command; this module checks the host
 * key, checks the host first, issues the certificate locally (the CA key never leaves this machine),
 * uploads release and bundle, runs the script and waits until the mesh sees the new agent alive.
 */
import { X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as delay } from 'node:timers/promises'
import type { Multiaddr } from '@multiformats/multiaddr'
import { BUNDLE_FILES, CA_FILES, PEER_URI_PREFIX, TrustStore, issueCertificate, readCaCrl, revoke, type Bundle } from '../certs/index.js'
import {
  AgentNotAliveError, GotoError, PrerequisiteMissingError, ReleaseError, RemoteCommandError, RemotePrivilegeError
} from '../protocol/errors.js'
import type { PeerRow } from '../protocol/messages.js'
import { AgentClient } from './client.js'
import { SshSession, type SshOptions } from './ssh.js'

/** A kept certificate must stay valid at least this long; otherwise a new one is issued. */
export const RENEW_BEFORE_DAYS = 30
/** How often the mesh is asked whether the new agent is alive. */
const ALIVE_POLL_MS = 1000
/** One attempt to ask an agent (dial, auth, peers) while waiting. */
const ALIVE_ATTEMPT_MS = 5000
/** Exit status of goto-install.sh when a prerequisite is missing. */
const EXIT_PREREQUISITE = 3

/** install/ of this package: dist/control/install.js -> <package>/install/. */
export const INSTALL_DIR = fileURLToPath(new URL('../../install/', import.meta.url))
export const INSTALL_SCRIPT = join(INSTALL_DIR, 'goto-install.sh')

export interface Out { stdout: (s: string) => void, stderr: (s: string) => void }

export interface WaitOptions {
  operatorBundle: Bundle
  /** The agent to ask: --agent, or the new agent itself. */
  via: Multiaddr
  /** When asking the new agent itself: also wait until it sees one other member alive. */
  needOthers: boolean
  timeoutMs: number
}

export interface InstallOptions {
  ssh: Omit<SshOptions, 'signal'>
  caDir: string
  name: string
  releaseFile: string
  days?: number
  /** Options handed to goto-install.sh install: --label, --bootstrap, --announce, --listen, --docker, --supervisor. */
  agentArgs: string[]
  docker: string
  /** Undefined with --no-wait. */
  wait?: WaitOptions
}

export interface UninstallOptions {
  ssh: Omit<SshOptions, 'signal'>
  keepState: boolean
  /** With --revoke: the CA directory, and bundles to copy the new revocation list into. */
  revoke?: { caDir: string, bundles: string[] }
}

/** Single-quotes a word for the remote POSIX shell. */
export function shq (s: string): string {
  return `'${s.replace(/'/g, "'\\''")}'`
}

/** Checks a release tarball locally before any connection: it exists and is a file. */
export async function checkRelease (file: string): Promise<number> {
  try {
    const st = await stat(file)
    if (!st.isFile()) throw new ReleaseError(`${file} is not a file`)
    return st.size
  } catch (err) {
    if (err instanceof ReleaseError) throw err
    throw new ReleaseError(`no release at ${file}: build one with 'npm run release' or pass --release FILE`, { cause: err })
  }
}

/** The peer ID a certificate names in its SAN (verified by TrustStore.verify against its key). */
function certPeerId (pem: string): string | undefined {
  try {
    const san = new X509Certificate(pem).subjectAltName ?? ''
    return san.split(', ').find(s => s.startsWith(`URI:${PEER_URI_PREFIX}`))?.slice(`URI:${PEER_URI_PREFIX}`.length)
  } catch {
    return undefined
  }
}

/** Step counter: "[2/6] checking the host". */
class Steps {
  private n = 0
  constructor (private readonly total: number, private readonly out: Out) {}
  step (text: string): void { this.out.stdout(`[${++this.n}/${this.total}] ${text}\n`) }
  detail (text: string): void { this.out.stdout(`      ${text}\n`) }
}

/** A connected host with the install script uploaded to a private temporary directory. */
class Remote {
  private constructor (readonly ssh: SshSession, readonly tmp: string, readonly sudo: string) {}

  static async open (ssh: SshSession, signal: AbortSignal): Promise<Remote> {
    const tmp = (await ssh.check('mktemp -d /tmp/goto-install.XXXXXXXX', 'making a temporary directory', { signal })).stdout.trim()
    const remote = new Remote(ssh, tmp, await privilege(ssh, signal))
    try {
      await ssh.upload({ file: INSTALL_SCRIPT }, `${tmp}/goto-install.sh`, 0o755, signal)
    } catch (err) {
      await remote.close()
      throw err
    }
    return remote
  }

  script (args: string[]): string {
    return `${this.sudo}sh ${shq(`${this.tmp}/goto-install.sh`)} ${args.map(shq).join(' ')}`
  }

  async close (): Promise<void> {
    await this.ssh.exec(`rm -rf ${shq(this.tmp)}`, { signal: AbortSignal.timeout(10_000) }).catch(() => {})
    this.ssh.close()
  }
}

/** '' for root, 'sudo -n ' for a user who may sudo without a password; refuses anyone else. */
async function privilege (ssh: SshSession, signal: AbortSignal): Promise<string> {
  const id = (await ssh.check('id -u', 'id -u', { signal })).stdout.trim()
  if (id === '0') return ''
  const r = await ssh.exec('sudo -n true', { signal })
  if (r.code !== 0) {
    throw new RemotePrivilegeError(`${ssh.target.user} on ${ssh.target.host} is not root and cannot run sudo without a password; ` +
      'log in as root or allow that user passwordless sudo (the agent is installed as a system service)')
  }
  return 'sudo -n '
}

async function withRemote<T> (sshOpts: Omit<SshOptions, 'signal'>, steps: Steps, signal: AbortSignal, fn: (r: Remote) => Promise<T>): Promise<T> {
  const t = sshOpts.target
  steps.step(`connecting to ${t.user}@${t.host}:${t.port}`)
  const ssh = await SshSession.connect({ ...sshOpts, signal })
  steps.detail(`host key ${ssh.hostKeyInfo}`)
  let remote: Remote
  try {
    remote = await Remote.open(ssh, signal)
  } catch (err) {
    ssh.close()
    throw err
  }
  try {
    return await fn(remote)
  } finally {
    await remote.close()
  }
}

/** Runs the script's `check`, printing each line; PrerequisiteMissingError when something lacks. */
async function checkHost (remote: Remote, docker: string, steps: Steps, signal: AbortSignal): Promise<void> {
  const r = await remote.ssh.exec(remote.script(['check', '--docker', docker]), { signal, onLine: (l) => { if (l.trim() !== '') steps.detail(l) } })
  if (r.code === EXIT_PREREQUISITE) {
    const missing = r.stdout.split('\n').filter(l => l.startsWith('missing '))
    throw new PrerequisiteMissingError(`${remote.ssh.target.host} lacks ${missing.length} prerequisite${missing.length === 1 ? '' : 's'} (the 'missing' line${missing.length === 1 ? '' : 's'} above); nothing was changed`, missing)
  }
  if (r.code !== 0) throw new RemoteCommandError(`checking ${remote.ssh.target.host} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`)
}

interface CertChoice { peerId: string, bundleArg: string, localDir?: string }

/**
 * Keeps the host's certificate when it is this CA's, for this name, not revoked and valid for
 * RENEW_BEFORE_DAYS more; otherwise issues a new one locally and uploads it.
 */
async function chooseCertificate (remote: Remote, o: InstallOptions, steps: Steps, signal: AbortSignal): Promise<CertChoice> {
  const shown = await remote.ssh.exec(remote.script(['show-cert']), { signal })
  if (shown.code === 0) {
    const pem = shown.stdout
    const peerId = certPeerId(pem)
    const reason = await (async (): Promise<string | undefined> => {
      if (peerId === undefined) return 'cannot be read'
      try {
        const trust = new TrustStore(await readFile(join(o.caDir, CA_FILES.cert), 'utf8'), await readCaCrl(o.caDir))
        const v = trust.verify(pem, peerId)
        if (v.name !== o.name) return `is for '${v.name}', not '${o.name}'`
        if (v.role !== 'agent') return `has role ${v.role}`
        if (v.notAfter.getTime() - Date.now() < RENEW_BEFORE_DAYS * 86_400_000) return `expires at ${v.notAfter.toISOString()}`
        return undefined
      } catch (err) {
        return `is not usable: ${(err as Error).message}`
      }
    })()
    if (reason === undefined && peerId !== undefined) {
      steps.detail(`kept the host's certificate for ${o.name} (peer ${peerId})`)
      return { peerId, bundleArg: '/etc/goto/bundle' }
    }
    steps.detail(`the host's certificate ${reason ?? ''}: issuing a new one`)
  }
  const local = await mkdtemp(join(tmpdir(), 'goto-install-'))
  const dir = join(local, 'bundle')
  const info = await issueCertificate(o.caDir, { role: 'agent', name: o.name, out: dir, days: o.days })
  steps.detail(`issued a certificate for ${o.name} (peer ${info.peerId}, valid until ${info.notAfter}) from ${o.caDir}`)
  await remote.ssh.check(`mkdir -m 700 ${shq(`${remote.tmp}/bundle`)}`, 'making the bundle directory', { signal })
  for (const f of await readdir(dir)) {
    await remote.ssh.upload({ file: join(dir, f) }, `${remote.tmp}/bundle/${f}`, f === BUNDLE_FILES.identity ? 0o600 : 0o644, signal)
  }
  return { peerId: info.peerId, bundleArg: `${remote.tmp}/bundle`, localDir: local }
}

/** Asks the mesh until `name` (with `peerId`) is alive; returns the seconds it took. */
async function waitAlive (w: WaitOptions, name: string, peerId: string, steps: Steps, signal: AbortSignal): Promise<number> {
  const t0 = Date.now()
  let said = ''
  const say = (s: string): void => { if (s !== said) { steps.detail(s); said = s } }
  for (;;) {
    let rows: PeerRow[] | undefined
    let problem = ''
    const attempt = AbortSignal.any([signal, AbortSignal.timeout(ALIVE_ATTEMPT_MS)])
    try {
      const client = await AgentClient.connect(w.operatorBundle, w.via, attempt)
      try { rows = await client.peers(attempt) } finally { await client.close() }
    } catch (err) {
      signal.throwIfAborted()
      problem = (err as Error).message
    }
    const row = rows?.find(r => r.name === name && r.peerId === peerId)
    const others = rows?.filter(r => !r.self && r.state === 'alive').length ?? 0
    if (row?.state === 'alive' && (!w.needOthers || others > 0)) return (Date.now() - t0) / 1000
    say(rows === undefined ? `no answer yet from ${w.via.toString()}: ${problem}`
      : row === undefined ? `${name} is not in the peer table of ${w.via.toString()} yet`
        : row.state === 'alive' ? `${name} is alive, waiting until it sees another member alive`
          : `${name} is ${row.state} in the peer table of ${w.via.toString()}`)
    if (Date.now() - t0 > w.timeoutMs) {
      throw new AgentNotAliveError(`${name} did not become alive in the mesh within ${w.timeoutMs / 1000} s (last: ${said})`)
    }
    await delay(ALIVE_POLL_MS, undefined, { signal })
  }
}

/** goto install: see the module comment. Progress goes to `out`; failures throw typed errors. */
export async function installAgent (o: InstallOptions, out: Out, signal: AbortSignal): Promise<{ peerId: string }> {
  const size = await checkRelease(o.releaseFile)
  // A broken CA directory is found before anything is sent anywhere.
  await readCaCrl(o.caDir)
  const steps = new Steps(o.wait === undefined ? 5 : 6, out)
  let localDir: string | undefined
  try {
    return await withRemote(o.ssh, steps, signal, async (remote) => {
      steps.step('checking the host')
      await checkHost(remote, o.docker, steps, signal)

      steps.step('certificate')
      const cert = await chooseCertificate(remote, o, steps, signal)
      localDir = cert.localDir

      steps.step(`uploading the release ${o.releaseFile} (${(size / 1048576).toFixed(1)} MiB)`)
      const tarball = `${remote.tmp}/go-to.tar.gz`
      await remote.ssh.upload({ file: o.releaseFile }, tarball, 0o644, signal)

      steps.step('installing')
      const args = ['install', '--release', tarball, '--bundle', cert.bundleArg, '--name', o.name, '--docker', o.docker, ...o.agentArgs]
      const r = await remote.ssh.exec(remote.script(args), { signal, onLine: (l) => { if (l.trim() !== '') steps.detail(l) } })
      if (r.code === EXIT_PREREQUISITE) throw new PrerequisiteMissingError(`${remote.ssh.target.host} lacks a prerequisite (see above); nothing was changed`, [])
      if (r.code !== 0) throw new RemoteCommandError(`the install script failed on ${remote.ssh.target.host} (exit ${r.code}); see the lines above`)

      if (o.wait !== undefined) {
        steps.step(`waiting until ${o.name} is alive in the mesh (asking ${o.wait.via.toString()})`)
        try {
          const s = await waitAlive(o.wait, o.name, cert.peerId, steps, signal)
          steps.detail(`${o.name} is alive after ${s.toFixed(1)} s`)
        } catch (err) {
          if (err instanceof AgentNotAliveError) {
            const logs = await remote.ssh.exec(remote.script(['logs']), { signal: AbortSignal.timeout(10_000) }).catch(() => undefined)
            for (const l of logs?.stdout.trim().split('\n').slice(-10) ?? []) out.stderr(`  agent log: ${l}\n`)
          }
          throw err
        }
      }
      out.stdout(`installed ${o.name} on ${remote.ssh.target.host} (peer ${cert.peerId})\n`)
      return { peerId: cert.peerId }
    })
  } finally {
    if (localDir !== undefined) await rm(localDir, { recursive: true, force: true })
  }
}

/** goto uninstall: stop and remove the agent; with `revoke`, revoke its certificate in the CA. */
export async function uninstallAgent (o: UninstallOptions, out: Out, signal: AbortSignal): Promise<void> {
  if (o.revoke !== undefined) await readCaCrl(o.revoke.caDir)
  const steps = new Steps(o.revoke === undefined ? 2 : 3, out)
  await withRemote(o.ssh, steps, signal, async (remote) => {
    const shown = await remote.ssh.exec(remote.script(['show-cert']), { signal })
    const peerId = shown.code === 0 ? certPeerId(shown.stdout) : undefined
    steps.step('removing the agent')
    await remote.ssh.check(remote.script(['uninstall', ...(o.keepState ? ['--keep-state'] : [])]), 'the uninstall script', {
      signal, onLine: (l) => { if (l.trim() !== '') steps.detail(l) }
    })
    if (o.revoke !== undefined) {
      steps.step('revoking its certificate')
      if (peerId === undefined) throw new GotoError(`${remote.ssh.target.host} held no readable certificate: nothing to revoke (use goto ca revoke --name NAME)`)
      const result = await revoke(o.revoke.caDir, { peerId }, { bundles: o.revoke.bundles })
      for (const r of result.revoked) steps.detail(`revoked ${r.name} (peer ${r.peerId}); revocation list ${result.crlNumber} in ${o.revoke.caDir}`)
      if (result.revoked.length === 0) steps.detail(`peer ${peerId} was already revoked`)
      for (const b of result.bundles) steps.detail(`updated ${join(b, 'crl.json')}: run any goto command with it to spread the list`)
    }
    out.stdout(`uninstalled the agent from ${remote.ssh.target.host}\n`)
  })
}

