/**
 * JsonStream's view of a stream's life over a real libp2p stream pair on loopback (two in-process
 * nodes, no root): `isOpen`, `onClose` (a normal close, a remote reset, a callback added late or
 * taken back) and `abort` (pending reads fail with a ProtocolError, the remote sees the stream end).
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import type { Libp2p } from 'libp2p'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createMeshNode } from '../../protocol/node.js'
import { JsonStream } from '../../protocol/wire.js'
import { ProtocolError } from '../../protocol/errors.js'

const PROTO = '/goto/test-life/1.0.0'
/** Bounds every wait of the test: loopback answers in milliseconds; a hang fails, it does not stall. */
const WAIT_MS = 5_000

/** Resolves with what `js.onClose` reports, or rejects after WAIT_MS. */
async function closed (js: JsonStream): Promise<Error | undefined> {
  const timeout = AbortSignal.timeout(WAIT_MS)
  return await new Promise((resolve, reject) => {
    timeout.addEventListener('abort', () => { reject(new Error('the stream did not close in time')) }, { once: true })
    js.onClose(resolve)
  })
}

describe('JsonStream over libp2p (loopback)', function () {
  this.timeout(30_000)
  let a: Libp2p
  let b: Libp2p
  /** Server-side streams, in the order they were opened. */
  let accepted: Array<(js: JsonStream) => void> = []

  before(async () => {
    a = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], isRefused: () => false })
    b = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], isRefused: () => false })
    await a.handle(PROTO, stream => { accepted.shift()?.(new JsonStream(stream)) })
    await a.start()
    await b.start()
  })

  after(async () => {
    await b.stop()
    await a.stop()
  })

  /** A client JsonStream on b and the server's JsonStream on a for the same stream. */
  async function pair (): Promise<{ client: JsonStream, server: JsonStream }> {
    const server = new Promise<JsonStream>(resolve => { accepted.push(resolve) })
    const client = new JsonStream(await b.dialProtocol(a.getMultiaddrs()[0], PROTO, { signal: AbortSignal.timeout(WAIT_MS) }))
    await client.write({ hello: true }, AbortSignal.timeout(WAIT_MS)) // the server's handler runs once the protocol is agreed
    const s = await server
    expect(await s.read(AbortSignal.timeout(WAIT_MS))).to.deep.equal({ hello: true })
    return { client, server: s }
  }

  afterEach(() => { accepted = [] })

  it('is open until both ends close, then tells onClose without an error', async () => {
    const { client, server } = await pair()
    expect(client.isOpen).to.equal(true)
    expect(server.isOpen).to.equal(true)
    const clientClosed = closed(client)
    const serverClosed = closed(server)
    await client.close(AbortSignal.timeout(WAIT_MS))
    await server.write({ ok: true, result: 1 }, AbortSignal.timeout(WAIT_MS))
    await server.close(AbortSignal.timeout(WAIT_MS))
    expect(await client.read(AbortSignal.timeout(WAIT_MS))).to.deep.equal({ ok: true, result: 1 })
    expect(await clientClosed).to.equal(undefined)
    expect(await serverClosed).to.equal(undefined)
    expect(client.isOpen).to.equal(false)
    expect(server.isOpen).to.equal(false)
  })

  it('abort fails a pending read here with a ProtocolError and ends the stream at the remote', async () => {
    const { client, server } = await pair()
    const serverClosed = closed(server)
    const pending = server.read(AbortSignal.timeout(WAIT_MS)).then(() => undefined, (e: unknown) => e)
    const clientPending = client.read(AbortSignal.timeout(WAIT_MS)).then(() => undefined, (e: unknown) => e)
    const why = new Error('given up')
    server.abort(why)
    const err = await clientPending
    expect(err).to.be.instanceOf(ProtocolError)
    const own = await pending
    expect(own).to.be.instanceOf(ProtocolError)
    expect((own as ProtocolError).cause).to.equal(why)
    expect(await serverClosed).to.equal(why)
    expect(server.isOpen).to.equal(false)
    expect(await closed(client)).to.be.instanceOf(Error) // the remote saw a reset
    expect(client.isOpen).to.equal(false)
  })

  it('calls a callback added after the close at once, and not one taken back', async () => {
    const { client, server } = await pair()
    let calls = 0
    const takeBack = server.onClose(() => { calls++ })
    takeBack()
    client.abort(new Error('gone'))
    await closed(server)
    expect(calls).to.equal(0)
    let late: Error | undefined | 'not called' = 'not called'
    server.onClose(e => { late = e })
    expect(late).to.be.instanceOf(Error)
    let lateHere: Error | undefined | 'not called' = 'not called'
    client.onClose(e => { lateHere = e })
    expect((lateHere as unknown as Error).message).to.equal('gone')
  })
})
