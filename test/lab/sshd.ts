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

export interface SshdFiles { dir: string, runDir: string, ip: string, authorizedKeys: Record<string, string[]> }

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
 * with the host's directories bound over HOST_PRIVATE_PATHS. `prefix` runs first and execs `argv`
 * (so the recorded PID is sshd's); a failed bind mount stops it before sshd starts.
 */
export function sshdCommand (netns: string, fsDir: string, configFile: string, logFile: string): { prefix: string[], argv: string[] } {
  const binds = HOST_PRIVATE_PATHS.map((p, i) => `mount --bind "$${i + 1}" ${p}`).join(' && ')
  return {
    prefix: [
      'nsenter', `--net=/var/run/netns/${netns}`,
      'unshare', '--mount', '--propagation', 'private', '--',
      '/bin/sh', '-c', `set -e; ${binds}; shift ${HOST_PRIVATE_PATHS.length}; exec "$@"`, 'sh',
      ...HOST_PRIVATE_PATHS.map(p => backingDir(fsDir, p))
    ],
    argv: [SSHD_BINARY, '-D', '-f', configFile, '-E', logFile]
  }
}
