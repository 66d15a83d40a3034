/**
 * A container's changes as an image layer, built from the Engine API only (the agent may run on
 * another machine than the engine's files): `GET /containers/{id}/changes` says which paths were
 * added, modified or deleted; `GET /containers/{id}/archive` gives their entries; `HEAD` of the
 * same endpoint tells whether a path exists. The result is a layer tar like the top layer of
 * `docker commit`: the changed entries named relative to `/`, parents before children, a whiteout
 * `<dir>/.wh.<name>` for each deleted path and `<dir>/.wh..wh..opq` for a directory that replaced
 * one of the image (an overlay "opaque" directory). Entries keep the engine's headers (mode,
 * owner, mtime, xattrs) byte for byte; only their names are rewritten.
 *
 *   const { size, diffId } = await exportContainerChanges(docker, id, '/spool/top.tar', signal)
 *
 * Call it on a paused (or stopped) container: the engine answers each request from the live
 * filesystem, so a running container can change between the list and the entries.
 *
 * What the engine reports, and what this does with it (Engine 20.10, overlay2):
 * - Kind 0 modified, 1 added, 2 deleted. Parents of changed paths show as modified (their mtime
 *   changed). The list is in no particular order; it is sorted here.
 * - Depending on the kernel and driver the engine diffs natively (an overlay opaque directory shows
 *   as *deleted* though it exists, its new children as added) or naively (the same directory shows
 *   as modified, each child of the image's directory as deleted). A deleted path is therefore
 *   HEAD-checked: absent → whiteout; a directory → opaque directory (its header and the opaque
 *   marker; its children follow as their own changes).
 * - Volume, bind and tmpfs mount points the engine created in the layer show as added directories
 *   (or files); their contents never show. An archive request for them, though, returns the
 *   mount's contents. So a mount point becomes an empty placeholder (as in `docker commit`), and
 *   nothing under a mount point is taken, also inside an added directory taken whole.
 * - /etc/hosts, /etc/hostname and /etc/resolv.conf are bind-mounted by the engine from outside the
 *   layer; writes to them do not show as changes. They are treated like mount points anyway.
 * - Sockets are not in the engine's archives (nor in `docker commit`); they are left out. So is any
 *   change the directory walk does not meet (the engine walks in lexical order, as the items are
 *   sorted): with the container paused, only what the engine cannot archive is missing.
 *
 * Cost. Each archive GET costs the engine a fresh `docker-tar` process in a chroot, under the
 * container's lock (~50 ms each on a small VM; concurrent requests to one container queue), while
 * a HEAD costs a few ms. So changes are fetched in as few GETs as possible: an added directory
 * whole (its changed descendants are in it), and the changes inside one directory by a single
 * scan of that directory, reading past unchanged entries up to a budget (SCAN_SKIP_*). A change
 * the scan could not reach within the budget is fetched by a scan rooted closer to it, at worst
 * by a GET of its own path. Nothing depends on the size of the image: unchanged files are read
 * only within the budget, never a whole image directory.
 */
import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { rm } from 'node:fs/promises'
import { posix } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { ContainerPathNotFoundError, DockerEngineError, GotoError } from '../../protocol/errors.js'
import {
  TAR_END, TarFormatError, TarType, newHeader, readTar, rewrittenHeader, tarPadding, type TarReadEntry
} from './layer-tar.js'
import type { ContainerChange, ContainerInfo, ExportedChanges, PathStat } from './types.js'

/**
 * How much unchanged data a scan of a directory may read past before it gives up and lets a scan
 * rooted closer to the remaining changes take over. One more GET costs ~50 ms of engine time;
 * reading 8 MiB or 1000 small entries costs about as much. The bound keeps a big unchanged
 * directory of the image (say /usr/lib) from being read because one file next to it changed.
 */
export const SCAN_SKIP_BYTES = 8 * 1024 * 1024
export const SCAN_SKIP_ENTRIES = 1000

/** Files the engine bind-mounts into every container from its own directory, never from the layer. */
export const ENGINE_MANAGED_FILES = ['/etc/hostname', '/etc/hosts', '/etc/resolv.conf'] as const

const WHITEOUT_PREFIX = '.wh.'
const OPAQUE_MARKER = '.wh..wh..opq'

/** What the exporter needs of an engine (DockerHost provides it). */
export interface ChangesEngine {
  containerChanges: (id: string, signal?: AbortSignal) => Promise<ContainerChange[]>
  /** ContainerPathNotFoundError when the path does not exist. */
  statPath: (id: string, path: string, signal?: AbortSignal) => Promise<PathStat>
  /** ContainerPathNotFoundError when the path does not exist. */
  getArchive: (id: string, path: string, signal?: AbortSignal) => Promise<AsyncIterable<Uint8Array>>
  inspectContainer: (id: string, signal?: AbortSignal) => Promise<ContainerInfo>
}

// --- paths ----------------------------------------------------------------------------------------

/**
 * Order of paths in a layer: by segments, each compared as UTF-8 bytes, so a directory comes right
 * before its descendants (`/a`, `/a/b`, `/a-b`) — the order of the engine's directory walk.
 */
export function comparePaths (a: string, b: string): number {
  const x = a.split('/')
  const y = b.split('/')
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] === y[i]) continue
    return Buffer.compare(Buffer.from(x[i] as string, 'utf8'), Buffer.from(y[i] as string, 'utf8'))
  }
  return x.length - y.length
}

/** True when `path` is strictly inside directory `dir` (both absolute, normalized). */
export function isUnder (path: string, dir: string): boolean {
  return dir === '/' ? path !== '/' : path.startsWith(`${dir}/`)
}

function within (path: string, dir: string): boolean {
  return path === dir || isUnder(path, dir)
}

/** An absolute, normalized path, or undefined for anything else (relative, '..', NUL). */
export function normalizeChangePath (path: string): string | undefined {
  if (!path.startsWith('/') || path.includes('\u0000')) return undefined
  const n = posix.normalize(path)
  if (n !== '/' && n.endsWith('/')) return n.slice(0, -1)
  return n
}

/**
 * Maps names of an archive of `root` (named from the root's basename: `/srv/x` → `x`, `x/a`) to
 * absolute paths (`/srv/x/a`) and layer names (`srv/x/a`, a directory keeps its trailing '/').
 */
export function archiveRebaser (root: string): (name: Buffer) => { path: string, name: Buffer } {
  const base = Buffer.from(posix.basename(root), 'utf8')
  const parent = posix.dirname(root)
  const prefix = Buffer.from(parent === '/' ? '' : `${parent.slice(1)}/`, 'utf8')
  return (name: Buffer) => {
    const ok = name.subarray(0, base.byteLength).equals(base) &&
      (name.byteLength === base.byteLength || name[base.byteLength] === 0x2f)
    if (!ok) throw new TarFormatError(`the archive of '${root}' holds '${name.toString('utf8')}', outside '${base.toString('utf8')}'`)
    const full = Buffer.concat([prefix, name])
    let text = full.toString('utf8')
    while (text.endsWith('/')) text = text.slice(0, -1)
    return { path: `/${text}`, name: full }
  }
}

// --- the engine's answers -------------------------------------------------------------------------

/** `GET /containers/{id}/changes` (null when nothing changed) as ContainerChange[]. */
export function parseChanges (body: unknown): ContainerChange[] {
  if (body === null || body === undefined) return []
  // The engine answers null, not [], for a container that changed nothing.
  if (body === null) return []
  if (!Array.isArray(body)) throw new DockerEngineError('the engine\'s change list is not an array')
  return body.map((c: { Path?: unknown, Kind?: unknown }) => {
    const kind = c.Kind === 0 ? 'modified' : c.Kind === 1 ? 'added' : c.Kind === 2 ? 'deleted' : undefined
    if (typeof c.Path !== 'string' || kind === undefined) throw new DockerEngineError(`the engine's change list has an entry ${JSON.stringify(c).slice(0, 200)}`)
    return { path: c.Path, kind }
  })
}

// Go's os.FileMode bits (the high bits tell the type; the low 9 are the permissions).
const GO_DIR = 2 ** 31
const GO_SYMLINK = 2 ** 27
const GO_DEVICE = 2 ** 26
const GO_NAMED_PIPE = 2 ** 25
const GO_SOCKET = 2 ** 24
const GO_SETUID = 2 ** 23
const GO_SETGID = 2 ** 22
const GO_CHAR_DEVICE = 2 ** 21
const GO_STICKY = 2 ** 20

function goBit (mode: number, bit: number): boolean {
  return Math.floor(mode / bit) % 2 === 1
}

/** A Go os.FileMode (as the engine's JSON carries it) as a unix st_mode and a type. */
export function unixMode (goMode: number): { mode: number, type: PathStat['type'] } {
  if (!Number.isSafeInteger(goMode) || goMode < 0 || goMode >= 2 ** 32) throw new DockerEngineError(`not a file mode: ${goMode}`)
  let mode = goMode % 0o1000
  if (goBit(goMode, GO_SETUID)) mode |= 0o4000
  if (goBit(goMode, GO_SETGID)) mode |= 0o2000
  if (goBit(goMode, GO_STICKY)) mode |= 0o1000
  let type: PathStat['type']
  let ifmt: number
  if (goBit(goMode, GO_DIR)) { type = 'directory'; ifmt = 0o040000 } else if (goBit(goMode, GO_SYMLINK)) { type = 'symlink'; ifmt = 0o120000 } else if (goBit(goMode, GO_DEVICE)) {
    if (goBit(goMode, GO_CHAR_DEVICE)) { type = 'char-device'; ifmt = 0o020000 } else { type = 'block-device'; ifmt = 0o060000 }
  } else if (goBit(goMode, GO_NAMED_PIPE)) { type = 'fifo'; ifmt = 0o010000 } else if (goBit(goMode, GO_SOCKET)) { type = 'socket'; ifmt = 0o140000 } else { type = 'file'; ifmt = 0o100000 }
  return { mode: ifmt + mode, type }
}

/** The `X-Docker-Container-Path-Stat` header of the archive endpoints: base64 of JSON. */
export function decodePathStat (header: string): PathStat {
  let raw: { name?: unknown, size?: unknown, mode?: unknown, mtime?: unknown, linkTarget?: unknown }
  try {
    raw = JSON.parse(Buffer.from(header, 'base64').toString('utf8'))
  } catch (err) {
    throw new DockerEngineError(`unreadable path stat header '${header.slice(0, 80)}'`, { cause: err })
  }
  if (raw === null || typeof raw !== 'object' || typeof raw.name !== 'string' || typeof raw.mode !== 'number' || typeof raw.size !== 'number') {
    throw new DockerEngineError(`path stat header without name, size and mode: '${header.slice(0, 80)}'`)
  }
  const mtime = new Date(typeof raw.mtime === 'string' ? raw.mtime : 0)
  if (Number.isNaN(mtime.getTime())) throw new DockerEngineError(`path stat header with a bad mtime '${String(raw.mtime)}'`)
  const { mode, type } = unixMode(raw.mode)
  return { name: raw.name, size: raw.size, mode, type, mtime, linkTarget: typeof raw.linkTarget === 'string' ? raw.linkTarget : '' }
}

// --- the plan ---------------------------------------------------------------------------------------

/** A change as the export handles it: `mount` is an added mount point (placeholder only). */
export interface PlannedChange { path: string, kind: 'added' | 'modified' | 'deleted' | 'mount' }

/**
 * The changes to export, sorted parents first: without '/', without anything under an added path
 * (the added path is taken whole) or under a mount point, and with an added mount point as `mount`
 * (a modified or deleted one is left out: the image has it, the change is the mount's doing).
 */
export function planChanges (changes: readonly ContainerChange[], mountPoints: readonly string[]): PlannedChange[] {
  const mounts = new Set(mountPoints.map(m => normalizeChangePath(m)).filter((m): m is string => m !== undefined && m !== '/'))
  const seen = new Map<string, ContainerChange['kind']>()
  for (const c of changes) {
    const path = normalizeChangePath(c.path)
    if (path === undefined) throw new DockerEngineError(`the engine reported a change at '${c.path}', not an absolute path`)
    if (path !== '/' && !seen.has(path)) seen.set(path, c.kind)
  }
  const sorted = [...seen].sort(([a], [b]) => comparePaths(a, b))
  const out: PlannedChange[] = []
  let added: string | undefined
  for (const [path, kind] of sorted) {
    if (added !== undefined && isUnder(path, added)) continue
    if ([...mounts].some(m => isUnder(path, m))) continue
    if (mounts.has(path)) {
      if (kind === 'added') out.push({ path, kind: 'mount' })
      continue
    }
    out.push({ path, kind })
    if (kind === 'added') added = path
  }
  return out
}

// --- the export -------------------------------------------------------------------------------------

type Item =
  | { path: string, kind: 'added' | 'modified' | 'opaque' }
  | { path: string, kind: 'whiteout' }
  | { path: string, kind: 'mount', stat: PathStat }

type StaticItem = Extract<Item, { kind: 'whiteout' | 'mount' }>

function isStatic (item: Item): item is StaticItem {
  return item.kind === 'whiteout' || item.kind === 'mount'
}

interface Context {
  engine: ChangesEngine
  id: string
  signal?: AbortSignal
  mounts: string[]
  /** Hard links whose target the layer lacks: fetched at the end, each as a file of its own. */
  deferred: string[]
  requests: number
  entries: number
}

/**
 * Writes the layer tar of everything container `id` changed to the file `out` (created or
 * truncated; removed again on failure), hashing it as it is written. Returns its size and diff ID
 * (`sha256:<hex of the tar>`). See the module comment.
 */
export async function exportContainerChanges (engine: ChangesEngine, id: string, out: string, signal?: AbortSignal): Promise<ExportedChanges> {
  const ctx: Context = { engine, id, signal, mounts: [], deferred: [], requests: 0, entries: 0 }
  const [changes, info] = await Promise.all([engine.containerChanges(id, signal), engine.inspectContainer(id, signal)])
  ctx.requests += 2
  ctx.mounts = [...info.spec.mounts.map(m => m.destination), ...ENGINE_MANAGED_FILES]
  const items = await resolve(ctx, planChanges(changes, ctx.mounts))
  const hash = createHash('sha256')
  let size = 0
  try {
    await pipeline(
      layer(ctx, items),
      async function * (source: AsyncIterable<Uint8Array>) {
        for await (const chunk of source) {
          hash.update(chunk)
          size += chunk.byteLength
          yield chunk
        }
      },
      createWriteStream(out, { mode: 0o600 }),
      { signal }
    )
  } catch (err) {
    await rm(out, { force: true }).catch(() => {})
    if (signal?.aborted === true) throw signal.reason
    if (err instanceof TarFormatError) throw new DockerEngineError(`container '${id}': the engine's archive is not a readable tar: ${err.message}`, { cause: err })
    if (err instanceof GotoError) throw err
    throw new DockerEngineError(`container '${id}': writing its changes to ${out} failed: ${(err as Error).message}`, { cause: err })
  }
  return { size, diffId: `sha256:${hash.digest('hex')}`, entries: ctx.entries, requests: ctx.requests }
}

/** Deleted paths and mount points asked with HEAD (cheap): whiteout or opaque directory, placeholder type. */
async function resolve (ctx: Context, planned: PlannedChange[]): Promise<Item[]> {
  const items: Item[] = []
  let gone: string | undefined
  for (const p of planned) {
    if (gone !== undefined && isUnder(p.path, gone)) continue
    if (p.kind === 'deleted') {
      const stat = await statOrUndefined(ctx, p.path)
      if (stat === undefined) {
        items.push({ path: p.path, kind: 'whiteout' })
        gone = p.path
      } else {
        items.push({ path: p.path, kind: stat.type === 'directory' ? 'opaque' : 'modified' })
      }
    } else if (p.kind === 'mount') {
      const stat = await statOrUndefined(ctx, p.path)
      if (stat !== undefined) items.push({ path: p.path, kind: 'mount', stat })
    } else {
      items.push({ path: p.path, kind: p.kind })
    }
  }
  return items
}

async function statOrUndefined (ctx: Context, path: string): Promise<PathStat | undefined> {
  ctx.requests++
  try {
    return await ctx.engine.statPath(ctx.id, path, ctx.signal)
  } catch (err) {
    if (err instanceof ContainerPathNotFoundError) return undefined
    throw err
  }
}

/** The whole layer: items in order, each fetched change by a scan (see the module comment). */
async function * layer (ctx: Context, items: Item[]): AsyncGenerator<Uint8Array> {
  let i = 0
  /** Roots whose scan ran out of budget: changes in them are fetched each on its own (or below). */
  const expensive = new Set<string>()
  const gone: string[] = []
  while (i < items.length) {
    const t = items[i] as Item
    if (gone.some(g => isUnder(t.path, g))) { i++; continue }
    if (isStatic(t)) {
      yield * staticEntry(ctx, t)
      i++
      continue
    }
    // Scan the parent for this change and its neighbours, unless the parent is / or too big.
    let root = posix.dirname(t.path)
    if (root === '/' || expensive.has(root)) root = t.path
    const r = yield * scan(ctx, items, i, root)
    if (r.vanished !== undefined) gone.push(r.vanished)
    if (r.exhausted || r.next === i) expensive.add(root)
    // No progress only from a parent's scan; the next round roots at the change itself, which
    // always progresses (its own archive starts with it, is empty, or is a 404).
    if (r.next === i && root === t.path) throw new DockerEngineError(`container '${ctx.id}': the engine's archive of '${t.path}' does not hold it`)
    i = r.next
  }
  for (const path of ctx.deferred) {
    const r = yield * scan(ctx, [{ path, kind: 'added' }], 0, path)
    if (r.next === 0) throw new DockerEngineError(`container '${ctx.id}': the engine's archive of '${path}' is empty`)
  }
  yield TAR_END
}

interface ScanResult {
  /** Index of the first item not handled. */
  next: number
  /** Stopped because the skip budget ran out. */
  exhausted: boolean
  /** An item found absent (404 on its own path): its descendants are skipped. */
  vanished?: string
}

/**
 * One GET of `root`: walks its entries (in the engine's lexical walk order, which is the order of
 * the items) and emits the items from `i` on that lie within `root`, with whiteouts and
 * placeholders between them; unchanged entries are read past, within the skip budget.
 */
async function * scan (ctx: Context, items: Item[], i: number, root: string): AsyncGenerator<Uint8Array, ScanResult> {
  let archive: AsyncIterable<Uint8Array>
  ctx.requests++
  try {
    archive = await ctx.engine.getArchive(ctx.id, root, ctx.signal)
  } catch (err) {
    if (!(err instanceof ContainerPathNotFoundError)) throw err
    const t = items[i] as Item
    if (root !== t.path) return { next: i, exhausted: false }
    // Gone since the list was made (a container that was not paused): a changed path of the image
    // that is gone is a deleted one.
    if (t.kind !== 'added') yield * staticEntry(ctx, { path: t.path, kind: 'whiteout' })
    return { next: i + 1, exhausted: false, vanished: t.path }
  }
  const rebase = archiveRebaser(root)
  let j = i
  let subtree: string | undefined
  let skippedBytes = 0
  let skippedEntries = 0
  let exhausted = false
  const skippedFiles = new Set<string>()
  let ended = true
  for await (const e of readTar(archive)) {
    const { path, name } = rebase(e.name)
    if (subtree !== undefined) {
      if (isUnder(path, subtree)) {
        if (ctx.mounts.some(m => isUnder(path, m))) continue
        yield * entry(ctx, e, name, rebase, skippedFiles, ctx.mounts.includes(path))
        continue
      }
      subtree = undefined
    }
    // Items before this entry in walk order: whiteouts and placeholders go out now; a change the
    // walk went past is not in the engine's archives (a socket) and is left out, as docker commit does.
    let t = items[j]
    while (t !== undefined && within(t.path, root) && comparePaths(t.path, path) < 0) {
      if (isStatic(t)) yield * staticEntry(ctx, t)
      t = items[++j]
    }
    if (t === undefined || !within(t.path, root)) { ended = false; break }
    const order = comparePaths(path, t.path)
    if (order === 0 && isStatic(t)) {
      yield * staticEntry(ctx, t) // a mount point: its contents follow in the walk and are read past
      j++
    } else if (order === 0) {
      yield * entry(ctx, e, name, rebase, skippedFiles, false)
      if (e.type === TarType.directory && t.kind === 'opaque') {
        ctx.entries++
        yield * newHeader({ name: `${t.path.slice(1)}/${OPAQUE_MARKER}`, type: TarType.file, mode: 0o600 })
      }
      if (e.type === TarType.directory && t.kind === 'added') subtree = path
      j++
    } else if (order < 0) {
      skippedEntries++
      skippedBytes += e.size
      if (e.type === TarType.file || e.type === TarType.contiguous) skippedFiles.add(path)
      // Checked on the header: a big file over budget is never read.
      if (skippedBytes > SCAN_SKIP_BYTES || skippedEntries > SCAN_SKIP_ENTRIES) { exhausted = true; ended = false; break }
    }
  }
  // The whole of `root` was walked: what is left of it is not in the engine's archives.
  while (ended && j < items.length && within((items[j] as Item).path, root)) {
    const t = items[j] as Item
    if (isStatic(t)) yield * staticEntry(ctx, t)
    j++
  }
  return { next: j, exhausted }
}

/** One entry of an archive under its layer name, with its data (none when `empty`). */
async function * entry (ctx: Context, e: TarReadEntry, name: Buffer, rebase: ReturnType<typeof archiveRebaser>, skippedFiles: Set<string>, empty: boolean): AsyncGenerator<Uint8Array> {
  let linkname: Buffer | undefined
  if (e.type === TarType.link) {
    const target = rebase(e.linkname)
    if (skippedFiles.has(target.path)) {
      // A hard link to a file of this archive the layer does not hold: fetched alone at the end,
      // where the engine sends it as a file.
      ctx.deferred.push(rebase(e.name).path)
      return
    }
    linkname = target.name
  }
  ctx.entries++
  yield * rewrittenHeader(e, { name, linkname, empty })
  if (empty) return
  yield * e.data()
  yield tarPadding(e.size)
}

/** A whiteout, or a placeholder for a mount point (its type and permissions, owner root). */
function staticEntry (ctx: Context, t: StaticItem): Buffer[] {
  ctx.entries++
  const rel = t.path.slice(1)
  if (t.kind === 'whiteout') {
    const dir = posix.dirname(rel)
    const name = `${dir === '.' ? '' : `${dir}/`}${WHITEOUT_PREFIX}${posix.basename(rel)}`
    return newHeader({ name, type: TarType.file, mode: 0o600 })
  }
  // The mount's permissions and mtime (the mount point's own are hidden under it), type bits in
  // the mode as the engine writes them; owner root.
  const mtime = Math.floor(t.stat.mtime.getTime() / 1000)
  if (t.stat.type === 'directory') return newHeader({ name: `${rel}/`, type: TarType.directory, mode: 0o040000 | (t.stat.mode & 0o7777), mtime })
  return newHeader({ name: rel, type: TarType.file, mode: 0o100000 | (t.stat.mode & 0o7777), mtime })
}
