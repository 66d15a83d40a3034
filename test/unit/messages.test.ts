import { expect } from 'chai'
import { parseHeartbeatRequest, parseAgentStatus, parsePeerRows } from '../../protocol/messages.js'
import { ProtocolError } from '../../protocol/errors.js'

const ID = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
const member = { name: 'aws-1', peerId: ID, addrs: ['/ip4/10.0.0.1/tcp/4001'], labels: {}, agentVersion: '0.1.0', dockerVersion: null, containers: null, crlNumber: 1 }

describe('message checks', () => {
  it('accepts a well-formed heartbeat', () => {
    const req = parseHeartbeatRequest({ from: member, members: [{ peerId: ID, name: 'aws-1', addrs: [] }], rttMs: 1.5 })
    expect(req.from.name).to.equal('aws-1')
    expect(req.rttMs).to.equal(1.5)
  })

  it('refuses peer IDs and addresses that could not be dialled', () => {
    expect(() => parseHeartbeatRequest({ from: member, members: [{ peerId: 'not-a-peer', name: 'x', addrs: [] }] })).to.throw(ProtocolError, 'peer ID')
    expect(() => parseHeartbeatRequest({ from: { ...member, peerId: 42 }, members: [] })).to.throw(ProtocolError)
    expect(() => parseHeartbeatRequest({ from: { ...member, addrs: ['10.0.0.1:4001'] }, members: [] })).to.throw(ProtocolError, 'multiaddr')
  })

  it('refuses oversized lists and wrong types', () => {
    expect(() => parseHeartbeatRequest({ from: member, members: new Array(2000).fill({ peerId: ID, name: 'x', addrs: [] }) })).to.throw(ProtocolError)
    expect(() => parseHeartbeatRequest({ from: { ...member, labels: { a: 1 } }, members: [] })).to.throw(ProtocolError)
    expect(() => parseHeartbeatRequest(null)).to.throw(ProtocolError)
  })

  it('checks replies the CLI prints', () => {
    expect(() => parsePeerRows([{ ...member, state: 'sleepy', self: false, role: 'agent', lastSeen: null, rttMs: null }])).to.throw(ProtocolError, 'state')
    expect(() => parseAgentStatus({ name: 'x', peerId: ID, version: '1', uptimeS: 1, labels: {}, docker: { error: 'down' }, containers: 'none', peers: {} })).to.throw(ProtocolError, 'containers')
    const s = parseAgentStatus({ name: 'x', peerId: ID, version: '1', uptimeS: 1, labels: {}, docker: { error: 'down' }, containers: [], peers: { alive: 2 } })
    expect(s.peers).to.deep.equal({ alive: 2, suspect: 0, dead: 0 })
  })
})
