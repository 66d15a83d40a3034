import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LayerStore } from '../../agent/transfer/layer-store.js'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import {
  InsufficientDiskError, LayerDigestMismatchError, LayerMissingError, LayerTooLargeError, LayerTruncatedError, ProtocolError, TransferError
} from '../../protocol/errors.js'
import { rejection } from '../fixtures/assert.js'

const exec = promisify(execFile)
const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

async function * chunks (data: Uint8Array, size = 1000): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < data.byteLength; off += size) yield data.subarray(off, off + size)
}


describe('transfer: layer store', () => {
  let dir: string
  let store: LayerStore
  const layer = randomBytes(10_000)
  const diffId = sha(layer)

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-layers-'))
    store = await LayerStore.open(join(dir, 'layers'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  /** Nothing half-received stays behind: no temp file, no layer file. */
  async function expectNothingKept (): Promise<void> {
    expect(await store.has(diffId)).to.equal(false)
    expect(await store.list()).to.deep.equal([])
    expect(await readdir(join(store.dir, 'incoming'))).to.deep.equal([])
    expect((await readdir(store.dir)).sort()).to.deep.equal(['incoming', 'partial'])
    expect(await readdir(join(store.dir, 'partial'))).to.deep.equal([])
  }

  it('keeps a layer whose size and sha256 match, and serves it back', async () => {
    expect(await store.has(diffId)).to.equal(false)
    expect(await store.receive(diffId, layer.byteLength, chunks(layer))).to.deep.equal({ bytes: layer.byteLength })
    expect(await store.has(diffId)).to.equal(true)
    expect(await store.size(diffId)).to.equal(layer.byteLength)
    expect(await store.list()).to.deep.equal([diffId])
    expect(await readdir(join(store.dir, 'incoming'))).to.deep.equal([])
    expect(await readFile(join(store.dir, `${diffId.slice(7)}.tar`))).to.deep.equal(layer)
    const { size, stream } = await store.open(diffId)
    expect(size).to.equal(layer.byteLength)
    const back: Buffer[] = []
    for await (const c of stream) back.push(c as Buffer)
    expect(Buffer.concat(back)).to.deep.equal(layer)
  })

  it('takes a Node readable stream and an empty layer', async () => {
    const file = join(dir, 'src.tar')
    await writeFile(file, layer)
    await store.receive(diffId, layer.byteLength, createReadStream(file))
    const empty = new Uint8Array(0)
    await store.receive(sha(empty), 0, chunks(empty))
    expect(await store.size(sha(empty))).to.equal(0)
    expect(await store.list()).to.have.members([diffId, sha(empty)])
  })

  it('refuses a layer whose sha256 is not its diff ID and keeps nothing', async () => {
    const bad = Buffer.from(layer)
    bad[5000] ^= 0x01
    const err = await rejection(store.receive(diffId, bad.byteLength, chunks(bad)))
    expect(err).to.be.instanceOf(LayerDigestMismatchError)
    expect(err).to.be.instanceOf(TransferError)
    expect(err.name).to.equal('LayerDigestMismatchError')
    expect(err.message).to.include(sha(bad))
    await expectNothingKept()
  })

  it('refuses a layer as soon as it goes past its announced size, before writing the excess', async () => {
    let pulled = 0
    let stopped = false
    async function * endless (): AsyncGenerator<Uint8Array> {
      try {
        for (;;) {
          pulled++
          yield new Uint8Array(4096)
        }
      } finally {
        stopped = true
      }
    }
    const err = await rejection(store.receive(diffId, 10_000, endless()))
    expect(err).to.be.instanceOf(LayerTooLargeError)
    // 4096 + 4096 fit in 10 000; the third chunk would not: refused on it, the source is told to stop
    expect(pulled).to.equal(3)
    expect(stopped).to.equal(true)
    await expectNothingKept()
  })

  it('refuses a layer that ends before its announced size', async () => {
    const err = await rejection(store.receive(diffId, layer.byteLength + 1, chunks(layer)))
    expect(err).to.be.instanceOf(LayerTruncatedError)
    await expectNothingKept()
  })

  it('keeps nothing when aborted in the middle, even while the source is waiting for data', async () => {
    const ac = new AbortController()
    let sent = 0
    async function * stalls (): AsyncGenerator<Uint8Array> {
      yield layer.subarray(0, 4000)
      sent = 4000
      await new Promise(() => {}) // the peer went quiet
    }
    const p = store.receive(diffId, layer.byteLength, stalls(), ac.signal)
    // wait until the first chunk was taken, then abort while the source hangs
    while (sent === 0) await new Promise(resolve => setImmediate(resolve))
    ac.abort()
    const err = await rejection(p)
    expect(err.name).to.equal('AbortError')
    await expectNothingKept()
  })

  it('keeps nothing when aborted between chunks, and refuses to start on an aborted signal', async () => {
    const ac = new AbortController()
    async function * abortsMidway (): AsyncGenerator<Uint8Array> {
      yield layer.subarray(0, 4000)
      ac.abort(new Error('move cancelled'))
      yield layer.subarray(4000)
    }
    const err = await rejection(store.receive(diffId, layer.byteLength, abortsMidway(), ac.signal))
    expect(err.message).to.equal('move cancelled')
    await expectNothingKept()
    const err2 = await rejection(store.receive(diffId, layer.byteLength, chunks(layer), ac.signal))
    expect(err2.message).to.equal('move cancelled')
    await expectNothingKept()
  })

  it('passes the source\'s own typed error through and keeps nothing', async () => {
    async function * cut (): AsyncGenerator<Uint8Array> {
      yield layer.subarray(0, 4000)
      throw new ProtocolError('stream ended in the middle of data')
    }
    const err = await rejection(store.receive(diffId, layer.byteLength, cut()))
    expect(err).to.be.instanceOf(ProtocolError)
    await expectNothingKept()
  })

  it('refuses a malformed diff ID or size before touching the disk', async () => {
    for (const bad of ['sha256:abc', 'md5:' + 'a'.repeat(64), 'sha256:' + 'A'.repeat(64), '../../etc/passwd']) {
      expect(await rejection(store.receive(bad, 1, chunks(layer)))).to.be.instanceOf(TransferError)
      expect(await rejection(store.has(bad))).to.be.instanceOf(TransferError)
    }
    for (const size of [-1, 1.5, Number.NaN]) {
      expect(await rejection(store.receive(diffId, size, chunks(layer)))).to.be.instanceOf(TransferError)
    }
    await expectNothingKept()
  })

  it('still has a verified layer after a restart, and drops a crashed receive\'s temp file', async () => {
    await store.receive(diffId, layer.byteLength, chunks(layer))
    await writeFile(join(store.dir, 'incoming', `${'e'.repeat(64)}.0123456789ab.partial`), 'half a layer')
    const again = await LayerStore.open(store.dir)
    expect(await again.has(diffId)).to.equal(true)
    expect(await again.size(diffId)).to.equal(layer.byteLength)
    expect(await again.list()).to.deep.equal([diffId])
    expect(await readdir(join(store.dir, 'incoming'))).to.deep.equal([])
  })

  it('a store for this boot only (\'boot\') keeps its layers across a restart, and drops them all after a reboot', async () => {
    const staging = await LayerStore.open(join(dir, 'staging'), { durability: 'boot' })
    await staging.receive(diffId, layer.byteLength, chunks(layer))
    const restarted = await LayerStore.open(staging.dir, { durability: 'boot' })
    expect(await restarted.list()).to.deep.equal([diffId])
    expect(await readFile(join(staging.dir, 'boot-id'), 'utf8')).to.equal(`${(await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim()}\n`)
    // As if the machine had booted since: its page cache (the only copy of an unsynced layer) is gone.
    await writeFile(join(staging.dir, 'boot-id'), '00000000-0000-0000-0000-000000000000\n')
    const rebooted = await LayerStore.open(staging.dir, { durability: 'boot' })
    expect(await rebooted.list()).to.deep.equal([])
    expect(await rebooted.has(diffId)).to.equal(false)
    await rebooted.receive(diffId, layer.byteLength, chunks(layer))
    expect(await rebooted.has(diffId)).to.equal(true)
  })

  it('removes, lists and prunes', async () => {
    const others = [randomBytes(100), randomBytes(200), randomBytes(300)]
    for (const b of [layer, ...others]) await store.receive(sha(b), b.byteLength, chunks(b))
    const all = [diffId, ...others.map(sha)].sort()
    expect(await store.list()).to.deep.equal(all)
    expect(await store.remove(sha(others[0]))).to.equal(true)
    expect(await store.remove(sha(others[0]))).to.equal(false)
    expect(await store.size(sha(others[0]))).to.equal(undefined)
    expect(await rejection(store.open(sha(others[0])))).to.be.instanceOf(LayerMissingError)
    const removed = await store.prune(new Set([diffId, 'sha256:' + 'f'.repeat(64)]))
    expect(removed.sort()).to.deep.equal([sha(others[1]), sha(others[2])].sort())
    expect(await store.list()).to.deep.equal([diffId])
  })
})

/**
 * The free-disk check as bytes arrive, against a real small filesystem: a tmpfs this test mounts
 * (and unmounts) itself. Needs root, as the lab tests do.
 */
describe('transfer: layer store on a small disk (a 16 MiB tmpfs)', () => {
  const MiB = 1024 * 1024
  let dir: string

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-small-disk-'))
    await exec('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'goto-test-tmpfs', dir])
  })
  afterEach(async () => {
    await exec('umount', [dir]).catch(() => {})
    await rm(dir, { recursive: true, force: true })
  })

  it('refuses a layer the disk cannot take before the first byte, with InsufficientDiskError', async () => {
    const store = await LayerStore.open(join(dir, 'layers'), { minFreeBytes: 2 * MiB })
    const data = randomBytes(15 * MiB)
    const err = await rejection(store.receive(sha(data), data.byteLength, chunks(data, 64 * 1024)))
    expect(err).to.be.instanceOf(InsufficientDiskError)
    expect(await readdir(join(store.dir, 'incoming'))).to.deep.equal([])
  })

  it('stops a receive when free disk drops below the headroom while bytes arrive, and keeps nothing of it', async () => {
    const store = await LayerStore.open(join(dir, 'layers'), { minFreeBytes: 2 * MiB, diskCheckBytes: MiB })
    const data = randomBytes(8 * MiB)
    // Passes the check before the first byte (16 - 8 >= 2 MiB free); then another writer takes 7 MiB.
    async function * filling (): AsyncGenerator<Uint8Array> {
      let off = 0
      for (; off < 2 * MiB; off += 64 * 1024) yield data.subarray(off, off + 64 * 1024)
      await writeFile(join(dir, 'filler'), randomBytes(7 * MiB))
      for (; off < data.byteLength; off += 64 * 1024) yield data.subarray(off, off + 64 * 1024)
    }
    const err = await rejection(store.receive(sha(data), data.byteLength, filling()))
    expect(err).to.be.instanceOf(InsufficientDiskError)
    expect(await store.list()).to.deep.equal([])
    expect(await readdir(join(store.dir, 'incoming'))).to.deep.equal([])
    // With the filler gone the same layer fits.
    await rm(join(dir, 'filler'))
    expect(await store.receive(sha(data), data.byteLength, chunks(data, 64 * 1024))).to.deep.equal({ bytes: data.byteLength })
  })
})
