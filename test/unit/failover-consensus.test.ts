/**
 * The claim round (agent/failover/consensus.ts) with fake peers: each member is a real ClaimRound
 * over a real FailoverState in a temp dir, and the fake transport hands a claim straight to the
 * asked member's decide(), with an optional delay, silence or failure per member. Members hold
 * real CA-issued agent identities (test/fixtures/identities.ts), so every grant is really signed
 * and every certificate really verified.
 */
import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { ClaimRound, type ClaimPeers, type MeshView, type WonClaim } from '../../agent/failover/consensus.js'
import { EpochCertificates } from '../../agent/failover/certificates.js'
import { FailoverState } from '../../agent/failover/state.js'
import type { PeerEntry } from '../../agent/membership/peer-table.js'
import { createRootLogger } from '../../agent/log.js'
import type { ClaimReply, ClaimRequest, OwnedEntry } from '../../protocol/failover-messages.js'
import { verifyEpochCertificate } from '../../protocol/epoch-certs.js'
import { TakeoverRefusedError } from '../../protocol/errors.js'
import { Identities } from '../fixtures/identities.js'

const log = createRootLogger('error', {})
/** The dead owner every claim takes over from (at epoch 1 of every name it gossips). */
const OWNER = 'o'

type Behaviour = 'answer' | 'silent' | 'fail'

interface Member {
  id: string
  dir: string
  state: FailoverState
  /** Peers this member sees alive; any other one it sees dead. */
  alive: Set<string>
  round: ClaimRound
  behaviour: Behaviour
  /** Most ms an answer waits before being given (random), 0 for none. */
  jitterMs: number
}

let ids: Identities
/** Member name → its peer ID (every member, the owner and other names are real identities). */
const pids = new Map<string, string>()
function pid (name: string): string { return pids.get(name) ?? name }
function nameOf (peerId: string): string { return [...pids].find(([, p]) => p === peerId)?.[0] ?? peerId }

/** The names the owner gossips owning, at epoch 1. */
let ownerOwns: string[] = []

function entry (name: string, state: PeerEntry['state'] = 'alive', owned: OwnedEntry[] = []): PeerEntry {
  return {
    peerId: pid(name), name, addrs: [], labels: {}, agentVersion: null, dockerVersion: null, containers: null, lastSeen: 0, since: 0, rttMs: null, state, crlNumber: 0,
    failover: { owned, held: [] }
  }
}

/** The fake transport of claimant `from`: a claim reaches the asked member's decide(). */
class FakePeers implements ClaimPeers {
  /** Each reply given, with the grant the answering member had on disk at that moment. */
  readonly replies: Array<{ peer: string, reply: ClaimReply, onDisk: unknown }> = []

  constructor (private readonly from: string, private readonly members: Map<string, Member>) {}

  async ask (peer: PeerEntry, req: ClaimRequest, signal: AbortSignal): Promise<ClaimReply> {
    const m = this.members.get(nameOf(peer.peerId))
    if (m === undefined) throw new Error(`no member ${peer.peerId}`)
    if (m.jitterMs > 0) await delay(Math.random() * m.jitterMs, undefined, { signal })
    if (m.behaviour === 'silent') return await new Promise<never>(() => {}) // ignores the signal, too
    if (m.behaviour === 'fail') throw new Error('connection refused')
    const reply = await m.round.decide(req, pid(this.from))
    const onDisk = (await FailoverState.open(m.dir)).grant(req.name)
    this.replies.push({ peer: m.id, reply, onDisk })
    return reply
  }
}

describe('failover claim round (consensus) with fake peers', () => {
  let root: string
  let members: Map<string, Member>
  const transports = new Map<string, FakePeers>()

  /** The table of member `id`: the others, alive or dead as it sees them, the owner gossiping its names. */
  function tableOf (id: string, all: string[]): { get: (peerId: string) => PeerEntry | undefined, entries: () => PeerEntry[], verifiedMembers: () => number } {
    const entries = (): PeerEntry[] => [...all.filter(x => x !== id), OWNER].map(x => entry(x, m(id).alive.has(x) ? 'alive' : 'dead', x === OWNER ? ownerOwns.map(n => ({ name: n, epoch: 1 })) : []))
    return { entries, get: peerId => entries().find(e => e.peerId === peerId), verifiedMembers: () => entries().length + 1 }
  }

  /** Members `names`, each seeing every other one alive and the owner dead. */
  async function mesh (names: string[], opts: { claimTimeoutMs?: number } = {}): Promise<void> {
    members = new Map()
    for (const id of [...names, OWNER]) pids.set(id, (await ids.bundle(id)).peerId)
    for (const id of names) {
      const dir = await mkdtemp(join(root, `${id}-`))
      const state = await FailoverState.open(dir)
      const alive = new Set(names.filter(x => x !== id))
      const peers = new FakePeers(id, members)
      transports.set(id, peers)
      const signer = ids.signer(await ids.bundle(id))
      const round = new ClaimRound({ state, table: tableOf(id, names), selfId: pid(id), signer, certs: new EpochCertificates(ids.trust, log), peers, log, claimTimeoutMs: opts.claimTimeoutMs })
      members.set(id, { id, dir, state, alive, round, behaviour: 'answer', jitterMs: 0 })
    }
  }

  function m (id: string): Member { return members.get(id) as Member }

  /** `id`'s view: the members it sees alive, out of `known` members (the dead owner counted). */
  function view (id: string, known: number, alive = [...m(id).alive]): Pick<MeshView, 'members' | 'alive'> {
    return { members: known, alive: alive.map(x => entry(x)) }
  }

  async function claim (id: string, name: string, epoch: number, v: Pick<MeshView, 'members' | 'alive'>): Promise<number | Error> {
    try {
      const won = await m(id).round.claim(name, epoch, { peerId: pid(OWNER), epoch: 1 }, v)
      verifyEpochCertificate(won.cert, ids.trust) // whoever wins holds a certificate anybody verifies
      return won.epoch
    } catch (err) {
      return err as Error
    }
  }

  before(async function () {
    this.timeout(30_000)
    ids = await Identities.create(await mkdtemp(join(tmpdir(), 'goto-claim-ids-')))
  })

  beforeEach(async () => {
    ownerOwns = ['web', 'db', ...Array.from({ length: 60 }, (_x, i) => `web-${i}`)]
    root = await mkdtemp(join(tmpdir(), 'goto-claims-'))
    transports.clear()
  })

  afterEach(async () => {
    await rm(root, { recursive: true, force: true })
  })

  it('wins with a majority of the known members, its own grant counted', async () => {
    await mesh(['a', 'b', 'c', 'd']) // and the dead owner: 5 members, majority 3
    m('c').behaviour = 'fail'
    m('d').behaviour = 'fail'
    m('b').alive.add(OWNER) // b does not see the owner dead yet
    expect(await claim('a', 'web', 2, view('a', 5))).to.be.instanceOf(TakeoverRefusedError)
    m('b').alive.delete(OWNER)
    expect(await claim('a', 'web', 2, view('a', 5))).to.be.instanceOf(TakeoverRefusedError) // 2 of 3: still short
    m('c').behaviour = 'answer'
    expect(await claim('a', 'web', 2, view('a', 5))).to.equal(2)
    for (const id of ['a', 'b', 'c']) expect(m(id).state.grant('web')).to.deep.equal({ epoch: 2, claimant: pid('a') })
  })

  it('loses a split vote, and says how many votes it won', async () => {
    await mesh(['a', 'b', 'c', 'd', 'e']) // 6 members with the owner, majority 4
    m('d').alive.add(OWNER)
    m('e').alive.add(OWNER)
    const r = await claim('a', 'web', 2, view('a', 6))
    expect(r).to.be.instanceOf(TakeoverRefusedError)
    expect((r as Error).message).to.contain('won 3 of the 4 signed grants')
    // Refusals below the claimed epoch (they only see the owner alive) do not raise the floor.
    expect(m('a').round.nextEpoch('web')).to.equal(2)
  })

  it('never lets two claimants both win the same epoch, whatever the views and the order of answers', async function () {
    this.timeout(20_000)
    const ids = ['a', 'b', 'c', 'd', 'e'] // 6 members with the owner, majority 4
    await mesh(ids)
    for (const x of ids) m(x).jitterMs = 3
    let decided = 0
    for (let trial = 0; trial < 60; trial++) {
      const name = `web-${trial}`
      // Each claimant sees a random subset of the others alive (a partition, a slow heartbeat).
      const seen = (id: string): string[] => ids.filter(x => x !== id && Math.random() < 0.8)
      const claimants = trial % 3 === 0 ? ['a', 'b', 'c'] : ['a', 'b']
      const results = await Promise.all(claimants.map(async id => await claim(id, name, 2, view(id, 6, seen(id)))))
      const winners = results.filter(r => r === 2)
      expect(winners.length, `trial ${trial}: ${JSON.stringify(results.map(String))}`).to.be.at.most(1)
      decided += winners.length
      // A winner's majority is on disk: no member recorded another claimant at that epoch.
      const winner = claimants[results.indexOf(2)]
      if (winner !== undefined) {
        const grants = ids.map(x => m(x).state.grant(name)).filter(g => g?.epoch === 2)
        expect(grants.filter(g => g?.claimant === pid(winner)).length).to.be.at.least(4)
      }
    }
    expect(decided, 'some trials must have a winner, or the test proves nothing').to.be.greaterThan(0)
  })

  it('raises the floor past a higher epoch a member reports, so the next claim can win', async () => {
    await mesh(['a', 'b', 'c', 'd'])
    // b, c and d granted epoch 4 to x, a claimant nobody sees alive any more.
    for (const id of ['b', 'c', 'd']) m(id).state.setGrant('web', { epoch: 4, claimant: pid('x') })
    expect(m('a').round.nextEpoch('web')).to.equal(0)
    expect(await claim('a', 'web', 2, view('a', 5))).to.be.instanceOf(TakeoverRefusedError)
    expect(m('a').round.nextEpoch('web')).to.equal(5)
    expect(await claim('a', 'web', m('a').round.nextEpoch('web'), view('a', 5))).to.equal(5)
  })

  it('raises the floor when it has itself granted the epoch to another claimant', async () => {
    await mesh(['a', 'b', 'c', 'd'])
    m('a').state.setGrant('web', { epoch: 3, claimant: pid('b') })
    expect(m('a').round.nextEpoch('web')).to.equal(4) // past b's grant already
    const r = await claim('a', 'web', 3, view('a', 5))
    expect(r).to.be.instanceOf(TakeoverRefusedError)
    expect((r as Error).message).to.contain('does not grant epoch 3')
    expect(transports.get('a')?.replies, 'nobody is asked after our own refusal').to.deep.equal([])
    expect(m('a').round.nextEpoch('web')).to.equal(4)
  })

  it('persists every grant before it replies (our own before we ask anyone)', async () => {
    await mesh(['a', 'b', 'c'])
    // Our own grant is on disk by the time the first peer is asked.
    const asked: unknown[] = []
    const real = transports.get('a') as FakePeers
    const peers: ClaimPeers = {
      ask: async (peer, req, signal) => {
        asked.push((await FailoverState.open(m('a').dir)).grant(req.name))
        return await real.ask(peer, req, signal)
      }
    }
    const round = new ClaimRound({ state: m('a').state, table: tableOf('a', ['a', 'b', 'c']), selfId: pid('a'), signer: ids.signer(await ids.bundle('a')), certs: new EpochCertificates(ids.trust, log), peers, log })
    expect((await round.claim('web', 2, { peerId: pid(OWNER), epoch: 1 }, view('a', 4))).epoch).to.equal(2)
    const a = { epoch: 2, claimant: pid('a') }
    expect(asked).to.deep.equal([a, a])
    expect(real.replies.map(r => [r.peer, r.reply.granted, r.reply.epoch, r.onDisk])).to.have.deep.members([['b', true, 2, a], ['c', true, 2, a]])
  })

  it('counts a peer that does not answer in time as no vote, and does not wait for it longer', async () => {
    await mesh(['a', 'b', 'c', 'd'], { claimTimeoutMs: 100 }) // 5 members with the owner, majority 3
    m('d').behaviour = 'silent'
    let started = Date.now()
    expect(await claim('a', 'web', 2, view('a', 5))).to.equal(2) // a, b, c
    expect(Date.now() - started).to.be.below(2000)
    m('c').behaviour = 'silent'
    started = Date.now()
    const r = await claim('a', 'db', 2, view('a', 5))
    expect(r).to.be.instanceOf(TakeoverRefusedError)
    expect((r as Error).message).to.contain('won 2 of the 3')
    expect(Date.now() - started).to.be.at.least(90).and.below(2000)
  })

  it('counts no forged grant: a peer answering granted with a grant of another claim, or signed as another member', async () => {
    await mesh(['a', 'b', 'c', 'd']) // 5 members with the owner, majority 3
    const forge = (from: string, f: (r: ClaimReply) => ClaimReply): void => {
      const real = m(from).round
      const decide = real.decide.bind(real)
      real.decide = async (req, claimant, floor) => f(await decide(req, claimant, floor))
    }
    m('d').behaviour = 'fail'
    const cGrant = await m('c').round.decide({ op: 'claim', name: 'db', epoch: 2, previousOwner: pid(OWNER), previousEpoch: 1 }, pid('c'))
    forge('b', r => ({ ...r, grant: cGrant.grant })) // c's grant of another claim, passed off by b
    forge('c', r => ({ ...r, grant: r.grant === undefined ? undefined : { ...r.grant, grantor: pid('d') } })) // signed as d
    const r = await claim('a', 'web', 2, view('a', 5))
    expect(r).to.be.instanceOf(TakeoverRefusedError)
    expect((r as Error).message).to.contain('won 1 of the 3 signed grants')
  })

  it("refuses a claimant naming itself as previous owner while the owner is alive, at any epoch, and records nothing", async () => {
    await mesh(['a', 'b', 'c'])
    m('a').alive.add(OWNER) // a hears the owner alive, gossiping web at epoch 1
    for (const epoch of [2, 1e12]) {
      const reply = await m('a').round.decide({ op: 'claim', name: 'web', epoch, previousOwner: pid('b'), previousEpoch: 1 }, pid('b'))
      expect(reply).to.deep.include({ granted: false, epoch: 1 })
      expect(reply.grant).to.equal(undefined)
    }
    expect(m('a').state.grant('web')).to.equal(undefined)
    expect((await FailoverState.open(m('a').dir)).grant('web')).to.equal(undefined)
  })

  it('refuses an epoch that is not the highest known + 1, and learns the highest from a verified certificate a claim shows', async () => {
    await mesh(['a', 'b', 'c', 'd'])
    const req = { op: 'claim' as const, name: 'web', epoch: 7, previousOwner: pid(OWNER), previousEpoch: 1 }
    expect(await m('b').round.decide(req, pid('c'))).to.deep.include({ granted: false, epoch: 1 })
    // a wins epoch 2 with c and d; b misses the claim.
    const won: WonClaim = await m('a').round.claim('web', 2, { peerId: pid(OWNER), epoch: 1 }, view('a', 5, ['c', 'd']))
    // A certificate altered to a higher epoch teaches b nothing ...
    expect(await m('b').round.decide({ ...req, previous: { ...won.cert, epoch: 6 } }, pid('c'))).to.deep.include({ granted: false, epoch: 1 })
    // ... the real one does: b will not grant a takeover of the owner a took over from.
    const r = await m('b').round.decide({ ...req, epoch: 3, previous: won.cert }, pid('c'))
    expect(r).to.deep.include({ granted: false, epoch: 2 })
    expect(m('b').state.grant('web')).to.equal(undefined)
  })
})
