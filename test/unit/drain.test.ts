import { expect } from 'chai'
import { planDrain } from '../../control/drain.js'
import { DestinationUnavailableError, UnknownPeerError } from '../../protocol/errors.js'
import type { ContainerRow, PeerRow, PeerState } from '../../protocol/messages.js'

function peer (name: string, state: PeerState, containers: number | null, role: PeerRow['role'] = 'agent'): PeerRow {
  return { name, peerId: `id-${name}`, self: false, state, role, addrs: [], labels: {}, agentVersion: null, dockerVersion: null, containers, lastSeen: null, rttMs: null }
}
function container (name: string, state = 'running'): ContainerRow {
  return { name, id: `id-${name}`, image: 'img', state, status: state }
}

describe('goto drain: the plan', () => {
  const peers = [peer('a', 'alive', 4), peer('b', 'alive', 1), peer('c', 'alive', 2), peer('d', 'dead', 0), peer('op', 'alive', 0, 'operator')]

  it('spreads the running containers, fewest containers first, ties by name, containers in name order', () => {
    const plan = planDrain('a', peers, ['w4', 'w1', 'w3', 'w2'].map(n => container(n)))
    // b has 1, c has 2: b, then b and c tie at 2 (b by name), then c
    expect(plan.assignments).to.deep.equal([
      { container: 'w1', to: 'b' }, { container: 'w2', to: 'b' }, { container: 'w3', to: 'c' }, { container: 'w4', to: 'b' }
    ])
    expect(plan.left).to.deep.equal([])
  })

  it('never sends to the drained host, a dead member or an operator; lists what is not running as left', () => {
    const plan = planDrain('b', peers, [container('x'), container('old', 'exited'), container('p', 'paused')])
    expect(plan.assignments).to.deep.equal([{ container: 'x', to: 'c' }])
    expect(plan.left).to.deep.equal([{ container: 'old', state: 'exited' }, { container: 'p', state: 'paused' }])
  })

  it('refuses an unknown or dead host, and a host with no other alive member to receive', () => {
    expect(() => planDrain('zz', peers, [])).to.throw(UnknownPeerError, /no member named 'zz'/)
    expect(() => planDrain('d', peers, [])).to.throw(DestinationUnavailableError, /d is dead/)
    expect(() => planDrain('a', [peer('a', 'alive', 1), peer('b', 'suspect', 0)], [container('x')])).to.throw(DestinationUnavailableError, /no other alive member/)
    // nothing to move: an empty plan, not an error
    expect(planDrain('a', [peer('a', 'alive', 0)], []).assignments).to.deep.equal([])
  })
})
