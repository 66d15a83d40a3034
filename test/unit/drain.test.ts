import { expect } from 'chai'
import { planDrain, renderDrain } from '../../control/drain.js'
import { DestinationUnavailableError, UnknownPeerError } from '../../protocol/errors.js'
import type { ContainerRow, PeerRow, PeerState } from '../../protocol/messages.js'

function peer (name: string, state: PeerState, containers: number | null, role: PeerRow['role'] = 'agent'): PeerRow {
  return { name, peerId: `id-${name}`, self: false, state, role, addrs: [], labels: {}, agentVersion: null, dockerVersion: null, containers, lastSeen: null, rttMs: null }
}
function container (name: string, state = 'running', project?: string): ContainerRow {
  return { name, id: `id-${name}`, image: 'img', state, status: state, ...project === undefined ? {} : { project } }
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

  it('keeps a compose project together: one move to one member, counted there as its containers', () => {
    const rows = [container('solo'), container('shop-web-1', 'running', 'shop'), container('shop-db-1', 'running', 'shop'), container('shop-app-1', 'running', 'shop'), container('zz')]
    const plan = planDrain('a', peers, rows)
    // b has 1, c has 2: the project (3) to b (→ 4), solo to c (→ 3), zz to c (3 < 4)
    expect(plan.assignments).to.deep.equal([
      { container: 'shop', to: 'b', project: true, containers: ['shop-app-1', 'shop-db-1', 'shop-web-1'] },
      { container: 'solo', to: 'c' },
      { container: 'zz', to: 'c' }
    ])
    // a stopped member stays (listed); the project's move then refuses it, as a whole
    const partial = planDrain('a', peers, [container('p-db-1', 'exited', 'p'), container('p-web-1', 'running', 'p')])
    expect(partial.assignments).to.deep.equal([{ container: 'p', to: 'b', project: true, containers: ['p-web-1'] }])
    expect(partial.left).to.deep.equal([{ container: 'p-db-1', state: 'exited' }])
  })

  it('shows a project grouped, in the plan, its move and the outcome, counting its containers', () => {
    let out = ''
    const to = (x: string): void => { out += x }
    const shop = { container: 'shop', to: 'b', project: true as const, containers: ['shop-db-1', 'shop-web-1'] }
    renderDrain({ event: 'drain-plan', plan: { host: 'a', assignments: [shop, { container: 'solo', to: 'c' }], left: [] } }, to, to)
    renderDrain({ event: 'drain-move', container: 'shop', to: 'b', index: 1, of: 2, project: true }, to, to)
    renderDrain({ event: 'drained', host: 'a', dryRun: true, moved: [{ container: 'solo', to: 'c' }], failed: [{ ...shop, error: 'refused' }], left: [] }, to, to)
    expect(out).to.contain('drain a: 3 running container(s) to move: project shop (shop-db-1, shop-web-1) → b, solo → c')
    expect(out).to.contain('[1/2] project shop → b')
    expect(out).to.contain('1 container(s) would move, 2 would be refused')
    expect(out).to.contain('project shop (shop-db-1, shop-web-1) (to b) still runs on a: refused')
  })
})
