/**
 * The container-changes exporter (agent/docker/changes.ts, layer-tar.ts) without an engine: the
 * path stat header, the change plan, name rewriting on synthetic tars (PAX with binary values, GNU
 * long names, ustar prefixes, hard links), and whole exports against a fake engine that serves
 * archives of an in-memory filesystem the way Engine 20.10 does (entries named from the requested
 * path's basename, lexical walk order, mounts seen through, sockets left out, hard links within one
 * archive).
 */
import { expect } from 'chai'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import tarStream from 'tar-stream'
import {
  archiveRebaser, comparePaths, decodePathStat, exportContainerChanges, parseChanges, planChanges, unixMode,
  SCAN_SKIP_BYTES, type ChangesEngine
} from '../../agent/docker/changes.js'
import {
  TAR_END, TarFormatError, TarType, encodePax, newHeader, readTar, rewrittenHeader, tarPadding, ustarSplit
} from '../../agent/docker/layer-tar.js'
import type { ContainerChange, ContainerInfo, MountSpec, PathStat } from '../../agent/docker/types.js'
import { ContainerPathNotFoundError, DockerEngineError, GotoError } from '../../protocol/errors.js'

const GO_DIR = 2 ** 31
const GO_SYMLINK = 2 ** 27

function statHeader (o: Record<string, unknown>): string {
  return Buffer.from(JSON.stringify(o)).toString('base64')
}

async function * chunked (bytes: Buffer, size = 97): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size)
}

async function collect (source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of source) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

interface Listed { name: string, type: string, linkname: string, size: number, data: Buffer, pax: Record<string, Buffer>, mode: number, uid: number }

async function list (tar: Buffer | AsyncIterable<Uint8Array>): Promise<Listed[]> {
  const out: Listed[] = []
  for await (const e of readTar(Buffer.isBuffer(tar) ? chunked(tar) : tar)) {
    const data = await collect(e.data())
    out.push({
      name: e.name.toString('utf8'),
      type: e.type,
      linkname: e.linkname.toString('utf8'),
      size: e.size,
      data,
      pax: Object.fromEntries(e.pax.map(p => [p.key, p.value])),
      mode: parseInt(e.header.subarray(100, 108).toString('latin1').replace(/\0.*$/s, ''), 8),
      uid: parseInt(e.header.subarray(108, 116).toString('latin1').replace(/\0.*$/s, ''), 8)
    })
  }
  return out
}

/** A raw PAX 'x' entry carrying `records` (values may be binary). */
function paxEntry (records: Array<{ key: string, value: Buffer }>): Buffer {
  const payload = encodePax(records)
  const h = newHeader({ name: 'PaxHeaders.0/x', type: TarType.file, mode: 0o644, size: payload.byteLength })[0] as Buffer
  h.write('x', 156, 'latin1')
  fixChecksum(h)
  return Buffer.concat([h, payload, tarPadding(payload.byteLength)])
}

/** A GNU long-name ('L') entry. */
function gnuLongName (name: string): Buffer {
  const data = Buffer.from(`${name}\u0000`)
  const h = newHeader({ name: '././@LongLink', type: TarType.file, mode: 0o644, size: data.byteLength })[0] as Buffer
  h.write('L', 156, 'latin1')
  h.write('ustar  \u0000', 257, 'latin1') // GNU magic
  fixChecksum(h)
  return Buffer.concat([h, data, tarPadding(data.byteLength)])
}

function fixChecksum (h: Buffer): void {
  h.fill(0x20, 148, 156)
  let sum = 0
  for (const b of h) sum += b
  h.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 'latin1')
}

function fileEntry (name: string, data: Buffer, mode = 0o644, uid = 0): Buffer {
  return Buffer.concat([...newHeader({ name, type: TarType.file, mode, uid, size: data.byteLength, mtime: 1_700_000_000 }), data, tarPadding(data.byteLength)])
}

describe('docker changes: path stat header', () => {
  it('decodes the engine\'s base64 JSON and turns Go file modes into unix modes', () => {
    // What Engine 20.10 sent for a directory and for busybox's /bin/sh symlink.
    const dir = decodePathStat('eyJuYW1lIjoib3BxIiwic2l6ZSI6NDA5NiwibW9kZSI6MjE0NzQ4NDE0MSwibXRpbWUiOiIyMDI2LTExLTI3VDA2OjA3OjU1LjcwNTc3MDM4NFoiLCJsaW5rVGFyZ2V0IjoiIn0=')
    expect(dir).to.deep.include({ name: 'opq', size: 4096, mode: 0o40755, type: 'directory', linkTarget: '' })
    expect(dir.mtime.toISOString()).to.equal('2026-11-27T06:07:55.705Z')
    const link = decodePathStat('eyJuYW1lIjoic2giLCJzaXplIjoxMiwibW9kZSI6MTM0MjE4MjM5LCJtdGltZSI6IjE5NzAtMDEtMDFUMDA6MDA6MDBaIiwibGlua1RhcmdldCI6Ii9iaW4vYnVzeWJveCJ9')
    expect(link).to.deep.include({ name: 'sh', mode: 0o120777, type: 'symlink', linkTarget: '/bin/busybox' })
    expect(decodePathStat(statHeader({ name: 'f', size: 3, mode: 0o644, mtime: '2020-01-02T03:04:05Z', linkTarget: '' }))).to.deep.include({ mode: 0o100644, type: 'file' })
  })

  it('maps every type bit and setuid/setgid/sticky', () => {
    expect(unixMode(GO_DIR + 2 ** 20 + 0o777)).to.deep.equal({ mode: 0o41777, type: 'directory' }) // /tmp
    expect(unixMode(2 ** 23 + 0o755)).to.deep.equal({ mode: 0o104755, type: 'file' }) // setuid
    expect(unixMode(2 ** 22 + 0o2755 % 0o1000)).to.deep.equal({ mode: 0o102755, type: 'file' }) // setgid
    expect(unixMode(2 ** 26 + 2 ** 21 + 0o666)).to.deep.equal({ mode: 0o20666, type: 'char-device' })
    expect(unixMode(2 ** 26 + 0o660)).to.deep.equal({ mode: 0o60660, type: 'block-device' })
    expect(unixMode(2 ** 25 + 0o600)).to.deep.equal({ mode: 0o10600, type: 'fifo' })
    expect(unixMode(2 ** 24 + 0o755)).to.deep.equal({ mode: 0o140755, type: 'socket' })
    expect(unixMode(GO_SYMLINK + 0o777)).to.deep.equal({ mode: 0o120777, type: 'symlink' })
  })

  it('refuses what is not a stat header', () => {
    for (const bad of ['not base64 json', statHeader({ name: 'x' }), statHeader({ name: 'x', size: 1, mode: -1 }), statHeader({ name: 'x', size: 1, mode: 1, mtime: 'never' })]) {
      expect(() => decodePathStat(bad), bad).to.throw(DockerEngineError)
    }
  })
})

describe('docker changes: the plan', () => {
  it('reads the change list (null is no change) and refuses unknown kinds', () => {
    expect(parseChanges(null)).to.deep.equal([])
    expect(parseChanges([{ Path: '/a', Kind: 0 }, { Path: '/b', Kind: 1 }, { Path: '/c', Kind: 2 }])).to.deep.equal([
      { path: '/a', kind: 'modified' }, { path: '/b', kind: 'added' }, { path: '/c', kind: 'deleted' }
    ])
    expect(() => parseChanges([{ Path: '/a', Kind: 3 }])).to.throw(DockerEngineError)
    expect(() => parseChanges({})).to.throw(DockerEngineError)
  })

  it('orders by path segments, as the engine walks a directory', () => {
    const paths = ['/a-b', '/a/b/c', '/a', '/b', '/a/b', '/a.b', '/A', '/a/b-c', '/\u00e9', '/z']
    expect([...paths].sort(comparePaths)).to.deep.equal(['/A', '/a', '/a/b', '/a/b/c', '/a/b-c', '/a-b', '/a.b', '/b', '/z', '/\u00e9'])
  })

  it('sorts, takes an added directory whole, keeps mounts as placeholders and leaves out what is under them', () => {
    const changes: ContainerChange[] = [
      { path: '/newdir/sub/a', kind: 'added' },
      { path: '/etc/passwd', kind: 'modified' },
      { path: '/data', kind: 'added' }, // a volume mount point
      { path: '/data/x', kind: 'added' }, // never reported, but must not be taken
      { path: '/newdir', kind: 'added' },
      { path: '/etc', kind: 'modified' },
      { path: '/etc/group', kind: 'deleted' },
      { path: '/newdir/sub', kind: 'added' },
      { path: '/srv', kind: 'modified' }, // a mount point over a directory of the image: the image has it
      { path: '/etc/hosts', kind: 'modified' },
      { path: '/', kind: 'modified' },
      { path: '/tmp/./x/', kind: 'added' }
    ]
    expect(planChanges(changes, ['/data', '/srv/', '/etc/hosts'])).to.deep.equal([
      { path: '/data', kind: 'mount' },
      { path: '/etc', kind: 'modified' },
      { path: '/etc/group', kind: 'deleted' },
      { path: '/etc/passwd', kind: 'modified' },
      { path: '/newdir', kind: 'added' },
      { path: '/tmp/x', kind: 'added' }
    ])
    expect(() => planChanges([{ path: 'relative', kind: 'added' }], [])).to.throw(DockerEngineError)
  })
})

describe('docker changes: tar rewriting', () => {
  it('names archive entries from the requested path and refuses names outside it', () => {
    const r = archiveRebaser('/srv/x')
    expect(r(Buffer.from('x'))).to.deep.equal({ path: '/srv/x', name: Buffer.from('srv/x') })
    expect(r(Buffer.from('x/'))).to.deep.equal({ path: '/srv/x', name: Buffer.from('srv/x/') })
    expect(r(Buffer.from('x/a/b'))).to.deep.equal({ path: '/srv/x/a/b', name: Buffer.from('srv/x/a/b') })
    const top = archiveRebaser('/top')
    expect(top(Buffer.from('top/f'))).to.deep.equal({ path: '/top/f', name: Buffer.from('top/f') })
    expect(() => r(Buffer.from('xy'))).to.throw(TarFormatError)
    expect(() => r(Buffer.from('y/x'))).to.throw(TarFormatError)
  })

  it('rewrites names only: PAX records (binary xattrs too), modes, owners and data pass through', async () => {
    const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0xff, 0x0a, 0x3d, 0x00])
    const longDir = 'd'.repeat(90)
    const src = Buffer.concat([
      ...newHeader({ name: 'x/', type: TarType.directory, mode: 0o2750, uid: 1000, gid: 1000, mtime: 1_600_000_000 }),
      paxEntry([{ key: 'SCHILY.xattr.security.capability', value: cap }, { key: 'mtime', value: Buffer.from('1600000000.123456789') }]),
      fileEntry('x/ping', Buffer.from('ELF'), 0o4755, 0),
      gnuLongName(`x/${longDir}/${'f'.repeat(120)}`),
      fileEntry('x/truncated-by-gnu', Buffer.from('long')),
      ...newHeader({ name: 'x/hard', type: TarType.link, mode: 0o644, linkname: 'x/ping' }),
      ...newHeader({ name: 'x/sym', type: TarType.symlink, mode: 0o777, linkname: `/${'t'.repeat(150)}` }),
      TAR_END
    ])
    const rebase = archiveRebaser('/opt/app/x')
    const parts: Buffer[] = []
    for await (const e of readTar(chunked(src))) {
      const { name } = rebase(e.name)
      parts.push(...rewrittenHeader(e, { name, linkname: e.type === TarType.link ? rebase(e.linkname).name : undefined }))
      parts.push(await collect(e.data()), Buffer.from(tarPadding(e.size)))
    }
    parts.push(Buffer.from(TAR_END))
    const got = await list(Buffer.concat(parts))
    expect(got.map(e => [e.name, e.type, e.linkname])).to.deep.equal([
      ['opt/app/x/', '5', ''],
      ['opt/app/x/ping', '0', ''],
      [`opt/app/x/${longDir}/${'f'.repeat(120)}`, '0', ''],
      ['opt/app/x/hard', '1', 'opt/app/x/ping'],
      ['opt/app/x/sym', '2', `/${'t'.repeat(150)}`]
    ])
    expect(got[0]).to.include({ mode: 0o2750, uid: 1000 })
    expect(got[1]?.pax['SCHILY.xattr.security.capability']?.equals(cap)).to.equal(true)
    expect(got[1]?.pax.mtime?.toString()).to.equal('1600000000.123456789')
    expect(got[1]).to.include({ mode: 0o4755 })
    expect(got[1]?.data.toString()).to.equal('ELF')
    expect(got[2]?.data.toString()).to.equal('long')

    // Another reader agrees on the names and link names.
    const extract = tarStream.extract()
    const names: string[] = []
    const reading = (async () => { for await (const e of extract) { names.push(`${e.header.name}${e.header.linkname !== null && e.header.linkname !== undefined && e.header.linkname !== '' ? ` -> ${e.header.linkname}` : ''}`); e.resume() } })()
    extract.end(Buffer.concat(parts))
    await reading
    expect(names).to.deep.equal(['opt/app/x/', 'opt/app/x/ping', `opt/app/x/${longDir}/${'f'.repeat(120)}`, 'opt/app/x/hard -> opt/app/x/ping', `opt/app/x/sym -> /${'t'.repeat(150)}`])
  })

  it('uses the ustar prefix for a long name when it can, PAX when it cannot, and empties an entry on request', async () => {
    const name = `${'a'.repeat(120)}/${'b'.repeat(60)}`
    expect(ustarSplit(Buffer.from(name))?.prefix.toString()).to.equal('a'.repeat(120))
    expect(ustarSplit(Buffer.from('c'.repeat(200)))).to.equal(undefined)
    const [plain] = newHeader({ name, type: TarType.file, mode: 0o644 })
    expect(plain?.subarray(345, 345 + 120).toString()).to.equal('a'.repeat(120))
    const noSlash = newHeader({ name: 'c'.repeat(200), type: TarType.file, mode: 0o644 })
    expect(noSlash).to.have.length(4) // PAX header, payload, padding, header

    const src = Buffer.concat([fileEntry('f', Buffer.alloc(1000, 7)), TAR_END])
    const parts: Buffer[] = []
    for await (const e of readTar(chunked(src))) parts.push(...rewrittenHeader(e, { name: Buffer.from('mnt/f'), empty: true }))
    parts.push(Buffer.from(TAR_END))
    const [got] = await list(Buffer.concat(parts))
    expect(got).to.include({ name: 'mnt/f', size: 0 })
  })

  it('refuses a corrupted header or a truncated archive', async () => {
    const good = Buffer.concat([fileEntry('f', Buffer.alloc(2000, 1)), TAR_END])
    const bad = Buffer.from(good)
    bad[10] = 0x41
    let err: unknown
    try { await list(bad) } catch (e) { err = e }
    expect(err).to.be.instanceOf(TarFormatError).and.instanceOf(GotoError)
    expect((err as Error).name).to.equal('TarFormatError')
    for (const cut of [1200, 2560]) { // inside the data; after it, without the end-of-archive blocks
      err = undefined
      try { await list(good.subarray(0, cut)) } catch (e) { err = e }
      expect(err, String(cut)).to.be.instanceOf(TarFormatError)
    }
  })
})

// --- a fake engine ----------------------------------------------------------------------------

interface FakeNode {
  type: 'dir' | 'file' | 'symlink' | 'socket'
  data?: Buffer
  target?: string
  mode?: number
  uid?: number
  /** Files with the same inode are hard links of each other. */
  ino?: number
}

/** Serves an in-memory filesystem the way the engine serves a container's. */
class FakeEngine implements ChangesEngine {
  readonly gets: string[] = []
  readonly heads: string[] = []
  constructor (readonly fs: Map<string, FakeNode>, readonly changes: ContainerChange[], readonly mounts: MountSpec[] = []) {}

  async containerChanges (): Promise<ContainerChange[]> { return this.changes }

  async inspectContainer (): Promise<ContainerInfo> {
    return {
      id: 'c1',
      name: 'c1',
      state: { status: 'paused', running: true, paused: true, execs: 0 },
      spec: {
        name: 'c1', image: 'sha256:x', env: [], cmd: null, entrypoint: null, workingDir: '', user: '', labels: {}, hostname: '',
        exposedPorts: [], portBindings: {}, restartPolicy: { name: '', maximumRetryCount: 0 }, mounts: this.mounts
      }
    }
  }

  async statPath (_id: string, path: string): Promise<PathStat> {
    this.heads.push(path)
    const n = this.fs.get(path)
    if (n === undefined) throw new ContainerPathNotFoundError(`no ${path}`, { status: 404 })
    const type = n.type === 'dir' ? 'directory' : n.type
    const ifmt = { directory: 0o40000, file: 0o100000, symlink: 0o120000, socket: 0o140000 }[type]
    return { name: posix.basename(path), size: n.data?.length ?? 0, mode: ifmt + (n.mode ?? 0o755), type, mtime: new Date(1_700_000_000_000), linkTarget: n.target ?? '' }
  }

  async getArchive (_id: string, root: string): Promise<AsyncIterable<Uint8Array>> {
    this.gets.push(root)
    if (!this.fs.has(root)) throw new ContainerPathNotFoundError(`no ${root}`, { status: 404 })
    const base = posix.basename(root)
    const paths = [...this.fs.keys()].filter(p => p === root || p.startsWith(`${root}/`)).sort(comparePaths)
    const parts: Buffer[] = []
    const seen = new Map<number, string>()
    for (const p of paths) {
      const n = this.fs.get(p) as FakeNode
      const name = base + p.slice(root.length)
      const common = { mode: n.mode ?? (n.type === 'dir' ? 0o755 : 0o644), uid: n.uid ?? 0, mtime: 1_700_000_000 }
      if (n.type === 'socket') continue
      if (n.type === 'dir') parts.push(...newHeader({ ...common, name: `${name}/`, type: TarType.directory }))
      else if (n.type === 'symlink') parts.push(...newHeader({ ...common, name, type: TarType.symlink, linkname: n.target ?? '' }))
      else if (n.ino !== undefined && seen.has(n.ino)) parts.push(...newHeader({ ...common, name, type: TarType.link, linkname: seen.get(n.ino) }))
      else {
        if (n.ino !== undefined) seen.set(n.ino, name)
        const data = n.data ?? Buffer.alloc(0)
        parts.push(...newHeader({ ...common, name, type: TarType.file, size: data.length }), data, Buffer.from(tarPadding(data.length)))
      }
    }
    parts.push(Buffer.from(TAR_END))
    return chunked(Buffer.concat(parts), 4096)
  }
}

function tree (entries: Record<string, FakeNode>): Map<string, FakeNode> {
  return new Map(Object.entries(entries))
}

describe('docker changes: export against a fake engine', () => {
  let tmp: string
  before(async () => { tmp = await mkdtemp(join(tmpdir(), 'goto-changes-unit-')) })
  after(async () => { await rm(tmp, { recursive: true, force: true }) })

  it('writes whiteouts, opaque directories, added trees, modified files and mount placeholders, parents first, in few requests', async () => {
    const fs = tree({
      '/': { type: 'dir' },
      '/data': { type: 'dir' }, // volume: its contents are the volume's
      '/data/in-volume': { type: 'file', data: Buffer.from('volume data') },
      '/etc': { type: 'dir' },
      '/etc/aaa': { type: 'file', data: Buffer.from('unchanged') },
      '/etc/hosts': { type: 'file', data: Buffer.from('127.0.0.1 x') },
      '/etc/passwd': { type: 'file', data: Buffer.from('root:x:0:0::/root:/bin/sh\n'), mode: 0o600 },
      '/etc/zzz': { type: 'file', data: Buffer.from('new in etc') },
      '/newdir': { type: 'dir', mode: 0o700, uid: 1000 },
      '/newdir/link': { type: 'symlink', target: '/etc/zzz' },
      '/newdir/sub': { type: 'dir' },
      '/newdir/sub/a': { type: 'file', data: Buffer.from('a') },
      '/newdir/vol': { type: 'dir' }, // a bind mount inside a new directory
      '/newdir/vol/host-file': { type: 'file', data: Buffer.from('from the host') },
      '/run': { type: 'dir' },
      '/run/app.sock': { type: 'socket' },
      '/srv': { type: 'dir' },
      '/srv/opq': { type: 'dir' },
      '/srv/opq/new': { type: 'file', data: Buffer.from('n') }
    })
    const engine = new FakeEngine(fs, [
      { path: '/srv/opq', kind: 'deleted' }, // an overlay opaque directory, as the native diff reports it
      { path: '/srv/opq/new', kind: 'added' },
      { path: '/srv', kind: 'modified' },
      { path: '/etc', kind: 'modified' },
      { path: '/etc/passwd', kind: 'modified' },
      { path: '/etc/group', kind: 'deleted' },
      { path: '/etc/zzz', kind: 'added' },
      { path: '/newdir', kind: 'added' },
      { path: '/newdir/sub', kind: 'added' },
      { path: '/newdir/sub/a', kind: 'added' },
      { path: '/newdir/link', kind: 'added' },
      { path: '/newdir/vol', kind: 'added' },
      { path: '/data', kind: 'added' },
      { path: '/run', kind: 'modified' },
      { path: '/run/app.sock', kind: 'added' },
      { path: '/bin/ls', kind: 'deleted' }
    ], [
      { type: 'volume', name: 'v', destination: '/data', readOnly: false, driver: 'local' },
      { type: 'bind', source: '/host', destination: '/newdir/vol', readOnly: false }
    ])
    const out = join(tmp, 'layer.tar')
    const r = await exportContainerChanges(engine, 'c1', out, AbortSignal.timeout(10_000))
    const bytes = await readFile(out)
    expect(r.size).to.equal(bytes.length)
    expect(r.diffId).to.equal(`sha256:${createHash('sha256').update(bytes).digest('hex')}`)
    const got = await list(bytes)
    expect(got.map(e => e.type === '1' || e.type === '2' ? `${e.name} -> ${e.linkname}` : e.name)).to.deep.equal([
      'bin/.wh.ls',
      'data/',
      'etc/',
      'etc/.wh.group',
      'etc/passwd',
      'etc/zzz',
      'newdir/',
      'newdir/link -> /etc/zzz',
      'newdir/sub/',
      'newdir/sub/a',
      'newdir/vol/',
      'run/',
      'srv/',
      'srv/opq/',
      'srv/opq/.wh..wh..opq',
      'srv/opq/new'
    ])
    expect(r.entries).to.equal(got.length)
    const byName = new Map(got.map(e => [e.name, e]))
    expect(byName.get('etc/passwd')).to.include({ mode: 0o600 })
    expect(byName.get('etc/passwd')?.data.toString()).to.equal('root:x:0:0::/root:/bin/sh\n')
    expect(byName.get('newdir/')).to.include({ mode: 0o700, uid: 1000 })
    expect(byName.get('bin/.wh.ls')).to.include({ type: '0', size: 0 })
    // one GET per top-level directory: /etc's changes came from one scan of /etc, /srv's from /srv
    // the socket is not in the walk of /run: left out without asking for it alone
    expect(engine.gets).to.deep.equal(['/etc', '/newdir', '/run', '/srv'])
    expect(engine.heads).to.have.members(['/srv/opq', '/etc/group', '/bin/ls', '/data'])
  })

  it('reads past at most the skip budget of unchanged data, then roots a scan closer to the change', async () => {
    const fs = tree({
      '/usr': { type: 'dir' },
      '/usr/bin': { type: 'dir' },
      '/usr/bin/wc': { type: 'file', data: Buffer.from('changed') },
      '/usr/lib': { type: 'dir' },
      '/usr/lib/big.so': { type: 'file', data: Buffer.alloc(SCAN_SKIP_BYTES + 1024) },
      '/usr/share': { type: 'dir' },
      '/usr/share/zoneinfo': { type: 'dir' },
      '/usr/share/zoneinfo/UTC': { type: 'file', data: Buffer.from('changed too') },
      '/usr/share/zz-big': { type: 'file', data: Buffer.alloc(SCAN_SKIP_BYTES + 1024) },
      '/usr/zz-after-lib': { type: 'file', data: Buffer.from('changed last') },
      '/usr/zz-last': { type: 'file', data: Buffer.from('changed last too') }
    })
    const engine = new FakeEngine(fs, [
      { path: '/usr', kind: 'modified' },
      { path: '/usr/bin', kind: 'modified' },
      { path: '/usr/bin/wc', kind: 'modified' },
      { path: '/usr/share', kind: 'modified' },
      { path: '/usr/share/zoneinfo', kind: 'modified' },
      { path: '/usr/share/zoneinfo/UTC', kind: 'modified' },
      { path: '/usr/zz-after-lib', kind: 'added' },
      { path: '/usr/zz-last', kind: 'added' }
    ])
    const out = join(tmp, 'budget.tar')
    await exportContainerChanges(engine, 'c1', out)
    expect((await list(await readFile(out))).map(e => e.name)).to.deep.equal([
      'usr/', 'usr/bin/', 'usr/bin/wc', 'usr/share/', 'usr/share/zoneinfo/', 'usr/share/zoneinfo/UTC', 'usr/zz-after-lib', 'usr/zz-last'
    ])
    // /usr ran out of budget at big.so: /usr/share is scanned on its own (and its big file after
    // the change is never read), and the later changes in /usr are asked for one by one, not by
    // scanning /usr again.
    expect(engine.gets).to.deep.equal(['/usr', '/usr/share', '/usr/zz-after-lib', '/usr/zz-last'])
    expect((await stat(out)).size).to.be.below(64 * 1024)
  })

  it('sends a hard link whose target the layer lacks as a file of its own', async () => {
    const fs = tree({
      '/etc': { type: 'dir' },
      '/etc/aaa': { type: 'file', data: Buffer.from('shared inode'), ino: 7 },
      '/etc/new-link': { type: 'file', data: Buffer.from('shared inode'), ino: 7 },
      '/etc/x': { type: 'dir' },
      '/etc/x/both1': { type: 'file', data: Buffer.from('pair'), ino: 8 },
      '/etc/x/both2': { type: 'file', data: Buffer.from('pair'), ino: 8 }
    })
    const engine = new FakeEngine(fs, [
      { path: '/etc', kind: 'modified' },
      { path: '/etc/new-link', kind: 'added' },
      { path: '/etc/x', kind: 'added' }
    ])
    const out = join(tmp, 'links.tar')
    await exportContainerChanges(engine, 'c1', out)
    const got = await list(await readFile(out))
    expect(got.map(e => `${e.name} ${e.type} ${e.linkname} ${e.data.toString()}`)).to.deep.equal([
      'etc/ 5  ',
      'etc/x/ 5  ',
      'etc/x/both1 0  pair',
      'etc/x/both2 1 etc/x/both1 ',
      'etc/new-link 0  shared inode'
    ])
  })

  it('writes the change list of a vanished path as a whiteout, and removes the file when aborted', async () => {
    const engine = new FakeEngine(tree({ '/etc': { type: 'dir' } }), [
      { path: '/etc', kind: 'modified' }, { path: '/gone', kind: 'modified' }, { path: '/gone/child', kind: 'added' }
    ])
    const out = join(tmp, 'vanished.tar')
    await exportContainerChanges(engine, 'c1', out)
    expect((await list(await readFile(out))).map(e => e.name)).to.deep.equal(['etc/', '.wh.gone'])

    const ac = new AbortController()
    const slow: ChangesEngine = {
      ...engine,
      containerChanges: async () => await engine.containerChanges(),
      inspectContainer: async () => await engine.inspectContainer(),
      statPath: async (id, p) => await engine.statPath(id, p),
      getArchive: async (id, p) => {
        const src = await engine.getArchive(id, p)
        return (async function * () { for await (const c of src) { ac.abort(new Error('stop now')); yield c } })()
      }
    }
    let err: unknown
    try { await exportContainerChanges(slow, 'c1', join(tmp, 'aborted.tar'), ac.signal) } catch (e) { err = e }
    expect((err as Error).message).to.equal('stop now')
    let gone: unknown
    try { await stat(join(tmp, 'aborted.tar')) } catch (e) { gone = e }
    expect((gone as NodeJS.ErrnoException).code).to.equal('ENOENT')
  })
})
