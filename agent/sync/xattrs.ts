/**
 * Extended attributes of tree entries, never following a symlink. Node has no xattr calls, so the
 * real implementation runs Debian's `attr` tools: one `getfattr --dump` per directory's batch of
 * entries, and one `setfattr --restore` for a whole staging tree (attributes are set after owners,
 * since chown clears `security.capability`). `NO_XATTRS` is for hosts without them: it reads none
 * and refuses to write any, so a tree that has some never arrives without them silently.
 */
import { spawn } from 'node:child_process'
import { access, constants } from 'node:fs/promises'
import { GotoError, SyncEntryRefusedError, SyncToolMissingError } from '../../protocol/errors.js'

/** Attribute name → value. */
export type Xattrs = Record<string, Buffer>

export interface XattrAccess {
  /** Attributes of each path that has any (paths without any are absent from the map). */
  read: (paths: string[], signal: AbortSignal) => Promise<Map<string, Xattrs>>
  /** Sets the attributes on each path (symlinks themselves, not their targets). */
  write: (items: Array<{ path: string, xattrs: Xattrs }>, signal: AbortSignal) => Promise<void>
}

/** Namespaces that travel: user data, file capabilities and other security labels, ACLs, trusted (root). */
export function xattrNameAllowed (name: string): boolean {
  return /^(user|security|trusted)\.[^\0]+$/.test(name) || name === 'system.posix_acl_access' || name === 'system.posix_acl_default'
}

export const NO_XATTRS: XattrAccess = {
  read: async () => new Map(),
  write: async (items) => {
    const some = items.find(i => Object.keys(i.xattrs).length > 0)
    if (some !== undefined) throw new SyncToolMissingError(`${some.path} has extended attributes but this host cannot set them (install Debian's attr package)`)
  }
}

/** Argument bytes per getfattr call, well below ARG_MAX. */
const MAX_ARG_BYTES = 96 * 1024

/** getfattr's quoting of a path: backslash, '=', whitespace and unprintable bytes as \ooo. */
function quote (path: string): string {
  let out = ''
  for (const b of Buffer.from(path)) {
    out += b <= 0x20 || b >= 0x7f || b === 0x5c || b === 0x3d ? '\\' + b.toString(8).padStart(3, '0') : String.fromCharCode(b)
  }
  return out
}

function unquote (text: string): string {
  const bytes: number[] = []
  for (let i = 0; i < text.length; i++) {
    const m = text[i] === '\\' ? /^[0-7]{3}/.exec(text.slice(i + 1)) : null
    if (m !== null) { bytes.push(parseInt(m[0], 8)); i += 3 } else bytes.push(...Buffer.from(text[i]))
  }
  return Buffer.from(bytes).toString('utf8')
}

async function run (cmd: string, args: string[], input: string | undefined, signal: AbortSignal): Promise<{ code: number, stdout: string, stderr: string }> {
  return await new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { signal, stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    child.on('error', reject)
    child.on('close', code => { resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString() }) })
    child.stdin.end(input)
  })
}

/** The `attr` tools; `attrTools()` finds them or says which package is missing. */
export class AttrTools implements XattrAccess {
  constructor (private readonly getfattr: string, private readonly setfattr: string) {}

  async read (paths: string[], signal: AbortSignal): Promise<Map<string, Xattrs>> {
    const result = new Map<string, Xattrs>()
    for (let start = 0; start < paths.length;) {
      let end = start
      let bytes = 0
      while (end < paths.length && (end === start || bytes + paths[end].length < MAX_ARG_BYTES)) bytes += paths[end++].length + 1
      const batch = paths.slice(start, end)
      start = end
      const { code, stdout, stderr } = await run(this.getfattr, ['--absolute-names', '--no-dereference', '--dump', '--match=-', '--encoding=hex', '--', ...batch], undefined, signal)
      // Exit 1 with a message is a path that vanished while we read: it has nothing to copy.
      if (code !== 0 && !/No such file/.test(stderr)) throw new GotoError(`getfattr failed (${code}): ${stderr.trim()}`)
      let current: Xattrs | undefined
      for (const line of stdout.split('\n')) {
        if (line.startsWith('# file: ')) {
          current = {}
          result.set(unquote(line.slice(8)), current)
        } else if (current !== undefined && line.length > 0) {
          const eq = line.indexOf('=')
          if (eq < 0) continue
          const name = unquote(line.slice(0, eq))
          const value = line.slice(eq + 1)
          if (!xattrNameAllowed(name)) continue
          current[name] = value.startsWith('0x') ? Buffer.from(value.slice(2), 'hex') : Buffer.alloc(0)
        }
      }
    }
    return result
  }

  async write (items: Array<{ path: string, xattrs: Xattrs }>, signal: AbortSignal): Promise<void> {
    let dump = ''
    for (const { path, xattrs } of items) {
      const names = Object.keys(xattrs)
      if (names.length === 0) continue
      dump += `# file: ${quote(path)}\n`
      for (const name of names) {
        if (!xattrNameAllowed(name)) throw new SyncEntryRefusedError(`extended attribute ${JSON.stringify(name)} is not one a sync sets`)
        dump += `${quote(name)}=0x${xattrs[name].toString('hex')}\n`
      }
      dump += '\n'
    }
    if (dump === '') return
    const { code, stderr } = await run(this.setfattr, ['--no-dereference', '--restore=-'], dump, signal)
    if (code !== 0) throw new GotoError(`setfattr failed (${code}): ${stderr.trim()}`)
  }
}

async function findTool (name: string): Promise<string | undefined> {
  for (const dir of ['/usr/bin', '/bin', '/usr/local/bin', '/usr/sbin']) {
    const path = `${dir}/${name}`
    try { await access(path, constants.X_OK); return path } catch {}
  }
  return undefined
}

/** The attr tools of this host, or SyncToolMissingError naming the package to install. */
export async function attrTools (): Promise<AttrTools> {
  const get = await findTool('getfattr')
  const set = await findTool('setfattr')
  if (get === undefined || set === undefined) throw new SyncToolMissingError('getfattr/setfattr not found: install Debian\'s attr package')
  return new AttrTools(get, set)
}
