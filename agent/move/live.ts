/**
 * Live moves (`goto move --live`): what an agent checks before one, and the checkpoint's files on
 * the way between two engines.
 *
 *   LiveCheck      whether this host can take part (LiveReport): CRIU present, 4.2 or newer and
 *                  passing `criu check` (run once and kept for CRIU_CHECK_TTL_MS), the engine a
 *                  Docker Engine in experimental mode whose data root this agent reads, and this
 *                  CPU's architecture and flags (the destination's must be a superset of the
 *                  source's: a restored process using an instruction the CPU lacks dies of SIGILL).
 *   listCheckpoint the files of a checkpoint directory the engine wrote (read as root, like layer
 *                  files), each with its size and sha256, within the bounds a destination takes.
 *   receiveCheckpoint  writes the announced files into a new directory, each verified against its
 *                  size and sha256 as it streams; paths were checked by the wire parser
 *                  (protocol/move-messages.ts checkpointPath) and are opened exclusively here.
 *   outsideConnections  the established TCP connections of a container's network namespace to a
 *                  peer outside it (/proc/<pid>/net/tcp and tcp6): a checkpoint carries a socket,
 *                  but its peer still talks to the source's address, so the source refuses them.
 *   resumeSource   a rolled-back live move's container runs here again: restored from its own
 *                  checkpoint, or started afresh if that fails (said in the log and the event).
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { lstat, mkdir, readFile, readdir } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { DockerHost } from '../docker/docker-host.js'
import type { RestartPolicy } from '../docker/types.js'
import type { Logger } from '../log.js'
import { CHECKPOINT_MAX_DEPTH, CHECKPOINT_MAX_FILES, CHECKPOINT_SEGMENT, type CheckpointFile, type LiveReport, type Resumed } from '../../protocol/move-messages.js'
import { CheckpointRefusedError, LiveUnavailableError } from '../../protocol/errors.js'

/**
 * `criu check` takes about 0.3 s here and its answer changes only when CRIU or the kernel does: kept
 * this long, so a drain of many live moves checks once, and a host fixed by its operator is seen
 * within minutes.
 */
export const CRIU_CHECK_TTL_MS = 10 * 60_000
/** `criu check` and `criu --version` on a loaded 2-core machine: well under this. */
const CRIU_RUN_TIMEOUT_MS = 30_000
/** CRIU 4.2 is the first to dump a TCP socket on kernels 6.13+ (4.1 fails, 3.17 fails `criu check`). */
export const MIN_CRIU_VERSION = [4, 2] as const
/**
 * Most bytes of checkpoint images a destination takes from one move. A checkpoint holds the
 * processes' resident memory: 64 GiB covers any container this mesh is meant for, and the free disk
 * bounds it further; what a rogue member can make this host write in one step stops there.
 */
export const MAX_CHECKPOINT_BYTES = 64 * 1024 ** 3

/** A TCP socket's state in /proc/net/tcp: ESTABLISHED. */
const TCP_ESTABLISHED = '01'

/** An address of /proc/net/tcp{,6} (hex, each 32-bit word in host order: little-endian here) as text. */
function procAddress (hex: string): string {
  const words = hex.match(/.{8}/g) ?? []
  const bytes = words.flatMap(w => (w.match(/../g) ?? []).reverse().map(b => parseInt(b, 16)))
  if (bytes.length === 4) return bytes.join('.')
  if (bytes.slice(0, 10).every(b => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return bytes.slice(12).join('.')
  const groups: string[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16))
  return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')
}

function loopback (addr: string): boolean {
  return addr.startsWith('127.') || addr === '::1'
}

/**
 * The established TCP connections of the network namespace of process `pid` (a container's first
 * process) to a peer outside it, as `address:port` of the peer: not loopback and not one of the
 * namespace's own addresses (those its sockets are bound to). Empty when the tables cannot be read.
 */
export async function outsideConnections (pid: number, signal: AbortSignal): Promise<string[]> {
  const tables: string[] = []
  for (const table of ['tcp', 'tcp6']) {
    signal.throwIfAborted()
    tables.push(await readFile(`/proc/${pid}/net/${table}`, { encoding: 'utf8', signal }).catch(() => ''))
  }
  return outsidePeers(tables)
}

/** outsideConnections of the text of /proc/net/tcp and tcp6 tables (header line first). */
export function outsidePeers (tables: string[]): string[] {
  const rows: Array<{ local: string, remote: string, port: number }> = []
  for (const text of tables) {
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f.length < 4 || f[3] !== TCP_ESTABLISHED) continue
      const [local] = f[1].split(':')
      const [remote, port] = f[2].split(':')
      rows.push({ local: procAddress(local), remote: procAddress(remote), port: parseInt(port, 16) })
    }
  }
  const own = new Set(rows.map(r => r.local))
  return [...new Set(rows.filter(r => !loopback(r.remote) && !own.has(r.remote)).map(r => `${r.remote.includes(':') ? `[${r.remote}]` : r.remote}:${r.port}`))]
}

/** Runs a program, resolving its exit and output (never rejecting). */
export type RunProgram = (file: string, args: string[], signal: AbortSignal) => Promise<{ code: number | string | null, stdout: string, stderr: string }>

const runProgram: RunProgram = async (file, args, signal) => await new Promise(resolve => {
  execFile(file, args, { signal, timeout: CRIU_RUN_TIMEOUT_MS, maxBuffer: 1024 * 1024 }, (err, stdout, stderr) => {
    const code = err === null ? 0 : (err as NodeJS.ErrnoException).code ?? null
    resolve({ code, stdout: String(stdout), stderr: String(stderr) })
  })
})

/** The CPU flags this host has (the `flags` line of /proc/cpuinfo; empty when there is none). */
export async function cpuFlags (): Promise<string[]> {
  const text = await readFile('/proc/cpuinfo', 'utf8').catch(() => '')
  const line = /^(?:flags|Features)\s*:\s*(.*)$/m.exec(text)
  return line === null ? [] : [...new Set(line[1].trim().split(/\s+/).filter(f => f !== ''))].sort()
}

export interface LiveCheckDeps {
  docker: Pick<DockerHost, 'version' | 'info' | 'checkpointDirectory'>
  /** The CRIU binary (AgentConfig.criu): a path or a name on PATH. */
  criu: string
  /** This host's member name (for the report). */
  selfName: string
  /** Default: execFile. */
  run?: RunProgram
  /** Default: /proc/cpuinfo. */
  cpuFlags?: () => Promise<string[]>
  now?: () => number
}

/** What CRIU said, kept for CRIU_CHECK_TTL_MS. */
interface CriuFinding { version?: string, missing?: string, at: number }

/** Whether this host can take part in a live move (the source before it asks, the destination at prepare). */
export class LiveCheck {
  private criu?: CriuFinding
  private flags?: string[]
  private readonly now: () => number

  constructor (private readonly deps: LiveCheckDeps) {
    this.now = deps.now ?? Date.now
  }

  async report (signal: AbortSignal): Promise<LiveReport & { cpuFlags: string[] }> {
    const { docker } = this.deps
    const missing: string[] = []
    const [criu, version, info, flags] = await Promise.all([this.criuFinding(signal), docker.version(signal), docker.info(signal), this.cpuFlags()])
    if (criu.missing !== undefined) missing.push(criu.missing)
    if (version.product !== 'docker') missing.push(`the engine is ${version.product}, which takes no checkpoints through its Docker API (live moves need Docker Engine)`)
    else if (!info.experimental) missing.push('the engine is not in experimental mode (start dockerd with --experimental: checkpoints need it)')
    if (await docker.checkpointDirectory('0'.repeat(64), 'probe', signal) === undefined) {
      missing.push('the engine\'s data root is not a directory this agent reads (it must run on the engine\'s host, as root)')
    }
    return { host: this.deps.selfName, ok: missing.length === 0, ...criu.version === undefined ? {} : { criu: criu.version }, arch: info.architecture, missing, cpuFlags: flags }
  }

  /** Throws LiveUnavailableError naming this host and what it lacks, unless it can take part. */
  async require (signal: AbortSignal): Promise<LiveReport & { cpuFlags: string[] }> {
    const r = await this.report(signal)
    if (!r.ok) throw new LiveUnavailableError(`live move not possible: ${r.host}: ${r.missing.join('; ')}`)
    return r
  }

  private async cpuFlags (): Promise<string[]> {
    this.flags ??= await (this.deps.cpuFlags ?? cpuFlags)()
    return this.flags
  }

  private async criuFinding (signal: AbortSignal): Promise<CriuFinding> {
    if (this.criu !== undefined && this.now() - this.criu.at < CRIU_CHECK_TTL_MS) return this.criu
    const run = this.deps.run ?? runProgram
    const bin = this.deps.criu
    const at = this.now()
    const v = await run(bin, ['--version'], signal)
    let finding: CriuFinding
    if (v.code === 'ENOENT' || v.code === 'EACCES') {
      finding = { missing: `CRIU not found (${bin}: ${String(v.code)}; install CRIU 4.2 or newer, or point the agent's --criu at it)`, at }
    } else {
      const m = /Version:\s*(\d+)\.(\d+)(?:\.(\d+))?/.exec(v.stdout)
      const version = m === null ? undefined : `${m[1]}.${m[2]}${m[3] === undefined ? '' : `.${m[3]}`}`
      if (v.code !== 0 || m === null || version === undefined) {
        finding = { missing: `CRIU did not tell its version (${bin} --version: ${lastLine(v.stderr + v.stdout) || `exit ${String(v.code)}`})`, at }
      } else if (Number(m[1]) < MIN_CRIU_VERSION[0] || (Number(m[1]) === MIN_CRIU_VERSION[0] && Number(m[2]) < MIN_CRIU_VERSION[1])) {
        finding = { version, missing: `CRIU ${version} is older than ${MIN_CRIU_VERSION.join('.')} (older ones cannot dump a TCP socket on this kernel)`, at }
      } else {
        const c = await run(bin, ['check'], signal)
        const out = c.stdout + c.stderr
        finding = c.code === 0 && /Looks good/.test(out)
          ? { version, at }
          : { version, missing: `criu check fails here (${lastLine(out) || `exit ${String(c.code)}`})`, at }
      }
    }
    this.criu = finding
    return finding
  }
}

/** The destination's refusal (or nothing) of a source CPU: same architecture, and every flag the source has. */
export function cpuRefusal (source: { arch: string, cpuFlags: string[] }, here: { host: string, arch: string, cpuFlags: string[] }): string | undefined {
  if (source.arch !== here.arch) return `${here.host} runs ${here.arch}, the source ${source.arch}: a checkpoint restores only on the same CPU architecture`
  const have = new Set(here.cpuFlags)
  const lacking = source.cpuFlags.filter(f => !have.has(f))
  if (lacking.length > 0) {
    return `${here.host}'s CPU lacks flags the source's has (${lacking.slice(0, 8).join(', ')}${lacking.length > 8 ? `, and ${lacking.length - 8} more` : ''}): a restored process using them would die of SIGILL`
  }
  return undefined
}

function lastLine (s: string): string {
  return s.trim().split('\n').at(-1)?.trim().slice(0, 200) ?? ''
}

/** The files of a checkpoint directory, sorted, each with size and sha256; refuses what a destination would. */
export async function listCheckpoint (dir: string, signal: AbortSignal): Promise<CheckpointFile[]> {
  const out: CheckpointFile[] = []
  let total = 0
  const walk = async (rel: string[]): Promise<void> => {
    for (const name of (await readdir(join(dir, ...rel))).sort()) {
      signal.throwIfAborted()
      const parts = [...rel, name]
      const path = parts.join('/')
      if (!CHECKPOINT_SEGMENT.test(name) || parts.length > CHECKPOINT_MAX_DEPTH) throw new CheckpointRefusedError(`checkpoint file ${path} has a name or depth no destination takes`)
      const st = await lstat(join(dir, path))
      if (st.isDirectory()) { await walk(parts); continue }
      if (!st.isFile()) throw new CheckpointRefusedError(`checkpoint entry ${path} is not a regular file`)
      total += st.size
      if (out.length >= CHECKPOINT_MAX_FILES || total > MAX_CHECKPOINT_BYTES) throw new CheckpointRefusedError(`the checkpoint is larger than a destination takes (${CHECKPOINT_MAX_FILES} files, ${MAX_CHECKPOINT_BYTES} bytes)`)
      const hash = createHash('sha256')
      for await (const chunk of createReadStream(join(dir, path), { signal })) hash.update(chunk as Buffer)
      out.push({ path, size: st.size, digest: `sha256:${hash.digest('hex')}` })
    }
  }
  await walk([])
  return out
}

/**
 * Writes each announced file (its bytes from `blob(size)`, in order) under `dir`, which must not
 * exist yet; refuses a total beyond `maxBytes` before reading anything, and any file whose sha256
 * is not the one announced (the caller removes `dir` on any failure). Returns the bytes kept.
 */
export async function receiveCheckpoint (dir: string, files: CheckpointFile[], blob: (size: number) => AsyncIterable<Uint8Array>, maxBytes: number, signal: AbortSignal): Promise<number> {
  const total = files.reduce((n, f) => n + f.size, 0)
  if (total > maxBytes) throw new CheckpointRefusedError(`the checkpoint announces ${total} bytes, at most ${maxBytes} are taken here`)
  await mkdir(dirname(dir), { recursive: true, mode: 0o700 })
  await mkdir(dir, { mode: 0o700 })
  for (const f of files) {
    const path = join(dir, f.path)
    await mkdir(dirname(path), { recursive: true, mode: 0o700 })
    const hash = createHash('sha256')
    await pipeline(async function * () {
      for await (const chunk of blob(f.size)) {
        hash.update(chunk)
        yield chunk
      }
    }, createWriteStream(path, { flags: 'wx', mode: 0o600 }), { signal })
    const got = `sha256:${hash.digest('hex')}`
    if (got !== f.digest) throw new CheckpointRefusedError(`checkpoint file ${f.path} has sha256 ${got}, ${f.digest} was announced`)
  }
  return total
}

/** Whether the engine would restart the container by itself once its processes exit (a checkpoint's exit too). */
export function restartsByItself (policy: RestartPolicy): boolean {
  return policy.name !== '' && policy.name !== 'no'
}

/**
 * The container of a rolled-back live move runs here again: if it still runs (the checkpoint never
 * stopped it) nothing is done; otherwise it starts from its own checkpoint `name` — its processes go
 * on with their memory — or, if that fails, afresh. Says which in the log; the checkpoint goes.
 * `policy`: the restart policy it had before the move set `no`, given back either way.
 */
export async function resumeSource (docker: DockerHost, id: string, name: string, log: Logger, signal: AbortSignal, policy?: RestartPolicy): Promise<Resumed | 'running'> {
  const state = (await docker.inspectContainer(id, signal)).state
  if (policy !== undefined) await docker.setRestartPolicy(id, policy, signal)
  if (state.running) return 'running'
  let how: Resumed
  try {
    await docker.startFromCheckpoint(id, name, signal)
    how = 'checkpoint'
    log.warn('rollback: the source container was restored from its own checkpoint: its processes go on with their memory', { checkpoint: name })
  } catch (err) {
    log.error('rollback: the source container could not be restored from its checkpoint: started afresh (its processes\' memory is lost)', { checkpoint: name, error: (err as Error).message })
    await docker.start(id, signal)
    how = 'fresh'
  }
  await docker.removeCheckpoint(id, name, signal).catch(err => { log.warn('checkpoint of a rolled-back live move not removed', { checkpoint: name, error: (err as Error).message }) })
  return how
}
