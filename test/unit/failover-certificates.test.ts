/**
 * Epoch certificates (protocol/epoch-certs.ts, agent/failover/certificates.ts) with real CA-issued
 * identities: what makes one valid, and every way a member can try to fake one; then the held
 * snapshots keyed by owner (agent/failover/snapshot-store.ts) and the state file's certificates and
 * migration (agent/failover/state.ts).
 */
import { expect } from 'chai'
import { createHash } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EpochCertificates } from '../../agent/failover/certificates.js'
import { MAX_HELD_PER_OWNER, SnapshotStore } from '../../agent/failover/snapshot-store.js'
import { FailoverState } from '../../agent/failover/state.js'
import { createRootLogger } from '../../agent/log.js'
import { parseEpochCertificate, verifyEpochCertificate, type EpochCertificate, type GrantClaim } from '../../protocol/epoch-certs.js'
import type { StoreRequest } from '../../protocol/move-messages.js'
import { EpochCertificateInvalidError, SnapshotLimitError, SnapshotOutdatedError, SnapshotOwnerMismatchError } from '../../protocol/errors.js'
import { certify, Identities } from '../fixtures/identities.js'

const log = createRootLogger('error', {})

describe('epoch certificates', () => {
  let root: string
  let ids: Identities
  let claim: GrantClaim

  before(async function () {
    this.timeout(30_000)
    root = await mkdtemp(join(tmpdir(), 'goto-epoch-certs-'))
    ids = await Identities.create(root)
    claim = { container: 'web', epoch: 2, claimant: (await ids.bundle('a')).peerId, previousOwner: (await ids.bundle('owner')).peerId, previousEpoch: 1 }
  })

  after(async () => {
    await rm(root, { recursive: true, force: true })
  })

  const invalid = (c: EpochCertificate, why: RegExp): void => {
    expect(() => { verifyEpochCertificate(c, ids.trust) }).to.throw(EpochCertificateInvalidError, why)
  }

  it('is valid with signed grants of a majority of the members the grantors knew, and survives the wire', async () => {
    const cert = await certify(ids, claim, ['a', 'b'], 3)
    verifyEpochCertificate(cert, ids.trust)
    verifyEpochCertificate(parseEpochCertificate(JSON.parse(JSON.stringify(cert))), ids.trust)
    verifyEpochCertificate(await certify(ids, claim, ['a', 'b', 'c'], 5), ids.trust)
  })

  it('refuses too few grants, counted against the largest member count any grantor stated', async () => {
    invalid(await certify(ids, claim, ['a'], 3), /fewer than a majority of the 3/)
    // A member alone, stating it knew only itself (or one other), certifies nothing.
    invalid(await certify(ids, claim, ['rogue'], 1), /fewer than 3/)
    invalid(await certify(ids, claim, ['rogue', 'a'], 2), /fewer than 3/)
    const two = await certify(ids, claim, ['a', 'b'], 3)
    const big = await certify(ids, claim, ['c'], 5) // c knew 5 members: 3 grants are needed
    invalid({ ...two, grants: [two.grants[0], ...big.grants] }, /fewer than a majority of the 5/)
    // The same grant twice is one grantor.
    invalid({ ...two, grants: [two.grants[0], two.grants[0]] }, /two grants by/)
  })

  it('refuses a forged grant: signed over another claim, by another key, or with a made-up signature', async () => {
    const cert = await certify(ids, claim, ['a', 'b'], 3)
    for (const other of [{ epoch: 3 }, { claimant: (await ids.bundle('rogue')).peerId }, { previousOwner: (await ids.bundle('c')).peerId }, { previousEpoch: 0 }]) {
      invalid({ ...cert, ...other, epoch: other.epoch ?? cert.epoch }, /not signed by its key over this claim/)
    }
    // A grant carrying b's certificate but signed by the rogue's key.
    const rogue = await certify(ids, claim, ['rogue'], 3)
    invalid({ ...cert, grants: [cert.grants[0], { ...cert.grants[1], sig: rogue.grants[0].sig }] }, /not signed by its key/)
    invalid({ ...cert, grants: [cert.grants[0], { ...cert.grants[1], sig: Buffer.alloc(64).toString('base64') }] }, /not signed by its key/)
    // The stated member count is signed too.
    invalid({ ...cert, grants: cert.grants.map(g => ({ ...g, members: 1 })) }, /not signed by its key/)
  })

  it('refuses grants for an absent member (no certificate of its own), a revoked one, or one that is not an agent', async () => {
    const cert = await certify(ids, claim, ['a', 'rogue'], 3)
    // The rogue signs in the name of a member that does not exist, showing its own certificate.
    const absent = (await certify(ids, claim, ['absent-host'], 3)).grants[0]
    invalid({ ...cert, grants: [cert.grants[0], { ...absent, cert: cert.grants[1].cert }] }, /names peer/)
    await ids.bundle('ops', 'operator')
    invalid(await certify(ids, claim, ['a', 'ops'], 3), /not an agent/)
    const revokedDir = await mkdtemp(join(root, 'revoked-'))
    const other = await Identities.create(revokedDir) // its own CA, so revoking does not disturb the other tests
    const ok = await certify(other, claim, ['a', 'b'], 3)
    verifyEpochCertificate(ok, other.trust)
    await other.revoke('b')
    expect(() => { verifyEpochCertificate(ok, other.trust) }).to.throw(EpochCertificateInvalidError, /revoked/)
    // ... and a certificate of another mesh's CA proves nothing here.
    expect(() => { verifyEpochCertificate(ok, ids.trust) }).to.throw(EpochCertificateInvalidError)
  })

  it('never certifies epoch 1, nor an epoch not above its previous one', async () => {
    invalid(await certify(ids, { ...claim, epoch: 1, previousEpoch: 0 }, ['a', 'b'], 3), /never certified/)
    invalid(await certify(ids, { ...claim, epoch: 3, previousEpoch: 3 }, ['a', 'b'], 3), /not below/)
  })

  it('shows an owner only at the epoch, container and claimant its certificate names (the agent-side check)', async () => {
    const certs = new EpochCertificates(ids.trust, log)
    const cert = await certify(ids, claim, ['a', 'b'], 3)
    expect(certs.shows('web', 1, 'anyone', undefined), 'epoch 1 needs none').to.equal(true)
    expect(certs.shows('web', 2, claim.claimant, cert)).to.equal(true)
    expect(certs.highest('web')?.epoch).to.equal(2)
    expect(certs.shows('web', 2, claim.claimant, undefined)).to.equal(false)
    expect(certs.shows('web', 999999, claim.claimant, cert)).to.equal(false)
    expect(certs.shows('db', 2, claim.claimant, cert)).to.equal(false)
    expect(certs.shows('web', 2, claim.previousOwner, cert)).to.equal(false)
    expect(certs.shows('web', 2, claim.claimant, { ...cert, grants: cert.grants.slice(1) })).to.equal(false)
  })
})

describe('held snapshots, keyed by owner', () => {
  let dir: string
  const A = '12D3KooWAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
  const R = '12D3KooWRrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr'
  const B = '12D3KooWBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'

  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'goto-held-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  /** A store request of `name` by `owner` at (epoch, seq) whose changes layer is `data`. */
  function request (owner: string, name: string, epoch: number, seq: number, data: string): { req: StoreRequest, blob: () => AsyncIterable<Uint8Array> } {
    const bytes = Buffer.from(data)
    const diffId = `sha256:${createHash('sha256').update(bytes).digest('hex')}`
    const req = {
      op: 'store', moveId: '0123456789abcdef', owner, epoch, seq, takenAt: new Date(0).toISOString(), config: '', diffIds: [],
      spec: { name, image: `${data}:latest`, mounts: [] }, top: { diffId, size: bytes.length }, volumes: []
    } as unknown as StoreRequest
    return { req, blob: async function * () { yield bytes } }
  }

  async function store (s: SnapshotStore, owner: string, name: string, epoch: number, seq: number, data: string): Promise<void> {
    const { req, blob } = request(owner, name, epoch, seq, data)
    await s.receive(req, owner.slice(-4), blob, AbortSignal.timeout(5000))
  }

  it("refuses a store of a name held for another owner that still owns it, whatever its version, and changes nothing", async () => {
    const s = await SnapshotStore.open(dir)
    s.setOwnership({ shown: () => false, owners: name => name === 'web' ? [A] : [] })
    await store(s, A, 'web', 1, 3, 'real')
    let refused: unknown
    try { await store(s, R, 'web', 999999, 999999, 'rogue') } catch (e) { refused = e }
    expect(refused).to.be.instanceOf(SnapshotOwnerMismatchError)
    expect(s.named('web').map(h => h.manifest.owner)).to.deep.equal([A])
    expect((await readdir(dir)).filter(d => !d.startsWith('.'))).to.deep.equal([`${A}.web`])
  })

  it("never lets one owner's store replace another owner's snapshot of the same name, even once that one let it go", async () => {
    const s = await SnapshotStore.open(dir)
    await store(s, A, 'web', 1, 3, 'real')
    await store(s, R, 'web', 999999, 999999, 'rogue') // A gossips no ownership of web (moved away, say)
    expect(s.get('web', A)?.manifest).to.deep.include({ owner: A, epoch: 1, seq: 3 })
    expect((s.get('web', A)?.manifest.spec as { image: string }).image).to.equal('real:latest')
    expect(s.named('web').map(h => h.manifest.owner)).to.have.members([A, R])
    // Both survive a restart, each under its owner.
    const again = await SnapshotStore.open(dir)
    expect(again.get('web', A)?.manifest.seq).to.equal(3)
    expect(again.get('web', R)?.manifest.seq).to.equal(999999)
    // Within one owner, only newer replaces.
    let err: unknown
    try { await store(again, A, 'web', 1, 3, 'real') } catch (e) { err = e }
    expect(err).to.be.instanceOf(SnapshotOutdatedError)
  })

  it("drops another owner's older snapshot only once a certificate shows the store's owner took the container over", async () => {
    const s = await SnapshotStore.open(dir)
    await store(s, A, 'web', 1, 3, 'real')
    await store(s, R, 'web', 2, 1, 'rogue') // no certificate (and nobody owns web now): kept apart, A's untouched
    expect(s.get('web', A)).to.not.equal(undefined)
    s.setOwnership({ shown: (name, owner, epoch) => name === 'web' && owner === B && epoch === 2, owners: () => [A, R] })
    await store(s, B, 'web', 2, 1, 'taken-over')
    expect(s.get('web', A), 'history once B shows epoch 2').to.equal(undefined)
    expect(s.get('web', R), 'a snapshot at the same epoch is not older').to.not.equal(undefined)
    expect(s.get('web', B)?.manifest.epoch).to.equal(2)
  })

  it('holds at most MAX_HELD_PER_OWNER containers per owner', async function () {
    this.timeout(20_000)
    const s = await SnapshotStore.open(dir)
    for (let i = 0; i < MAX_HELD_PER_OWNER; i++) await store(s, R, `c${i}`, 1, 1, `x${i}`)
    let err: unknown
    try { await store(s, R, 'one-more', 1, 1, 'y') } catch (e) { err = e }
    expect(err).to.be.instanceOf(SnapshotLimitError)
    await store(s, R, 'c0', 1, 2, 'x0-newer') // a held one may still be replaced
    await store(s, A, 'one-more', 1, 1, 'y') // another owner has its own room
  })

  it('loads snapshots of the old layout (snapshots/<name>/) by their manifest', async () => {
    const s = await SnapshotStore.open(dir)
    await store(s, A, 'web', 1, 3, 'real')
    const { rename } = await import('node:fs/promises')
    await rename(join(dir, `${A}.web`), join(dir, 'web'))
    const again = await SnapshotStore.open(dir)
    expect(again.get('web', A)?.manifest.seq).to.equal(3)
    await store(again, A, 'web', 1, 4, 'newer')
    expect((await SnapshotStore.open(dir)).get('web', A)?.manifest.seq).to.equal(4)
  })
})

describe('failover state file: certificates and the format-1 migration', () => {
  it('loads a format-1 file as it was, and keeps a certificate with the ownership across a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'goto-state-'))
    try {
      const v1 = { containers: { web: { epoch: 3, seq: 7, protect: true }, db: { seq: 1 } }, grants: { web: { epoch: 3, claimant: 'x' } } }
      await writeFile(join(dir, 'failover.json'), JSON.stringify(v1))
      const state = await FailoverState.open(dir)
      expect(state.peek('web')).to.deep.equal({ epoch: 3, seq: 7, protect: true })
      expect(state.grant('web')).to.deep.equal({ epoch: 3, claimant: 'x' })
      const cert = { container: 'web', epoch: 4, claimant: 'me', previousOwner: 'me', previousEpoch: 3, grants: [] }
      state.own('web', 4, cert)
      await state.save()
      expect(JSON.parse(await readFile(join(dir, 'failover.json'), 'utf8')).version).to.equal(2)
      const again = await FailoverState.open(dir)
      expect(again.peek('web')).to.deep.include({ epoch: 4, cert })
      again.release('web')
      expect(again.peek('web')?.cert).to.equal(undefined)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
