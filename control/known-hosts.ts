/**
 * Deciding whether to trust an SSH server's host key, the way OpenSSH does: its known_hosts file
 * (plain, `[host]:port`, wildcard and hashed `|1|salt|hash` entries, `@revoked` markers), or an
 * explicit `--host-key SHA256:...` fingerprint, or — only when the operator says so — trust on
 * first use. An unknown or changed key is a typed error whose message says how to check it.
 */
import { createHash, createHmac } from 'node:crypto'
import { appendFile, mkdir, readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { HostKeyMismatchError, HostKeyUnknownError, type GotoError } from '../protocol/errors.js'

export interface KnownHostEntry {
  /** 1-based line number in the file, for messages. */
  line: number
  marker: 'revoked' | 'cert-authority' | undefined
  /** Comma-separated patterns as written, or one hashed `|1|salt|hash` entry. */
  patterns: string
  keyType: string
  key: Buffer
}

export interface HostKeyPolicy {
  knownHostsFile: string
  /** `SHA256:<base64>` from --host-key: trusted whatever known_hosts says. */
  fingerprint?: string
  /** --accept-new-host-key: trust (and remember) a key for a host known_hosts has no key for. */
  acceptNew: boolean
}

export type HostKeyDecision =
  | { ok: true, how: string, remember?: string }
  | { ok: false, error: GotoError }

/** `SHA256:<base64 without padding>`, as `ssh-keygen -l` prints it. */
export function fingerprint (keyBlob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')
}

/** The key type named inside an SSH public key blob (its first string). */
export function keyTypeOf (keyBlob: Buffer): string {
  if (keyBlob.length < 4) return 'unknown'
  const n = keyBlob.readUInt32BE(0)
  return n > 0 && n < 64 && keyBlob.length >= 4 + n ? keyBlob.subarray(4, 4 + n).toString('latin1') : 'unknown'
}

export function parseKnownHosts (text: string): KnownHostEntry[] {
  const out: KnownHostEntry[] = []
  text.split('\n').forEach((raw, i) => {
    const fields = raw.trim().split(/\s+/)
    if (fields[0] === '' || fields[0].startsWith('#')) return
    let marker: KnownHostEntry['marker']
    if (fields[0] === '@revoked' || fields[0] === '@cert-authority') marker = fields.shift()?.slice(1) as KnownHostEntry['marker']
    const [patterns, keyType, b64] = fields
    if (patterns === undefined || keyType === undefined || b64 === undefined || !/^[A-Za-z0-9+/]+=*$/.test(b64)) return
    out.push({ line: i + 1, marker, patterns, keyType, key: Buffer.from(b64, 'base64') })
  })
  return out
}

/** How OpenSSH names a host in known_hosts: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsName (host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`
}

function globMatch (pattern: string, name: string): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')
  return new RegExp(`^${re}$`, 'i').test(name)
}

export function entryMatches (entry: KnownHostEntry, host: string, port: number): boolean {
  const name = knownHostsName(host, port)
  if (entry.patterns.startsWith('|1|')) {
    const [, , salt, hash] = entry.patterns.split('|')
    if (salt === undefined || hash === undefined) return false
    const mac = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64')
    return mac === hash
  }
  let matched = false
  for (const p of entry.patterns.split(',')) {
    if (p.startsWith('!')) {
      if (globMatch(p.slice(1), name)) return false
    } else if (globMatch(p, name)) {
      matched = true
    }
  }
  return matched
}

/** The key types known_hosts holds for the host, to ask the server for one of them first. */
export function knownKeyTypes (entries: KnownHostEntry[], host: string, port: number): string[] {
  return [...new Set(entries.filter(e => e.marker === undefined && entryMatches(e, host, port)).map(e => e.keyType))]
}

export async function readKnownHosts (file: string): Promise<KnownHostEntry[]> {
  try {
    return parseKnownHosts(await readFile(file, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw err
  }
}

/** Appends a plain known_hosts line (creating ~/.ssh 0700 and the file 0600 if needed). */
export async function rememberHostKey (file: string, line: string): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  await appendFile(file, line + '\n', { mode: 0o600 })
}

function howToCheck (keyType: string): string {
  const file = keyType === 'ssh-rsa' ? 'ssh_host_rsa_key' : keyType.startsWith('ecdsa') ? 'ssh_host_ecdsa_key' : 'ssh_host_ed25519_key'
  return `run 'ssh-keygen -lf /etc/ssh/${file}.pub' on the host itself (or read the fingerprint from the cloud's console output)`
}

/** Whether to trust `keyBlob` as the host key of host:port under `policy`. */
export function decideHostKey (entries: KnownHostEntry[], host: string, port: number, keyBlob: Buffer, policy: HostKeyPolicy): HostKeyDecision {
  const fp = fingerprint(keyBlob)
  const type = keyTypeOf(keyBlob)
  const name = knownHostsName(host, port)
  const mine = entries.filter(e => entryMatches(e, host, port))
  const revoked = mine.find(e => e.marker === 'revoked' && e.key.equals(keyBlob))
  if (revoked !== undefined) {
    return { ok: false, error: new HostKeyMismatchError(`the SSH host key of ${name} (${type} ${fp}) is marked @revoked in ${policy.knownHostsFile}:${revoked.line}; refusing it`) }
  }
  const plain = mine.filter(e => e.marker === undefined)
  const remember = `${name} ${type} ${keyBlob.toString('base64')}`
  if (policy.fingerprint !== undefined) {
    if (policy.fingerprint.replace(/=+$/, '') === fp) {
      return { ok: true, how: `matches --host-key ${fp}`, remember: plain.length === 0 ? remember : undefined }
    }
    return {
      ok: false,
      error: new HostKeyMismatchError(`the SSH host key of ${name} is ${type} ${fp}, not the --host-key ${policy.fingerprint} you gave: ` +
        `this may be another machine. To check, ${howToCheck(type)}`)
    }
  }
  const same = plain.find(e => e.key.equals(keyBlob))
  if (same !== undefined) return { ok: true, how: `matches ${policy.knownHostsFile}:${same.line}` }
  if (plain.length > 0) {
    const old = plain[0]
    return {
      ok: false,
      error: new HostKeyMismatchError(`the SSH host key of ${name} has CHANGED: it presents ${type} ${fp}, but ${policy.knownHostsFile}:${old.line} ` +
        `holds ${old.keyType} ${fingerprint(old.key)}. This may be another machine (a man in the middle) or a re-installed host. ` +
        `To check, ${howToCheck(type)}; if it is a re-install, pass --host-key ${fp} (and remove the old line: ssh-keygen -R '${name}')`)
    }
  }
  if (policy.acceptNew) return { ok: true, how: `new key accepted (--accept-new-host-key), added to ${policy.knownHostsFile}`, remember }
  return {
    ok: false,
    error: new HostKeyUnknownError(`the SSH host key of ${name} is not known (${type} ${fp}; no entry in ${policy.knownHostsFile}). ` +
      `To check it, ${howToCheck(type)}; if the fingerprints match, pass --host-key ${fp} (or --accept-new-host-key to trust it on first use)`)
  }
}
