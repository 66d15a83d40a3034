/**
 * Moves between engines of different kinds in one lab: Debian 12's dockerd 20.10 (overlay2),
 * Debian 13's dockerd 26.1.5 (overlay2) and Debian unstable's dockerd 28.5.2 with containerd 2.1.9
 * and the containerd image store (the store Docker 29 makes the default). Needs `.ci/engines`.
 * One lab for the file, engines started in parallel; one container travels 20.10 → 28-containerd
 * → 26 → 20.10 with a named volume, a file written after start and a published port, and arrives
 * running with its data each time; `goto peers` shows each host's engine kind and store.
 * The cost of the containerd-store path is measured in `npm run bench` (bench/engines.ts).
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { engineMoves } from '../fixtures/engine-moves.js'
import type { AgentStatus, PeerRow } from '../../protocol/messages.js'

const MOVE_TIMEOUT_MS = 180_000

describe('moves between engine kinds (20.10, 26 overlay2, 28 containerd store)', function () {
  this.timeout(240_000)
  const lab = new Lab({ prefix: 'gotolabx', subnet: '10.213.190.0/24' })
  let D20: LabHost
  let D26: LabHost
  let D28C: LabHost

  const { docker, names, move, arrived, aliveAt } = engineMoves(lab, { moveTimeoutMs: MOVE_TIMEOUT_MS, probeFrom: () => D20 })

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[D20, D26, D28C] = await lab.up([
      { name: 'd20', provider: 'vagrant' },
      { name: 'd26', provider: 'aws', engine: 'docker-26' },
      { name: 'd28c', provider: 'azure', engine: 'docker-28-containerd' }
    ])
    for (const h of [D20, D26, D28C]) {
      for (const other of [D20, D26, D28C]) await waitFor(async () => await aliveAt(h, other.name), { timeoutMs: 60_000, intervalMs: 250, what: `${other.name} alive at ${h.name}` })
    }
    // A two-layer image: the base and one commit.
    await docker(D20, 'run', '--name', 'build1', 'gotolab/base:latest', 'sh', '-c', 'mkdir -p /srv /www && echo v1 > /www/index.html')
    await docker(D20, 'commit', 'build1', 'app:v1')
    await docker(D20, 'rm', 'build1')
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
})
