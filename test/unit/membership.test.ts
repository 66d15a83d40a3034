/**
 * Membership (agent/membership/service.ts over PeerTable): heartbeats, peer exchange, failure
 * detection and revocation between agents in this process, over real libp2p on loopback with real
 * certificates from a real mesh CA, on the test profile's timings. No root, no lab: the lab tests
 * run the same paths between network namespaces.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Multiaddr } from '@multiformats/multiaddr'
import { initCa, readCaCrl, revoke } from '../../certs/index.js'
import { HEARTBEAT_PROTOCOL } from '../../protocol/ids.js'
import { parseHeartbeatReply, type MemberInfo, type PeerState } from '../../protocol/messages.js'
import { GOTO_VERSION } from '../../protocol/version.js'
import { readResult } from '../../protocol/wire.js'
import { MemoryDockerHost } from '../fixtures/memory-docker-host.js'
import { startMiniAgent, stopAll, testTimings, type MiniAgent } from '../fixtures/mini-agent.js'
import { issuedBundle, MeshClient } from '../fixtures/mesh-client.js'
import { rejection } from '../fixtures/assert.js'
import { waitFor } from '../lab/wait.js'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { LEARN_PER_SENDER } from '../../agent/membership/service.js'
import { meshView } from '../../agent/failover/consensus.js'

const T = testTimings()

describe('membership (heartbeats between agents in this process, libp2p on loopback)', function () {
  this.timeout(30_000)
  let dir: string
  let caDir: string
  let run = 0
  const started: MiniAgent[] = []
  const clients: MeshClient[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-membership-'))
    caDir = join(dir, 'ca')
    await initCa(caDir)
  })

  beforeEach(() => { run++ })

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close().catch(() => {})
    await stopAll(started.splice(0))
  })

  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  /** An agent running membership, joining through `bootstrap` (its own identity per name and test). */
  async function agent (name: string, bootstrap: MiniAgent[] = [], state = 'state'): Promise<MiniAgent> {
    const a = await startMiniAgent({
      dir: join(dir, `run-${run}`), caDir, name, state, docker: new MemoryDockerHost({ name }),
      membership: { bootstrap: bootstrap.map(b => addrOf(b)) }
    })
    started.push(a)
    return a
  }

  function stateOf (viewer: MiniAgent, peer: MiniAgent): PeerState | undefined {
    return viewer.table.get(peer.peerId)?.state
  }

  /** Waits until `viewer` sees `peer` in `state`; returns when. */
  async function until (viewer: MiniAgent, peer: MiniAgent, state: PeerState, timeoutMs: number): Promise<number> {
    await waitFor(() => stateOf(viewer, peer) === state, { timeoutMs, intervalMs: 20, what: `${viewer.name} to see ${peer.name} ${state}` })
    return Date.now()
  }

  /** Waits until every agent sees every other one alive. */
  async function meshed (agents: MiniAgent[], timeoutMs = 5000): Promise<void> {
    await waitFor(() => agents.every(x => agents.every(y => x === y || stateOf(x, y) === 'alive')), {
      timeoutMs, intervalMs: 20, what: `${agents.map(a => a.name).join(', ')} to see each other alive`
    })
  }

  it('finds a peer from one bootstrap address: both sides alive, with addresses, versions and RTT', async () => {
    const a = await agent('a')
    const b = await agent('b', [a])
    await meshed([a, b])
    for (const [x, y] of [[a, b], [b, a]]) {
      const entry = x.table.get(y.peerId)
      expect(entry?.name).to.equal(y.name)
      expect(entry?.addrs).to.deep.equal(y.info().addrs)
      expect(entry?.agentVersion).to.equal(GOTO_VERSION)
      expect(entry?.lastSeen).to.be.a('number')
    }
    // The sender of each pair measures the round trip (lower peer ID), and tells the other.
    await waitFor(() => a.table.get(b.peerId)?.rttMs !== null && b.table.get(a.peerId)?.rttMs !== null, { timeoutMs: 3000, what: 'RTT on both sides' })
    expect(a.table.entries().map(e => e.peerId)).to.deep.equal([b.peerId])
    expect(b.table.entries().map(e => e.peerId)).to.deep.equal([a.peerId])
  })

  it('peer exchange makes a third agent known through the second', async () => {
    // a knows no one; c knows only b; only b's heartbeats can tell a and c of each other.
    const a = await agent('a')
    const b = await agent('b', [a])
    await meshed([a, b])
    const c = await agent('c', [b])
    await meshed([a, b, c])
    expect(a.table.get(c.peerId)?.addrs).to.deep.equal(c.info().addrs)
    expect(c.table.get(a.peerId)?.addrs).to.deep.equal(a.info().addrs)
    expect(a.table.counts()).to.deep.equal({ alive: 2, suspect: 0, dead: 0 })
  })

  it('a stopped agent goes suspect, then dead; restarted on the same identity it is alive again', async () => {
    const a = await agent('a')
    const b = await agent('b', [a])
    await meshed([a, b])
    const peerId = b.peerId
    await b.stop()
    const suspectAt = await until(a, b, 'suspect', T.suspectAfterMs + 2000)
    const lastSeen = a.table.get(peerId)?.lastSeen ?? 0
    // Suspect only after suspectAfterMs of silence, dead only after deadAfterMs (a round is the granularity).
    expect(suspectAt - lastSeen).to.be.at.least(T.suspectAfterMs)
    const deadAt = await until(a, b, 'dead', T.deadAfterMs + 2000)
    expect(deadAt - lastSeen).to.be.at.least(T.deadAfterMs)
    expect(a.table.counts()).to.deep.equal({ alive: 0, suspect: 0, dead: 1 })

    // Same bundle (same peer ID), a new port: it rejoins through its bootstrap address.
    const back = await agent('b', [a])
    expect(back.peerId).to.equal(peerId)
    await meshed([a, back])
    expect(a.table.entries().map(e => e.peerId), 'one entry for b').to.deep.equal([peerId])
    expect(a.table.get(peerId)?.addrs).to.deep.equal(back.info().addrs)
  })

  it('a newer revocation list offered to one agent spreads, and every agent forgets the revoked peer', async () => {
    const a = await agent('a')
    const b = await agent('b', [a])
    const c = await agent('c', [a])
    await meshed([a, b, c])
    const result = await revoke(caDir, { name: 'c' })
    // Every certificate ever issued to the name: c's of earlier tests too.
    expect(result.revoked.map(r => r.peerId)).to.include(c.peerId)
    const crl = await readCaCrl(caDir)

    a.auth.offerCrl(crl)
    expect(a.auth.crlNumber).to.equal(result.crlNumber)
    expect(a.table.get(c.peerId), 'a forgets c at once').to.equal(undefined)
    // b hears of the list only through a's heartbeats.
    await waitFor(() => b.auth.crlNumber === result.crlNumber, { timeoutMs: 3000, intervalMs: 20, what: 'b to adopt the list from a' })
    await waitFor(() => b.table.get(c.peerId) === undefined, { timeoutMs: 3000, intervalMs: 20, what: 'b to forget c' })

    // It stays forgotten: c keeps trying, and a and b keep exchanging their members, for a few rounds.
    const forgotten = Date.now()
    await waitFor(() => (a.table.get(b.peerId)?.lastSeen ?? 0) > forgotten + 3 * T.heartbeatIntervalMs &&
      (b.table.get(a.peerId)?.lastSeen ?? 0) > forgotten + 3 * T.heartbeatIntervalMs, { timeoutMs: 5000, intervalMs: 20, what: 'a and b to exchange more heartbeats' })
    expect(a.table.get(c.peerId), 'c back in a').to.equal(undefined)
    expect(b.table.get(c.peerId), 'c back in b').to.equal(undefined)
    expect(stateOf(a, b)).to.equal('alive')
  })

  describe('/goto/heartbeat as a client sees it', () => {
    function infoOf (name: string, peerId: string): MemberInfo {
      return { name, peerId, addrs: [], labels: {}, agentVersion: GOTO_VERSION, dockerVersion: null, containers: null, crlNumber: 0 }
    }

    it('answers a heartbeat with its own info and the members it vouches for, and records the sender', async () => {
      const a = await agent('a')
      const b = await agent('b', [a])
      await meshed([a, b])
      const bundle = await issuedBundle(caDir, join(dir, `run-${run}`), 'agent', 'probe')
      const probe = await MeshClient.connect(bundle, addrOf(a))
      clients.push(probe)
      const js = await probe.open(HEARTBEAT_PROTOCOL)
      const signal = AbortSignal.timeout(5000)
      await js.write({ from: infoOf('probe', bundle.peerId), members: [] }, signal)
      const reply = parseHeartbeatReply(await readResult(js, signal))
      expect(reply.self.peerId).to.equal(a.peerId)
      expect(reply.members.map(m => m.peerId)).to.deep.equal([b.peerId])
      expect(a.table.get(bundle.peerId)?.state).to.equal('alive')
      js.abort(new Error('probe done'))
    })

    it('records nothing of a heartbeat whose sender claims another peer ID', async () => {
      const a = await agent('a')
      const b = await agent('b', [a])
      await meshed([a, b])
      const bundle = await issuedBundle(caDir, join(dir, `run-${run}`), 'agent', 'liar')
      const probe = await MeshClient.connect(bundle, addrOf(a))
      clients.push(probe)
      const js = await probe.open(HEARTBEAT_PROTOCOL)
      const signal = AbortSignal.timeout(5000)
      await js.write({ from: { ...infoOf('b', b.peerId), labels: { forged: 'yes' } }, members: [] }, signal)
      await rejection(readResult(js, signal))
      expect(a.table.get(bundle.peerId)).to.equal(undefined)
      expect(a.table.get(b.peerId)?.labels).to.deep.equal({})
    })

    it('refuses an operator certificate with RoleNotAllowedError', async () => {
      const a = await agent('a')
      const probe = await MeshClient.connect(await issuedBundle(caDir, join(dir, `run-${run}`), 'operator', 'ops'), addrOf(a))
      clients.push(probe)
      const err = await rejection(probe.request(HEARTBEAT_PROTOCOL, { from: infoOf('ops', probe.agent.peerId), members: [] }))
      expect(err.name).to.equal('RoleNotAllowedError')
    })

    it('a member passing on made-up peers: at most LEARN_PER_SENDER are taken, none counts as a member', async () => {
      const a = await agent('a')
      const b = await agent('b', [a])
      const c = await agent('c', [a])
      await meshed([a, b, c])
      const bundle = await issuedBundle(caDir, join(dir, `run-${run}`), 'agent', 'rogue')
      const rogue = await MeshClient.connect(bundle, addrOf(a))
      clients.push(rogue)
      const madeUp = await Promise.all(Array.from({ length: 40 }, async (_, i) => ({
        peerId: peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString(), name: `ghost-${i}`, addrs: ['/ip4/127.0.0.1/tcp/9']
      })))
      const js = await rogue.open(HEARTBEAT_PROTOCOL)
      const signal = AbortSignal.timeout(5000)
      await js.write({ from: infoOf('rogue', bundle.peerId), members: madeUp }, signal)
      const first = parseHeartbeatReply(await readResult(js, signal))
      const ghosts = (): number => a.table.entries().filter(e => e.name.startsWith('ghost-')).length
      expect(ghosts()).to.equal(LEARN_PER_SENDER)
      expect(first.wantCerts, 'a asks for the certificates of what it took unverified').to.have.length(LEARN_PER_SENDER)
      // Again within the window, now with "certificates" that are not the mesh's: nothing more, none verified.
      await js.write({ from: infoOf('rogue', bundle.peerId), members: madeUp.slice().reverse().map(m => ({ ...m, cert: bundle.certPem })) }, signal)
      await readResult(js, signal)
      expect(ghosts()).to.equal(LEARN_PER_SENDER)
      // a, b, c and the rogue (it did answer with a certificate): four members, three of them alive.
      expect(meshView(a.table)).to.deep.include({ members: 4, quorum: true })
      js.abort(new Error('rogue done'))
    })

    it('a member never reached counts once a member relays its certificate, asked for with wantCerts', async () => {
      const a = await agent('a')
      const relay = await issuedBundle(caDir, join(dir, `run-${run}`), 'agent', 'relay')
      const far = await issuedBundle(caDir, join(dir, `run-${run}`), 'agent', 'far') // never started: a cannot reach it
      const ops = await issuedBundle(caDir, join(dir, `run-${run}`), 'operator', 'ops')
      const probe = await MeshClient.connect(relay, addrOf(a))
      clients.push(probe)
      const js = await probe.open(HEARTBEAT_PROTOCOL)
      const signal = AbortSignal.timeout(5000)
      const farSummary = { peerId: far.peerId, name: 'far', addrs: ['/ip4/127.0.0.1/tcp/9'] }
      const opsSummary = { peerId: ops.peerId, name: 'ops', addrs: ['/ip4/127.0.0.1/tcp/9'] }
      await js.write({ from: infoOf('relay', relay.peerId), members: [farSummary, opsSummary] }, signal)
      const first = parseHeartbeatReply(await readResult(js, signal))
      expect(first.wantCerts).to.have.members([far.peerId, ops.peerId])
      expect(meshView(a.table).members, 'a and the relay: far is only a rumour yet').to.equal(2)
      // A certificate under another peer ID, and an operator's: neither makes a member.
      await js.write({ from: infoOf('relay', relay.peerId), members: [{ ...farSummary, cert: relay.certPem }, { ...opsSummary, cert: ops.certPem }] }, signal)
      await readResult(js, signal)
      expect(meshView(a.table).members).to.equal(2)
      await js.write({ from: infoOf('relay', relay.peerId), members: [{ ...farSummary, name: 'liar', cert: far.certPem }] }, signal)
      const last = parseHeartbeatReply(await readResult(js, signal))
      expect(meshView(a.table).members, 'far counts: its certificate verified at a').to.equal(3)
      expect(a.table.get(far.peerId)?.name, 'named by its certificate, not by the relay').to.equal('far')
      expect(a.table.get(far.peerId)?.lastSeen).to.equal(null)
      expect(last.wantCerts ?? []).to.not.include(far.peerId)
      // a passes far on, with its certificate to whoever asks for it.
      await js.write({ from: infoOf('relay', relay.peerId), members: [], wantCerts: [far.peerId] }, signal)
      expect(parseHeartbeatReply(await readResult(js, signal)).members.find(m => m.peerId === far.peerId)?.cert).to.equal(far.certPem)
      await js.write({ from: infoOf('relay', relay.peerId), members: [] }, signal)
      expect(parseHeartbeatReply(await readResult(js, signal)).members.find(m => m.peerId === far.peerId)?.cert).to.equal(undefined)
      js.abort(new Error('probe done'))
    })

    // The auth gate answers a request its handler could not take with a typed error (not a reset stream).
    it('refuses a malformed heartbeat with a ProtocolError naming the field', async () => {
      const a = await agent('a')
      const probe = await MeshClient.connect(await issuedBundle(caDir, join(dir, `run-${run}`), 'agent', 'probe'), addrOf(a))
      clients.push(probe)
      const err = await rejection(probe.request(HEARTBEAT_PROTOCOL, { from: 5, members: [] }))
      expect(err.name).to.equal('ProtocolError')
      expect(err.message).to.match(/member must be an object/)
    })
  })
})

function addrOf (a: MiniAgent): Multiaddr {
  const addr = a.node.getMultiaddrs()[0]
  if (addr === undefined) throw new Error(`${a.name} listens nowhere`)
  return addr
}
