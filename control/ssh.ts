/**
 * One SSH connection to a host for `goto install`/`uninstall` (ssh2): key authentication only, the
 * host key checked by known-hosts.ts before anything is sent, commands run with their output as
 * lines, files uploaded over SFTP with their mode. Failures come out typed: SshConnectError,
 * SshAuthError, HostKeyUnknownError / HostKeyMismatchError, RemoteCommandError.
 */
import { readFile } from 'node:fs/promises'
import { Client, type ClientChannel, type ConnectConfig, type ServerHostKeyAlgorithm, type SFTPWrapper } from 'ssh2'
import { RemoteCommandError, SshAuthError, SshConnectError, type GotoError } from '../protocol/errors.js'
import { decideHostKey, fingerprint, keyTypeOf, knownKeyTypes, readKnownHosts, rememberHostKey, type HostKeyPolicy } from './known-hosts.js'

/** How long the TCP connect plus SSH handshake may take (a cloud VM far away, a loaded CI host). */
export const SSH_READY_TIMEOUT_MS = 20_000

export interface SshTarget { user: string, host: string, port: number }

export interface SshOptions {
  target: SshTarget
  /** Private key file (OpenSSH or PEM format). */
  identityFile: string
  passphrase?: string
  hostKey: HostKeyPolicy
  signal: AbortSignal
}

export interface ExecResult { code: number, stdout: string, stderr: string }

/** ssh2's names of the host key algorithms for a known_hosts key type. */
const ALGORITHMS_OF: Record<string, ServerHostKeyAlgorithm[]> = {
  'ssh-ed25519': ['ssh-ed25519'],
  'ecdsa-sha2-nistp256': ['ecdsa-sha2-nistp256'],
  'ecdsa-sha2-nistp384': ['ecdsa-sha2-nistp384'],
  'ecdsa-sha2-nistp521': ['ecdsa-sha2-nistp521'],
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']
}
const ALL_ALGORITHMS = Object.values(ALGORITHMS_OF).flat()

/** Parses `USER@HOST` (IPv6 in brackets: `root@[2001:db8::1]`). */
export function parseTarget (text: string, port: number): SshTarget | undefined {
  const m = /^([A-Za-z0-9._][A-Za-z0-9._-]*)@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)$/.exec(text)
  if (m === null) return undefined
  return { user: m[1], host: m[2].replace(/^\[|\]$/g, ''), port }
}

export class SshSession {
  private constructor (private readonly client: Client, readonly target: SshTarget, readonly hostKeyInfo: string) {}

  static async connect (o: SshOptions): Promise<SshSession> {
    const { target, hostKey: policy } = o
    let privateKey: Buffer
    try {
      privateKey = await readFile(o.identityFile)
    } catch (err) {
      throw new SshAuthError(`cannot read the SSH identity ${o.identityFile}: ${(err as Error).message} (give one with --identity KEYFILE)`, { cause: err })
    }
    const entries = await readKnownHosts(policy.knownHostsFile)
    // Ask for a key type known_hosts holds for this host first, as OpenSSH does, so a host with
    // several keys presents the one we can check.
    const preferred = knownKeyTypes(entries, target.host, target.port).flatMap(t => ALGORITHMS_OF[t] ?? [])
    const client = new Client()
    let refusal: GotoError | undefined
    let accepted: { how: string, remember?: string, fp: string, type: string } | undefined
    const config: ConnectConfig = {
      host: target.host,
      port: target.port,
      username: target.user,
      privateKey,
      passphrase: o.passphrase,
      readyTimeout: SSH_READY_TIMEOUT_MS,
      tryKeyboard: false,
      algorithms: { serverHostKey: [...new Set([...preferred, ...ALL_ALGORITHMS])] },
      hostVerifier: (key: Buffer) => {
        const d = decideHostKey(entries, target.host, target.port, key, policy)
        if (!d.ok) { refusal = d.error; return false }
        accepted = { how: d.how, remember: d.remember, fp: fingerprint(key), type: keyTypeOf(key) }
        return true
      }
    }
    const where = `${target.user}@${target.host}:${target.port}`
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { client.end(); reject(new SshConnectError(`cannot connect to ${where}: ${String(o.signal.reason ?? 'aborted')}`)) }
      o.signal.addEventListener('abort', onAbort, { once: true })
      client.once('ready', () => { o.signal.removeEventListener('abort', onAbort); resolve() })
      client.once('error', (err: Error & { level?: string }) => {
        o.signal.removeEventListener('abort', onAbort)
        client.end()
        if (refusal !== undefined) reject(refusal)
        else if (err.level === 'client-authentication') {
          reject(new SshAuthError(`${where} refused our key ${o.identityFile} for user '${target.user}': check the user name and that the key's .pub is in that user's ~/.ssh/authorized_keys`, { cause: err }))
        } else if (err.level === 'client-timeout') {
          reject(new SshConnectError(`cannot connect to ${where}: no SSH handshake within ${SSH_READY_TIMEOUT_MS / 1000} s`, { cause: err }))
        } else {
          reject(new SshConnectError(`cannot connect to ${where}: ${err.message}`, { cause: err }))
        }
      })
      client.connect(config)
    })
    // Later errors (the connection drops) surface as failed commands; without a listener they
    // would crash the process.
    client.on('error', () => {})
    if (accepted === undefined) { client.end(); throw new SshConnectError(`${where}: the host key was never checked`) }
    if (accepted.remember !== undefined) await rememberHostKey(policy.knownHostsFile, accepted.remember)
    return new SshSession(client, target, `${accepted.type} ${accepted.fp} (${accepted.how})`)
  }

  /**
   * Runs `command` (a shell command line) on the host. Each output line goes to `onLine` as it
   * arrives; the whole output is returned too. Never throws for a non-zero exit: see `check`.
   */
  async exec (command: string, o: { signal: AbortSignal, onLine?: (line: string, stream: 'stdout' | 'stderr') => void }): Promise<ExecResult> {
    const channel = await new Promise<ClientChannel>((resolve, reject) => {
      this.client.exec(command, (err, ch) => { if (err !== undefined && err !== null) reject(new SshConnectError(`cannot run a command on ${this.target.host}: ${err.message}`, { cause: err })); else resolve(ch) })
    })
    const onAbort = (): void => { channel.close() }
    o.signal.addEventListener('abort', onAbort, { once: true })
    const out = { stdout: '', stderr: '' }
    const pending = { stdout: '', stderr: '' }
    const feed = (which: 'stdout' | 'stderr') => (chunk: Buffer) => {
      const text = chunk.toString('utf8')
      out[which] += text
      pending[which] += text
      const lines = pending[which].split('\n')
      pending[which] = lines.pop() ?? ''
      for (const l of lines) o.onLine?.(l, which)
    }
    channel.on('data', feed('stdout'))
    channel.stderr.on('data', feed('stderr'))
    try {
      const code = await new Promise<number>((resolve) => {
        let exit = -1
        channel.on('exit', (c: number | null) => { exit = c ?? -1 })
        channel.on('close', () => { resolve(exit) })
      })
      for (const which of ['stdout', 'stderr'] as const) if (pending[which] !== '') o.onLine?.(pending[which], which)
      o.signal.throwIfAborted()
      return { code, ...out }
    } finally {
      o.signal.removeEventListener('abort', onAbort)
    }
  }

  /** exec, and a RemoteCommandError (with the last lines of output) unless it exits 0. */
  async check (command: string, what: string, o: { signal: AbortSignal, onLine?: (line: string, stream: 'stdout' | 'stderr') => void }): Promise<ExecResult> {
    const r = await this.exec(command, o)
    if (r.code !== 0) {
      const tail = (r.stderr.trim() !== '' ? r.stderr : r.stdout).trim().split('\n').slice(-5).join(' | ')
      throw new RemoteCommandError(`${what} failed on ${this.target.host} (exit ${r.code}): ${tail}`)
    }
    return r
  }

  /** Uploads a local file or bytes to `remotePath` with `mode` (created by the SSH user). */
  async upload (source: { file: string } | { data: Buffer }, remotePath: string, mode: number, signal: AbortSignal): Promise<void> {
    const sftp = await this.sftp()
    try {
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => { sftp.end(); reject(signal.reason) }
        signal.addEventListener('abort', onAbort, { once: true })
        const done = (err?: Error | null): void => {
          signal.removeEventListener('abort', onAbort)
          if (err !== undefined && err !== null) reject(new RemoteCommandError(`uploading to ${this.target.host}:${remotePath} failed: ${err.message}`, { cause: err }))
          else resolve()
        }
        if ('file' in source) sftp.fastPut(source.file, remotePath, { mode }, done)
        else sftp.writeFile(remotePath, source.data, { mode }, done)
      })
      // The umask may have narrowed the mode at creation; make it exact.
      await new Promise<void>((resolve, reject) => { sftp.chmod(remotePath, mode, err => { if (err !== undefined && err !== null) reject(err); else resolve() }) })
    } finally {
      sftp.end()
    }
  }

  private async sftp (): Promise<SFTPWrapper> {
    return await new Promise<SFTPWrapper>((resolve, reject) => {
      this.client.sftp((err, s) => { if (err !== undefined && err !== null) reject(new SshConnectError(`SFTP is not available on ${this.target.host}: ${err.message}`, { cause: err })); else resolve(s) })
    })
  }

  close (): void {
    this.client.end()
  }
}
