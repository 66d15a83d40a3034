/**
 * Failover in a five-host lab, with two replica holders per protected container: two hosts killed
 * at once. Every protected container of both runs again exactly once, spread over the three
 * survivors. One lab for the file; after() tears it down even when the test failed.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { dockerCli, getFile, runningNames } from '../fixtures/docker.js'
import type { AgentStatus, PeerRow } from '../../protocol/messages.js'

const STATE_TIMEOUT_MS = 90_000
const NAMES = ['p1', 'p2', 'p3', 'p4']

describe('failover in the lab (5 hosts, two replicas each)', function () {
  this.timeout(400_000)
  const lab = new Lab({ prefix: 'gotolabg', subnet: '10.213.170.0/24', agentArgs: () => ['--replicas', '2'], log: line => { if (process.env.GOTO_LAB_VERBOSE !== undefined) console.log(`      lab: ${line}`) } })
  let hosts: LabHost[]

  const docker = dockerCli

  async function status (h: LabHost): Promise<AgentStatus | undefined> {
    const r = await lab.cli(['status', '--json'], { agent: h.agentAddr })
    return r.code === 0 ? JSON.parse(r.stdout) as AgentStatus : undefined
  }

  before(async function () {
    this.timeout(400_000)
    await lab.down()
    hosts = await lab.up(5)
    for (const h of hosts) {
      await waitFor(async () => {
        const r = await lab.cli(['peers', '--json'], { agent: h.agentAddr })
        return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).filter(p => p.state === 'alive').length === 5
      }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `five alive members at ${h.name}` })
    }
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('kills two of five hosts at once: each of their protected containers runs again exactly once, spread over the survivors', async () => {
    const [, , , D1, D2] = hosts
    const survivors = hosts.slice(0, 3)
    for (const [i, name] of NAMES.entries()) {
      const h = i < 2 ? D1 : D2
      await docker(h, 'run', '-d', '--name', name, '-l', 'goto.protect=true', '-v', `${name}-data:/data`, 'gotolab/base:latest', 'sh', '-c', `echo ${name} > /data/id && exec sleep 1000000`)
    }
    // Each is snapshotted to two holders; note which of them survive the kill.
    const survivingHolders = new Map<string, string[]>()
    for (const [i, name] of NAMES.entries()) {
      const owner = i < 2 ? D1 : D2
      const row = await waitFor(async () => {
        const r = (await status(owner))?.failover?.containers.find(c => c.name === name)
        return r !== undefined && r.holders.length === 2 ? r : undefined
      }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${name} snapshotted to two holders` })
      survivingHolders.set(name, row.holders.filter(n => survivors.some(s => s.name === n)))
    }
    // A container's two holders are other hosts than its owner, so at least one of them survives.
    for (const held of survivingHolders.values()) expect(held.length).to.be.greaterThan(0)

    await Promise.all([lab.kill(D1.name), lab.kill(D2.name)])

    const placed = await waitFor(async () => {
      const where = new Map<string, string[]>()
      for (const s of survivors) {
        for (const n of await runningNames(s)) {
          if (NAMES.includes(n)) where.set(n, [...(where.get(n) ?? []), s.name])
        }
      }
      return NAMES.every(n => where.get(n)?.length === 1) ? where : undefined
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: 'every protected container of both dead hosts running on one survivor' })

    for (const name of NAMES) {
      const host = survivors.find(s => s.name === placed.get(name)?.[0]) as LabHost
      expect(survivingHolders.get(name)).to.include(host.name)
      const row = await waitFor(async () => (await status(host))?.failover?.containers.find(c => c.name === name && c.owner === host.name), { timeoutMs: STATE_TIMEOUT_MS, what: `${host.name} to own ${name}` })
      expect(row.epoch).to.equal(2)
      expect(await getFile(host, name, '/data/id')).to.equal(`${name}\n`)
    }
    // Spread: when the surviving holders allowed more than one restorer, more than one restored.
    const possible = new Set([...survivingHolders.values()].flat())
    const used = new Set([...placed.values()].flat())
    if (possible.size > 1) expect(used.size).to.be.greaterThan(1)
    // Exactly once, still, a few seconds on (a late claimant would show up here).
    for (const name of NAMES) {
      let copies = 0
      for (const s of survivors) {
        if ((await runningNames(s)).includes(name)) copies++
      }
      expect(copies, name).to.equal(1)
    }
  })
})
