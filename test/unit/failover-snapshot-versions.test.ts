/**
 * The holder's incremental snapshot versions (agent/failover/snapshot-store.ts) with real trees on
 * this machine's filesystem: a volume synced (agent/sync, in memory) against the current version,
 * only the difference travelling, unchanged files shared by hard link, the version made current
 * only when whole, older ones removed, and what a hostile sender's store may not do.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { listingDifferences, listTree, memoryDuplexPair, NO_XATTRS, syncDestination, syncSource, type SyncResult } from '../../agent/sync/index.js'
import { SnapshotStore } from '../../agent/failover/snapshot-store.js'
import { LayerStore } from '../../agent/transfer/layer-store.js'
import type { StoreRequest } from '../../protocol/move-messages.js'
import { SnapshotIncompleteError, TransferError } from '../../protocol/errors.js'

const exec = promisify(execFile)
const MiB = 1024 * 1024
const OWNER = '12D3KooWAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'

describe('incremental snapshot versions at the holder', function () {
  this.timeout(60_000)
  let dir: string
  let src: string
  let n = 0

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-versions-'))
    src = join(dir, 'src')
    await mkdir(src)
    for (let i = 0; i < 8; i++) await writeFile(join(src, `seg-${i}`), randomBytes(2 * MiB))
    await mkdir(join(src, 'sub'))
    await writeFile(join(src, 'sub', 'small.txt'), 'hello')
  })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  function moveId (): string { return (++n).toString(16).padStart(16, '0') }

  /** One `volume` round of `volume` into the version that transfer `id` assembles. */
  async function round (store: SnapshotStore, id: string, volume = 'data'): Promise<SyncResult> {
    const t = await store.volumeTree(OWNER, 'db', id, volume)
    const [a, b] = memoryDuplexPair()
    const signal = AbortSignal.timeout(30_000)
    const [, result] = await Promise.all([
      syncSource(src, a, { signal, xattrs: NO_XATTRS }),
      syncDestination(t.dir, b, { signal, xattrs: NO_XATTRS, hashCache: t.cache, ...t.base === undefined ? {} : { base: t.base } })
    ])
    return result
  }

  function request (id: string, seq: number, synced: Array<{ name: string, destination: string }>, top = Buffer.from(`changes ${seq}`)): { req: StoreRequest, blob: () => AsyncIterable<Uint8Array> } {
    const req = {
      op: 'store', moveId: id, owner: OWNER, epoch: 1, seq, takenAt: new Date(0).toISOString(), config: '', diffIds: [],
      spec: { name: 'db', image: 'base:latest', mounts: [{ type: 'volume', name: 'data', destination: '/var/db', driver: 'local' }] },
      top: { diffId: `sha256:${createHash('sha256').update(top).digest('hex')}`, size: top.length }, volumes: [], synced
    } as unknown as StoreRequest
    return { req, blob: async function * () { yield top } }
  }

  async function snapshot (store: SnapshotStore, seq: number): Promise<SyncResult> {
    const id = moveId()
    const result = await round(store, id)
    const { req, blob } = request(id, seq, [{ name: 'data', destination: '/var/db' }])
    await store.receive(req, 'a', blob, AbortSignal.timeout(30_000))
    return result
  }

  async function current (): Promise<string> {
    return (JSON.parse(await readFile(join(dir, 'snaps', `${OWNER}.db`, 'CURRENT'), 'utf8')) as { version: string }).version
  }

  it('sends only the changed block the second time, shares unchanged files by hard link and keeps one version', async () => {
    const store = await SnapshotStore.open(join(dir, 'snaps'))
    const first = await snapshot(store, 1)
    expect(first.bytesReceived).to.be.at.least(16 * MiB)
    const v1 = await current()
    const ino = (await stat(join(dir, 'snaps', `${OWNER}.db`, v1, 'volumes', 'data', 'seg-3'))).ino

    const fh = await open(join(src, 'seg-5'), 'r+')
    await fh.write(randomBytes(MiB), 0, MiB, MiB)
    await fh.close()
    const second = await snapshot(store, 2)
    expect(second.bytesReceived, 'one changed 1 MiB block').to.equal(MiB)
    expect(second.filesLinked).to.be.at.least(8)
    const v2 = await current()
    expect(v2).to.not.equal(v1)
    const cdir = join(dir, 'snaps', `${OWNER}.db`)
    expect((await readdir(cdir)).sort()).to.deep.equal(['CURRENT', v2])
    expect((await stat(join(cdir, v2, 'volumes', 'data', 'seg-3'))).ino, 'an unchanged file is the same inode').to.equal(ino)
    const signal = AbortSignal.timeout(30_000)
    expect(listingDifferences(await listTree(src, { signal }), await listTree(join(cdir, v2, 'volumes', 'data'), { signal }))).to.deep.equal([])
    expect(store.get('db', OWNER)?.manifest.seq).to.equal(2)

    // The restore's archive of the tree: the mount point's entry, then its files, as they are.
    const held = store.get('db', OWNER)
    if (held === undefined) throw new Error('nothing held')
    const [vol] = store.volumeData(held)
    expect(vol).to.deep.include({ name: 'data', destination: '/var/db' })
    const tarPath = join(dir, 'restore.tar')
    const fw = await open(tarPath, 'w')
    for await (const chunk of vol.data()) await fw.write(chunk)
    await fw.close()
    const out = join(dir, 'out')
    await mkdir(out)
    await exec('tar', ['-xf', tarPath, '-C', out])
    expect(listingDifferences(await listTree(src, { signal }), await listTree(join(out, 'db'), { signal }))).to.deep.equal([])

    // A restart finds the same current version, and the next snapshot still compares against it.
    const again = await SnapshotStore.open(join(dir, 'snaps'))
    expect(again.get('db', OWNER)?.manifest.seq).to.equal(2)
    await writeFile(join(src, 'sub', 'small.txt'), 'hello again')
    const third = await snapshot(again, 3)
    expect(third.bytesReceived).to.be.below(MiB)
  })

  it('keeps the current version whole when an assembly fails or is dropped, and removes what it left', async () => {
    const store = await SnapshotStore.open(join(dir, 'snaps'))
    await snapshot(store, 1)
    const v1 = await current()
    await writeFile(join(src, 'seg-0'), randomBytes(2 * MiB))
    const id = moveId()
    await round(store, id)
    await store.dropIncoming(id)
    expect(await current()).to.equal(v1)
    expect(await readdir(join(dir, 'snaps', '.incoming'))).to.deep.equal([])
    // A store naming a synced volume no round of its transfer synced is refused; nothing changes.
    const { req, blob } = request(moveId(), 2, [{ name: 'data', destination: '/var/db' }])
    let err: unknown
    try { await store.receive(req, 'a', blob, AbortSignal.timeout(5000)) } catch (e) { err = e }
    expect(err).to.be.instanceOf(SnapshotIncompleteError)
    expect(await current()).to.equal(v1)
    expect(store.get('db', OWNER)?.manifest.seq).to.equal(1)
    // A crash that left an assembled version beside the current one: open removes it.
    await mkdir(join(dir, 'snaps', `${OWNER}.db`, 'v-00000000000000ff'))
    await SnapshotStore.open(join(dir, 'snaps'))
    expect(await readdir(join(dir, 'snaps', `${OWNER}.db`))).to.have.members(['CURRENT', v1])
  })

  it('refuses volume names that would climb out, and stores whose volumes are not those of the spec', async () => {
    const store = await SnapshotStore.open(join(dir, 'snaps'))
    for (const bad of ['..', '../x', '.hidden', 'a/b', '']) {
      let err: unknown
      try { await store.volumeTree(OWNER, 'db', moveId(), bad) } catch (e) { err = e }
      expect(err, bad).to.be.instanceOf(TransferError)
    }
    const id = moveId()
    await round(store, id)
    for (const synced of [[], [{ name: 'data', destination: '/elsewhere' }], [{ name: 'data', destination: '/var/db' }, { name: 'data', destination: '/var/db' }]]) {
      const { req, blob } = request(id, 1, synced)
      let err: unknown
      try { await store.receive(req, 'a', blob, AbortSignal.timeout(5000)) } catch (e) { err = e }
      expect(err, JSON.stringify(synced)).to.be.instanceOf(SnapshotIncompleteError)
    }
    expect(store.get('db', OWNER)).to.equal(undefined)
  })

  it('reads a snapshot of the layout before versions in place, and the first version replaces it', async () => {
    const store = await SnapshotStore.open(join(dir, 'snaps'))
    await snapshot(store, 1)
    // The old layout: manifest.json and layers/ straight in the container's directory.
    const cdir = join(dir, 'snaps', `${OWNER}.db`)
    const v1 = await current()
    const m = JSON.parse(await readFile(join(cdir, v1, 'manifest.json'), 'utf8')) as Record<string, unknown>
    delete m.trees
    await exec('cp', ['-a', join(cdir, v1, 'layers'), join(cdir, 'layers')])
    await writeFile(join(cdir, 'manifest.json'), JSON.stringify(m))
    await rm(join(cdir, v1), { recursive: true })
    await rm(join(cdir, 'CURRENT'))
    const old = await SnapshotStore.open(join(dir, 'snaps'))
    expect(old.get('db', OWNER)?.manifest.seq).to.equal(1)
    const second = await snapshot(old, 2)
    expect(second.bytesReceived, 'no tree held: the whole volume').to.be.at.least(16 * MiB)
    expect((await readdir(cdir)).sort()).to.deep.equal(['CURRENT', await current()])
  })

  it('keeps the image\'s layers with the version when the destination hands them over (an engine without thin loads)', async () => {
    const staging = await LayerStore.open(join(dir, 'staging'))
    const layer = randomBytes(64 * 1024)
    const diffId = `sha256:${createHash('sha256').update(layer).digest('hex')}`
    await staging.receive(diffId, layer.length, (async function * () { yield layer })())
    const store = await SnapshotStore.open(join(dir, 'snaps'))
    const id = moveId()
    await round(store, id)
    const { req, blob } = request(id, 1, [{ name: 'data', destination: '/var/db' }])
    await store.receive(req, 'a', blob, AbortSignal.timeout(30_000), { store: staging, diffIds: [diffId, `sha256:${'0'.repeat(64)}`] })
    const held = store.get('db', OWNER)
    expect(await held?.layers.has(diffId), 'the staged image layer').to.equal(true)
    expect(await held?.layers.has(`sha256:${'0'.repeat(64)}`), 'a layer not staged is skipped').to.equal(false)
    expect(await held?.layers.has(req.top.diffId)).to.equal(true)
  })
})
