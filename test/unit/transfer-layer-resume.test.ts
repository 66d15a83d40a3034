/**
 * Resume inside a layer (layer-store.ts `resumable`): a receive cut off keeps its bytes and a
 * record of their sha256; the next receive of that layer continues from there, also after the
 * store is opened again (an agent restart); a partial that does not match its record is thrown
 * away and the layer starts over; the final check covers the whole layer.
 */
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LayerStore, PARTIAL_RECORD_BYTES } from '../../agent/transfer/layer-store.js'
import { LayerDigestMismatchError, LayerTruncatedError, TransferError } from '../../protocol/errors.js'
import { rejection } from '../fixtures/assert.js'

const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

async function * chunks (data: Uint8Array, size = 64 * 1024): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < data.byteLength; off += size) yield data.subarray(off, off + size)
}

/**
 * The first `n` bytes of `data`, then a source that stops for good (a sender cut off unnoticed)
 * until `stop` aborts; `reached` is called once the consumer asked for more after the last byte.
 */
async function * stalled (data: Uint8Array, n: number, stop: AbortSignal, reached: () => void): AsyncGenerator<Uint8Array> {
  yield * chunks(data.subarray(0, n))
  reached()
  await new Promise<void>(resolve => { stop.addEventListener('abort', () => { resolve() }, { once: true }) })
}

describe('transfer: resume inside a layer (partial layers in the store)', () => {
  let dir: string
  let store: LayerStore
  const layer = randomBytes(3 * PARTIAL_RECORD_BYTES + 12_345)
  const diffId = sha(layer)
  const cut = PARTIAL_RECORD_BYTES + 777_777

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-resume-'))
    store = await LayerStore.open(join(dir, 'layers'))
  })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  async function cutAt (n: number): Promise<void> {
    const r = await store.resumable(diffId, layer.byteLength)
    expect(r.offset).to.equal(0)
    expect(await rejection(r.receive(chunks(layer.subarray(0, n))))).to.be.instanceOf(LayerTruncatedError)
  }

  async function expectKeptWhole (): Promise<void> {
    expect(await store.has(diffId)).to.equal(true)
    expect(sha(await readFile(join(store.dir, `${diffId.slice(7)}.tar`)))).to.equal(diffId)
    expect(await readdir(join(store.dir, 'partial'))).to.deep.equal([])
  }

  it('a receive cut off keeps what came; the next continues from that byte and verifies the whole layer', async () => {
    await cutAt(cut)
    expect(await store.has(diffId)).to.equal(false)
    expect(await store.partialBytes(diffId)).to.equal(cut)
    const r = await store.resumable(diffId, layer.byteLength)
    expect(r.offset).to.equal(cut)
    expect(r.discarded).to.equal(undefined)
    expect(await r.receive(chunks(layer.subarray(cut)))).to.deep.equal({ bytes: layer.byteLength - cut })
    await expectKeptWhole()
  })

  it('continues after the store is opened again (the agent restarted)', async () => {
    await cutAt(cut)
    const again = await LayerStore.open(store.dir)
    const r = await again.resumable(diffId, layer.byteLength)
    expect(r.offset).to.equal(cut)
    await r.receive(chunks(layer.subarray(cut)))
    await expectKeptWhole()
  })

  it('cuts off bytes written after the last record (a crash between two records) and continues from the record', async () => {
    await cutAt(cut)
    await appendFile(join(store.dir, 'partial', `${diffId.slice(7)}.tar`), randomBytes(5000))
    const r = await store.resumable(diffId, layer.byteLength)
    expect(r.offset).to.equal(cut)
    await r.receive(chunks(layer.subarray(cut)))
    await expectKeptWhole()
  })

  it('throws away a partial whose bytes do not match its record, or whose record does not fit, and starts over', async () => {
    await cutAt(cut)
    const file = join(store.dir, 'partial', `${diffId.slice(7)}.tar`)
    const bytes = await readFile(file)
    bytes[1234] ^= 0xff
    await writeFile(file, bytes)
    let r = await store.resumable(diffId, layer.byteLength)
    expect(r.offset).to.equal(0)
    expect(r.discarded).to.match(/do not match its record/)
    expect(await rejection(r.receive(chunks(layer.subarray(0, cut))))).to.be.instanceOf(LayerTruncatedError)
    // Announced with another size: not the same transfer of this layer.
    r = await store.resumable(diffId, layer.byteLength + 1)
    expect(r.offset).to.equal(0)
    expect(r.discarded).to.match(/announced with/)
    r.release()
    r = await store.resumable(diffId, layer.byteLength)
    expect(r.offset).to.equal(0)
    await r.receive(chunks(layer))
    await expectKeptWhole()
  })

  it('a newer resumable receive of the layer stops the one still waiting on a silent sender, and continues after its last byte', async () => {
    const silent = new AbortController()
    const first = await store.resumable(diffId, layer.byteLength)
    let reached = (): void => {}
    const atEnd = new Promise<void>(resolve => { reached = resolve })
    const running = first.receive(stalled(layer, cut, silent.signal, reached))
    running.catch(() => {})
    await atEnd
    const second = await store.resumable(diffId, layer.byteLength)
    silent.abort()
    expect(await rejection(running)).to.be.instanceOf(TransferError)
    expect(second.offset).to.equal(cut)
    await second.receive(chunks(layer.subarray(cut)))
    await expectKeptWhole()
  })

  it('a layer whose whole does not hash to its diff ID is refused and nothing of it is kept', async () => {
    await cutAt(cut)
    const r = await store.resumable(diffId, layer.byteLength)
    const wrong = Buffer.from(layer.subarray(cut))
    wrong[10] ^= 1
    expect(await rejection(r.receive(chunks(wrong)))).to.be.instanceOf(LayerDigestMismatchError)
    expect(await store.has(diffId)).to.equal(false)
    expect(await readdir(join(store.dir, 'partial'))).to.deep.equal([])
  })

  it('prunes partials left untouched, and a new boot of a "boot" store drops them', async () => {
    await cutAt(cut)
    expect(await store.prunePartials(60_000)).to.deep.equal([])
    expect(await store.prunePartials(60_000, Date.now() + 120_000)).to.deep.equal([diffId])
    expect(await store.partialBytes(diffId)).to.equal(0)
  })
})
