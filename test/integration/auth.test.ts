/**
 * The auth gate over real libp2p connections on loopback (TCP, Noise, yamux; port 0), in one
 * process: certificates from a real mesh CA, a foreign CA, a revoked certificate, a peer that never
 * authenticates, and role checks. The lab tests (mesh.test.ts) repeat the important cases with real
 * agent processes on separate hosts.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Libp2p } from 'libp2p'
import type { Connection } from '@libp2p/interface'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { initCa, issueCertificate, revoke, readBundle, readCaCrl, TrustStore, type Bundle } from '../../certs/index.js'
import { createMeshNode } from '../../protocol/node.js'
import { authenticateOutbound } from '../../protocol/auth.js'
import { JsonStream, readResult } from '../../protocol/wire.js'
import { AuthService } from '../../agent/net/auth-service.js'
import { waitFor as labWaitFor } from '../lab/wait.js'
import { createRootLogger } from '../../agent/log.js'
import { PeerRejectedUsError, PeerNotAuthenticatedError, RoleNotAllowedError, CertificateUntrustedError } from '../../protocol/errors.js'

const ECHO = '/goto/test-echo/1.0.0'
const AGENT_ONLY = '/goto/test-agent-only/1.0.0'
const AUTH_TIMEOUT_MS = 1500

interface Agent { node: Libp2p, auth: AuthService, bundle: Bundle, trust: TrustStore }

/** Polls a condition (no fixed sleeps): the lab's waitFor with this file's defaults. */
async function waitFor (what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  await labWaitFor(cond, { timeoutMs, intervalMs: 50, what })
}

async function startAgent (bundleDir: string): Promise<Agent> {
  const bundle = await readBundle(bundleDir)
  const trust = new TrustStore(bundle.caCertPem, bundle.crl)
  const node = await createMeshNode({ privateKey: bundle.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], isRefused: p => trust.isRevoked(p.toString()) })
  const auth = new AuthService({
    node,
    identity: { certPem: bundle.certPem, trust },
    authTimeoutMs: AUTH_TIMEOUT_MS,
    log: createRootLogger('error', { test: 'auth' }),
    saveCrl: async () => {}
  })
  await auth.start()
  const echo = async (js: JsonStream, peer: { name: string }): Promise<void> => {
    const msg = await js.read()
    await js.write({ ok: true, result: { echo: msg, from: peer.name } })
    await js.close()
  }
  await auth.handle(ECHO, ['agent', 'operator'], echo)
  await auth.handle(AGENT_ONLY, ['agent'], echo)
  await node.start()
  return { node, auth, bundle, trust }
}

async function call (connection: Connection, protocol: string, body: unknown): Promise<unknown> {
  const js = new JsonStream(await connection.newStream(protocol, { signal: AbortSignal.timeout(5000) }))
  await js.write(body)
  return await readResult(js, AbortSignal.timeout(5000))
}

describe('auth gate (libp2p on loopback)', function () {
  this.timeout(60_000)
  let dir: string
  let a: Agent
  let b: Agent
  const nodes: Libp2p[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-auth-'))
    await initCa(join(dir, 'ca'))
    await initCa(join(dir, 'foreign'))
    for (const n of ['a', 'b', 'revoked']) await issueCertificate(join(dir, 'ca'), { role: 'agent', name: n, out: join(dir, n) })
    await issueCertificate(join(dir, 'ca'), { role: 'operator', name: 'op', out: join(dir, 'op') })
    await issueCertificate(join(dir, 'foreign'), { role: 'agent', name: 'a', out: join(dir, 'rogue') })
    a = await startAgent(join(dir, 'a'))
    b = await startAgent(join(dir, 'b'))
    nodes.push(a.node, b.node)
  })

  after(async () => {
    for (const n of nodes) await n.stop()
    await rm(dir, { recursive: true, force: true })
  })

  async function client (bundleDir: string): Promise<{ node: Libp2p, bundle: Bundle, trust: TrustStore }> {
    const bundle = await readBundle(bundleDir)
    const trust = new TrustStore(bundle.caCertPem, bundle.crl)
    const node = await createMeshNode({ privateKey: bundle.privateKey, listen: [], isRefused: p => trust.isRevoked(p.toString()) })
    await node.start()
    nodes.push(node)
    return { node, bundle, trust }
  }

  it('lets two mesh agents in, both ways, and serves them', async () => {
    const conn = await a.node.dial(b.node.getMultiaddrs()[0])
    const peer = await a.auth.ensure(conn, AbortSignal.timeout(5000))
    expect(peer).to.deep.include({ name: 'b', role: 'agent', peerId: b.bundle.peerId })
    expect(await call(conn, ECHO, { hi: 1 })).to.deep.equal({ echo: { hi: 1 }, from: 'a' })
    await waitFor('b to see a authenticated', () => b.node.getConnections().some(c => b.auth.peerOf(c)?.name === 'a'))
  })

  it('dials an address without /p2p/: the certificate says who answered', async () => {
    const op = await client(join(dir, 'op'))
    const addr = b.node.getMultiaddrs()[0].decapsulateCode(421)
    const conn = await op.node.dial(addr)
    const peer = await authenticateOutbound(conn, { certPem: op.bundle.certPem, trust: op.trust }, AbortSignal.timeout(5000))
    expect(peer.name).to.equal('b')
  })

  it('refuses a stream on a connection that never authenticated, and closes the connection', async () => {
    const key = await generateKeyPair('Ed25519')
    const stranger = await createMeshNode({ privateKey: key, listen: [], isRefused: () => false })
    await stranger.start()
    nodes.push(stranger)
    const conn = await stranger.dial(a.node.getMultiaddrs()[0])
    let refused: unknown
    try {
      await call(conn, ECHO, { hi: 1 })
    } catch (err) { refused = err }
    expect(refused).to.be.instanceOf(PeerNotAuthenticatedError)
    await waitFor('the unauthenticated connection to close', () => conn.status !== 'open')
  })

  it('refuses a certificate from another CA: the peer never gets a stream served', async () => {
    const rogue = await client(join(dir, 'rogue'))
    const conn = await rogue.node.dial(a.node.getMultiaddrs()[0])
    let err: unknown
    try {
      await authenticateOutbound(conn, { certPem: rogue.bundle.certPem, trust: rogue.trust }, AbortSignal.timeout(5000))
    } catch (e) { err = e }
    expect(err).to.be.instanceOf(PeerRejectedUsError)
    expect((err as Error).message).to.contain('not issued by the mesh CA')
    await waitFor('the rogue connection to close', () => conn.status !== 'open')
    expect(a.node.getConnections().some(c => a.auth.peerOf(c)?.peerId === rogue.bundle.peerId)).to.equal(false)
  })

  it('refuses an agent whose own CA differs when we dial it (we verify the listener too)', async () => {
    const rogueAgent = await startAgent(join(dir, 'rogue'))
    nodes.push(rogueAgent.node)
    const conn = await a.node.dial(rogueAgent.node.getMultiaddrs()[0])
    let err: unknown
    try { await a.auth.ensure(conn, AbortSignal.timeout(5000)) } catch (e) { err = e }
    expect(err).to.be.instanceOf(Error)
    expect((err as Error).name).to.be.oneOf([PeerRejectedUsError.name, CertificateUntrustedError.name])
  })

  it('refuses an operator on an agent-only protocol', async () => {
    const op = await client(join(dir, 'op'))
    const conn = await op.node.dial(a.node.getMultiaddrs()[0])
    await authenticateOutbound(conn, { certPem: op.bundle.certPem, trust: op.trust }, AbortSignal.timeout(5000))
    expect(await call(conn, ECHO, 'x')).to.deep.equal({ echo: 'x', from: 'op' })
    let err: unknown
    try { await call(conn, AGENT_ONLY, 'x') } catch (e) { err = e }
    expect(err).to.be.instanceOf(RoleNotAllowedError)
  })

  it('takes a newer revocation list from a peer and then refuses and disconnects the revoked peer', async () => {
    const revoked = await startAgent(join(dir, 'revoked'))
    nodes.push(revoked.node)
    const conn = await revoked.node.dial(a.node.getMultiaddrs()[0])
    await revoked.auth.ensure(conn, AbortSignal.timeout(5000))
    await revoke(join(dir, 'ca'), { name: 'revoked' }, { bundles: [join(dir, 'op')] })
    // The operator's next connection carries the newer list to agent a ...
    const op = await client(join(dir, 'op'))
    const opConn = await op.node.dial(a.node.getMultiaddrs()[0])
    await authenticateOutbound(opConn, { certPem: op.bundle.certPem, trust: op.trust }, AbortSignal.timeout(5000))
    expect(a.trust.crlNumber).to.equal(JSON.parse((await readCaCrl(join(dir, 'ca'))).payload).number)
    // ... which drops the revoked peer's open connection and refuses new ones.
    await waitFor('the revoked peer to be disconnected', () => conn.status !== 'open')
    let err: unknown
    try {
      const again = await revoked.node.dial(a.node.getMultiaddrs()[0], { signal: AbortSignal.timeout(5000) })
      await revoked.auth.ensure(again, AbortSignal.timeout(5000))
    } catch (e) { err = e }
    expect(err).to.be.instanceOf(Error)
  })
})
