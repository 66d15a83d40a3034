import { expect } from 'chai'
import { circuitRelayAddr, circuitRelayOf, parseAgentMultiaddr, peerAddr } from '../../protocol/multiaddr.js'
import { ConfigError } from '../../protocol/errors.js'
import { multiaddr } from '@multiformats/multiaddr'

const RELAY = '12D3KooWDd1FYZtUxJrvPtXDoafZ24eHWvWsiaHM4o45D83eZLSU'
const AGENT = '12D3KooWNAsi3MSnsCvzh4saWm1a1escjQgnb3E7cPYzgzCgh5Du'
const CIRCUIT = `/ip4/10.0.0.5/tcp/4001/p2p/${RELAY}/p2p-circuit`

describe('multiaddrs of agents, direct and relayed', () => {
  it('peerAddr appends the target to a relayed address, which already holds the relay\'s /p2p/', () => {
    expect(peerAddr(CIRCUIT, AGENT).toString()).to.equal(`${CIRCUIT}/p2p/${AGENT}`)
    expect(peerAddr('/ip4/10.0.0.6/tcp/4001', AGENT).toString()).to.equal(`/ip4/10.0.0.6/tcp/4001/p2p/${AGENT}`)
    expect(peerAddr(`/ip4/10.0.0.6/tcp/4001/p2p/${AGENT}`, AGENT).toString()).to.equal(`/ip4/10.0.0.6/tcp/4001/p2p/${AGENT}`)
    expect(peerAddr(`${CIRCUIT}/p2p/${AGENT}`, AGENT).toString()).to.equal(`${CIRCUIT}/p2p/${AGENT}`)
  })

  it('finds the relay of a relayed address, and nothing in a direct one', () => {
    expect(circuitRelayOf(multiaddr(`${CIRCUIT}/p2p/${AGENT}`))).to.equal(RELAY)
    expect(circuitRelayOf(multiaddr(`/ip4/10.0.0.6/tcp/4001/p2p/${AGENT}`))).to.equal(undefined)
    expect(circuitRelayAddr(multiaddr(`${CIRCUIT}/p2p/${AGENT}`))?.toString()).to.equal(`/ip4/10.0.0.5/tcp/4001/p2p/${RELAY}`)
    expect(circuitRelayAddr(multiaddr('/ip4/10.0.0.6/tcp/4001'))).to.equal(undefined)
  })

  it('--agent takes a direct or a relayed agent address and refuses a half one with a ConfigError', () => {
    expect(parseAgentMultiaddr('--agent', '/ip4/10.0.0.6/tcp/4001').toString()).to.equal('/ip4/10.0.0.6/tcp/4001')
    expect(parseAgentMultiaddr('--agent', `${CIRCUIT}/p2p/${AGENT}`).toString()).to.equal(`${CIRCUIT}/p2p/${AGENT}`)
    for (const bad of [CIRCUIT, `/ip4/10.0.0.5/tcp/4001/p2p-circuit/p2p/${AGENT}`, `${CIRCUIT}/p2p/${AGENT}/p2p-circuit/p2p/${AGENT}`, '/ip4/10.0.0.5/udp/1/p2p-circuit']) {
      expect(() => parseAgentMultiaddr('--agent', bad), bad).to.throw(ConfigError, /--agent/)
    }
  })
})
