/**
 * Fencing and stale copies (agent/failover/fencing.ts) with a fake clock, a real PeerTable and
 * FailoverState, and a minimal fake engine that only records the calls it gets. Epochs above 1 are
 * shown by real certificates (signed by CA-issued identities) and verified as the agent does.
 */
import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Fencing, highestAliveOwner } from '../../agent/failover/fencing.js'
import { FailoverState } from '../../agent/failover/state.js'
import { meshView, type ClaimRound } from '../../agent/failover/consensus.js'
import { EpochCertificates } from '../../agent/failover/certificates.js'
import type { EpochCertificate } from '../../protocol/epoch-certs.js'
import { certify, Identities } from '../fixtures/identities.js'
import { PeerTable } from '../../agent/membership/peer-table.js'
import { PROFILES } from '../../agent/timings.js'
import { createRootLogger } from '../../agent/log.js'
import type { MemberInfo } from '../../protocol/messages.js'
import type { FailoverGossip } from '../../protocol/failover-messages.js'
import { ContainerNotFoundError, TakeoverRefusedError } from '../../protocol/errors.js'

const timings = PROFILES.test
const log = createRootLogger('error', {})

function member (peerId: string, failover?: FailoverGossip): MemberInfo {
  return { peerId, name: peerId, addrs: [], labels: {}, agentVersion: '0.1.0', dockerVersion: null, containers: 0, crlNumber: 0, failover }
}

/** Just the engine calls fencing makes, recorded; `missing` containers answer ContainerNotFoundError. */
class FakeDocker {
  readonly calls: string[] = []
  readonly missing = new Set<string>()

  async stop (id: string, opts: { timeoutS: number }): Promise<void> {
    this.calls.push(`stop ${id} ${opts.timeoutS}`)
    if (this.missing.has(id)) throw new ContainerNotFoundError(`no container ${id}`)
  }

  async rename (id: string, name: string): Promise<void> {
    this.calls.push(`rename ${id} ${name}`)
  }

  async start (id: string): Promise<void> {
    this.calls.push(`start ${id}`)
  }
}

describe('failover fencing and stale copies (fake clock, fake engine)', () => {
  let dir: string
  let now: number
  let table: PeerTable
  let state: FailoverState
  let docker: FakeDocker
  let busy: Set<string>
  let forgotten: string[]
  let claims: Array<{ name: string, epoch: number }>
  let claimResult: (epoch: number) => Promise<number>
  let fencing: Fencing
  let ids: Identities
  /** b's certificate of web at `epoch`, granted by g1 and g2 of a 3-member mesh. */
  const certOfB = async (epoch: number, grantors = ['g1', 'g2']): Promise<EpochCertificate> =>
    await certify(ids, { container: 'web', epoch, claimant: 'b', previousOwner: 'self', previousEpoch: epoch - 1 }, grantors, 3)

  before(async function () {
    this.timeout(30_000)
    ids = await Identities.create(await mkdtemp(join(tmpdir(), 'goto-fencing-ids-')))
  })

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-fencing-'))
    now = 1_000_000
    table = new PeerTable('self', timings, () => now)
    state = await FailoverState.open(dir)
    docker = new FakeDocker()
    busy = new Set()
    forgotten = []
    claims = []
    claimResult = async epoch => epoch
    const fakeClaims: Pick<ClaimRound, 'claim' | 'nextEpoch'> = {
      claim: async (name, epoch) => {
        claims.push({ name, epoch })
        const won = await claimResult(epoch)
        return { epoch: won, cert: { container: name, epoch: won, claimant: 'self', previousOwner: 'self', previousEpoch: epoch - 1, grants: [] } }
      },
      nextEpoch: () => 0
    }
    fencing = new Fencing({
      docker, table, state, claims: fakeClaims, certs: new EpochCertificates(ids.trust, log), selfId: 'self', timings, now: () => now, busy, metrics: { snapshotForgotten: name => { forgotten.push(name) } }, log
    })
    fencing.armAt(now)
    state.container('web').epoch = 1
    await state.save()
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  /** Hears `ids` now; the table's states are re-derived from the clock first. */
  function hear (...ids: string[]): void {
    for (const id of ids) table.heard(member(id), 1)
    table.tick()
  }

  it('fences once fenceAfterMs has passed without a majority heard, not a millisecond before', async () => {
    hear('b', 'c')
    now += timings.fenceAfterMs - 1
    expect(fencing.fence(now).names).to.deep.equal([])
    expect(docker.calls).to.deep.equal([])
    now += 1
    const fenced = fencing.fence(now)
    expect(fenced.names).to.deep.equal(['web'])
    await fenced.settled
    expect(docker.calls).to.deep.equal([`stop web ${timings.fenceStopS}`])
    // Persisted before the engine was asked, so a restarted agent remembers it is fenced.
    expect((await FailoverState.open(dir)).peek('web')).to.deep.include({ epoch: 1, fenced: true })
    // Fenced once: the next tick does not stop it again.
    expect(fencing.fence(now + 1000).names).to.deep.equal([])
    expect(docker.calls).to.have.length(1)
  })

  it('does not fence while a majority is heard within fenceAfterMs', async () => {
    hear('b', 'c', 'd', 'e') // 5 members, majority 3
    now += timings.fenceAfterMs - 1
    hear('b') // self and b: 2, and c heard just in time
    now += 1
    hear('c')
    expect(fencing.fence(now).names, 'self, b and c: 3 of 5').to.deep.equal([])
    now += timings.fenceAfterMs - 2
    expect(fencing.fence(now).names, 'b and c still heard within fenceAfterMs').to.deep.equal([])
    now += 1
    const fenced = fencing.fence(now)
    expect(fenced.names, 'b fell out of the window: 2 of 5').to.deep.equal(['web'])
    await fenced.settled
  })

  it('does not fence before fenceAfterMs has passed since the agent started, heard or not', async () => {
    now += 60_000
    // Never heard, but with certificates a member relayed and this agent verified: they count.
    const verified = { pem: 'relayed', notAfter: now + 3_600_000 }
    table.learn([{ peerId: 'b', name: 'b', addrs: [], verified }, { peerId: 'c', name: 'c', addrs: [], verified }])
    fencing.armAt(now)
    now += timings.fenceAfterMs - 1
    expect(fencing.fence(now).names).to.deep.equal([])
    now += 1
    const fenced = fencing.fence(now)
    expect(fenced.names).to.deep.equal(['web'])
    await fenced.settled
  })

  it('counts only verified members: made-up peers learned second-hand never make it fence', async () => {
    hear('b', 'c')
    table.learn(Array.from({ length: 40 }, (_, i) => ({ peerId: `ghost-${i}`, name: `ghost-${i}`, addrs: ['/ip4/10.0.0.9/tcp/4001'] })))
    now += timings.fenceAfterMs - 1
    hear('b', 'c')
    now += timings.fenceAfterMs - 1
    expect(fencing.fence(now).names, 'self, b and c of three verified members').to.deep.equal([])
    expect(docker.calls).to.deep.equal([])
  })

  it('never fences with fewer than three members', async () => {
    hear('b')
    now += 10 * timings.fenceAfterMs
    table.tick()
    expect(fencing.fence(now).names, 'two members, the other unheard').to.deep.equal([])
    hear('c')
    now += 10 * timings.fenceAfterMs
    const fenced = fencing.fence(now)
    expect(fenced.names, 'three members, neither heard').to.deep.equal(['web'])
    await fenced.settled
  })

  it('changes nothing for a higher epoch gossiped without a valid certificate', async () => {
    const forged = await certOfB(3)
    forged.grants[1].sig = forged.grants[0].sig // g2's grant signed by nobody
    const cases: FailoverGossip[] = [
      { owned: [{ name: 'web', epoch: 999999 }], held: [] }, // no certificate at all
      { owned: [{ name: 'web', epoch: 3, cert: forged }], held: [] },
      { owned: [{ name: 'web', epoch: 3, cert: await certOfB(3, ['g1']) }], held: [] }, // 1 grant of 3 members
      { owned: [{ name: 'web', epoch: 4, cert: await certOfB(3) }], held: [] }, // a certificate of another epoch
      { owned: [{ name: 'web', epoch: 3, cert: { ...await certOfB(3), claimant: 'c' } }], held: [] } // of another claimant
    ]
    for (const gossip of cases) {
      table.heard(member('b', gossip), 1)
      hear('c')
      expect(highestAliveOwner('web', meshView(table), new EpochCertificates(ids.trust, log))).to.deep.equal(undefined)
      await fencing.dropStale(meshView(table))
    }
    expect(docker.calls).to.deep.equal([])
    expect(state.peek('web')?.epoch).to.equal(1)
  })

  it('retires a stale copy when an alive member shows it owns the container at a higher epoch', async () => {
    table.heard(member('b', { owned: [{ name: 'web', epoch: 2, cert: await certOfB(2) }], held: [] }), 1)
    hear('c')
    const view = meshView(table)
    expect(highestAliveOwner('web', view, new EpochCertificates(ids.trust, log))).to.deep.equal({ name: 'b', peerId: 'b', epoch: 2 })
    const retiring = fencing.dropStale(view)
    expect(busy.has('web'), 'busy while it is being retired').to.equal(true)
    await retiring
    expect(busy.size).to.equal(0)
    expect(docker.calls).to.deep.equal([`stop web ${timings.fenceStopS}`, `rename web web.stale-e1-${now.toString(36)}`])
    expect(state.peek('web')?.epoch).to.equal(undefined)
    expect((await FailoverState.open(dir)).peek('web')?.epoch).to.equal(undefined)
    expect(forgotten).to.deep.equal(['web'])
  })

  it('keeps its copy when the other owner is at the same or a lower epoch, or is not alive', async () => {
    state.container('web').epoch = 2
    table.heard(member('b', { owned: [{ name: 'web', epoch: 2 }], held: [] }), 1)
    table.heard(member('c', { owned: [{ name: 'web', epoch: 1 }], held: [] }), 1)
    await fencing.dropStale(meshView(table))
    table.heard(member('d', { owned: [{ name: 'web', epoch: 3 }], held: [] }), 1)
    now += timings.deadAfterMs
    table.heard(member('b'), 1)
    table.tick() // d is dead now: its word does not count
    await fencing.dropStale(meshView(table))
    expect(docker.calls).to.deep.equal([])
    expect(state.peek('web')?.epoch).to.equal(2)
  })

  it('retires a stale copy even if it is gone from the engine already', async () => {
    docker.missing.add('web')
    table.heard(member('b', { owned: [{ name: 'web', epoch: 5, cert: await certOfB(5) }], held: [] }), 1)
    await fencing.dropStale(meshView(table))
    expect(state.peek('web')?.epoch).to.equal(undefined)
  })

  it('unfences with a won claim at the next epoch and starts the container again', async () => {
    state.container('web').fenced = true
    hear('b', 'c')
    await fencing.unfence(meshView(table))
    expect(claims).to.deep.equal([{ name: 'web', epoch: 2 }])
    expect(docker.calls).to.deep.equal(['start web'])
    const rec = (await FailoverState.open(dir)).peek('web')
    expect(rec?.epoch).to.equal(2)
    expect(rec?.fenced).to.equal(undefined)
  })

  it('stays fenced when the claim is refused, and leaves a container owned higher to dropStale', async () => {
    state.container('web').fenced = true
    claimResult = async () => { throw new TakeoverRefusedError('no majority') }
    hear('b', 'c')
    await fencing.unfence(meshView(table))
    expect(docker.calls).to.deep.equal([])
    expect(state.peek('web')).to.deep.include({ epoch: 1, fenced: true })
    table.heard(member('b', { owned: [{ name: 'web', epoch: 1 }], held: [] }), 1)
    claims = []
    await fencing.unfence(meshView(table))
    expect(claims).to.deep.equal([])
  })
})
