/**
 * Finding and ending the lab's processes through /proc, and its mounts through mountinfo.
 *
 * The lab kills only what it can prove is its own: a recorded PID whose command line and start
 * time still match what it started; a process whose network namespace is one of the lab's
 * (`<prefix>-*`); a process whose cgroup path holds the ID of a container of a lab engine.
 */
import { readFile, readdir, readlink, stat, writeFile } from 'node:fs/promises'
import { waitFor } from './wait.js'
import { LabCleanupError } from './errors.js'

/** A process the lab started: what it runs and when it started (guards against PID reuse). */
export interface ProcRecord {
  pid: number
  /** The program's argv after any nsenter prefix (what /proc/PID/cmdline ends with). */
  argv: string[]
  /** Field 22 of /proc/PID/stat (clock ticks since boot). */
  startTime: string
}

async function readText (path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch {
    return undefined
  }
}

interface ProcStat { state: string, startTime: string }

async function procStat (pid: number): Promise<ProcStat | undefined> {
  const text = await readText(`/proc/${pid}/stat`)
  if (text === undefined) return undefined
  // "pid (comm) state ppid ..." — comm may hold spaces and parentheses, so split after the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return { state: rest[0], startTime: rest[19] }
}

export async function procStartTime (pid: number): Promise<string | undefined> {
  return (await procStat(pid))?.startTime
}

/** Running (not gone, not a zombie waiting for its parent to reap it). */
export async function isAlive (pid: number): Promise<boolean> {
  const st = await procStat(pid)
  return st !== undefined && st.state !== 'Z' && st.state !== 'X'
}

export async function procCmdline (pid: number): Promise<string[] | undefined> {
  const text = await readText(`/proc/${pid}/cmdline`)
  if (text === undefined || text === '') return undefined
  return text.replace(/\0$/, '').split('\0')
}

/** The recorded process is still alive and is still the process we started. */
export async function isOurs (rec: ProcRecord | undefined): Promise<boolean> {
  if (rec === undefined) return false
  const st = await procStat(rec.pid)
  if (st === undefined || st.state === 'Z' || st.state === 'X') return false
  if (rec.startTime !== '' && st.startTime !== rec.startTime) return false
  const cmd = await procCmdline(rec.pid)
  if (cmd === undefined || cmd.length < rec.argv.length) return false
  const tail = cmd.slice(cmd.length - rec.argv.length)
  return tail.every((a, i) => a === rec.argv[i])
}

async function allPids (): Promise<number[]> {
  const names = await readdir('/proc')
  return names.filter(n => /^\d+$/.test(n)).map(Number).filter(p => p !== process.pid)
}

/** PIDs whose network namespace is one of the named ones (what `ip netns pids` reports). */
export async function pidsInNetns (netnsNames: string[]): Promise<Map<string, number[]>> {
  const byInode = new Map<string, string>()
  for (const name of netnsNames) {
    try {
      const st = await stat(`/run/netns/${name}`)
      byInode.set(`net:[${st.ino}]`, name)
    } catch { /* gone already */ }
  }
  const out = new Map<string, number[]>(netnsNames.map(n => [n, []]))
  if (byInode.size === 0) return out
  for (const pid of await allPids()) {
    let link: string
    try {
      link = await readlink(`/proc/${pid}/ns/net`)
    } catch {
      continue
    }
    const name = byInode.get(link)
    if (name !== undefined && await isAlive(pid)) out.get(name)?.push(pid)
  }
  return out
}

/** PIDs whose cgroup path names one of the container IDs (64 hex digits). */
export async function pidsInContainers (containerIds: Set<string>): Promise<number[]> {
  if (containerIds.size === 0) return []
  const out: number[] = []
  for (const pid of await allPids()) {
    const text = await readText(`/proc/${pid}/cgroup`)
    if (text === undefined) continue
    const ids = text.match(/[0-9a-f]{64}/g) ?? []
    if (ids.some(id => containerIds.has(id)) && await isAlive(pid)) out.push(pid)
  }
  return out
}

/** Where the cgroup v1 freezer hierarchy and the cgroup v2 hierarchy are mounted, if they are. */
async function cgroupMounts (): Promise<{ freezer?: string, unified?: string }> {
  const out: { freezer?: string, unified?: string } = {}
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const [left, right] = line.split(' - ')
    if (right === undefined) continue
    const point = unescapeMountPath(left.split(' ')[4])
    const [fstype, , superOpts = ''] = right.split(' ')
    if (fstype === 'cgroup' && superOpts.split(',').includes('freezer')) out.freezer ??= point
    if (fstype === 'cgroup2') out.unified ??= point
  }
  return out
}

/**
 * Thaws the frozen cgroups (`docker pause`) of the PIDs: a frozen process does not act on SIGKILL
 * until it is thawed. Called after the SIGKILL, so nothing runs user code in between.
 */
async function thawCgroupsOf (pids: number[]): Promise<void> {
  const mounts = await cgroupMounts()
  const files = new Set<string>()
  for (const pid of pids) {
    const text = await readText(`/proc/${pid}/cgroup`)
    for (const line of text?.split('\n') ?? []) {
      const [, controllers, path] = line.split(':')
      if (path === undefined) continue
      if (mounts.freezer !== undefined && controllers.split(',').includes('freezer')) files.add(`${mounts.freezer}${path}/freezer.state`)
      if (mounts.unified !== undefined && controllers === '') files.add(`${mounts.unified}${path}/cgroup.freeze`)
    }
  }
  for (const f of files) {
    const state = await readText(f)
    if (state === undefined) continue
    if (f.endsWith('freezer.state') && state.trim() !== 'THAWED') await writeFile(f, 'THAWED').catch(() => {})
    if (f.endsWith('cgroup.freeze') && state.trim() === '1') await writeFile(f, '0').catch(() => {})
  }
}

/** SIGKILLs the PIDs (ignoring ones already gone) and waits until none of them runs. */
export async function killAndWait (pids: number[], timeoutMs = 10_000): Promise<void> {
  const unique = [...new Set(pids)].filter(p => p !== process.pid && p > 1)
  for (const pid of unique) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err
    }
  }
  await thawCgroupsOf(unique)
  await waitFor(async () => {
    for (const pid of unique) if (await isAlive(pid)) return false
    return true
  }, { timeoutMs, intervalMs: 20, what: `processes ${unique.join(', ')} to die after SIGKILL` })
}

/** Sends `signal` to a recorded process if it is still ours; returns whether it was. */
export async function signalIfOurs (rec: ProcRecord | undefined, signal: NodeJS.Signals): Promise<boolean> {
  if (rec === undefined || !await isOurs(rec)) return false
  try {
    process.kill(rec.pid, signal)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
    throw err
  }
}

/** IDs of the containers an engine keeps under `<dataRoot>/containers/`. */
export async function containerIdsOf (dataRoots: string[]): Promise<Set<string>> {
  const ids = new Set<string>()
  for (const root of dataRoots) {
    let names: string[] = []
    try {
      names = await readdir(`${root}/containers`)
    } catch { /* engine never started or already removed */ }
    for (const n of names) if (/^[0-9a-f]{64}$/.test(n)) ids.add(n)
  }
  return ids
}

function unescapeMountPath (p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)))
}

/** Mount points at or under any of `roots`, deepest (and latest mounted) first. */
export async function mountsUnder (roots: string[]): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8')
  const points = text.split('\n').filter(l => l !== '').map(l => unescapeMountPath(l.split(' ')[4]))
  const ours = points
    .map((p, i) => ({ p, i }))
    .filter(({ p }) => roots.some(r => p === r || p.startsWith(`${r}/`)))
  ours.sort((a, b) => (b.p.split('/').length - a.p.split('/').length) || (b.i - a.i))
  return ours.map(({ p }) => p)
}

/**
 * Lazily unmounts everything at or under `roots`, deepest first, until nothing is left (a path can
 * carry stacked mounts, e.g. dockerd's bind mount of its data root onto itself).
 */
export async function unmountAllUnder (roots: string[], umount: (paths: string[]) => Promise<void>): Promise<number> {
  let count = 0
  for (let round = 0; round < 10; round++) {
    const mounts = await mountsUnder(roots)
    if (mounts.length === 0) return count
    await umount(mounts)
    count += mounts.length
  }
  const left = await mountsUnder(roots)
  if (left.length > 0) throw new LabCleanupError(`mounts still present after unmounting: ${left.join(', ')}`)
  return count
}
