/**
 * A blob sent with sendEncoded and received with receiveEncoded over a real libp2p stream pair on
 * loopback: as it is and zstd-compressed (fewer bytes on the wire, the same bytes out), a rate cap
 * on the wire bytes, and a compressed blob that decodes to more than announced refused.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import type { Libp2p } from 'libp2p'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createMeshNode } from '../../protocol/node.js'
import { JsonStream } from '../../protocol/wire.js'
import { LayerTooLargeError } from '../../protocol/errors.js'
import { receiveEncoded, sendEncoded } from '../../agent/transfer/encoding.js'
import { counted } from '../../agent/transfer/counted.js'
import { mbitToBytesPerSecond, rateLimited } from '../../agent/transfer/rate.js'
import { zstdAvailable } from '../../agent/transfer/zstd.js'

const PROTO = '/goto/test-encoding/1.0.0'
const WAIT_MS = 15_000

async function * chunks (buf: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size)
}

function text (bytes: number): Buffer {
  const parts: Buffer[] = []
  for (let i = 0, n = 0; n < bytes; i++) { const b = Buffer.from(`entry ${i} of a layer that compresses well ${i % 97}\n`); parts.push(b); n += b.length }
  return Buffer.concat(parts).subarray(0, bytes)
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

describe('encoded blobs over libp2p (agent/transfer/encoding.ts)', function () {
  this.timeout(60_000)
  let a: Libp2p
  let b: Libp2p
  let accepted: Array<(js: JsonStream) => void> = []

  before(async function () {
    if (!zstdAvailable()) this.skip()
    a = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], isRefused: () => false })
    b = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], isRefused: () => false })
    await a.handle(PROTO, stream => { accepted.shift()?.(new JsonStream(stream)) })
    await a.start()
    await b.start()
  })

  after(async () => {
    await b?.stop()
    await a?.stop()
  })

  async function pair (): Promise<{ client: JsonStream, server: JsonStream }> {
    const server = new Promise<JsonStream>(resolve => { accepted.push(resolve) })
    const client = new JsonStream(await b.dialProtocol(a.getMultiaddrs()[0], PROTO, { signal: AbortSignal.timeout(WAIT_MS) }))
    await client.write({ hello: true }, AbortSignal.timeout(WAIT_MS))
    const s = await server
    await s.read(AbortSignal.timeout(WAIT_MS))
    return { client, server: s }
  }

  async function roundTrip (data: Buffer, encoding: 'zstd' | undefined, announced = data.length, rateMbit?: number): Promise<{ out: Buffer, wire: number, seconds: number }> {
    const { client, server } = await pair()
    const signal = AbortSignal.timeout(WAIT_MS)
    let wire = 0
    const t0 = performance.now()
    const sending = sendEncoded(client, chunks(data, 100_000), data.length, {
      ...encoding === undefined ? {} : { encoding },
      wire: bytes => counted(rateMbit === undefined ? bytes : rateLimited(bytes, mbitToBytesPerSecond(rateMbit), signal), n => { wire += n })
    }, signal)
    const parts: Buffer[] = []
    try {
      for await (const c of receiveEncoded(server, announced, encoding, () => new LayerTooLargeError('too large'), signal)) parts.push(Buffer.from(c))
    } finally {
      await sending.catch(() => {})
      client.abort(new Error('done'))
    }
    return { out: Buffer.concat(parts), wire, seconds: (performance.now() - t0) / 1000 }
  }

  it('carries a blob as it is, or zstd-compressed with fewer bytes on the wire', async () => {
    const data = Buffer.concat([text(6 * 2 ** 20), randomBytes(2 ** 20)])
    const plain = await roundTrip(data, undefined)
    expect(sha(plain.out)).to.equal(sha(data))
    expect(plain.wire).to.equal(data.length)
    const packed = await roundTrip(data, 'zstd')
    expect(sha(packed.out)).to.equal(sha(data))
    expect(packed.wire).to.be.below(data.length / 2)
  })

  it('refuses a compressed blob that decodes to more than announced', async () => {
    const data = text(2 ** 20)
    let failed: unknown
    try { await roundTrip(data, 'zstd', data.length - 1) } catch (err) { failed = err }
    expect(failed).to.be.instanceOf(LayerTooLargeError)
  })

  it('keeps the wire bytes to a rate cap', async () => {
    const data = randomBytes(2 ** 20)
    const r = await roundTrip(data, undefined, data.length, 16)
    expect(sha(r.out)).to.equal(sha(data))
    // 1 MiB at 16 Mbit/s: 0.52 s, less the bucket's first burst (0.03 s).
    expect(r.seconds).to.be.at.least(0.45)
  })

  afterEach(() => { accepted = [] })
})
