import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { appendFile, chmod, chown, link, lstat, mkdir, mkdtemp, open, readdir, rename, rm, stat, symlink, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { truncateSync } from 'node:fs'
import {
  attrTools, HashCache, listingDifferences, listTree, memoryDuplexPair, NO_XATTRS, syncDestination, syncSource, type SyncResult, type XattrAccess
} from '../../agent/sync/index.js'
import { FRAME_BLOCK, FRAME_WANT } from '../../agent/sync/wire.js'
import { SyncBlockMismatchError } from '../../protocol/errors.js'

const exec = promisify(execFile)
const MiB = 1024 * 1024

/** getfattr/setfattr when Debian's attr package is installed (.ci/setup installs it), else none. */
async function hostXattrs (): Promise<XattrAccess | undefined> {
  try { return await attrTools() } catch { return undefined }
}

/** A tree with every entry kind a sync carries. */
export async function makeTree (root: string): Promise<void> {
  await mkdir(join(root, 'a/b'), { recursive: true })
  await writeFile(join(root, 'hello.txt'), 'hello\n')
  await writeFile(join(root, 'a/b/deep.txt'), randomBytes(3000))
  await writeFile(join(root, 'setuid'), '#!/bin/sh\n')
  await chmod(join(root, 'setuid'), 0o4755)
  await chown(join(root, 'a/b/deep.txt'), 1234, 5678)
  await chown(join(root, 'a/b'), 1000, 1000)
  await chmod(join(root, 'a/b'), 0o750)
  await writeFile(join(root, 'big.bin'), randomBytes(16 * MiB))
  // 256 MiB sparse with a few written blocks (unaligned too): the lab's bench carries the 1 GiB one.
  const fh = await open(join(root, 'sparse.img'), 'w')
  await fh.truncate(256 * MiB)
  await fh.write(randomBytes(MiB), 0, MiB, 0)
  await fh.write(randomBytes(4096), 0, 4096, 100 * MiB + 17)
  await fh.write(randomBytes(MiB), 0, MiB, 255 * MiB)
  await fh.close()
  await writeFile(join(root, 'h1'), randomBytes(5000))
  await link(join(root, 'h1'), join(root, 'a/h2'))
  await link(join(root, 'h1'), join(root, 'a/b/h3'))
  await symlink('/etc/passwd', join(root, 'abs-link'))
  await symlink('../hello.txt', join(root, 'a/rel-link'))
  await symlink('nowhere', join(root, 'dangling'))
  await exec('mknod', [join(root, 'fifo'), 'p'])
  await exec('mknod', [join(root, 'null'), 'c', '1', '3'])
  await exec('mknod', [join(root, 'loop'), 'b', '7', '200'])
  await writeFile(join(root, 'empty'), '')
  await exec('touch', ['-h', '-d', '2001-02-03 04:05:06.123456789', join(root, 'a/rel-link')])
}

async function sync (src: string, live: string, opts: { tap?: (chunk: Uint8Array) => Uint8Array, tapBack?: (chunk: Uint8Array) => void, xattrs?: XattrAccess, base?: string, caches?: [HashCache, HashCache] } = {}): Promise<{ result: SyncResult, sourceBytes: number }> {
  let sourceBytes = 0
  const [a, b] = memoryDuplexPair((direction, chunk) => {
    if (direction === 'a→b') { sourceBytes += chunk.byteLength; return opts.tap?.(chunk) ?? chunk }
    opts.tapBack?.(chunk)
    return chunk
  })
  const signal = AbortSignal.timeout(60_000)
  const xattrs = opts.xattrs ?? NO_XATTRS
  const [result] = await Promise.all([
    syncSource(src, a, { signal, xattrs, hashCache: opts.caches?.[0] }),
    syncDestination(live, b, { signal, xattrs, base: opts.base, hashCache: opts.caches?.[1] })
  ])
  return { result, sourceBytes }
}

async function expectSame (src: string, dst: string, xattrs: XattrAccess = NO_XATTRS): Promise<void> {
  const signal = AbortSignal.timeout(60_000)
  const [a, b] = await Promise.all([listTree(src, { signal, xattrs }), listTree(dst, { signal, xattrs })])
  expect(listingDifferences(a, b)).to.deep.equal([])
}

async function leftovers (dir: string): Promise<string[]> {
  return (await readdir(dir)).filter(n => n.includes('.sync-'))
}

describe('sync: trees by difference', function () {
  this.timeout(120_000)
  let dir: string
  let src: string
  let live: string

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-sync-'))
    src = join(dir, 'src')
    live = join(dir, 'dst', 'live')
    await mkdir(src)
    await mkdir(join(dir, 'dst'))
    await makeTree(src)
  })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('copies every entry kind into an empty destination: identical listing, sparse file still sparse', async () => {
    const { result, sourceBytes } = await sync(src, live)
    await expectSame(src, live)
    expect(result.filesLinked).to.equal(0)
    // The sparse file's holes did not travel: 16 MiB + 2 MiB of its data + small files.
    expect(sourceBytes).to.be.below(20 * MiB)
    const st = await stat(join(live, 'sparse.img'))
    expect(st.size).to.equal(256 * MiB)
    expect(st.blocks * 512).to.be.below(4 * MiB)
    const du = (await exec('du', ['-k', join(live, 'sparse.img')])).stdout
    expect(parseInt(du, 10)).to.be.below(4096)
    // Hard links arrive as one inode; symlinks are not followed.
    const [h1, h2, h3] = await Promise.all(['h1', 'a/h2', 'a/b/h3'].map(async p => await lstat(join(live, p))))
    expect(h2.ino).to.equal(h1.ino)
    expect(h3.ino).to.equal(h1.ino)
    expect(h1.nlink).to.equal(3)
    expect((await lstat(join(live, 'abs-link'))).isSymbolicLink()).to.equal(true)
    expect((await lstat(join(live, 'null'))).isCharacterDevice()).to.equal(true)
    expect(await leftovers(join(dir, 'dst'))).to.deep.equal([])
  })

  it('after a 1 MiB change inside a large file only about that many bytes travel; the rest is linked', async () => {
    const fh = await open(join(src, 'big.bin'), 'r+')
    await fh.write(randomBytes(MiB), 0, MiB, 5 * MiB)
    await fh.close()
    const { result, sourceBytes } = await sync(src, live)
    await expectSame(src, live)
    expect(result.blocksReceived).to.equal(1)
    expect(result.filesBuilt).to.equal(1)
    expect(sourceBytes).to.be.above(MiB).and.below(MiB + 64 * 1024)
    expect(result.filesLinked).to.be.above(3)
  })

  it('carries deletions, a rename (no content travels), chmod, chown and a grown file', async () => {
    await rename(join(src, 'big.bin'), join(src, 'a/moved.bin'))
    await unlink(join(src, 'hello.txt'))
    await unlink(join(src, 'a/rel-link'))
    await chmod(join(src, 'setuid'), 0o700)
    await chown(join(src, 'h1'), 42, 43)
    await appendFile(join(src, 'a/b/deep.txt'), 'more')
    await mkdir(join(src, 'new-dir'), { mode: 0o711 })
    const { result, sourceBytes } = await sync(src, live)
    await expectSame(src, live)
    expect(result.blocksReceived).to.equal(1) // deep.txt's one block; moved.bin came from the base
    expect(sourceBytes).to.be.below(64 * 1024)
  })

  it('a corrupted block on the stream is refused: the old tree untouched, no staging left', async () => {
    const before = await listTree(live, { signal: AbortSignal.timeout(60_000) })
    await writeFile(join(src, 'a/moved.bin'), randomBytes(2 * MiB), { flag: 'r+' })
    let flipped = false
    const err = await sync(src, live, {
      tap: chunk => {
        if (chunk[0] !== FRAME_BLOCK || flipped) return chunk
        flipped = true
        const copy = Uint8Array.from(chunk)
        copy[copy.byteLength - 1] ^= 0xff
        return copy
      }
    }).then(() => undefined, (e: unknown) => e)
    expect(flipped).to.equal(true)
    expect(err).to.be.instanceOf(SyncBlockMismatchError)
    expect((err as Error).name).to.equal('SyncBlockMismatchError')
    expect(listingDifferences(before, await listTree(live, { signal: AbortSignal.timeout(60_000) }))).to.deep.equal([])
    expect(await leftovers(join(dir, 'dst'))).to.deep.equal([])
    // And the next sync without corruption arrives.
    await sync(src, live)
    await expectSame(src, live)
  })

  it('reuses a previous staging copy as the base and hashes unchanged files only once with a cache', async () => {
    const next = join(dir, 'dst', 'next')
    const caches: [HashCache, HashCache] = [new HashCache(), new HashCache()]
    await sync(src, next, { base: live, caches })
    await expectSame(src, next)
    const second = await sync(src, next, { caches })
    expect(second.result.blocksReceived).to.equal(0)
    expect(second.result.filesBuilt).to.equal(0)
    await expectSame(src, next)
    await rm(next, { recursive: true })
  })

  it('sends blocks while the manifest is still going (wire v2); the destination\'s cache spares the next round all hashing', async () => {
    const tree = join(dir, 'pipelined')
    await mkdir(tree)
    await writeFile(join(tree, 'a.txt'), randomBytes(5000))
    await writeFile(join(tree, 'z.bin'), randomBytes(64 * MiB)) // hashed after a.txt is announced
    const next = join(dir, 'dst', 'pipelined')
    const order: string[] = []
    const tap = (chunk: Uint8Array): Uint8Array => {
      if (chunk[0] === FRAME_BLOCK && !order.includes('block')) order.push('block')
      if (chunk[0] === 1 && Buffer.from(chunk.subarray(5)).toString().includes('"t":"end"')) order.push('end')
      return chunk
    }
    class CountingCache extends HashCache {
      misses = 0
      get (st: Parameters<HashCache['get']>[0]): Buffer | undefined {
        const h = super.get(st)
        if (h === undefined) this.misses++
        return h
      }
    }
    const caches: [HashCache, CountingCache] = [new HashCache(), new CountingCache()]
    await sync(tree, next, { tap, caches })
    expect(order).to.deep.equal(['block', 'end'])
    await expectSame(tree, next)
    caches[1].misses = 0
    const second = await sync(tree, next, { caches })
    expect(second.result.filesLinked).to.equal(2)
    expect(caches[1].misses).to.equal(0)
    await rm(next, { recursive: true })
    await rm(tree, { recursive: true })
  })

  it('a file truncated at the source while the sync runs arrives with its newest content', async () => {
    // CHANGED frames: the manifest said one thing, the block read for sending another. The file is
    // truncated as the destination's first WANT (for it, the only new file) crosses to the source,
    // before the source can read any block for it (the source answers wants while it still sends
    // the manifest, wire version 2).
    const f = join(src, 'changing.bin')
    await writeFile(f, randomBytes(3 * MiB))
    let done = false
    const { result } = await sync(src, live, {
      tapBack: chunk => {
        if (!done && chunk[0] === FRAME_WANT) {
          done = true
          truncateSync(f, 2 * MiB + 5)
        }
      }
    })
    expect(done).to.equal(true)
    expect(result.changed).to.include('changing.bin')
    await rm(f)
  })

  it('carries xattrs: user.* and security.capability (Debian\'s attr and libcap2-bin, which .ci/setup installs)', async function () {
    const xattrs = await hostXattrs()
    if (xattrs === undefined) throw new Error('getfattr/setfattr missing: run .ci/setup (it installs the attr package)')
    await exec('setcap', ['cap_net_bind_service=+ep', join(src, 'setuid')])
    await exec('setfattr', ['-n', 'user.note', '-v', 'kept', join(src, 'a/b/deep.txt')])
    await exec('setfattr', ['-n', 'user.dir', '-v', '0x00ff', join(src, 'a')])
    const listing = await listTree(src, { signal: AbortSignal.timeout(60_000), xattrs })
    expect(listing.find(e => e.path === 'setuid')?.xattrs).to.have.property('security.capability')
    await sync(src, live, { xattrs })
    await expectSame(src, live, xattrs)
    const caps = (await exec('getcap', [join(live, 'setuid')])).stdout
    expect(caps).to.match(/cap_net_bind_service[=+]+ep/)
  })
})
