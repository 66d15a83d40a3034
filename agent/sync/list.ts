/**
 * A listing of a tree for comparisons ("byte- and metadata-identical"): for every entry its path,
 * type, mode, owner, size, mtime, link target, device numbers, xattrs (hex), the sha256 of a
 * regular file's whole content and, for a hard-link group, the first path of the group. Two trees
 * hold the same when their listings are deep-equal (mtime within MTIME_SLACK_NS, see
 * `sameListing`). Reads without following symlinks, as a sync does.
 */
import { createHash } from 'node:crypto'
import { MTIME_SLACK_NS, SYNC_BLOCK_BYTES } from './wire.js'
import { openSame, readAt, walkTree, type EntryType } from './tree.js'
import { splitRdev } from './entry.js'
import { NO_XATTRS, type XattrAccess } from './xattrs.js'

export interface ListedEntry {
  path: string
  type: EntryType
  mode: number
  uid: number
  gid: number
  size: number
  mtimeNs: string
  link?: string
  rdev?: string
  xattrs: Record<string, string>
  sha256?: string
  /** The first path (in walk order) of the hard-link group this file belongs to. */
  hardLinkOf?: string
}

export async function listTree (root: string, options: { signal: AbortSignal, xattrs?: XattrAccess }): Promise<ListedEntry[]> {
  const { signal } = options
  const xattrs = options.xattrs ?? NO_XATTRS
  const out: ListedEntry[] = []
  const groups = new Map<string, string>()
  const buf = Buffer.allocUnsafe(SYNC_BLOCK_BYTES)
  for await (const batch of walkTree(root, signal)) {
    const attrs = await xattrs.read(batch.map(e => e.at), signal)
    for (const w of batch) {
      const st = w.stat
      const e: ListedEntry = {
        path: w.path,
        type: w.type,
        mode: Number(st.mode & 0o7777n),
        uid: Number(st.uid),
        gid: Number(st.gid),
        size: w.type === 'file' ? Number(st.size) : 0,
        mtimeNs: st.mtimeNs.toString(),
        xattrs: Object.fromEntries(Object.entries(attrs.get(w.at) ?? {}).sort(([a], [b]) => a < b ? -1 : 1).map(([k, v]) => [k, v.toString('hex')]))
      }
      if (w.link !== undefined) e.link = w.link
      if (w.type === 'char' || w.type === 'block') { const d = splitRdev(st.rdev); e.rdev = `${d.major}:${d.minor}` }
      if (w.type === 'file') {
        if (st.nlink > 1n) {
          const key = `${st.dev}:${st.ino}`
          const first = groups.get(key)
          if (first === undefined) groups.set(key, w.path)
          e.hardLinkOf = first ?? w.path
        }
        const fh = await openSame(w.at, st)
        if (fh !== undefined) {
          try {
            const h = createHash('sha256')
            for (let pos = 0; ; pos += SYNC_BLOCK_BYTES) {
              signal.throwIfAborted()
              const n = await readAt(fh, buf, SYNC_BLOCK_BYTES, pos)
              h.update(buf.subarray(0, n))
              if (n < SYNC_BLOCK_BYTES) break
            }
            e.sha256 = h.digest('hex')
          } finally { await fh.close() }
        }
      }
      out.push(e)
    }
  }
  // A group is two or more names in this tree (an inode shared with another tree is no group here).
  const members = new Map<string, number>()
  for (const e of out) if (e.hardLinkOf !== undefined) members.set(e.hardLinkOf, (members.get(e.hardLinkOf) ?? 0) + 1)
  for (const e of out) if (e.hardLinkOf !== undefined && members.get(e.hardLinkOf) === 1) delete e.hardLinkOf
  return out.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0)
}

/** Differences between two listings (empty when the trees hold the same), mtimes compared within MTIME_SLACK_NS. */
export function listingDifferences (a: ListedEntry[], b: ListedEntry[]): string[] {
  const diffs: string[] = []
  const bm = new Map(b.map(e => [e.path, e]))
  for (const ea of a) {
    const eb = bm.get(ea.path)
    bm.delete(ea.path)
    if (eb === undefined) { diffs.push(`${ea.path}: only in the first`); continue }
    const { mtimeNs: ma, ...ra } = ea
    const { mtimeNs: mb, ...rb } = eb
    if (JSON.stringify(ra) !== JSON.stringify(rb)) diffs.push(`${ea.path}: ${JSON.stringify(ra)} != ${JSON.stringify(rb)}`)
    const d = BigInt(ma) - BigInt(mb)
    // Symlinks' and directories' mtimes are set as files' are; all within the libuv double's precision.
    if (d > MTIME_SLACK_NS || d < -MTIME_SLACK_NS) diffs.push(`${ea.path}: mtime ${ma} != ${mb}`)
  }
  for (const p of bm.keys()) diffs.push(`${p}: only in the second`)
  return diffs
}
