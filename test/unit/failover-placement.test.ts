import { expect } from 'chai'
import {
  judgeClaim, assignRestorers, compareVersions, failoverPossible, hasQuorum, isStale, majority, rendezvousRank, replicaHolders
} from '../../agent/failover/placement.js'
import { PROFILES, assertFailoverSafe } from '../../agent/timings.js'
import { parseClaimReply, parseFailoverGossip, parseFailoverRequest } from '../../protocol/failover-messages.js'
import { parseMemberInfo } from '../../protocol/messages.js'
import { ProtocolError } from '../../protocol/errors.js'

const peers = ['peer-a', 'peer-b', 'peer-c', 'peer-d', 'peer-e']

describe('failover placement and quorum (pure rules)', () => {
  it('ranks members the same way whatever order they are given in', () => {
    const r1 = rendezvousRank('web', peers)
    const r2 = rendezvousRank('web', [...peers].reverse())
    expect(r1).to.deep.equal(r2)
    expect(new Set(r1)).to.deep.equal(new Set(peers))
  })

  it('moves only the keys a removed member ranked first', () => {
    const names = Array.from({ length: 200 }, (_, i) => `c${i}`)
    const before = new Map(names.map(n => [n, replicaHolders(n, peers, 1)[0]]))
    const without = peers.filter(p => p !== 'peer-c')
    for (const n of names) {
      const after = replicaHolders(n, without, 1)[0]
      if (before.get(n) !== 'peer-c') expect(after, n).to.equal(before.get(n))
      else expect(after).to.not.equal('peer-c')
    }
  })

  it('spreads replica holders over the members', () => {
    const counts = new Map<string, number>()
    for (let i = 0; i < 500; i++) {
      const h = replicaHolders(`container-${i}`, peers, 1)[0]
      counts.set(h, (counts.get(h) ?? 0) + 1)
    }
    expect(counts.size).to.equal(5)
    for (const c of counts.values()) expect(c).to.be.within(50, 150)
  })

  it('picks K distinct holders, fewer when fewer members are alive', () => {
    expect(replicaHolders('web', peers, 2)).to.have.length(2)
    expect(new Set(replicaHolders('web', peers, 2)).size).to.equal(2)
    expect(replicaHolders('web', ['peer-a'], 2)).to.deep.equal(['peer-a'])
    expect(replicaHolders('web', [], 1)).to.deep.equal([])
    expect(replicaHolders('web', peers, 1)[0]).to.equal(replicaHolders('web', peers, 2)[0])
  })

  it('counts a majority of the known members, this host included', () => {
    expect([1, 2, 3, 4, 5, 6].map(majority)).to.deep.equal([1, 2, 2, 3, 3, 4])
    expect(hasQuorum(2, 3)).to.equal(true)
    expect(hasQuorum(1, 3)).to.equal(false)
    expect(hasQuorum(3, 5)).to.equal(true)
    expect(hasQuorum(2, 5)).to.equal(false)
    expect(hasQuorum(2, 4)).to.equal(false)
  })

  it('allows failover only with three members or more', () => {
    expect(failoverPossible(1)).to.equal(false)
    expect(failoverPossible(2)).to.equal(false)
    expect(failoverPossible(3)).to.equal(true)
  })

  it('orders snapshots by epoch, then sequence; a copy is stale only against a higher epoch', () => {
    expect(compareVersions({ epoch: 2, seq: 1 }, { epoch: 1, seq: 99 })).to.be.greaterThan(0)
    expect(compareVersions({ epoch: 1, seq: 3 }, { epoch: 1, seq: 4 })).to.be.lessThan(0)
    expect(compareVersions({ epoch: 1, seq: 3 }, { epoch: 1, seq: 3 })).to.equal(0)
    expect(isStale(1, 2)).to.equal(true)
    expect(isStale(2, 2)).to.equal(false)
    expect(isStale(3, 2)).to.equal(false)
  })

  it('assigns each orphan to one holder of its newest snapshot, spreading them over the survivors', () => {
    const orphans = ['a', 'b', 'c', 'd', 'e', 'f'].map(name => ({ name, holders: ['peer-a', 'peer-b', 'peer-c'] }))
    const assigned = assignRestorers(orphans)
    expect(assigned.size).to.equal(6)
    const load = new Map<string, number>()
    for (const h of assigned.values()) load.set(h, (load.get(h) ?? 0) + 1)
    expect([...load.values()].sort()).to.deep.equal([2, 2, 2])
    // The same answer from every member, whatever order it saw the orphans and holders in.
    const again = assignRestorers([...orphans].reverse().map(o => ({ ...o, holders: [...o.holders].reverse() })))
    expect([...again.entries()].sort()).to.deep.equal([...assigned.entries()].sort())
    // Orphans that have one holder only leave the others to the rest.
    const mixed = assignRestorers([
      { name: 'a', holders: ['peer-a', 'peer-b'] }, { name: 'b', holders: ['peer-a'] }, { name: 'c', holders: ['peer-a'] }
    ])
    expect([mixed.get('a'), mixed.get('b'), mixed.get('c')]).to.deep.equal(['peer-b', 'peer-a', 'peer-a'])
    // Only holders restore.
    expect(assignRestorers([{ name: 'x', holders: ['peer-e'] }]).get('x')).to.equal('peer-e')
    expect(assignRestorers([{ name: 'x', holders: [] }]).has('x')).to.equal(false)
  })
})

describe('takeover claims (the exactly-once rule)', () => {
  const dead = new Set(['owner'])
  /** The owner, dead, gossiped owning the container at epoch 1. */
  const owner = { peerId: 'owner', epoch: 1, shown: true, dead: true }
  const ctx = (more: Partial<Parameters<typeof judgeClaim>[2]> = {}): Parameters<typeof judgeClaim>[2] =>
    ({ self: 'me', owners: [owner], certified: 0, isDead: p => dead.has(p), ...more })
  const takeover = { epoch: 2, previousOwner: 'owner', previousEpoch: 1 }
  const granted = (v: { granted: boolean }): boolean => v.granted

  it('grants a takeover from an owner this member sees dead, and only then', () => {
    expect(judgeClaim(takeover, 'r1', ctx())).to.deep.equal({ granted: true, epoch: 2 })
    expect(granted(judgeClaim(takeover, 'r1', ctx({ owners: [{ ...owner, dead: false }], isDead: () => false })))).to.equal(false)
    expect(granted(judgeClaim({ ...takeover, previousOwner: 'me' }, 'r1', ctx()))).to.equal(false)
    // A previous owner it never heard own the container: nothing shows there is anything to take over.
    expect(granted(judgeClaim({ ...takeover, previousOwner: 'unknown' }, 'r1', ctx({ isDead: () => true })))).to.equal(false)
    // ... nor one that owned it at another epoch than claimed.
    expect(granted(judgeClaim({ ...takeover, epoch: 3, previousEpoch: 2 }, 'r1', ctx()))).to.equal(false)
  })

  it('grants only the highest known epoch + 1: no epoch can be burnt far ahead', () => {
    expect(granted(judgeClaim({ ...takeover, epoch: 1e12 }, 'r1', ctx()))).to.equal(false)
    expect(judgeClaim({ ...takeover, epoch: 3 }, 'r1', ctx())).to.deep.include({ granted: false, epoch: 1 })
    // A verified certificate of epoch 4 (shown by the claim or seen before): 5 it is, from its owner.
    const at4 = { owners: [{ ...owner, epoch: 4 }], certified: 4 }
    expect(granted(judgeClaim({ ...takeover, epoch: 5, previousEpoch: 4 }, 'r1', ctx(at4)))).to.equal(true)
    expect(granted(judgeClaim({ ...takeover, previousEpoch: 4 }, 'r1', ctx(at4)))).to.equal(false)
    // ... and a takeover of an ownership older than a certificate shows is refused.
    expect(granted(judgeClaim({ ...takeover, epoch: 5 }, 'r1', ctx({ certified: 4 })))).to.equal(false)
    // Unshown epochs (no valid certificate) of alive members raise nothing.
    const liar = { peerId: 'liar', epoch: 999999, shown: false, dead: false }
    expect(judgeClaim(takeover, 'r1', ctx({ owners: [owner, { ...liar, epoch: 0 }] })).granted).to.equal(true)
    expect(judgeClaim({ ...takeover, epoch: 1000000 }, 'r1', ctx({ owners: [owner, liar] })).granted).to.equal(false)
    // A dead liar's unshown epoch does not beat a live owner that shows its own.
    const live = { peerId: 'live', epoch: 1, shown: true, dead: false }
    const deadLiar = { ...liar, dead: true }
    dead.add('liar')
    try {
      expect(granted(judgeClaim({ epoch: 1000000, previousOwner: 'liar', previousEpoch: 999999 }, 'r1', ctx({ owners: [live, deadLiar] })))).to.equal(false)
      expect(granted(judgeClaim({ epoch: 1000000, previousOwner: 'liar', previousEpoch: 999999 }, 'r1', ctx({ owners: [deadLiar] }))), 'alone, a dead member is taken over').to.equal(true)
    } finally {
      dead.delete('liar')
    }
  })

  it('refuses a claimant naming itself as previous owner while the real owner is alive, at any epoch', () => {
    const real = { peerId: 'real', epoch: 1, shown: true, dead: false }
    for (const epoch of [2, 3, 1e12]) {
      expect(granted(judgeClaim({ epoch, previousOwner: 'rogue', previousEpoch: 1 }, 'rogue', ctx({ owners: [real], isDead: () => false })))).to.equal(false)
      expect(granted(judgeClaim({ epoch, previousOwner: 'rogue', previousEpoch: 0 }, 'rogue', ctx({ owners: [real], isDead: () => false })))).to.equal(false)
    }
    // Nor when nobody is known to own it: the claimant must be shown to be its owner.
    expect(granted(judgeClaim({ epoch: 2, previousOwner: 'rogue', previousEpoch: 1 }, 'rogue', ctx({ owners: [] })))).to.equal(false)
    // Even with the real owner dead, a self-named claim is no takeover.
    expect(granted(judgeClaim({ epoch: 2, previousOwner: 'rogue', previousEpoch: 1 }, 'rogue', ctx()))).to.equal(false)
  })

  it('grants one epoch to one claimant: a second claimant of the same epoch is refused, the same one again is not', () => {
    const g = ctx({ grant: { epoch: 2, claimant: 'r1' } })
    expect(judgeClaim(takeover, 'r2', g)).to.deep.include({ granted: false, epoch: 2 })
    expect(granted(judgeClaim(takeover, 'r1', g))).to.equal(true)
    expect(granted(judgeClaim({ ...takeover, epoch: 1 }, 'r2', g))).to.equal(false)
  })

  it('refuses a later takeover of the same ownership while the first claimant lives, allows it once that one is dead', () => {
    const g = { grant: { epoch: 2, claimant: 'r1' } }
    expect(granted(judgeClaim({ ...takeover, epoch: 3 }, 'r2', ctx(g)))).to.equal(false)
    expect(granted(judgeClaim({ ...takeover, epoch: 3 }, 'r2', ctx({ ...g, isDead: p => p === 'owner' || p === 'r1' })))).to.equal(true)
  })

  it('grants a fenced owner reclaiming its own shown ownership when nobody took over, refuses it once another did', () => {
    const old = { peerId: 'old', epoch: 1, shown: true, dead: false }
    const reclaim = { epoch: 2, previousOwner: 'old', previousEpoch: 1 }
    expect(granted(judgeClaim(reclaim, 'old', ctx({ owners: [old] })))).to.equal(true)
    expect(granted(judgeClaim({ ...reclaim, epoch: 3 }, 'old', ctx({ owners: [old], grant: { epoch: 2, claimant: 'r1' }, isDead: () => false })))).to.equal(false)
    expect(granted(judgeClaim({ ...reclaim, epoch: 4 }, 'old', ctx({ owners: [old], grant: { epoch: 3, claimant: 'me' }, ownEpoch: 3 })))).to.equal(false)
    // A shown owner above it (r1 at a certified 2, dead or not) means it was taken over.
    expect(granted(judgeClaim({ ...reclaim, epoch: 3 }, 'old', ctx({ owners: [old, { peerId: 'r1', epoch: 2, shown: true, dead: true }] })))).to.equal(false)
  })

  it('never grants another member what this member owns at that epoch or higher', () => {
    expect(granted(judgeClaim({ epoch: 4, previousOwner: 'owner', previousEpoch: 3 }, 'r1', ctx({ ownEpoch: 3, owners: [{ ...owner, epoch: 3 }] })))).to.equal(false)
  })
})

describe('failover timings', () => {
  for (const [name, t] of Object.entries(PROFILES)) {
    it(`profile ${name} fences before the majority may restore, and a short pause fences nothing`, () => {
      expect(() => { assertFailoverSafe(t) }).to.not.throw()
    })
  }

  it('refuses a profile that would fence too late', () => {
    expect(() => { assertFailoverSafe({ ...PROFILES.test, fenceAfterMs: 2900 }) }).to.throw(RangeError)
    expect(() => { assertFailoverSafe({ ...PROFILES.test, fenceAfterMs: 500 }) }).to.throw(RangeError)
  })
})

describe('failover messages', () => {
  it('parses gossip, claims and protect orders, and refuses bad ones', () => {
    expect(parseFailoverGossip({ owned: [{ name: 'web', epoch: 2 }], held: [{ name: 'db', owner: 'p', epoch: 1, seq: 7 }] }))
      .to.deep.equal({ owned: [{ name: 'web', epoch: 2 }], held: [{ name: 'db', owner: 'p', epoch: 1, seq: 7 }] })
    expect(parseFailoverGossip(undefined)).to.equal(undefined)
    expect(() => parseFailoverGossip({ owned: [{ name: 'web', epoch: -1 }] })).to.throw(ProtocolError)
    expect(() => parseFailoverGossip({ owned: new Array(600).fill({ name: 'x', epoch: 1 }) })).to.throw(ProtocolError)
    expect(parseFailoverRequest({ op: 'claim', name: 'web', epoch: 3, previousOwner: 'p', previousEpoch: 2 })).to.deep.equal({ op: 'claim', name: 'web', epoch: 3, previousOwner: 'p', previousEpoch: 2 })
    expect(parseFailoverRequest({ op: 'protect', container: 'web' })).to.deep.equal({ op: 'protect', container: 'web' })
    expect(() => parseFailoverRequest({ op: 'steal', name: 'web' })).to.throw(ProtocolError)
    expect(() => parseFailoverRequest({ op: 'claim', name: 'web', epoch: 1.5, previousOwner: 'p', previousEpoch: 1 })).to.throw(ProtocolError)
    expect(() => parseFailoverRequest({ op: 'claim', name: 'web', epoch: 2, previousOwner: 'p' })).to.throw(ProtocolError)
    expect(parseClaimReply({ granted: true, epoch: 3 })).to.deep.equal({ granted: true, epoch: 3 })
  })

  it('carries gossip in a heartbeat member and leaves it out when absent', () => {
    const base = { name: 'a', peerId: '12D3KooWGRxsmDp5h5LmbzQ5hfZmRQ6SpLpTg4VKuXdeeqNVpyBT', addrs: [], labels: {}, agentVersion: '0.1.0', dockerVersion: null, containers: 0, crlNumber: 0 }
    expect(parseMemberInfo(base)).to.not.have.property('failover')
    expect(parseMemberInfo({ ...base, failover: { owned: [], held: [] } }).failover).to.deep.equal({ owned: [], held: [] })
  })
})
