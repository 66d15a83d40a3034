/**
 * Moves and failovers between engines of different kinds in one lab: Debian 12's dockerd 20.10
 * (overlay2), Debian 13's dockerd 26.1.5 (overlay2), Debian unstable's dockerd 28.5.2 with
 * containerd 2.1.9 and the containerd image store (the store Docker 29 makes the default), and
 * Debian 12's Podman 4.3. Needs `.ci/engines` and Debian's podman. One lab for the file, engines
 * started in parallel; one container travels 20.10 → 28-containerd → 26 → 20.10 with a named
 * volume, a file written after start and a published port, and arrives running with its data each
 * time; a move to the containerd store whose agent is killed mid-move rolls back and leaves
 * nothing there, and a move back from that store sends only the new layer; `goto peers` shows
 * each host's engine kind and store. Last, the containerd-store host dies: its two protected
 * containers run again from their newest snapshots, one on the 20.10 host, one on the Podman host
 * (whose snapshots keep the image's layers: Podman loads no archive without every layer).
 * The cost of the containerd-store path is measured in `npm run bench` (bench/engines.ts).
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { engineMoves } from '../fixtures/engine-moves.js'
import { getFile, putFile, runningNames } from '../fixtures/docker.js'
import { logTail } from '../fixtures/agent-log.js'
import { rendezvousRank } from '../../agent/failover/placement.js'
import type { AgentStatus, PeerRow } from '../../protocol/messages.js'
import type { FailoverContainerRow } from '../../protocol/failover-messages.js'

const MOVE_TIMEOUT_MS = 180_000
/** Generous next to the test profile (dead after 3 s, snapshots every 2 s): a loaded machine is slow, not wrong. */
const STATE_TIMEOUT_MS = 90_000

describe('moves and failovers between engine kinds (20.10, 26 overlay2, 28 containerd store, Podman 4.3)', function () {
  this.timeout(240_000)
  const lab = new Lab({ prefix: 'gotolabx', subnet: '10.213.190.0/24' })
  let D20: LabHost
  let D26: LabHost
  let D28C: LabHost
  let POD: LabHost

  const { docker, names, move, arrived, aliveAt, allAlive, buildApp, killedDestination, moveBackChangesOnly } = engineMoves(lab, { moveTimeoutMs: MOVE_TIMEOUT_MS, probeFrom: () => D20 })

  async function failoverRow (h: LabHost, name: string): Promise<FailoverContainerRow | undefined> {
    const r = await lab.cli(['status', '--json'], { agent: h.agentAddr })
    return r.code === 0 ? (JSON.parse(r.stdout) as AgentStatus).failover?.containers.find(c => c.name === name) : undefined
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[D20, D26, D28C, POD] = await lab.up([
      { name: 'd20', provider: 'vagrant' },
      { name: 'd26', provider: 'aws', engine: 'docker-26' },
      { name: 'd28c', provider: 'azure', engine: 'docker-28-containerd' },
      { name: 'pod', provider: 'aws', engine: 'podman' }
    ])
    await allAlive([D20, D26, D28C, POD])
    await buildApp(D20)
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('goto peers and goto status show each host\'s engine kind and image store', async () => {
    const r = await lab.cli(['peers', '--json'])
    expect(r.code, r.stderr).to.equal(0)
    const rows = JSON.parse(r.stdout) as PeerRow[]
    const kind = (h: LabHost): string | null | undefined => rows.find(p => p.name === h.name)?.dockerVersion
    expect(kind(D20)).to.match(/^docker 20\.10\.\S+ overlay2$/)
    expect(kind(D26)).to.match(/^docker 26\.1\.5\S* overlay2$/)
    expect(kind(D28C)).to.match(/^docker 28\.5\.2\S* containerd-store$/)
    const human = await lab.cli(['peers'])
    expect(human.stdout).to.contain('ENGINE').and.to.match(/docker 28\.5\.2\S* containerd-store/)
    const s = await lab.cli(['status', D28C.name, '--json'])
    expect(s.code, s.stderr).to.equal(0)
    expect((JSON.parse(s.stdout) as AgentStatus).docker).to.deep.include({ kind: kind(D28C) })
  })

  it('moves a container 20.10 → 28 containerd store: every layer sent, it runs there with its data', async () => {
    await docker(D20, 'run', '-d', '--name', 'web', '-p', '18080:8080', '-v', 'webdata:/data', 'app:v1', 'httpd', '-f', '-p', '8080', '-h', '/www')
    await docker(D20, 'exec', 'web', 'sh', '-c', 'echo vol > /data/v.txt && echo one > /srv/1.txt')
    const ev = await move('web', D28C)
    expect(ev.layersSkipped, 'the containerd store reuses no layer in a load').to.equal(0)
    await arrived(D28C, 'vol\none')
    expect(await names(D20)).to.not.include('web')
    expect(await docker(D20, 'volume', 'ls', '-q')).to.not.contain('webdata')
  })

  it('moves it on 28 containerd store → 26 overlay2 (through docker save)', async () => {
    await docker(D28C, 'exec', 'web', 'sh', '-c', 'echo two > /srv/2.txt')
    await move('web', D26)
    await arrived(D26, 'vol\none\ntwo')
    expect(await names(D28C)).to.not.include('web')
  })

  it('moves it back 26 → 20.10', async () => {
    await docker(D26, 'exec', 'web', 'sh', '-c', 'echo three > /srv/3.txt')
    await move('web', D20)
    await arrived(D20, 'vol\none\ntwo\nthree')
    expect(await names(D26)).to.not.include('web')
  })

  it('a containerd-store destination whose agent is killed mid-move: the source runs on, nothing is left there', async () => {
    await killedDestination(D20, D28C, 'vol\none\ntwo\nthree')
  })

  it('moves it to the containerd store again and back to 20.10, which is sent only the new layer', async () => {
    await move('web', D28C)
    await arrived(D28C, 'vol\none\ntwo\nthree')
    await docker(D28C, 'exec', 'web', 'sh', '-c', 'echo four > /srv/4.txt')
    await moveBackChangesOnly(D28C, D20, 'vol\none\ntwo\nthree\nfour')
  })

  it('the containerd-store host dies: its protected containers run again from their newest snapshots on the 20.10 host and on the Podman host', async () => {
    // A name whose one replica holder (rendezvous hashing over the other members) is each target.
    const rows = JSON.parse((await lab.cli(['peers', '--json'])).stdout) as PeerRow[]
    const idOf = (h: LabHost): string => rows.find(p => p.name === h.name)?.peerId as string
    const others = [D20, D26, POD].map(idOf)
    const nameFor = (target: LabHost): string => {
      for (let i = 0; ; i++) if (rendezvousRank(`keep${i}`, others)[0] === idOf(target)) return `keep${i}`
    }
    const targets = [D20, POD].map(h => ({ host: h, name: nameFor(h) }))
    for (const { name } of targets) {
      await docker(D28C, 'run', '-d', '--name', name, '-l', 'goto.protect=true', '-v', `${name}data:/data`, 'gotolab/base:latest', 'sleep', '1000000')
      await putFile(D28C, name, '/data/v.txt', 'snap')
      await putFile(D28C, name, '/f.txt', 'snap')
    }
    for (const { host, name } of targets) {
      // The first snapshot after the writes holds them.
      const seq = (await failoverRow(D28C, name))?.snapshotSeq ?? 0
      await waitFor(async () => {
        const r = await failoverRow(D28C, name)
        return r !== undefined && (r.snapshotSeq ?? 0) > seq + 1 && r.holders.includes(host.name)
      }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `a snapshot of ${name} held by ${host.name}` })
    }
    await lab.kill(D28C.name)
    for (const { host, name } of targets) {
      const r = await waitFor(async () => {
        if (!(await runningNames(host)).includes(name)) return undefined
        const row = await failoverRow(host, name)
        return row?.owner === host.name ? row : undefined
      }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${name} to run again on ${host.name}, owned there` })
        .catch(async err => { throw new Error(`${(err as Error).message}; ${await logTail(host.agentLog, 60)}`, { cause: err }) })
      expect(r.epoch).to.equal(2)
      expect([await getFile(host, name, '/data/v.txt'), await getFile(host, name, '/f.txt')]).to.deep.equal(['snap', 'snap'])
    }
    for (const { host, name } of targets) {
      const on: string[] = []
      for (const h of [D20, D26, POD]) if ((await runningNames(h)).includes(name)) on.push(h.name)
      expect(on, `where ${name} runs`).to.deep.equal([host.name])
    }
  })
})
