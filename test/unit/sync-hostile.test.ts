import { expect } from 'chai'
import { lstat, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { memoryDuplexPair, syncDestination } from '../../agent/sync/index.js'
import { FRAME_HASHES, FRAME_JSON, SYNC_BLOCK_BYTES, SYNC_WIRE_VERSION, frame, jsonFrame } from '../../agent/sync/wire.js'
import { checkPath } from '../../agent/sync/entry.js'

const root = { t: 'entry', path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtimeNs: '0', xattrs: {} }
const entry = (path: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ t: 'entry', path, type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, mtimeNs: '0', xattrs: {}, ...extra })

/** A hostile source: sends these frames and reads what comes back. */
async function refusal (live: string, frames: Uint8Array[]): Promise<{ name: string, reply: string }> {
  const [a, b] = memoryDuplexPair()
  const replies: Buffer[] = []
  const reading = (async () => { for await (const c of a.source) replies.push(Buffer.from(c.subarray())) })()
  void a.sink((async function * () { yield jsonFrame({ t: 'hello', version: SYNC_WIRE_VERSION, blockSize: SYNC_BLOCK_BYTES }); yield * frames })())
  const err = await syncDestination(live, b, { signal: AbortSignal.timeout(10_000) }).then(() => undefined, (e: Error) => e)
  expect(err, 'the destination accepted a hostile tree').to.be.instanceOf(Error)
  await reading
  return { name: (err as Error).name, reply: Buffer.concat(replies).toString() }
}

describe('sync: hostile entries from the wire', () => {
  let dir: string
  let live: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-sync-hostile-'))
    live = join(dir, 'vol', '_data')
    await mkdir(live, { recursive: true })
    await writeFile(join(live, 'keep'), 'old')
  })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  async function expectUntouched (): Promise<void> {
    expect(await readdir(live)).to.deep.equal(['keep'])
    expect((await readdir(join(dir, 'vol'))).filter(n => n.includes('.sync-'))).to.deep.equal([])
    await lstat(join(dir, 'escaped')).then(() => { throw new Error('something was written outside the root') }, () => {})
  }

  const cases: Array<[string, Uint8Array[], string]> = [
    ['a .. component', [jsonFrame(root), jsonFrame(entry('../escaped'))], 'SyncPathRefusedError'],
    ['an absolute path', [jsonFrame(root), jsonFrame(entry(join('/tmp', 'escaped')))], 'SyncPathRefusedError'],
    ['a NUL', [jsonFrame(root), jsonFrame(entry('a\0b'))], 'SyncPathRefusedError'],
    ['an empty component', [jsonFrame(root), jsonFrame(entry('a//b'))], 'SyncPathRefusedError'],
    ['a name longer than NAME_MAX', [jsonFrame(root), jsonFrame(entry('x'.repeat(256)))], 'SyncPathRefusedError'],
    ['a child of a symlink (escape through a symlinked parent)', [
      jsonFrame(root), jsonFrame(entry('l', { type: 'symlink', link: '/tmp' })), jsonFrame(entry('l/escaped'))
    ], 'SyncPathEscapeError'],
    ['a child of a regular file', [jsonFrame(root), jsonFrame(entry('f')), jsonFrame(entry('f/x'))], 'SyncPathEscapeError'],
    ['a child of a directory not yet listed', [jsonFrame(root), jsonFrame(entry('d/x'))], 'SyncPathEscapeError'],
    ['a path listed twice (a directory then a symlink)', [
      jsonFrame(root), jsonFrame(entry('d', { type: 'dir', mode: 0o755 })), jsonFrame(entry('d', { type: 'symlink', link: '/' }))
    ], 'SyncEntryRefusedError'],
    ['a root that is not first', [jsonFrame(entry('x'))], 'SyncEntryRefusedError'],
    ['an unknown entry type', [jsonFrame(root), jsonFrame(entry('s', { type: 'socket' }))], 'SyncEntryRefusedError'],
    ['an xattr outside the namespaces a sync sets', [jsonFrame(root), jsonFrame(entry('x', { xattrs: { 'system.evil': 'AA==' } }))], 'SyncEntryRefusedError'],
    ['xattrs beyond XATTR_SIZE_MAX', [jsonFrame(root), jsonFrame(entry('x', { xattrs: { 'user.a': Buffer.alloc(40_000).toString('base64'), 'user.b': Buffer.alloc(40_000).toString('base64') } }))], 'SyncLimitError'],
    ['a frame announcing more than its bound', [jsonFrame(root), frame(FRAME_JSON, Buffer.alloc(0)).fill(0xff, 1, 5)], 'SyncLimitError'],
    ['a file larger than the tree bound', [jsonFrame(root), jsonFrame(entry('x', { size: 2 ** 52 }))], 'ProtocolError'],
    ['hashes that do not fit the size', [jsonFrame(root), jsonFrame(entry('x', { size: 10 })), frame(FRAME_HASHES, Buffer.alloc(64))], 'ProtocolError']
  ]
  for (const [what, frames, name] of cases) {
    it(`refuses ${what} with ${name}, the live tree untouched`, async () => {
      const { name: got, reply } = await refusal(live, frames)
      expect(got).to.equal(name)
      expect(reply).to.include(`"name":"${name}"`) // the source learns why, by the stable name
      await expectUntouched()
    })
  }

  it('checkPath accepts plain relative paths and the root', () => {
    expect(checkPath('.')).to.equal('.')
    expect(checkPath('a/b.c/..d')).to.equal('a/b.c/..d')
  })
})
