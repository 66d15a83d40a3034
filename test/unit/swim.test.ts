import { expect } from 'chai'
import { SwimNode, LEARN_PER_SENDER, MAX_RELAYS, SIG_CHECKS_PER_SENDER } from '../../agent/membership/swim/node.js'
import { SWIM_PROFILES, suspicionBoundsMs, suspicionTimeoutMs, retransmitLimit, pushPullIntervalMs } from '../../agent/membership/swim/timings.js'
import { MAX_DELTAS, MAX_SYNC_ENTRIES, SYNC_BUCKETS, parseSwimMessage, recordBytes, type MemberRecord, type SwimMessage } from '../../protocol/swim-messages.js'
import { ProtocolError } from '../../protocol/errors.js'
import { MAX_MESSAGE_BYTES } from '../../protocol/ids.js'
import { SwimSim, memberInfo } from '../sim/swim-sim.js'
import { SimKeys, seeded } from '../sim/keys.js'

const lan = SWIM_PROFILES.lan

describe('swim timings', () => {
  it('follow memberlist\'s formulas', () => {
    expect(suspicionBoundsMs(lan, 1000)).to.deep.equal({ min: 4 * 3 * 200, max: 3 * 4 * 3 * 200 })
    expect(suspicionBoundsMs(lan, 5).min).to.equal(4 * 200) // log10 N is at least 1
    expect(suspicionTimeoutMs(lan, 1000, 0)).to.equal(7200)
    expect(suspicionTimeoutMs(lan, 1000, 2)).to.equal(2400) // K = suspicionMult − 2 confirmations: the minimum
    expect(suspicionTimeoutMs(lan, 1000, 1)).to.be.within(2400, 7200)
    expect(retransmitLimit(lan, 1000)).to.equal(4 * 4)
    expect(pushPullIntervalMs(lan, 32)).to.equal(15_000)
    expect(pushPullIntervalMs(lan, 1000)).to.equal(15_000 * 6)
  })
})

describe('swim protocol (in-memory mesh, fake clock)', function () {
  this.timeout(20_000)
  let keys: SimKeys
  before(async () => { keys = await SimKeys.create(24) })

  it('a probe is answered by an ack, and a quiet healthy mesh suspects no one', async () => {
    const sim = await SwimSim.create({ n: 3, timings: lan, keys })
    const seen: SwimMessage[] = []
    sim.onSend = (_f, _t, m) => { seen.push(m) }
    sim.run(3000)
    const pings = seen.filter(m => m.t === 'ping')
    expect(pings.length).to.be.greaterThan(20)
    for (const p of pings) expect(seen.some(m => m.t === 'ack' && m.seq === p.seq)).to.equal(true)
    expect(sim.events).to.deep.equal([])
  })

  it('a dead member: missed ping → ping-req through others → suspect → dead after the suspicion timeout', async () => {
    const sim = await SwimSim.create({ n: 6, timings: lan, keys })
    const victim = sim.ids[2]
    const pingReqs: string[] = []
    sim.onSend = (_f, _t, m) => { if (m.t === 'ping-req' && m.target === victim) pingReqs.push(m.target) }
    sim.kill(victim)
    expect(sim.runUntil(() => sim.deadEverywhere(victim), 20_000)).to.not.equal(undefined)
    expect(pingReqs.length).to.be.greaterThan(0)
    const first = sim.events.find(e => e.id === victim && e.to === 'suspect')
    const dead = sim.events.find(e => e.id === victim && e.to === 'dead')
    expect(first).to.not.equal(undefined)
    expect((dead?.at ?? 0) - (first?.at ?? 0)).to.be.at.least(suspicionBoundsMs(lan, 6).min)
    expect(sim.falseReports().deaths).to.equal(0)
  })

  it('a paused member is suspected, refutes with a higher incarnation when it resumes, and is never dead', async () => {
    const sim = await SwimSim.create({ n: 6, timings: lan, keys })
    const sleeper = sim.ids[1]
    const node = sim.nodes.get(sleeper) as SwimNode
    sim.pause(sleeper)
    sim.runUntil(() => sim.events.some(e => e.id === sleeper && e.to === 'suspect'), 2000)
    sim.run(100)
    sim.resume(sleeper)
    sim.run(3000)
    expect(node.incarnation).to.be.greaterThan(0)
    expect(sim.events.filter(e => e.id === sleeper && e.to === 'dead')).to.deep.equal([])
    for (const id of sim.ids) {
      if (id === sleeper) continue
      expect(sim.nodes.get(id)?.get(sleeper)).to.deep.include({ state: 'alive' })
      expect(sim.nodes.get(id)?.get(sleeper)?.record.inc).to.equal(node.incarnation)
    }
  })

  it('a dead member that restarts (incarnation 0) rejoins above the incarnation it died at', async () => {
    const sim = await SwimSim.create({ n: 6, timings: lan, keys })
    const victim = sim.ids[3]
    sim.kill(victim)
    sim.runUntil(() => sim.deadEverywhere(victim), 20_000)
    const diedAt = sim.nodes.get(sim.ids[0])?.get(victim)?.record.inc ?? -1
    const node = sim.restart(victim, sim.ids[0])
    sim.run(3000)
    expect(node.incarnation).to.be.greaterThan(diedAt)
    for (const id of sim.ids) if (id !== victim) expect(sim.nodes.get(id)?.get(victim)?.state).to.equal('alive')
    expect(node.verifiedMembers()).to.equal(6)
  })

  it('a join is listed and verified everywhere, and the joiner learns the whole table from one seed', async () => {
    const sim = await SwimSim.create({ n: 20, timings: lan, keys, spare: 1 })
    const joiner = sim.spare[0]
    const node = sim.join(joiner, sim.ids[0])
    const took = sim.runUntil(() => sim.ids.every(id => sim.nodes.get(id)?.isVerified(joiner) === true), 10_000)
    expect(took).to.be.below(3000)
    expect(node.verifiedMembers()).to.equal(21)
  })

  it('a joiner\'s whole table with certificates comes in messages under the wire\'s 1 MiB limit', async () => {
    const big = await SwimSim.create({ n: 400, timings: lan, spare: 1 })
    let largest = 0
    let states = 0
    big.onSend = (_f, to, m) => {
      largest = Math.max(largest, JSON.stringify(m).length)
      if (m.t === 'state' && to === big.spare[0]) states++
    }
    const node = big.join(big.spare[0], big.ids[0])
    big.runUntil(() => node.verifiedMembers() === 401, 2000)
    expect(node.verifiedMembers()).to.equal(401)
    expect(states).to.be.greaterThan(1)
    expect(largest).to.be.below(MAX_MESSAGE_BYTES)
  })

  it('a change (labels) reaches every member of a small mesh under 5 % loss', async () => {
    const sim = await SwimSim.create({ n: 20, timings: lan, keys, loss: 0.05, seed: 7 })
    const changer = sim.nodes.get(sim.ids[4]) as SwimNode
    changer.update({ ...memberInfo(sim.ids[4], 4), labels: { zone: 'moved' } })
    const took = sim.runUntil(() => sim.ids.every(id => id === sim.ids[4] || sim.nodes.get(id)?.get(sim.ids[4])?.record.info.labels.zone === 'moved'), 10_000)
    expect(took).to.be.below(3000)
    expect(sim.falseReports().deaths).to.equal(0)
  })
})

describe('swim protocol against hostile members', () => {
  let keys: SimKeys
  let a: SwimNode
  let sent: Array<{ to: string, msg: SwimMessage }>
  let now: number
  let M: string, X: string, A: string
  const rec = (id: string, inc: number, signer = id, info = memberInfo(id, 9)): MemberRecord => {
    const r = { inc, info }
    return { ...r, sig: keys.crypto(signer).sign(recordBytes(r)) }
  }
  before(async () => { keys = await SimKeys.create(6 + LEARN_PER_SENDER + 4) })
  beforeEach(() => {
    [A, M, X] = keys.ids
    now = 1_000_000
    sent = []
    a = new SwimNode({ self: memberInfo(A, 0), timings: lan, crypto: keys.crypto(A), now: () => now, random: seeded(3), send: (to, msg) => { sent.push({ to, msg }) } })
    a.restore([M, X].map(id => ({ record: rec(id, 0), state: 'alive' as const, direct: true, cert: keys.cert(id) })))
  })

  it('the checker refuses too many deltas, bad peer IDs, unknown kinds and wrong digests with a ProtocolError', () => {
    const d = { k: 'suspect', id: M, inc: 0, by: X }
    expect(() => parseSwimMessage({ t: 'gossip', d: Array(MAX_DELTAS + 1).fill(d) })).to.throw(ProtocolError)
    expect(parseSwimMessage({ t: 'gossip', d: Array(MAX_DELTAS).fill(d) })).to.have.nested.property('d.length', MAX_DELTAS)
    expect(() => parseSwimMessage({ t: 'ping-req', seq: 1, target: 'not-a-peer-id' })).to.throw(ProtocolError)
    expect(() => parseSwimMessage({ t: 'ping', seq: -1 })).to.throw(ProtocolError)
    expect(() => parseSwimMessage({ t: 'ping', seq: 1e300 })).to.throw(ProtocolError)
    expect(() => parseSwimMessage({ t: 'shout' })).to.throw(ProtocolError)
    expect(() => parseSwimMessage({ t: 'sync', h: Array(SYNC_BUCKETS - 1).fill('') })).to.throw(ProtocolError)
    expect(() => parseSwimMessage({ t: 'state', e: Array(MAX_SYNC_ENTRIES + 1).fill({}) })).to.throw(ProtocolError)
    expect(() => parseSwimMessage({ t: 'gossip', d: [{ k: 'alive', r: { ...rec(M, 1), inc: 2 ** 60 } }] })).to.throw(ProtocolError)
  })

  it('only the member raises its incarnation: a huge suspicion from another is taken at the known one, and refuted by +1', () => {
    a.receive(X, { t: 'gossip', d: [{ k: 'suspect', id: M, inc: 1e12, by: X }] })
    expect(a.get(M)).to.deep.include({ state: 'suspect' })
    expect(a.get(M)?.record.inc).to.equal(0)
    // The suspicion of ourselves at a made-up incarnation: we refute by one, not past it.
    a.receive(X, { t: 'gossip', d: [{ k: 'dead', id: A, inc: 1e12, by: X }] })
    expect(a.incarnation).to.equal(1)
    // M's own refutation clears the suspicion.
    a.receive(X, { t: 'gossip', d: [{ k: 'alive', r: rec(M, 1) }] })
    expect(a.get(M)).to.deep.include({ state: 'alive' })
  })

  it('a peer cannot declare another alive at a higher incarnation, nor change what it says', () => {
    a.receive(X, { t: 'gossip', d: [{ k: 'suspect', id: M, inc: 0, by: X }] })
    a.receive(X, { t: 'gossip', d: [{ k: 'alive', r: rec(M, 7, X) }] }) // signed by X, not M
    expect(a.get(M)).to.deep.include({ state: 'suspect' })
    expect(a.get(M)?.record.inc).to.equal(0)
    const genuine = rec(M, 1)
    const moved = { ...genuine, info: { ...genuine.info, addrs: ['/ip4/6.6.6.6/tcp/4001'] } } // M's signature, X's addresses
    a.receive(X, { t: 'gossip', d: [{ k: 'alive', r: moved }] })
    expect(a.get(M)?.record.inc).to.equal(0)
    a.receive(X, { t: 'gossip', d: [{ k: 'alive', r: genuine }] })
    expect(a.get(M)?.record.inc).to.equal(1)
  })

  it('made-up members are listed within the per-sender cap, never counted, and a forged certificate does not verify them', () => {
    const madeUp = keys.ids.slice(3, 3 + LEARN_PER_SENDER + 3) // X owns these keys: valid records, no certificates
    a.receive(X, { t: 'gossip', d: madeUp.map(id => ({ k: 'alive' as const, r: rec(id, 0) })) })
    expect(a.size).to.equal(3 + LEARN_PER_SENDER)
    expect(a.verifiedMembers()).to.equal(3)
    const want = sent.find(s => s.to === X && s.msg.t === 'want')
    expect(want).to.not.equal(undefined)
    a.receive(X, { t: 'certs', c: madeUp.slice(0, 4).map(id => ({ id, pem: keys.certPem(M) })) })
    expect(a.verifiedMembers()).to.equal(3)
    // Mentioned again: not asked again within the window.
    a.receive(X, { t: 'gossip', d: [{ k: 'alive', r: rec(madeUp[0], 1) }] })
    const again = sent.filter(s => s.to === X && s.msg.t === 'want')
    expect(again.length).to.equal(1) // asked once per window, not on every mention
  })

  it('certificates are checked only when asked for, and of whom they were asked; a flood of ping-reqs is bounded', () => {
    const stranger = keys.ids[5]
    a.receive(M, { t: 'gossip', d: [{ k: 'alive', r: rec(stranger, 0) }] })
    expect(sent.find(s => s.to === M && s.msg.t === 'want')?.msg).to.deep.equal({ t: 'want', ids: [stranger] })
    a.receive(X, { t: 'certs', c: [{ id: stranger, pem: keys.certPem(stranger) }] }) // asked of M, not X
    expect(a.isVerified(stranger)).to.equal(false)
    a.receive(M, { t: 'certs', c: [{ id: stranger, pem: keys.certPem(stranger) }] })
    expect(a.isVerified(stranger)).to.equal(true)
    expect(a.verifiedMembers()).to.equal(4)
    sent = []
    for (let i = 0; i < MAX_RELAYS * 3; i++) a.receive(X, { t: 'ping-req', seq: i, target: M })
    expect(sent.filter(s => s.msg.t === 'ping').length).to.equal(MAX_RELAYS)
  })

  it('only the target, or a member asked to probe it, can answer a probe', () => {
    now += 1000
    a.tick() // probes M or X
    const ping = sent.find(s => s.msg.t === 'ping')
    expect(ping).to.not.equal(undefined)
    const target = ping?.to as string
    const other = target === M ? X : M
    const seq = (ping?.msg as { seq: number }).seq
    a.receive(other, { t: 'ack', seq }) // not asked: ignored
    now += lan.probeIntervalMs
    a.tick()
    expect(a.get(target)?.state).to.equal('suspect')
  })

  it('a flood of forged records costs at most SIG_CHECKS_PER_SENDER signature checks per sender and window', () => {
    let checks = 0
    const crypto = keys.crypto(A)
    const b = new SwimNode({ self: memberInfo(A, 0), timings: lan, crypto: { ...crypto, verify: (...args) => { checks++; return crypto.verify(...args) } }, now: () => now, random: seeded(4), send: () => {} })
    b.restore([M, X].map(id => ({ record: rec(id, 0), state: 'alive' as const, direct: true, cert: keys.cert(id) })))
    const forged = rec(M, 5, X)
    for (let i = 0; i < 40; i++) b.receive(X, { t: 'gossip', d: Array(MAX_DELTAS).fill({ k: 'alive', r: { ...forged, inc: 5 + i } }) })
    expect(checks).to.equal(SIG_CHECKS_PER_SENDER)
    expect(b.get(M)?.record.inc).to.equal(0)
  })
})
