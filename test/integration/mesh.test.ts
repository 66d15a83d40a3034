/**
 * The mesh on real hosts: a three-host lab (network namespaces, one dockerd and one goto-agent
 * process each, certificates from the lab CA), asked through the real `goto` CLI. One lab for the
 * whole file; after() tears it down even when a test failed.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Lab, waitFor, type AgentHandle, type LabHost } from '../lab/index.js'
import { initCa, issueCertificate, revoke, readCaCrl } from '../../certs/index.js'
import type { AgentStatus, PeerRow } from '../../protocol/messages.js'

/** Generous next to the test profile (dead after 3 s): a loaded CI machine is slow, not wrong. */
const STATE_TIMEOUT_MS = 30_000

describe('mesh in the lab (3 hosts, real engines and agents)', function () {
  this.timeout(180_000)
  // Its own prefix and subnet: the test never touches a lab a developer keeps up (npm run lab).
  const lab = new Lab({ prefix: 'gotolabm', subnet: '10.213.50.0/24', log: line => { if (process.env.GOTO_LAB_VERBOSE !== undefined) console.log(`      lab: ${line}`) } })
  let hosts: LabHost[]
  let scratch: string
  const extra: AgentHandle[] = []

  async function peers (agent: LabHost, bundle?: string): Promise<PeerRow[]> {
    const r = await lab.cli(['peers', '--json'], { agent: agent.agentAddr, bundle })
    if (r.code !== 0) throw new Error(`goto peers via ${agent.name} failed (${r.code}): ${r.stderr}`)
    return JSON.parse(r.stdout) as PeerRow[]
  }

  async function stateOf (from: LabHost, name: string): Promise<string | undefined> {
    try {
      return (await peers(from)).find(p => p.name === name)?.state
    } catch {
      return undefined
    }
  }

  async function allAlive (from: LabHost): Promise<boolean> {
    try {
      const rows = await peers(from)
      return rows.length === hosts.length && rows.every(r => r.state === 'alive')
    } catch {
      return false
    }
  }

  /** Waits until `host`'s agent log shows it refused `peerId` for `reason`: the mesh side decided. */
  async function refusedBy (host: LabHost, peerId: string, reason: string): Promise<void> {
    await waitFor(async () => (await readFile(host.agentLog, 'utf8')).split('\n').some(line => {
      if (!line.includes('"peer refused"')) return false
      const entry = JSON.parse(line) as { peer?: string, reason?: string }
      return entry.peer === peerId && entry.reason === reason
    }), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${host.name} to refuse ${peerId} with ${reason}` })
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    hosts = await lab.up(3)
    scratch = await mkdtemp(join(tmpdir(), 'goto-mesh-'))
    for (const h of hosts) {
      await waitFor(async () => await allAlive(h), { timeoutMs: 60_000, intervalMs: 500, what: `a full peer table at ${h.name}` })
    }
  })

  after(async function () {
    this.timeout(120_000)
    for (const a of extra) await a.stop('SIGKILL').catch(() => {})
    await lab.down()
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true })
  })

  it('every agent knows every other from one bootstrap address, with true values', async () => {
    for (const h of hosts) {
      const rows = await peers(h)
      expect(rows.map(r => r.name).sort()).to.deep.equal(hosts.map(x => x.name).sort())
      expect(rows[0]).to.deep.include({ name: h.name, self: true })
      for (const other of hosts) {
        const row = rows.find(r => r.name === other.name)
        expect(row, `${other.name} in ${h.name}'s table`).to.not.equal(undefined)
        expect(row).to.deep.include({ peerId: other.peerId, state: 'alive', role: 'agent' })
        expect(row?.addrs).to.include(`/ip4/${other.ip}/tcp/4001`)
        expect(row?.labels).to.deep.include({ provider: other.provider })
        const engine = await lab.docker(other.name).version()
        // The engine's kind line: product, version, store (Debian 12's engine: overlay2).
        expect(row?.dockerVersion).to.equal(`docker ${engine.Version} overlay2`)
        if (!(row?.self ?? false)) expect(row?.rttMs).to.be.a('number')
      }
    }
  })

  it('goto status NAME shows the engine and a container started for the test, from any agent', async () => {
    const target = hosts[1]
    const docker = lab.docker(target.name)
    const c = await docker.createContainer({ Image: 'gotolab/base:latest', Cmd: ['sleep', '3600'], name: 'status-probe' })
    await c.start()
    const engine = await docker.version()
    for (const via of [hosts[0], target]) {
      const r = await lab.cli(['status', target.name, '--json'], { agent: via.agentAddr })
      expect(r.code, r.stderr).to.equal(0)
      const s = JSON.parse(r.stdout) as AgentStatus
      expect(s).to.deep.include({ name: target.name, peerId: target.peerId })
      expect(s.version).to.match(/^\d+\.\d+\.\d+/)
      expect(s.uptimeS).to.be.a('number')
      expect(s.docker).to.deep.include({ version: engine.Version, apiVersion: engine.ApiVersion })
      expect(s.containers.find(x => x.name === 'status-probe')).to.deep.include({ id: c.id, image: 'gotolab/base:latest', state: 'running' })
    }
    const human = await lab.cli(['status', target.name], { agent: hosts[0].agentAddr })
    expect(human.stdout).to.contain(`name:       ${target.name}`).and.to.contain('status-probe')
    await c.remove({ force: true })
  })

  it('goto status with an unknown name is one clear line and exit 1', async () => {
    const r = await lab.cli(['status', 'no-such-host', '--json'])
    expect(r.code).to.equal(1)
    expect(r.stderr.trim().split('\n')).to.have.length(1)
    expect(r.stderr).to.contain("no peer named 'no-such-host'")
  })

  it('an unreachable agent is one clear line and exit 1', async () => {
    const r = await lab.cli(['peers'], { agent: `/ip4/${hosts[0].ip}/tcp/4999` })
    expect(r.code).to.equal(1)
    expect(r.stderr).to.match(/^goto: error: cannot reach an agent at .*4999/)
  })

  it('refuses a rogue agent and operator with certificates from another CA', async () => {
    const foreign = join(scratch, 'foreign-ca')
    await initCa(foreign)
    await issueCertificate(foreign, { role: 'agent', name: 'rogue-1', out: join(scratch, 'rogue-agent') })
    const op = await issueCertificate(foreign, { role: 'operator', name: 'rogue-op', out: join(scratch, 'rogue-op') })
    const rogue = await lab.startAgent(hosts[2].name, { bundleDir: join(scratch, 'rogue-agent'), port: 4002 })
    extra.push(rogue)
    const rogueId = JSON.parse(await readFile(join(scratch, 'rogue-agent', 'bundle.json'), 'utf8')).peerId as string
    // The rogue keeps trying to join through the bootstrap host: the mesh side must refuse it.
    await refusedBy(hosts[0], rogueId, 'CertificateUntrustedError')
    for (const h of hosts) {
      const rows = await peers(h)
      expect(rows.map(r => r.name)).to.not.include('rogue-1')
    }
    const r = await lab.cli(['status', '--json'], { bundle: join(scratch, 'rogue-op') })
    expect(r.code).to.equal(1)
    expect(r.stderr).to.contain('our certificate was refused').and.to.contain('not issued by the mesh CA')
    expect(op.peerId).to.be.a('string')
  })

  it('refuses a revoked agent and a revoked operator once the revocation list has spread', async () => {
    const agentBundle = await lab.issueBundle('revoked-1', 'agent')
    const opBundle = await lab.issueBundle('revoked-op', 'operator')
    await revoke(lab.caDir, { name: 'revoked-1' }, { bundles: [lab.operatorBundle] })
    await revoke(lab.caDir, { name: 'revoked-op' }, { bundles: [lab.operatorBundle] })
    const number = JSON.parse((await readCaCrl(lab.caDir)).payload).number as number
    // Any operator command carries the newer list to the agent it asks; heartbeats carry it on.
    expect((await lab.cli(['peers'])).code).to.equal(0)
    for (const h of hosts) {
      await waitFor(async () => {
        try {
          const crl = JSON.parse(await readFile(join(h.dir, 'state', 'crl.json'), 'utf8')) as { payload: string }
          return (JSON.parse(crl.payload).number as number) >= number
        } catch { return false }
      }, { timeoutMs: STATE_TIMEOUT_MS, what: `${h.name} to hold revocation list ${number}` })
    }
    const revoked = await lab.startAgent(hosts[1].name, { bundleDir: agentBundle, port: 4003 })
    extra.push(revoked)
    const revokedId = JSON.parse(await readFile(join(agentBundle, 'bundle.json'), 'utf8')).peerId as string
    await refusedBy(hosts[0], revokedId, 'CertificateRevokedError')
    for (const h of hosts) expect((await peers(h)).map(r => r.name)).to.not.include('revoked-1')
    const r = await lab.cli(['peers'], { bundle: opBundle })
    expect(r.code).to.equal(1)
    expect(r.stderr.trim().split('\n')).to.have.length(1)
    expect(r.stderr).to.contain('our certificate was refused').and.to.contain('revoked')
  })

  it('drops a member from every table when its certificate is revoked while it runs', async () => {
    const bundle = await lab.issueBundle('member-x', 'agent')
    const member = await lab.startAgent(hosts[2].name, { bundleDir: bundle, port: 4004 })
    extra.push(member)
    for (const h of hosts) {
      await waitFor(async () => await stateOf(h, 'member-x') === 'alive', { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `member-x alive at ${h.name}` })
    }
    await revoke(lab.caDir, { name: 'member-x' }, { bundles: [lab.operatorBundle] })
    // The worst case: the list reaches the mesh through the revoked member itself. The CLI hands it
    // over in the handshake, then refuses to talk to that agent any further.
    const r = await lab.cli(['peers'], { agent: member.addr })
    expect(r.code).to.equal(1)
    expect(r.stderr).to.contain('presented a certificate we do not trust').and.to.contain('revoked')
    for (const h of hosts) {
      await waitFor(async () => {
        const rows = await peers(h).catch(() => undefined)
        return rows !== undefined && !rows.some(r => r.name === 'member-x')
      }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `member-x gone from ${h.name}'s table` })
    }
    // ... and it stays gone: it cannot rejoin.
    await refusedBy(hosts[0], JSON.parse(await readFile(join(bundle, 'bundle.json'), 'utf8')).peerId as string, 'CertificateRevokedError')
    for (const h of hosts) expect((await peers(h)).map(r => r.name)).to.not.include('member-x')
  })

  it('a killed host becomes dead in the others\' tables, and alive again after restart', async () => {
    const victim = hosts[2]
    await lab.kill(victim.name)
    for (const h of hosts.slice(0, 2)) {
      await waitFor(async () => await stateOf(h, victim.name) === 'dead', { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${victim.name} dead at ${h.name}` })
    }
    await lab.start(victim.name)
    for (const h of hosts) {
      await waitFor(async () => await allAlive(h), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${victim.name} alive again at ${h.name}` })
    }
  })

  it('a partitioned host is not alive from the other side, and recovers after heal', async () => {
    const cut = hosts[1]
    await lab.partition(cut.name)
    try {
      for (const h of [hosts[0], hosts[2]]) {
        await waitFor(async () => ['suspect', 'dead'].includes(await stateOf(h, cut.name) ?? ''), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${cut.name} not alive at ${h.name}` })
      }
      // The operator reaches both sides; the cut host sees the others go quiet too.
      await waitFor(async () => {
        const rows = await peers(cut).catch(() => [])
        return rows.length === 3 && rows.filter(r => !r.self).every(r => r.state !== 'alive')
      }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${cut.name} to see the others as not alive` })
    } finally {
      await lab.heal()
    }
    for (const h of hosts) {
      await waitFor(async () => await allAlive(h), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `all alive at ${h.name} after heal` })
    }
  })
})
