import { expect } from 'chai'
import { PeerTable, isVerifiedMember } from '../../agent/membership/peer-table.js'
import { meshView } from '../../agent/failover/consensus.js'
import type { MemberInfo } from '../../protocol/messages.js'

const timings = { suspectAfterMs: 1000, deadAfterMs: 3000 }

function info (peerId: string, name = peerId): MemberInfo {
  return { peerId, name, addrs: [`/ip4/10.0.0.${peerId.length}/tcp/4001`], labels: { provider: 'aws' }, agentVersion: '0.1.0', dockerVersion: '20.10.24', containers: 2, crlNumber: 1 }
}

describe('peer table', () => {
  let now: number
  let table: PeerTable
  beforeEach(() => {
    now = 1_000_000
    table = new PeerTable('self', timings, () => now)
  })

  it('marks a peer alive on contact, then suspect, then dead as silence grows', () => {
    expect(table.heard(info('a'), 1.5)).to.deep.include({ from: 'suspect', to: 'alive' })
    expect(table.get('a')).to.deep.include({ state: 'alive', rttMs: 1.5, dockerVersion: '20.10.24', containers: 2, lastSeen: now })
    now += 999
    expect(table.tick()).to.deep.equal([])
    now += 1
    expect(table.tick()).to.deep.equal([{ peerId: 'a', name: 'a', from: 'alive', to: 'suspect' }])
    now += 2000
    expect(table.tick()).to.deep.equal([{ peerId: 'a', name: 'a', from: 'suspect', to: 'dead' }])
  })

  it('brings a dead peer back to alive when it is heard again', () => {
    table.heard(info('a'), 1)
    now += 5000
    table.tick()
    expect(table.get('a')?.state).to.equal('dead')
    expect(table.heard(info('a'), 2)).to.deep.include({ from: 'dead', to: 'alive' })
  })

  it('lists second-hand peers as suspect until heard, and never passes them on', () => {
    expect(table.learn([{ peerId: 'b', name: 'b', addrs: ['/ip4/10.0.0.2/tcp/4001'] }])).to.have.length(1)
    expect(table.get('b')).to.deep.include({ state: 'suspect', lastSeen: null })
    expect(table.summaries()).to.deep.equal([])
    now += 3000
    table.tick()
    expect(table.get('b')?.state).to.equal('dead')
  })

  it('never adds itself and does not duplicate known peers', () => {
    table.heard(info('a'), 1)
    expect(table.learn([{ peerId: 'self', name: 'me', addrs: [] }, { peerId: 'a', name: 'a', addrs: [] }])).to.deep.equal([])
    expect(table.heard(info('self'), 1)).to.equal(undefined)
    expect(table.entries().map(e => e.peerId)).to.deep.equal(['a'])
  })

  it('passes on only peers heard directly and not dead', () => {
    table.heard(info('a'), 1)
    table.heard(info('bb'), 1)
    now += 3500
    table.heard(info('a'), 1)
    table.tick()
    expect(table.summaries().map(s => s.peerId)).to.deep.equal(['a'])
  })

  it('counts states and forgets removed peers', () => {
    table.heard(info('a'), 1)
    table.learn([{ peerId: 'b', name: 'b', addrs: ['/ip4/10.0.0.2/tcp/4001'] }])
    expect(table.counts()).to.deep.equal({ alive: 1, suspect: 1, dead: 0 })
    expect(table.remove('b')).to.equal(true)
    expect(table.byName('b')).to.equal(undefined)
  })

  it('finds a name by its alive entry first, then the most recently heard', () => {
    table.heard(info('old', 'aws-1'), 1)
    now += 5000
    table.heard(info('new', 'aws-1'), 1)
    table.tick()
    expect(table.byName('aws-1')?.peerId).to.equal('new')
  })

  it('forgets dead peers never heard directly at once, others after forgetAfterMs', () => {
    table.heard(info('a'), 1)
    table.learn([{ peerId: 'rumour', name: 'r', addrs: ['/ip4/10.0.0.9/tcp/4001'] }])
    now += 3000
    table.tick()
    expect(table.expired(60_000).map(e => e.peerId)).to.deep.equal(['rumour'])
    now += 60_000
    expect(table.expired(60_000).map(e => e.peerId).sort()).to.deep.equal(['a', 'rumour'])
  })

  it('learns at most `max` new peers from one exchange (known ones still gain addresses)', () => {
    table.learn([{ peerId: 'k', name: 'k', addrs: [] }])
    const added = table.learn([{ peerId: 'k', name: 'k', addrs: ['/ip4/10.0.0.1/tcp/4001'] }, ...['x', 'y', 'z'].map(p => ({ peerId: p, name: p, addrs: [] }))], 2)
    expect(added.map(e => e.peerId)).to.deep.equal(['x', 'y'])
    expect(table.get('k')?.addrs).to.deep.equal(['/ip4/10.0.0.1/tcp/4001'])
    expect(table.unverified().map(e => e.peerId)).to.deep.equal(['k', 'x', 'y'])
  })

  it('counts only verified members: heard from, or with a relayed certificate verified and in date', () => {
    table.heard(info('a'), 1)
    table.heard(info('b'), 1)
    table.learn(Array.from({ length: 40 }, (_, i) => ({ peerId: `ghost-${i}`, name: `ghost-${i}`, addrs: ['/ip4/10.0.0.9/tcp/4001'] })))
    expect(meshView(table)).to.deep.include({ members: 3, quorum: true })
    expect(isVerifiedMember(table.get('ghost-0')!, now)).to.equal(false)
    expect(isVerifiedMember(table.get('a')!, now)).to.equal(true)
    // A certificate relayed for a known rumour and for a new peer: both count until it expires.
    table.learn([{ peerId: 'ghost-0', name: 'ghost-0', addrs: [], verified: { pem: 'pem-0', notAfter: now + 1000 } }, { peerId: 'far', name: 'far', addrs: [], verified: { pem: 'pem-far', notAfter: now + 5000 } }])
    expect(table.verifiedMembers()).to.equal(5)
    now += 1000
    expect(table.verifiedMembers(), 'ghost-0\'s certificate expired').to.equal(4)
  })

  it('passes on at most `max` verified peers, those heard most recently, with certificates only where asked', () => {
    table.heard(info('a'), 1, { pem: 'pem-a', notAfter: now + 60_000 })
    now += 10
    table.heard(info('bb'), 1, { pem: 'pem-bb', notAfter: now + 60_000 })
    now += 10
    table.heard(info('ccc'), 1)
    table.learn([{ peerId: 'rumour', name: 'rumour', addrs: ['/ip4/10.0.0.9/tcp/4001'] }])
    expect(table.summaries(2).map(s => s.peerId)).to.deep.equal(['ccc', 'bb'])
    expect(table.summaries().map(s => s.peerId)).to.deep.equal(['a', 'bb', 'ccc'])
    expect(table.summaries(Infinity, id => id !== 'bb').map(s => s.cert)).to.deep.equal(['pem-a', undefined, undefined])
  })
})
