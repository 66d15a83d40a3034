/**
 * Unit tests of signed operator orders (protocol/orders.ts): canonical encoding, signing with an
 * operator bundle's key, and every refusal of OrderVerifier by its error class — tampered fields,
 * another key's signature, an agent's certificate, a revoked operator, expiry, replay — plus the
 * host-level power check and the spec parser's refusal of host-level fields. Real certificates
 * from a real mesh CA.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { initCa, readCaCrl, revoke, TrustStore, type Bundle } from '../../certs/index.js'
import {
  MAX_ORDER_TTL_MS, OrderVerifier, canonicalJson, checkHostPowers, newOrderId, parseSignedOrder, signOrder, specDigest,
  type MoveOrderBody, type ProtectOrderBody, type SignedOrder
} from '../../protocol/orders.js'
import { parseSpec } from '../../protocol/move-messages.js'
import type { ContainerSpec } from '../../protocol/container.js'
import { issuedBundle } from '../fixtures/mesh-client.js'
import { openSpentOrders } from '../../agent/orders/spent-orders.js'
import winston from 'winston'
import { rejection } from '../fixtures/assert.js'

const SPEC: ContainerSpec = {
  name: 'web', image: `sha256:${'a'.repeat(64)}`, env: ['A=1'], cmd: null, entrypoint: null, workingDir: '', user: '', labels: { b: '2', a: '1' },
  hostname: '', exposedPorts: ['80/tcp'], portBindings: {}, restartPolicy: { name: 'no', maximumRetryCount: 0 },
  mounts: [{ type: 'volume', name: 'data', destination: '/data', readOnly: false, driver: 'local' }]
}

describe('operator orders (protocol/orders.ts)', function () {
  this.timeout(60_000)
  let dir: string
  let caDir: string
  let ops: Bundle
  let other: Bundle
  let agent: Bundle
  let trust: TrustStore
  let now: number

  const moveBody = (changes: Partial<MoveOrderBody> = {}): Omit<MoveOrderBody, 'operator' | 'issuedAt' | 'expiresAt'> => ({
    kind: 'move', id: newOrderId(), container: 'web', from: 'src', to: 'dst', specDigest: specDigest(SPEC), allow: { binds: [] }, ...changes
  })
  const verifier = (): OrderVerifier => new OrderVerifier(trust, () => now)

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-orders-'))
    caDir = join(dir, 'ca')
    await initCa(caDir, { name: 'orders-test' })
    ops = await issuedBundle(caDir, dir, 'operator', 'ops')
    other = await issuedBundle(caDir, dir, 'operator', 'ops2')
    agent = await issuedBundle(caDir, dir, 'agent', 'rogue')
  })
  after(async () => { await rm(dir, { recursive: true, force: true }) })
  beforeEach(() => {
    trust = new TrustStore(ops.caCertPem)
    now = Date.now()
  })

  it('encodes canonically: keys sorted at every level, no white space, integers only', () => {
    expect(canonicalJson({ b: 1, a: { d: [true, null, 'x'], c: 2 } })).to.equal('{"a":{"c":2,"d":[true,null,"x"]},"b":1}')
    expect(specDigest({ ...SPEC, labels: { a: '1', b: '2' } })).to.equal(specDigest(SPEC))
    expect(specDigest({ ...SPEC, user: '0' })).to.not.equal(specDigest(SPEC))
    expect(() => canonicalJson({ x: 1.5 })).to.throw().with.property('name', 'ProtocolError')
  })

  it('verifies an operator\'s order once, after the wire, and refuses it the second time (replay)', async () => {
    const signed = parseSignedOrder(JSON.parse(JSON.stringify(await signOrder(ops, moveBody(), now))))
    const v = verifier()
    const body = await v.verify(signed, ['move'])
    expect(body.kind).to.equal('move')
    expect(body.operator).to.equal(ops.peerId)
    await v.accept(body)
    expect((await rejection(v.verify(signed, ['move']))).name).to.equal('OrderReplayedError')
    expect((await rejection(v.accept(body))).name).to.equal('OrderReplayedError')
  })

  it('refuses an order whose body was changed after signing (each field)', async () => {
    const signed = await signOrder(ops, moveBody(), now)
    const tampered: Array<Partial<MoveOrderBody>> = [
      { to: 'elsewhere' }, { from: 'other' }, { container: 'db' }, { specDigest: `sha256:${'b'.repeat(64)}` }, { id: newOrderId() },
      { expiresAt: signed.body.expiresAt + 1000 }, { allow: { binds: [{ source: '/', destination: '/host', readOnly: false }] } }
    ]
    for (const t of tampered) {
      const order: SignedOrder = { ...signed, body: { ...signed.body, ...t } as MoveOrderBody }
      expect((await rejection(verifier().verify(order, ['move']))).name, JSON.stringify(t)).to.equal('OrderSignatureError')
    }
    // A signature of another operator's key over the same body, under this operator's certificate.
    const foreign = await signOrder(other, moveBody(), now)
    const swapped: SignedOrder = { ...signed, signature: foreign.signature }
    expect((await rejection(verifier().verify(swapped, ['move']))).name).to.equal('OrderSignatureError')
    // Another operator's certificate presented for this operator's peer ID.
    expect((await rejection(verifier().verify({ ...signed, cert: other.certPem }, ['move']))).name).to.equal('CertificatePeerMismatchError')
  })

  it('refuses an order of another kind than the step needs', async () => {
    const protect = await signOrder<ProtectOrderBody>(ops, { kind: 'unprotect', id: newOrderId(), container: 'web', host: 'h' }, now)
    expect((await rejection(verifier().verify(protect, ['move']))).name).to.equal('OrderSignatureError')
    expect((await rejection(verifier().verify(protect, ['protect']))).name).to.equal('OrderSignatureError')
    expect((await verifier().verify(protect, ['unprotect'])).kind).to.equal('unprotect')
  })

  it('refuses an order signed with an agent\'s key and certificate', async () => {
    const signed = await signOrder(agent, moveBody(), now)
    expect((await rejection(verifier().verify(signed, ['move']))).name).to.equal('OrderSignerNotOperatorError')
  })

  it('refuses an expired order, one valid too long, and one issued in the future', async () => {
    const v = verifier()
    const expired = await signOrder(ops, moveBody(), now - 120_000, 60_000)
    expect((await rejection(v.verify(expired, ['move']))).name).to.equal('OrderExpiredError')
    const long = await signOrder(ops, moveBody(), now, MAX_ORDER_TTL_MS + 1)
    expect((await rejection(v.verify(long, ['move']))).name).to.equal('OrderExpiredError')
    const future = await signOrder(ops, moveBody(), now + 5 * 60_000)
    expect((await rejection(v.verify(future, ['move']))).name).to.equal('OrderExpiredError')
  })

  it('refuses the order of a revoked operator once the revocation list is adopted', async () => {
    const revoked = await issuedBundle(caDir, dir, 'operator', 'gone')
    const signed = await signOrder(revoked, moveBody(), now)
    expect((await verifier().verify(signed, ['move'])).operator).to.equal(revoked.peerId)
    await revoke(caDir, { name: 'gone' })
    trust.adoptCrl(await readCaCrl(caDir))
    expect((await rejection(verifier().verify(signed, ['move']))).name).to.equal('CertificateRevokedError')
  })

  it('refuses a certificate from another CA', async () => {
    const otherCa = join(dir, 'ca2')
    await initCa(otherCa, { name: 'elsewhere' })
    const stranger = await issuedBundle(otherCa, join(dir, 'other-mesh'), 'operator', 'ops')
    const signed = await signOrder(stranger, moveBody(), now)
    expect((await rejection(verifier().verify(signed, ['move']))).name).to.equal('CertificateUntrustedError')
  })

  it('forgets accepted orders only after they expired', async () => {
    const v = verifier()
    const signed = await signOrder(ops, moveBody(), now)
    await v.accept(await v.verify(signed, ['move']))
    now += 10 * 60_000
    expect((await rejection(v.verify(signed, ['move']))).name, 'expired by then').to.equal('OrderExpiredError')
  })

  it('remembers accepted orders across a restart (on disk until they expire), and refuses one it could not write down', async () => {
    const log = winston.createLogger({ silent: true })
    const store = join(dir, `spent-${now}`)
    const signed = await signOrder(ops, moveBody(), now)
    const protect = await signOrder(ops, { kind: 'protect', id: newOrderId(), host: 'dst', container: 'web' } as Omit<ProtectOrderBody, 'operator' | 'issuedAt' | 'expiresAt'>, now)
    const first = await openSpentOrders(store, log, now)
    const v = new OrderVerifier(trust, () => now, first.memory, first.spent)
    await v.accept(await v.verify(signed, ['move']))
    // The agent restarts: a new verifier from what is on disk refuses the replay.
    const again = await openSpentOrders(store, log, now)
    expect(again.spent.map(o => o.id)).to.deep.equal([signed.body.id])
    const restarted = new OrderVerifier(trust, () => now, again.memory, again.spent)
    expect((await rejection(restarted.verify(signed, ['move']))).name).to.equal('OrderReplayedError')
    // A protect order with the same memory, and one that cannot be written down (refused, not remembered).
    await restarted.accept(await restarted.verify(protect, ['protect']))
    const failing = new OrderVerifier(trust, () => now, { remember: async () => { throw new Error('disk full') }, forget: async () => {} })
    const other = await signOrder(ops, moveBody(), now)
    expect((await rejection(failing.accept(await failing.verify(other, ['move'])))).name).to.equal('OrderNotRecordedError')
    expect((await failing.verify(other, ['move'])).id, 'not taken: it may be tried again').to.equal(other.body.id)
    // Past their expiry, the next start removes them from disk.
    const later = await openSpentOrders(store, log, now + MAX_ORDER_TTL_MS + 1)
    expect(later.spent).to.deep.equal([])
    expect(await readdir(store)).to.deep.equal([])
  })

  it('signs host access only when allowed, and an order without it is the order it was before (no hostAccess key)', async () => {
    const plain = await signOrder(ops, moveBody(), now)
    expect(canonicalJson(plain.body)).to.not.contain('hostAccess')
    expect(parseSignedOrder(JSON.parse(JSON.stringify(plain))).body).to.deep.equal(plain.body)
    const allowed = parseSignedOrder(JSON.parse(JSON.stringify(await signOrder(ops, moveBody({ allow: { binds: [], hostAccess: true } }), now))))
    expect(((await verifier().verify(allowed, ['move'])).allow.hostAccess)).to.equal(true)
    // Taking the allowance out (or putting it in) breaks the signature; false is not a value an order holds.
    const stripped: SignedOrder = { ...allowed, body: { ...allowed.body, allow: { binds: [] } } as MoveOrderBody }
    expect((await rejection(verifier().verify(stripped, ['move']))).name).to.equal('OrderSignatureError')
    const added: SignedOrder = { ...plain, body: { ...plain.body, allow: { binds: [], hostAccess: true } } as MoveOrderBody }
    expect((await rejection(verifier().verify(added, ['move']))).name).to.equal('OrderSignatureError')
    const falsy = JSON.parse(JSON.stringify(plain))
    falsy.body.allow.hostAccess = false
    expect(() => parseSignedOrder(falsy)).to.throw().with.property('name', 'ProtocolError')
  })

  it('allows a host-level power of the carried settings only with allow.hostAccess', () => {
    const capable: ContainerSpec = { ...SPEC, engine: { config: {}, hostConfig: { CapAdd: ['CAP_SYS_TIME'], Memory: 67108864 } } }
    const limited: ContainerSpec = { ...SPEC, engine: { config: { StopSignal: 'SIGINT' }, hostConfig: { Memory: 67108864, NetworkMode: 'bridge' } } }
    expect(() => { checkHostPowers(limited, { binds: [] }) }).to.not.throw()
    expect(() => { checkHostPowers(capable, { binds: [] }) }).to.throw(/HostConfig\.CapAdd/).with.property('name', 'HostPowerNotOrderedError')
    expect(() => { checkHostPowers(capable, { binds: [], hostAccess: true }) }).to.not.throw()
    for (const hostConfig of [{ Privileged: true }, { PidMode: 'host' }, { NetworkMode: 'host' }, { Devices: [{ PathOnHost: '/dev/sda', PathInContainer: '/dev/sda', CgroupPermissions: 'rwm' }] }, { SecurityOpt: ['seccomp=unconfined'] }, { Sysctls: { 'kernel.x': '1' } }]) {
      expect(() => { checkHostPowers({ ...SPEC, engine: { config: {}, hostConfig } }, { binds: [] }) }, JSON.stringify(hostConfig)).to.throw().with.property('name', 'HostPowerNotOrderedError')
    }
  })

  it('allows a bind mount only if the order lists it exactly', () => {
    const bound: ContainerSpec = { ...SPEC, mounts: [...SPEC.mounts, { type: 'bind', source: '/', destination: '/host', readOnly: false }] }
    expect(() => { checkHostPowers(SPEC, { binds: [] }) }).to.not.throw()
    expect(() => { checkHostPowers(bound, { binds: [] }) }).to.throw().with.property('name', 'HostPowerNotOrderedError')
    expect(() => { checkHostPowers(bound, { binds: [{ source: '/', destination: '/host', readOnly: true }] }) }).to.throw().with.property('name', 'HostPowerNotOrderedError')
    expect(() => { checkHostPowers(bound, { binds: [{ source: '/', destination: '/host', readOnly: false }] }) }).to.not.throw()
  })

  it('the spec parser refuses host-level fields instead of dropping them', () => {
    expect(parseSpec(JSON.parse(JSON.stringify(SPEC))).name).to.equal('web')
    for (const field of ['privileged', 'Privileged', 'capAdd', 'devices', 'securityOpt', 'pidMode', 'networkMode', 'binds', 'hostConfig']) {
      expect(() => parseSpec({ ...SPEC, [field]: true }), field).to.throw().with.property('name', 'HostPowerNotOrderedError')
    }
  })

  it('parses only well-formed orders', () => {
    expect(() => parseSignedOrder({ body: { kind: 'move' } })).to.throw().with.property('name', 'ProtocolError')
    expect(() => parseSignedOrder({ body: { kind: 'launch', id: '0123456789abcdef', operator: 'x', issuedAt: 1, expiresAt: 2 }, cert: '', signature: '' })).to.throw().with.property('name', 'ProtocolError')
  })
})
