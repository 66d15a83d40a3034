/**
 * Bulk data over real libp2p streams on loopback: bytes arrive intact and in order with
 * backpressure, a sender that goes past its announced size is refused, and a short one is caught.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import type { Libp2p } from 'libp2p'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createMeshNode, STREAM_WINDOW_BYTES } from '../../protocol/node.js'
import { BLOB_FRAME_BYTES, JsonStream, sendBlob, receiveBlob, HIGH_WATER } from '../../protocol/wire.js'
import { ProtocolError } from '../../protocol/errors.js'

const PROTO = '/goto/test-blob/1.0.0'
class TooLarge extends Error {}

async function * repeat (chunk: Uint8Array, times: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < times; i++) yield chunk
}

describe('bulk data over libp2p (loopback)', function () {
  this.timeout(60_000)
  let a: Libp2p
  let b: Libp2p
  const results: Array<{ digest?: string, bytes?: number, error?: Error }> = []
  let announcedToReceiver = 0
  /** Sizes of the frames the receiver got in the last blob. */
  let frames: number[] = []

  before(async () => {
    a = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], isRefused: () => false })
    b = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], isRefused: () => false })
    await a.handle(PROTO, async stream => {
      const js = new JsonStream(stream)
      const { size } = await js.read() as { size: number }
      const hash = createHash('sha256')
      let bytes = 0
      frames = []
      try {
        // The receiver may believe a smaller size than the sender announced to itself (a lying sender).
        for await (const chunk of receiveBlob(js, announcedToReceiver > 0 ? announcedToReceiver : size, () => new TooLarge())) {
          hash.update(chunk)
          bytes += chunk.byteLength
          frames.push(chunk.byteLength)
        }
        results.push({ digest: hash.digest('hex'), bytes })
        await js.write({ ok: true, result: bytes })
        await js.close()
      } catch (err) {
        results.push({ error: err as Error })
        stream.abort(err as Error)
      }
    })
    await a.start()
    await b.start()
  })

  after(async () => {
    await b.stop()
    await a.stop()
  })

  async function send (size: number, source: AsyncIterable<Uint8Array>): Promise<void> {
    const js = new JsonStream(await b.dialProtocol(a.getMultiaddrs()[0], PROTO))
    await js.write({ size })
    await sendBlob(js, source, size)
    await js.read(AbortSignal.timeout(10_000))
    await js.close()
  }

  it('carries 64 MiB intact', async () => {
    const chunk = randomBytes(1024 * 1024 + 7) // not a multiple of the frame size
    const times = 64
    const expected = createHash('sha256')
    for (let i = 0; i < times; i++) expected.update(chunk)
    await send(chunk.byteLength * times, repeat(chunk, times))
    expect(results.at(-1)).to.deep.equal({ digest: expected.digest('hex'), bytes: chunk.byteLength * times })
  })

  it('gathers a source\'s small chunks into frames of BLOB_FRAME_BYTES (the last one shorter)', async () => {
    const chunk = randomBytes(4000)
    const times = 1000
    await send(chunk.byteLength * times, repeat(chunk, times))
    expect(results.at(-1)?.bytes).to.equal(chunk.byteLength * times)
    expect(frames.slice(0, -1).every(n => n === BLOB_FRAME_BYTES), `frame sizes ${frames.join(' ')}`).to.equal(true)
    expect(frames).to.have.length(Math.ceil(chunk.byteLength * times / BLOB_FRAME_BYTES))
  })

  it('the sender waits for a slow reader: it never reads its source far ahead of what arrived', async () => {
    // The reader takes ~40 MB/s; a sender that ignored backpressure would pull all 128 MiB at once.
    // What may be ahead: a yamux window in flight, up to a window more delivered before the reader
    // pauses, the reader's buffer (HIGH_WATER) and a chunk or two.
    const SLOW = '/goto/test-blob-slow/1.0.0'
    const chunk = randomBytes(1024 * 1024)
    const times = 128
    let pulled = 0
    let maxLead = 0
    async function * counting (): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < times; i++) { pulled += chunk.byteLength; yield chunk }
    }
    await a.handle(SLOW, async stream => {
      const js = new JsonStream(stream)
      const { size } = await js.read() as { size: number }
      let got = 0
      for await (const frame of receiveBlob(js, size, () => new TooLarge())) {
        got += frame.byteLength
        maxLead = Math.max(maxLead, pulled - got)
        await new Promise(resolve => setTimeout(resolve, 6)) // the slow reader (a disk, a WAN link)
      }
      await js.write({ ok: true, result: got })
      await js.close()
    })
    try {
      const js = new JsonStream(await b.dialProtocol(a.getMultiaddrs()[0], SLOW))
      await js.write({ size: chunk.byteLength * times })
      await sendBlob(js, counting(), chunk.byteLength * times)
      expect(await js.read(AbortSignal.timeout(30_000))).to.deep.equal({ ok: true, result: chunk.byteLength * times })
      await js.close()
    } finally {
      await a.unhandle(SLOW)
    }
    expect(maxLead).to.be.at.most(2 * STREAM_WINDOW_BYTES + HIGH_WATER + 2 * chunk.byteLength)
    expect(maxLead).to.be.below(chunk.byteLength * times / 2)
  })

  it('the sender refuses a source longer or shorter than it announced', async () => {
    const js = new JsonStream(await b.dialProtocol(a.getMultiaddrs()[0], PROTO))
    await js.write({ size: 10 })
    let err: unknown
    try { await sendBlob(js, repeat(new Uint8Array(8), 2), 10) } catch (e) { err = e }
    expect(err).to.be.instanceOf(ProtocolError)
    js.abort(new Error('test'))
    const js2 = new JsonStream(await b.dialProtocol(a.getMultiaddrs()[0], PROTO))
    await js2.write({ size: 10 })
    err = undefined
    try { await sendBlob(js2, repeat(new Uint8Array(4), 2), 10) } catch (e) { err = e }
    expect(err).to.be.instanceOf(ProtocolError)
    js2.abort(new Error('test'))
  })

  it('the receiver refuses bytes past the size it was told', async () => {
    announcedToReceiver = 1000
    try {
      const js = new JsonStream(await b.dialProtocol(a.getMultiaddrs()[0], PROTO))
      await js.write({ size: 5000 })
      await sendBlob(js, repeat(new Uint8Array(5000), 1), 5000).catch(() => {})
      await js.read(AbortSignal.timeout(10_000)).catch(() => {})
    } finally {
      announcedToReceiver = 0
    }
    expect(results.at(-1)?.error).to.be.instanceOf(TooLarge)
  })
})
