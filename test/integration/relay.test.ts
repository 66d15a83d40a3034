/**
 * Circuit relay between mesh members over real libp2p connections on loopback (TCP, Noise, yamux,
 * circuit relay v2; port 0), in one process, with the real auth gate: a member that accepts no
 * inbound connections reserves on a relay and is reached through it; Noise runs end to end (the
 * relay forwards only ciphertext); a relayed connection carries far more than the library's default
 * 128 KiB limit; a slow reader or a slow hop from the relay holds the sender back instead of piling
 * up at the relay; a stranger can neither reserve nor be relayed. nat.test.ts repeats the path with
 * real agents in the lab, the NAT'd host behind a real masquerading router.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import type { Socket } from 'node:net'
import { join } from 'node:path'
import type { Libp2p } from 'libp2p'
import type { Connection, PeerId, Stream, StreamMessageEvent } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { RELAY_V2_HOP_CODEC, RELAY_V2_STOP_CODEC } from '@libp2p/circuit-relay-v2'
import { initCa, issueCertificate, readBundle, TrustStore, type Bundle } from '../../certs/index.js'
import { createMeshNode, STREAM_WINDOW_BYTES, type RelayListener } from '../../protocol/node.js'
import { HIGH_WATER, JsonStream, readResult, receiveBlob, sendBlob } from '../../protocol/wire.js'
import { AuthService } from '../../agent/net/auth-service.js'
import { AgentClient } from '../../control/client.js'
import { createRootLogger } from '../../agent/log.js'
import { ProtocolError } from '../../protocol/errors.js'
import { waitFor } from '../lab/wait.js'

const SINK = '/goto/test-sink/1.0.0'
const SLOW = '/goto/test-slow-sink/1.0.0'
const HASHING = '/goto/test-hashing-sink/1.0.0'
const AUTH_TIMEOUT_MS = 1500
/** Eight times the relay library's default data limit per relayed connection (128 KiB). */
const BLOB_BYTES = 1024 * 1024
const MARKER = 'GOTO-PLAINTEXT-MARKER-'

interface Member { node: Libp2p<{ relayListener?: RelayListener }>, auth: AuthService, bundle: Bundle, addr: Multiaddr }

async function startMember (bundleDir: string, opts: { serve: boolean, listen: string[] }): Promise<Member> {
  const bundle = await readBundle(bundleDir)
  const trust = new TrustStore(bundle.caCertPem, bundle.crl)
  let auth: AuthService | undefined
  const node = await createMeshNode({
    privateKey: bundle.privateKey,
    listen: opts.listen,
    isRefused: p => trust.isRevoked(p.toString()),
    relay: { serve: opts.serve, isMember: async (p, roles) => await auth?.isMember(p, roles) ?? false }
  })
  auth = new AuthService({ node, identity: { certPem: bundle.certPem, trust }, authTimeoutMs: AUTH_TIMEOUT_MS, log: createRootLogger('error', { test: 'relay' }), saveCrl: async () => {} })
  await auth.start()
  // Receives a blob, answers its size and sha256.
  await auth.handle(SINK, ['agent'], async js => {
    const { size } = await js.read() as { size: number }
    const hash = createHash('sha256')
    let n = 0
    for await (const frame of receiveBlob(js, size, () => new ProtocolError('too large'))) { hash.update(frame); n += frame.byteLength }
    await js.write({ ok: true, result: { bytes: n, sha256: hash.digest('hex') } })
    await js.close()
  })
  await node.start()
  // Without /p2p/<id>: callers add it where a dial needs it.
  const addr = (node.getMultiaddrs().find(a => !a.toString().includes('p2p-circuit')) ?? multiaddr('/ip4/0.0.0.0/tcp/0')).decapsulateCode(421)
  return { node, auth, bundle, addr }
}

/** Every byte the relay's hop and stop streams deliver to it (after the relay's own Noise). */
function tap (relay: Libp2p): Uint8Array[] {
  const seen: Uint8Array[] = []
  const hooked = new WeakSet<object>()
  const attach = (): void => {
    for (const c of relay.getConnections()) {
      for (const s of c.streams) {
        if ((s.protocol === RELAY_V2_HOP_CODEC || s.protocol === RELAY_V2_STOP_CODEC) && !hooked.has(s)) {
          hooked.add(s)
          s.addEventListener('message', evt => { seen.push(evt.data.subarray()) })
        }
      }
    }
  }
  attach()
  const timer = setInterval(attach, 5)
  timer.unref()
  return seen
}

/** Enough to show a transfer is not absorbed by the relay, small enough to run in seconds. */
const RELAYED_BYTES = 256 * 1024 * 1024
/** More end-to-end yamux windows than the relay's bound allows, so an unbounded relay shows. */
const RELAYED_STREAMS = 8
/** The relay → destination link in the bounded-relay test: slower than the member → relay one. */
const SLOW_LINK_BYTES_PER_SECOND = 40 * 1024 * 1024
/** yamux frame headers and the frame that arrives while a pause takes effect. */
const SLACK_BYTES = 1024 * 1024

interface RelayedWatch { readonly maxHeld: number, readonly maxBuffered: number, readonly relayed: number, stop: () => void }

/**
 * Follows the relayed streams from `from` to `dest` and records the most the relay held at any
 * moment: bytes in at its hop streams from `from` (delivered or waiting in their read buffers) minus
 * bytes in at `dest`'s stop streams from the relay, which covers whatever the relay buffers plus
 * what is in flight on the relay → dest hop; and the most the relay's own stream buffers held.
 */
function watchRelayed (relay: Libp2p, from: PeerId, dest: Libp2p): RelayedWatch {
  const streams = (node: Libp2p, peer: PeerId, protocol: string): Stream[] => node.getConnections(peer).flatMap(c => c.streams).filter(s => s.protocol === protocol)
  const hops = streams(relay, from, RELAY_V2_HOP_CODEC)
  const stops = streams(relay, dest.peerId, RELAY_V2_STOP_CODEC)
  const arrived = streams(dest, relay.peerId, RELAY_V2_STOP_CODEC)
  expect(hops, 'hop streams at the relay').to.not.have.length(0)
  expect(arrived, 'stop streams at the destination').to.not.have.length(0)
  const waiting = (ss: Stream[]): number => ss.reduce((n, s) => n + s.readBufferLength, 0)
  let inRelay = 0
  let inDest = 0
  const w = { maxHeld: 0, maxBuffered: 0, relayed: 0, stop: () => {} }
  const sample = (): void => {
    w.maxHeld = Math.max(w.maxHeld, inRelay + waiting(hops) - inDest - waiting(arrived))
    w.maxBuffered = Math.max(w.maxBuffered, waiting(hops) + stops.reduce((n, s) => n + s.writeBufferLength, 0))
    w.relayed = inRelay
  }
  const onRelay = (evt: StreamMessageEvent): void => { inRelay += evt.data.byteLength; sample() }
  const onDest = (evt: StreamMessageEvent): void => { inDest += evt.data.byteLength; sample() }
  for (const s of hops) s.addEventListener('message', onRelay)
  for (const s of arrived) s.addEventListener('message', onDest)
  const timer = setInterval(sample, 1)
  w.stop = () => {
    clearInterval(timer)
    sample()
    for (const s of hops) s.removeEventListener('message', onRelay)
    for (const s of arrived) s.removeEventListener('message', onDest)
  }
  return w
}

/**
 * Makes the TCP link from `conn`'s remote into this node slow: reads at most `bytesPerSecond` from
 * its socket, so the sending side's socket fills and its muxer waits for drain, as on a slow WAN hop.
 * The socket is @libp2p/tcp's own (no public API hands it out); in one process on loopback this is
 * the way to a real slow TCP hop without a lab.
 */
function slowLink (conn: Connection, bytesPerSecond: number): () => void {
  const socket = (conn as unknown as { maConn: { socket: Socket } }).maConn.socket
  const SLOT_MS = 20
  let slot = Date.now()
  let used = 0
  let timer: NodeJS.Timeout | undefined
  const onData = (buf: Buffer): void => {
    const now = Date.now()
    if (now - slot >= SLOT_MS) { slot = now; used = 0 }
    used += buf.byteLength
    const over = used - bytesPerSecond * SLOT_MS / 1000
    if (over > 0 && timer === undefined) {
      socket.pause()
      timer = setTimeout(() => { timer = undefined; slot = Date.now(); used = 0; socket.resume() }, Math.ceil(over / bytesPerSecond * 1000) + SLOT_MS)
    }
  }
  socket.on('data', onData)
  return () => { clearTimeout(timer); socket.off('data', onData); socket.resume() }
}

describe('circuit relay between members (one process, loopback)', function () {
  this.timeout(60_000)
  let dir: string
  let relay: Member
  let nat: Member
  let member: Member
  const nodes: Libp2p[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-relay-'))
    await initCa(join(dir, 'ca'))
    for (const name of ['relay-1', 'nat-1', 'member-1']) await issueCertificate(join(dir, 'ca'), { role: 'agent', name, out: join(dir, name) })
    await issueCertificate(join(dir, 'ca'), { role: 'operator', name: 'op-1', out: join(dir, 'op-1') })
    relay = await startMember(join(dir, 'relay-1'), { serve: true, listen: ['/ip4/127.0.0.1/tcp/0'] })
    // Listens nowhere: the only way in is through the relay.
    nat = await startMember(join(dir, 'nat-1'), { serve: false, listen: [] })
    member = await startMember(join(dir, 'member-1'), { serve: true, listen: ['/ip4/127.0.0.1/tcp/0'] })
    nodes.push(relay.node, nat.node, member.node)
  })

  after(async () => {
    for (const n of nodes) await Promise.resolve(n.stop()).catch(() => {})
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  function circuitTo (target: PeerId): Multiaddr {
    return multiaddr(`${relay.addr.toString()}/p2p/${relay.node.peerId.toString()}/p2p-circuit/p2p/${target.toString()}`)
  }

  it('a member without inbound reserves on a relay and is dialled through it; the relay sees only ciphertext', async () => {
    const toRelay = await nat.node.dial(relay.addr.encapsulate(`/p2p/${relay.node.peerId.toString()}`))
    await nat.auth.ensure(toRelay, AbortSignal.timeout(5000))
    await nat.node.services.relayListener?.listen(multiaddr(`${relay.addr.toString()}/p2p/${relay.node.peerId.toString()}/p2p-circuit`))
    await waitFor(() => nat.node.getMultiaddrs().some(a => a.toString().includes('/p2p-circuit')), { timeoutMs: 10_000, intervalMs: 20, what: 'a circuit address at nat-1' })

    const seen = tap(relay.node)
    const conn: Connection = await member.node.dial(circuitTo(nat.node.peerId), { signal: AbortSignal.timeout(10_000) })
    expect(conn.remoteAddr.toString()).to.contain('/p2p-circuit')
    expect(conn.encryption).to.equal('/noise')
    // Unlimited for members: a limited connection would refuse our protocols.
    expect(conn.limits).to.equal(undefined)
    const peer = await member.auth.ensure(conn, AbortSignal.timeout(5000))
    expect(peer).to.deep.include({ name: 'nat-1', role: 'agent' })

    const blob = Buffer.alloc(BLOB_BYTES)
    for (let off = 0; off < BLOB_BYTES; off += MARKER.length) blob.write(MARKER, off)
    const js = new JsonStream(await conn.newStream(SINK, { signal: AbortSignal.timeout(5000) }))
    await js.write({ size: BLOB_BYTES })
    await sendBlob(js, (async function * () { yield blob })(), BLOB_BYTES)
    const result = await readResult(js, AbortSignal.timeout(10_000)) as { bytes: number, sha256: string }
    expect(result).to.deep.equal({ bytes: BLOB_BYTES, sha256: createHash('sha256').update(blob).digest('hex') })

    const relayed = Buffer.concat(seen)
    expect(relayed.byteLength, 'bytes the relay forwarded').to.be.greaterThan(BLOB_BYTES)
    expect(relayed.indexOf(MARKER), 'plaintext at the relay').to.equal(-1)
  })

  it('a slow reader behind the relay holds the sender back: the relay does not absorb the transfer', async () => {
    // The reader takes ~40 MB/s; a relay that buffered instead of passing the reader's backpressure
    // on would let the sender pull all 128 MiB at once. What may be ahead: a yamux window in flight
    // on each of the two hops and one more delivered at each before a pause, the reader's buffer
    // (HIGH_WATER) and a chunk or two. (Measured: about 34 MiB.)
    const chunk = randomBytes(1024 * 1024)
    const times = 128
    let pulled = 0
    let got = 0
    let maxLead = 0
    async function * counting (): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < times; i++) { pulled += chunk.byteLength; yield chunk }
    }
    await nat.auth.handle(SLOW, ['agent'], async js => {
      const { size } = await js.read() as { size: number }
      for await (const frame of receiveBlob(js, size, () => new ProtocolError('too large'))) {
        got += frame.byteLength
        maxLead = Math.max(maxLead, pulled - got)
        await new Promise(resolve => setTimeout(resolve, 6)) // the slow reader (a disk, a WAN link)
      }
      await js.write({ ok: true, result: got })
      await js.close()
    })
    const conn = await member.node.dial(circuitTo(nat.node.peerId), { signal: AbortSignal.timeout(10_000) })
    expect(conn.direct).to.equal(false)
    await member.auth.ensure(conn, AbortSignal.timeout(5000))
    const js = new JsonStream(await conn.newStream(SLOW, { signal: AbortSignal.timeout(5000) }))
    await js.write({ size: chunk.byteLength * times })
    await sendBlob(js, counting(), chunk.byteLength * times)
    expect(await readResult(js, AbortSignal.timeout(60_000))).to.equal(chunk.byteLength * times)
    expect(maxLead).to.be.at.most(4 * STREAM_WINDOW_BYTES + HIGH_WATER + 2 * chunk.byteLength)
    expect(maxLead).to.be.below(chunk.byteLength * times / 2)
  })

  it('a slow hop from the relay holds the sender back: the relay keeps a bounded part of a 256 MiB transfer on 8 streams', async () => {
    // The relay → nat link is slow (~40 MB/s); the member sends 8 streams of 32 MiB at once. A relay
    // that kept reading while its outbound side waited would hold what all 8 end-to-end yamux
    // windows allow (measured with the library's own pipe(): ~120 MiB); ours pauses the hop stream.
    const chunk = randomBytes(1024 * 1024)
    const perStream = RELAYED_BYTES / RELAYED_STREAMS
    await nat.auth.handle(HASHING, ['agent'], async js => {
      const { size } = await js.read() as { size: number }
      const hash = createHash('sha256')
      for await (const frame of receiveBlob(js, size, () => new ProtocolError('too large'))) hash.update(frame)
      await js.write({ ok: true, result: hash.digest('hex') })
      await js.close()
    })
    const expected = createHash('sha256')
    for (let off = 0; off < perStream; off += chunk.byteLength) expected.update(chunk)
    const digest = expected.digest('hex')
    const conn = await member.node.dial(circuitTo(nat.node.peerId), { signal: AbortSignal.timeout(10_000) })
    expect(conn.direct).to.equal(false)
    await member.auth.ensure(conn, AbortSignal.timeout(5000))

    const held = watchRelayed(relay.node, member.node.peerId, nat.node)
    const restoreLink = slowLink(nat.node.getConnections(relay.node.peerId)[0], SLOW_LINK_BYTES_PER_SECOND)
    try {
      await Promise.all(Array.from({ length: RELAYED_STREAMS }, async () => {
        const js = new JsonStream(await conn.newStream(HASHING, { signal: AbortSignal.timeout(5000) }))
        await js.write({ size: perStream })
        await sendBlob(js, (async function * () { for (let off = 0; off < perStream; off += chunk.byteLength) yield chunk })(), perStream)
        expect(await readResult(js, AbortSignal.timeout(60_000)), 'sha256 at the reader').to.equal(digest)
      }))
    } finally {
      held.stop()
      restoreLink()
    }
    expect(held.relayed, 'bytes the relay forwarded').to.be.at.least(RELAYED_BYTES)
    // The relay's own stream buffers: one window arriving after the pause, one batch being sent.
    expect(held.maxBuffered, 'relay stream buffers').to.be.at.most(2 * STREAM_WINDOW_BYTES + SLACK_BYTES)
    // Plus at most the destination's window in flight on the slow hop. (Measured: 48 MiB, of which 32 MiB in the relay's buffers.)
    expect(held.maxHeld, 'bytes held at or beyond the relay').to.be.at.most(3 * STREAM_WINDOW_BYTES + SLACK_BYTES)

    // Closing the relayed connection closes both of the relay's streams: the splice passes it on.
    await conn.close()
    const relayStreams = (): number => relay.node.getConnections().flatMap(c => c.streams).filter(s => s.protocol === RELAY_V2_HOP_CODEC || s.protocol === RELAY_V2_STOP_CODEC).length
    await waitFor(() => relayStreams() === 0, { timeoutMs: 10_000, intervalMs: 20, what: 'the relay\'s hop and stop streams closed' })
  })

  it('the operator CLI reaches a member behind NAT through a relay, authenticating to the relay first', async () => {
    const client = await AgentClient.connect(await readBundle(join(dir, 'op-1')), circuitTo(nat.node.peerId), AbortSignal.timeout(10_000))
    try {
      expect(client.agent).to.deep.include({ name: 'nat-1', role: 'agent' })
    } finally {
      await client.close()
    }
  })

  it('a stranger that never authenticates can neither reserve on a relay nor be relayed to a member', async () => {
    const stranger = await createMeshNode({
      privateKey: await generateKeyPair('Ed25519'),
      listen: [],
      isRefused: () => false,
      relay: { serve: false, isMember: async () => true }
    })
    nodes.push(stranger)
    await stranger.start()
    const relayAddr = relay.addr.encapsulate(`/p2p/${relay.node.peerId.toString()}`)
    let reserveError: unknown
    try {
      await stranger.services.relayListener?.listen(relayAddr.encapsulate('/p2p-circuit'))
    } catch (err) { reserveError = err }
    expect(reserveError, 'reservation refused').to.be.instanceOf(Error)
    let dialError: unknown
    try {
      await stranger.dial(circuitTo(nat.node.peerId), { signal: AbortSignal.timeout(10_000) })
    } catch (err) { dialError = err }
    expect(dialError, 'relayed dial refused').to.be.instanceOf(Error)
    expect(nat.node.getConnections(stranger.peerId)).to.have.length(0)
    expect(stranger.getMultiaddrs().filter(a => a.toString().includes('p2p-circuit'))).to.have.length(0)
  })
})
