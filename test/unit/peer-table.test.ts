import { expect } from 'chai'
import { PeerTable } from '../../agent/membership/peer-table.js'
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
})
