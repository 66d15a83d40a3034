/**
 * A real OpenSSH server (Debian's openssh-server) on a lab host, for `goto install` tests. Lab hosts
 * are network namespaces on one machine and share its filesystem, so each host's sshd runs in its
 * own mount namespace too, where per-host directories are bind-mounted over the paths an installed
 * agent uses (/opt/goto, /etc/goto, /var/lib/goto): whatever runs through that sshd — the install
 * script over SSH, or a provisioning script run with `Lab.hostExec` — writes the host's own copies,
 * never the real machine's. The sshd has its own config, host key, authorized keys, pidfile and log
 * under the lab's roots.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { run } from './sys.js'
import type { ProcRecord } from './procs.js'

/** The system paths each lab host with an sshd gets its own copy of. */
export const HOST_PRIVATE_PATHS = ['/opt/goto', '/etc/goto', '/var/lib/goto'] as const
/** OpenSSH's privilege separation directory; sshd refuses to start without it. */
export const SSHD_PRIVSEP_DIR = '/run/sshd'
export const SSHD_BINARY = '/usr/sbin/sshd'
export const SSH_PORT = 22

export interface SshdRecord extends ProcRecord {
  port: number
  configFile: string
  logFile: string
  /** `ssh-ed25519 AAAA...`: the host key as a known_hosts line wants it after the host name. */
  hostKey: string
  /** Where HOST_PRIVATE_PATHS live for this host: `<dir>/fs/<path with / as ->`. */
  fsDir: string
}

/** `<host dir>/fs/opt-goto` for `/opt/goto`. */
export function backingDir (fsDir: string, path: string): string {
  return join(fsDir, path.replace(/^\//, '').replace(/\//g, '-'))
}

/**
 * With extra users, the host gets its own copies of these too (bound over them in its mount
 * namespace): the machine's own account files plus the lab's users, and a sudoers.d of its own.
 */
export const ACCOUNT_FILES = ['/etc/passwd', '/etc/group', '/etc/shadow'] as const
export const SUDOERS_DIR = '/etc/sudoers.d'
/** UIDs (and GIDs) of the lab's users start here, above Debian's range for normal users' first. */
const FIRST_LAB_UID = 64_000

/** A non-root login on a lab host; `sudo` grants passwordless sudo (as cloud images' default users have). */
export interface LabUser { name: string, sudo: boolean }

export interface SshdFiles { dir: string, runDir: string, ip: string, authorizedKeys: Record<string, string[]> }

/**
 * Writes the host's own account files (the machine's, plus `users`, each with home / and no
 * password but not locked, so key logins work) and sudoers.d; returns [source, target] binds.
 */
export async function prepareUsers (fsDir: string, users: LabUser[]): Promise<Array<[string, string]>> {
  const binds: Array<[string, string]> = []
  const lines: Record<string, (u: LabUser, id: number) => string> = {
    '/etc/passwd': (u, id) => `${u.name}:x:${id}:${id}:lab user:/:/bin/sh`,
    '/etc/group': (u, id) => `${u.name}:x:${id}:`,
    // '*': no password to log in with, yet not locked ('!'), which would refuse key logins too.
    '/etc/shadow': (u) => `${u.name}:*:19000:0:99999:7:::`
  }
  for (const f of ACCOUNT_FILES) {
    const own = backingDir(fsDir, f)
    const base = (await readFile(f, 'utf8')).trimEnd().split('\n').filter(l => !users.some(u => l.startsWith(`${u.name}:`)))
    await writeFile(own, [...base, ...users.map((u, i) => lines[f](u, FIRST_LAB_UID + i))].join('\n') + '\n', { mode: f === '/etc/shadow' ? 0o640 : 0o644 })
    binds.push([own, f])
  }
  const sudoers = backingDir(fsDir, SUDOERS_DIR)
  await mkdir(sudoers, { recursive: true, mode: 0o755 })
  const rules = users.filter(u => u.sudo).map(u => `${u.name} ALL=(ALL) NOPASSWD: ALL`)
  await writeFile(join(sudoers, 'gotolab'), rules.join('\n') + '\n', { mode: 0o440 })
  binds.push([sudoers, SUDOERS_DIR])
  return binds
}

/** Writes config, host key and authorized_keys/<user>; returns the config path and the host key line. */
export async function prepareSshd (f: SshdFiles): Promise<{ configFile: string, hostKey: string, pidFile: string }> {
  await mkdir(join(f.dir, 'authorized_keys'), { recursive: true, mode: 0o755 })
  await mkdir(f.runDir, { recursive: true })
  const keyFile = join(f.dir, 'ssh_host_ed25519_key')
  // An earlier start's key is kept: the host keeps its identity across sshd restarts.
  if (!existsSync(keyFile)) await run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'gotolab-host', '-f', keyFile])
  for (const [user, keys] of Object.entries(f.authorizedKeys)) {
    await writeFile(join(f.dir, 'authorized_keys', user), keys.join('\n') + '\n', { mode: 0o644 })
  }
  const pidFile = join(f.runDir, 'sshd.pid')
  const configFile = join(f.dir, 'sshd_config')
  await writeFile(configFile, [
    `Port ${SSH_PORT}`,
    `ListenAddress ${f.ip}`,
    `HostKey ${keyFile}`,
    `PidFile ${pidFile}`,
    `AuthorizedKeysFile ${join(f.dir, 'authorized_keys')}/%u`,
    // The lab's directories belong to root with ordinary modes; the checks are for home directories.
    'StrictModes no',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'PermitRootLogin prohibit-password',
    'UsePAM no',
    'PrintMotd no',
    'Subsystem sftp internal-sftp',
    'LogLevel VERBOSE',
    ''
  ].join('\n'))
  const hostKey = (await readFile(`${keyFile}.pub`, 'utf8')).trim().split(/\s+/).slice(0, 2).join(' ')
  return { configFile, hostKey, pidFile }
}

/**
 * The command that starts sshd in the host's network namespace and a new private mount namespace
 * with `binds` ([host's own copy, path]) mounted: HOST_PRIVATE_PATHS, and the account files when
 * the host has users. `prefix` runs first and execs `argv` (so the recorded PID is sshd's); a
 * failed bind mount stops it before sshd starts.
 */
export function sshdCommand (netns: string, binds: Array<[string, string]>, configFile: string, logFile: string): { prefix: string[], argv: string[] } {
  // ${N}, not $N: in sh, $10 is $1 followed by a 0.
  const mounts = binds.map((_, i) => `mount --bind "\${${2 * i + 1}}" "\${${2 * i + 2}}"`).join(' && ')
  return {
    prefix: [
      'nsenter', `--net=/var/run/netns/${netns}`,
      'unshare', '--mount', '--propagation', 'private', '--',
      '/bin/sh', '-c', `set -e; ${mounts}; shift ${2 * binds.length}; exec "$@"`, 'sh',
      ...binds.flat()
    ],
    argv: [SSHD_BINARY, '-D', '-f', configFile, '-E', logFile]
  }
}
