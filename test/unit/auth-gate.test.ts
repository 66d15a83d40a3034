/**
 * The auth gate's bounds (agent/net/auth-service.ts), over real libp2p on loopback with real
 * certificates: a stream opened before /goto/auth is refused at once (not held until the auth
 * timeout), and a connection whose certificate expires while it is open is closed.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p } from 'libp2p'
import { initCa, issueCertificate, readBundle, TrustStore } from '../../certs/index.js'
import { AuthService } from '../../agent/net/auth-service.js'
import { createMeshNode } from '../../protocol/node.js'
import { createRootLogger } from '../../agent/log.js'
import { JsonStream, readResult } from '../../protocol/wire.js'
import { PeerNotAuthenticatedError } from '../../protocol/errors.js'
import { MeshClient } from '../fixtures/mesh-client.js'
import { rejection } from '../fixtures/assert.js'
import { waitFor } from '../lab/wait.js'

const ECHO = '/goto/test-echo/1.0.0'
const AUTH_TIMEOUT_MS = 4000
const RECHECK_MS = 200

describe('auth gate bounds (libp2p on loopback)', function () {
  this.timeout(30_000)
  let dir: string
  let node: Libp2p
  let auth: AuthService
  const others: Array<{ stop: () => Promise<void> }> = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-auth-gate-'))
    await initCa(join(dir, 'ca'))
    await issueCertificate(join(dir, 'ca'), { role: 'agent', name: 'victim', out: join(dir, 'victim') })
    const bundle = await readBundle(join(dir, 'victim'))
    const trust = new TrustStore(bundle.caCertPem, bundle.crl)
    node = await createMeshNode({ privateKey: bundle.privateKey, listen: ['/ip4/127.0.0.1/tcp/0'], isRefused: () => false })
    auth = new AuthService({ node, identity: { certPem: bundle.certPem, trust }, authTimeoutMs: AUTH_TIMEOUT_MS, certRecheckMs: RECHECK_MS, log: createRootLogger('error', { test: 'auth-gate' }), saveCrl: async () => {} })
    await auth.start()
    await auth.handle(ECHO, ['agent'], async (js, peer) => {
      await js.write({ ok: true, result: { echo: await js.read(), from: peer.name } })
      await js.close()
    })
    await node.start()
  })

  after(async () => {
    for (const o of others.splice(0)) await o.stop().catch(() => {})
    await auth.stop()
    await node.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('refuses a stream opened before /goto/auth at once, with PeerNotAuthenticatedError', async () => {
    const stranger = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], isRefused: () => false })
    await stranger.start()
    others.push({ stop: async () => { await stranger.stop() } })
    const conn = await stranger.dial(node.getMultiaddrs()[0])
    const started = Date.now()
    const refusals = await Promise.all(Array.from({ length: 8 }, async () => {
      const js = new JsonStream(await conn.newStream(ECHO))
      await js.write({ hi: 1 })
      return await rejection(readResult(js, AbortSignal.timeout(AUTH_TIMEOUT_MS)))
    }))
    for (const r of refusals) expect(r).to.be.instanceOf(PeerNotAuthenticatedError)
    expect(Date.now() - started, 'refused long before the auth timeout').to.be.below(AUTH_TIMEOUT_MS / 4)
  })

  it('closes an open connection once its peer certificate expires', async () => {
    // Whole seconds: the CA rounds validity down to the second.
    await issueCertificate(join(dir, 'ca'), { role: 'agent', name: 'brief', out: join(dir, 'brief'), notAfter: new Date(Date.now() + 3000) })
    const client = await MeshClient.connect(await readBundle(join(dir, 'brief')), node.getMultiaddrs()[0])
    others.push({ stop: async () => { await client.close() } })
    expect(await client.request(ECHO, { hi: 1 })).to.deep.include({ from: 'brief' })
    await waitFor(() => node.getConnections().every(c => auth.peerOf(c)?.name !== 'brief'), { timeoutMs: 8000, intervalMs: 50, what: 'the expired peer to be disconnected' })
    await rejection(client.request(ECHO, { hi: 2 }, AbortSignal.timeout(2000)))
  })
})
