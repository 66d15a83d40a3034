/**
 * Running the system tools the lab drives (ip, iptables, nsenter, tar, umount): a promise API over
 * child_process.spawn that collects output and turns a non-zero exit into LabCommandError, plus
 * detached spawning of the long-running processes (dockerd, agents) with output to a log file.
 */
import { spawn } from 'node:child_process'
import { open } from 'node:fs/promises'
import { LabCommandError } from './errors.js'
import { procStartTime, type ProcRecord } from './procs.js'

export interface RunResult { code: number | null, stdout: string, stderr: string }

export interface RunOptions {
  /** Resolve with the result instead of throwing when the exit code is not 0. */
  allowFail?: boolean
  env?: NodeJS.ProcessEnv
  cwd?: string
  signal?: AbortSignal
  input?: string
}

/** The tools live in sbin directories that a non-login PATH may lack. */
export function labPath (path = process.env.PATH ?? ''): string {
  const parts = path.split(':').filter(p => p !== '')
  for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    if (!parts.includes(dir)) parts.push(dir)
  }
  return parts.join(':')
}

export async function run (argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const [cmd, ...args] = argv
  const child = spawn(cmd, args, {
    env: opts.env ?? { ...process.env, PATH: labPath() },
    cwd: opts.cwd,
    signal: opts.signal,
    stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  if (opts.input !== undefined) child.stdin?.end(opts.input)
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (c) => resolve(c))
  })
  if (code !== 0 && opts.allowFail !== true) throw new LabCommandError(argv, code, stderr)
  return { code, stdout, stderr }
}

/** `nsenter --net=/var/run/netns/NS argv...`: the net namespace only, so cgroup mounts stay visible. */
export function inNetns (netns: string, argv: string[]): string[] {
  return ['nsenter', `--net=/var/run/netns/${netns}`, ...argv]
}

/**
 * Starts a long-running process in its own process group, stdout and stderr appended to `logFile`,
 * not keeping the caller alive. `argv` is what runs in the end (nsenter execs it in place, so the
 * PID stays the same); `prefix` (e.g. the nsenter part) runs first.
 */
export async function spawnDetached (prefix: string[], argv: string[], logFile: string, env: NodeJS.ProcessEnv): Promise<ProcRecord> {
  const log = await open(logFile, 'a')
  try {
    const all = [...prefix, ...argv]
    const child = spawn(all[0], all.slice(1), { detached: true, stdio: ['ignore', log.fd, log.fd], env })
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('error', reject)
      child.once('spawn', () => { if (child.pid === undefined) reject(new Error(`no pid for ${all[0]}`)); else resolve(child.pid) })
    })
    child.unref()
    const startTime = await procStartTime(pid)
    return { pid, argv, startTime: startTime ?? '' }
  } finally {
    await log.close()
  }
}
