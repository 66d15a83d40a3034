/**
 * Who a holder serves (agent/transfer/holders.ts): an offer must carry a move order of the asking
 * source, the order's spec and that spec's image config; the layers it holds are then granted to
 * the order's destination alone, for HOLDER_GRANT_MS. Run on a real staging store, with the order
 * check faked (protocol/orders.ts has its own tests).
 */
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { VerifiedPeer } from '../../certs/verify.js'
import type { AuthService } from '../../agent/net/auth-service.js'
import { createRootLogger } from '../../agent/log.js'
import { HOLDER_GRANT_MS, HolderService, type HolderServiceDeps } from '../../agent/transfer/holders.js'
import { LayerStore } from '../../agent/transfer/layer-store.js'
import type { ContainerSpec } from '../../protocol/container.js'
import type { HolderOfferRequest } from '../../protocol/move-messages.js'
import { specDigest, type MoveOrderBody, type SignedOrder } from '../../protocol/orders.js'
import { HolderRefusedError, OrderExpiredError, OrderMismatchError, SpecMismatchError } from '../../protocol/errors.js'
import { MemoryDockerHost } from '../fixtures/memory-docker-host.js'
import { rejection } from '../fixtures/assert.js'

const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex')

function peer (name: string, peerId: string): VerifiedPeer {
  return { name, role: 'agent', peerId, serial: '01', notBefore: new Date(0), notAfter: new Date(Date.now() + 3600_000), certPem: '' } as unknown as VerifiedPeer
}

async function drain (source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of source) parts.push(c)
  return Buffer.concat(parts)
}

async function * once (b: Uint8Array): AsyncGenerator<Uint8Array> { yield b }

describe('transfer: holders serve only the destination of a move order', () => {
  let dir: string
  let store: LayerStore
  let now: number
  const source = peer('vagrant-1', 'PEER-SOURCE')
  const destination = peer('aws-1', 'PEER-DEST')
  const other = peer('azure-1', 'PEER-OTHER')
  const held = randomBytes(5000)
  const heldId = sha(held)
  const missingId = sha(randomBytes(10))
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [heldId, missingId] } }))
  const spec = { name: 'web', image: sha(config) } as unknown as ContainerSpec
  /** What the fake verifier says the order holds (the real one checks signature, operator, dates). */
  let verdict: () => MoveOrderBody

  function order (): SignedOrder {
    return { body: verdict(), cert: '', signature: '' }
  }

  function offer (changes: Partial<HolderOfferRequest> = {}): HolderOfferRequest {
    return { op: 'offer', order: changes.order ?? order(), spec, config: config.toString('base64'), diffIds: [heldId, missingId], ...changes }
  }

  function service (): HolderService {
    return new HolderService({
      auth: {} as unknown as AuthService,
      docker: new MemoryDockerHost({ name: 'holder' }),
      store,
      orders: { verify: async () => verdict() } as unknown as HolderServiceDeps['orders'],
      now: () => now,
      log: createRootLogger('error', { test: 'holders' })
    })
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-holders-'))
    store = await LayerStore.open(join(dir, 'layers'), { minFreeBytes: 0 })
    await store.receive(heldId, held.byteLength, once(held))
    now = 1_000_000
    verdict = () => ({ kind: 'move', id: '0123456789abcdef', operator: 'OPS', issuedAt: now, expiresAt: now + 60_000, container: 'web', from: source.peerId, to: destination.peerId, specDigest: specDigest(spec), allow: { binds: [] } })
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('answers which layers of the image it holds, and serves them to the order\'s destination, byte for byte', async () => {
    const h = service()
    const reply = await h.offer(offer(), source, AbortSignal.timeout(5000))
    expect(reply.held).to.deep.equal([{ diffId: heldId, size: held.byteLength }])
    const layer = await h.layerFor({ op: 'fetch', moveId: '0123456789abcdef', diffId: heldId }, destination, AbortSignal.timeout(5000))
    expect(layer.size).to.equal(held.byteLength)
    expect((await drain(layer.read(AbortSignal.timeout(5000)))).equals(held)).to.equal(true)
  })

  it('serves no one but the destination, nothing not granted, nothing after the grant ran out', async () => {
    const h = service()
    await h.offer(offer(), source, AbortSignal.timeout(5000))
    const fetch = (diffId: string, by: VerifiedPeer, moveId = '0123456789abcdef'): Promise<unknown> => h.layerFor({ op: 'fetch', moveId, diffId }, by, AbortSignal.timeout(5000))
    for (const by of [other, source]) expect(await rejection(fetch(heldId, by))).to.be.instanceOf(HolderRefusedError)
    expect(await rejection(fetch(missingId, destination))).to.be.instanceOf(HolderRefusedError)
    expect(await rejection(fetch(heldId, destination, 'fedcba9876543210'))).to.be.instanceOf(HolderRefusedError)
    now += HOLDER_GRANT_MS
    expect(await rejection(fetch(heldId, destination))).to.be.instanceOf(HolderRefusedError)
  })

  it('serves nobody without an offer: a valid certificate alone fetches nothing', async () => {
    const h = service()
    expect(await rejection(h.layerFor({ op: 'fetch', moveId: '0123456789abcdef', diffId: heldId }, destination, AbortSignal.timeout(5000)))).to.be.instanceOf(HolderRefusedError)
  })

  it('refuses an offer from another member than the order\'s source, with another spec, another config or a layer not of the image', async () => {
    const h = service()
    const signal = AbortSignal.timeout(5000)
    expect(await rejection(h.offer(offer(), other, signal))).to.be.instanceOf(OrderMismatchError)
    expect(await rejection(h.offer(offer({ spec: { ...spec, name: 'other' } }), source, signal))).to.be.instanceOf(SpecMismatchError)
    const forged = Buffer.from(JSON.stringify({ rootfs: { diff_ids: [heldId, sha(Buffer.from('x'))] } })).toString('base64')
    expect(await rejection(h.offer(offer({ config: forged }), source, signal))).to.be.instanceOf(SpecMismatchError)
    expect(await rejection(h.offer(offer({ diffIds: [sha(Buffer.from('not in the image'))] }), source, signal))).to.be.instanceOf(SpecMismatchError)
    // None of these granted anything.
    expect(await rejection(h.layerFor({ op: 'fetch', moveId: '0123456789abcdef', diffId: heldId }, destination, signal))).to.be.instanceOf(HolderRefusedError)
  })

  it('refuses an offer whose order does not hold (the verifier\'s error, as it is)', async () => {
    const h = service()
    verdict = () => { throw new OrderExpiredError('expired') }
    expect(await rejection(h.offer(offer({ order: { body: {} as MoveOrderBody, cert: '', signature: '' } }), source, AbortSignal.timeout(5000)))).to.be.instanceOf(OrderExpiredError)
  })
})
