/**
 * A host behind NAT in the lab: three reachable hosts and one whose namespace sits on a private
 * subnet behind a masquerading router that lets no connection in (its agent runs --no-inbound). It
 * must be a full member anyway, through circuit relays on the reachable agents: alive in every
 * table, answering status, receiving and sending moves, and still reached when its direct path to
 * one member is cut. The real CLI from the root namespace, which cannot reach the host either.
 * One lab for the file; after() tears it down even when a test failed.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Lab, defaultHosts, tcpOpen, waitFor, type LabHost } from '../lab/index.js'
import type { AgentStatus, PeerRow } from '../../protocol/messages.js'
import type { MoveEvent } from '../../protocol/move-messages.js'

const run = promisify(execFile)
/** Generous next to the test profile (dead after 3 s): a loaded CI machine is slow, not wrong. */
const STATE_TIMEOUT_MS = 60_000
/** How long a direct dial to the NAT'd host gets before it counts as failed (the router drops it). */
const DIAL_TIMEOUT_S = 3
/** Past the test profile's heartbeat timeout (1 s): what B hears after this came some other way. */
const RELAY_SWITCH_MS = 2000

describe('a host behind NAT in the lab (3 reachable hosts + 1 NAT\'d, real engines and agents)', function () {
  this.timeout(240_000)
  const lab = new Lab({ prefix: 'gotolabn', subnet: '10.213.150.0/24', natSubnet: '10.213.151.0/24', log: line => { if (process.env.GOTO_LAB_VERBOSE !== undefined) console.log(`      lab: ${line}`) } })
  let A: LabHost
  let B: LabHost
  let C: LabHost
  let N: LabHost

  async function peers (via: string): Promise<PeerRow[]> {
    const r = await lab.cli(['peers', '--json'], { agent: via })
    if (r.code !== 0) throw new Error(`goto peers via ${via} failed (${r.code}): ${r.stderr}`)
    return JSON.parse(r.stdout) as PeerRow[]
  }

  /** N's agent as the CLI reaches it: through the relay at `relay`, from N's own announced addresses. */
  async function relayedAddrOfN (relay: LabHost): Promise<string> {
    const row = (await peers(relay.agentAddr)).find(p => p.name === N.name)
    const addr = row?.addrs.find(a => a.startsWith(relay.agentAddr))
    if (addr === undefined) throw new Error(`${N.name} announces no address through ${relay.name}: ${JSON.stringify(row?.addrs)}`)
    return `${addr}/p2p/${N.peerId ?? ''}`
  }

  /** Can a TCP connection be opened from inside `from`'s namespace to ip:port within DIAL_TIMEOUT_S? */
  async function dialFrom (from: LabHost, ip: string, port: number): Promise<boolean> {
    try {
      await run('nsenter', [`--net=/var/run/netns/${from.netns}`, 'timeout', String(DIAL_TIMEOUT_S), 'bash', '-c', `exec 3<>/dev/tcp/${ip}/${port}`])
      return true
    } catch {
      return false
    }
  }

  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
    return stdout.trim()
  }

  async function move (container: string, to: LabHost, via: LabHost): Promise<Extract<MoveEvent, { event: 'done' }>> {
    const r = await lab.cli(['move', container, '--to', to.name, '--json'], { agent: via.agentAddr, timeoutMs: 120_000 })
    const events = r.stdout.trim().split('\n').filter(l => l !== '').map(l => JSON.parse(l) as MoveEvent)
    const last = events.at(-1)
    expect(last?.event, `${JSON.stringify(last)} ${r.stderr}`).to.equal('done')
    expect(r.code).to.equal(0)
    return last as Extract<MoveEvent, { event: 'done' }>
  }

  /**
   * Builds `<name>:v1` on `h` (the base image plus one layer: `mib` MiB of random /payload and a
   * /hello), runs container `name` from it and returns the payload's md5sum line.
   */
  async function runWithPayload (h: LabHost, name: string, mib: number): Promise<string> {
    await docker(h, 'run', '--name', `${name}-build`, 'gotolab/base:latest', 'sh', '-c', `head -c ${mib}m /dev/urandom > /payload && echo hi > /hello`)
    await docker(h, 'commit', `${name}-build`, `${name}:v1`)
    await docker(h, 'rm', `${name}-build`)
    await docker(h, 'run', '-d', '--name', name, `${name}:v1`, 'sleep', '3600')
    return await docker(h, 'exec', name, 'md5sum', '/payload')
  }

  async function runningAt (h: LabHost, name: string): Promise<boolean> {
    return (await docker(h, 'ps', '--filter', `name=^${name}$`, '--format', '{{.State}}')) === 'running'
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[A, B, C, N] = await lab.up(defaultHosts(4).map((h, i) => ({ ...h, nat: i === 3 })))
    for (const h of [A, B, C]) {
      await waitFor(async () => {
        const rows = await peers(h.agentAddr).catch(() => [])
        return rows.length === 4 && rows.every(r => r.state === 'alive')
      }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 500, what: `all four alive at ${h.name}` })
    }
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('nothing connects in: its agent listens on its private address, which no other host (nor the operator) reaches', async () => {
    expect(N.nat).to.not.equal(undefined)
    expect(await dialFrom(N, N.ip, 4001), 'its own agent, from inside').to.equal(true)
    const attempts = await Promise.all([
      ...[A, B, C].flatMap(h => [N.ip, N.nat?.publicIp ?? ''].map(async ip => [`${h.name} → ${ip}`, await dialFrom(h, ip, 4001)] as const)),
      (async () => ['the root namespace', await tcpOpen(N.ip, 4001, DIAL_TIMEOUT_S * 1000)] as const)()
    ])
    expect(attempts.filter(([, ok]) => ok).map(([what]) => what), 'dials that got in').to.deep.equal([])
    // ... while it connects out.
    expect(await dialFrom(N, A.ip, 4001)).to.equal(true)
  })

  it('is alive in every peer table, with only relayed addresses, and sees every member alive', async () => {
    for (const h of [A, B, C]) {
      const row = (await peers(h.agentAddr)).find(p => p.name === N.name)
      expect(row, `${N.name} at ${h.name}`).to.deep.include({ state: 'alive', peerId: N.peerId })
      expect(row?.addrs.length).to.be.greaterThan(0)
      for (const a of row?.addrs ?? []) expect(a).to.match(/^\/ip4\/10\.213\.150\.1[0-2]\/tcp\/4001\/p2p\/\w+\/p2p-circuit$/)
    }
    // Its own table, asked through a relay.
    const own = await peers(await relayedAddrOfN(A))
    expect(own[0]).to.deep.include({ name: N.name, self: true })
    expect(own.filter(r => !r.self).map(r => [r.name, r.state]).sort()).to.deep.equal([[A.name, 'alive'], [B.name, 'alive'], [C.name, 'alive']].sort())
  })

  it('goto status answers for it through any agent', async () => {
    const engine = await lab.docker(N.name).version()
    for (const via of [A, B, C]) {
      const r = await lab.cli(['status', N.name, '--json'], { agent: via.agentAddr })
      expect(r.code, r.stderr).to.equal(0)
      const s = JSON.parse(r.stdout) as AgentStatus
      expect(s).to.deep.include({ name: N.name, peerId: N.peerId })
      expect(s.docker).to.deep.include({ version: engine.Version })
    }
  })

  it('a container moves reachable → NAT\'d host and back (the CLI reaches the NAT\'d source through its agent)', async () => {
    const sum = await runWithPayload(A, 'natweb', 4)

    const there = await move('natweb', N, A)
    expect(there).to.deep.include({ from: A.name, to: N.name })
    expect(await runningAt(N, 'natweb')).to.equal(true)
    expect(await docker(N, 'exec', 'natweb', 'md5sum', '/payload')).to.equal(sum)

    // The container's agent is N: the CLI connects to it through A, a relay of N.
    const back = await move('natweb', B, A)
    expect(back).to.deep.include({ from: N.name, to: B.name })
    expect(await runningAt(B, 'natweb')).to.equal(true)
    expect(await docker(B, 'exec', 'natweb', 'cat', '/hello')).to.equal('hi')
  })

  it('with its direct path to one member cut, it stays alive there and takes a move over a relay', async () => {
    await lab.cut(B.name, N.name)
    try {
      expect(await dialFrom(N, B.ip, 4001), 'the cut holds').to.equal(false)
      // The old direct connection carries nothing after the cut: a heartbeat B hears later came
      // through A or C. (The switch is quick enough that N may never leave `alive` at B.)
      const cutAt = Date.now()
      await waitFor(async () => {
        const row = (await peers(B.agentAddr).catch(() => [])).find(p => p.name === N.name)
        return row?.state === 'alive' && row.lastSeen !== null && Date.parse(row.lastSeen) > cutAt + RELAY_SWITCH_MS
      }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${N.name} heard at ${B.name} through a relay` })
      // 8 MiB of new layer: far past a default relay's 128 KiB limit.
      const sum = await runWithPayload(B, 'relayed', 8)
      const ev = await move('relayed', N, B)
      expect(ev.layersSent).to.be.greaterThan(0)
      expect(await runningAt(N, 'relayed')).to.equal(true)
      expect(await docker(N, 'exec', 'relayed', 'md5sum', '/payload')).to.equal(sum)
    } finally {
      await lab.heal()
    }
  })

  it('down removes the router namespaces and the route to the private subnet with the rest', async () => {
    await lab.down()
    const { stdout: namespaces } = await run('ip', ['netns', 'list'])
    expect(namespaces.split('\n').filter(l => l.startsWith('gotolabn-'))).to.deep.equal([])
    const { stdout: routes } = await run('ip', ['route', 'show', '10.213.151.0/24'])
    expect(routes.trim()).to.equal('')
  })
})
