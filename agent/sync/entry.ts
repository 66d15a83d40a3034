/**
 * One entry of a tree as it travels, and the destination's checks of it: a path from the wire is
 * hostile until `checkPath` accepted it (relative, no `.`/`..`/empty component, no NUL, bounded),
 * and every field is bounded and typed before anything touches the disk.
 */
import { ProtocolError, SyncEntryRefusedError, SyncLimitError, SyncPathRefusedError } from '../../protocol/errors.js'
import type { EntryType } from './tree.js'
import { MAX_SYNC_BLOCKS, MAX_SYNC_LINK_BYTES, MAX_SYNC_NAME_BYTES, MAX_SYNC_PATH_BYTES, MAX_XATTR_BYTES, MAX_XATTR_NAME_BYTES, SYNC_BLOCK_BYTES } from './wire.js'
import { xattrNameAllowed, type Xattrs } from './xattrs.js'

export interface SyncEntry {
  path: string
  type: EntryType
  /** Permission bits with setuid/setgid/sticky (mode & 0o7777). */
  mode: number
  uid: number
  gid: number
  /** Bytes, regular files only (0 otherwise). */
  size: number
  /** Nanoseconds since the epoch, as a decimal string (beyond a double's precision). */
  mtimeNs: string
  link?: string
  /** Device numbers of char and block devices. */
  major?: number
  minor?: number
  /** Hard-link group of a regular file with more than one name in the tree; its first entry carries the data. */
  group?: number
  xattrs: Xattrs
}

const TYPES = new Set<EntryType>(['dir', 'file', 'symlink', 'fifo', 'char', 'block'])

/** Refuses any path that could name something outside the root or is not in canonical form. */
export function checkPath (path: unknown): string {
  if (typeof path !== 'string') throw new SyncPathRefusedError('entry path is not a string')
  if (path === '.') return path
  const bytes = Buffer.byteLength(path)
  if (bytes === 0 || bytes > MAX_SYNC_PATH_BYTES) throw new SyncPathRefusedError(`entry path of ${bytes} bytes (1 to ${MAX_SYNC_PATH_BYTES} allowed)`)
  if (path.includes('\0')) throw new SyncPathRefusedError('entry path holds a NUL')
  if (path.startsWith('/')) throw new SyncPathRefusedError(`absolute entry path ${JSON.stringify(path)}`)
  for (const part of path.split('/')) {
    if (part === '' || part === '.' || part === '..') throw new SyncPathRefusedError(`entry path ${JSON.stringify(path)} has a ${JSON.stringify(part)} component`)
    if (Buffer.byteLength(part) > MAX_SYNC_NAME_BYTES) throw new SyncPathRefusedError(`entry path component longer than ${MAX_SYNC_NAME_BYTES} bytes`)
  }
  return path
}

export function parentOf (path: string): string {
  const i = path.lastIndexOf('/')
  return i < 0 ? '.' : path.slice(0, i)
}

function uint (value: unknown, what: string, max = 0xffffffff): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) throw new ProtocolError(`entry ${what} is not an integer in 0..${max}`)
  return value
}

export function entryToWire (e: SyncEntry): Record<string, unknown> {
  const xattrs: Record<string, string> = {}
  for (const [k, v] of Object.entries(e.xattrs)) xattrs[k] = v.toString('base64')
  return { t: 'entry', ...e, xattrs }
}

/** The entry a wire message describes, every field checked (the path with `checkPath`). */
export function entryFromWire (m: Record<string, unknown>): SyncEntry {
  const path = checkPath(m.path)
  const type = m.type as EntryType
  if (!TYPES.has(type)) throw new SyncEntryRefusedError(`entry ${path} has unknown type ${JSON.stringify(m.type)}`)
  if (path === '.' && type !== 'dir') throw new SyncEntryRefusedError('the root entry is not a directory')
  const e: SyncEntry = {
    path,
    type,
    mode: uint(m.mode, 'mode', 0o7777),
    uid: uint(m.uid, 'uid'),
    gid: uint(m.gid, 'gid'),
    size: type === 'file' ? uint(m.size, 'size', MAX_SYNC_BLOCKS * SYNC_BLOCK_BYTES) : 0,
    mtimeNs: typeof m.mtimeNs === 'string' && /^-?[0-9]{1,20}$/.test(m.mtimeNs) ? m.mtimeNs : '0',
    xattrs: {}
  }
  if (type === 'symlink') {
    if (typeof m.link !== 'string' || m.link.length === 0 || m.link.includes('\0')) throw new SyncEntryRefusedError(`symlink ${path} has no valid target`)
    if (Buffer.byteLength(m.link) > MAX_SYNC_LINK_BYTES) throw new SyncLimitError(`symlink target of ${path} longer than ${MAX_SYNC_LINK_BYTES} bytes`)
    e.link = m.link
  }
  if (type === 'char' || type === 'block') {
    e.major = uint(m.major, 'major')
    e.minor = uint(m.minor, 'minor')
  }
  if (m.group !== undefined) {
    if (type !== 'file') throw new SyncEntryRefusedError(`${path}: only regular files form hard-link groups`)
    e.group = uint(m.group, 'group')
  }
  if (m.xattrs !== undefined) {
    if (typeof m.xattrs !== 'object' || m.xattrs === null || Array.isArray(m.xattrs)) throw new ProtocolError(`entry ${path} xattrs is not an object`)
    let total = 0
    for (const [name, value] of Object.entries(m.xattrs as Record<string, unknown>)) {
      if (!xattrNameAllowed(name)) throw new SyncEntryRefusedError(`${path}: extended attribute ${JSON.stringify(name)} is not one a sync sets`)
      if (Buffer.byteLength(name) > MAX_XATTR_NAME_BYTES) throw new SyncLimitError(`${path}: extended attribute name longer than ${MAX_XATTR_NAME_BYTES} bytes`)
      if (typeof value !== 'string') throw new ProtocolError(`${path}: extended attribute ${name} is not base64`)
      const bytes = Buffer.from(value, 'base64')
      total += Buffer.byteLength(name) + bytes.byteLength
      if (total > MAX_XATTR_BYTES) throw new SyncLimitError(`${path}: extended attributes larger than ${MAX_XATTR_BYTES} bytes`)
      e.xattrs[name] = bytes
    }
  }
  return e
}

/** Linux's encoding of device numbers in st_rdev (glibc's gnu_dev_major/minor). */
export function splitRdev (rdev: bigint): { major: number, minor: number } {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn))
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn))
  return { major, minor }
}

export function sameXattrs (a: Xattrs, b: Xattrs): boolean {
  const ka = Object.keys(a).sort()
  const kb = Object.keys(b).sort()
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k].equals(b[k]))
}
