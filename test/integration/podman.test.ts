/**
 * Moves between Docker Engine 20.10 and Podman 4.3 (Debian 12's, its Docker-API service; the lab's
 * engine kind 'podman', which never pulls and knows no registry). One lab of two hosts: a container
 * with a two-layer image, a named volume, a file written after start and a published port moves
 * 20.10 → Podman and back, arriving running with its data each time; `goto peers` shows the
 * Podman host's engine as `podman 4.3.1`. Needs Debian's podman (.ci/setup installs it).
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { engineMoves } from '../fixtures/engine-moves.js'
import type { PeerRow } from '../../protocol/messages.js'

const MOVE_TIMEOUT_MS = 120_000

describe('moves between Docker 20.10 and Podman 4.3', function () {
  this.timeout(180_000)
  const lab = new Lab({ prefix: 'gotolabk', subnet: '10.213.30.0/24' })
  let D20: LabHost
  let POD: LabHost

  const { docker, names, move, arrived, aliveAt } = engineMoves(lab, { moveTimeoutMs: MOVE_TIMEOUT_MS, probeFrom: () => D20 })

  before(async function () {
    this.timeout(180_000)
    await lab.down()
    ;[D20, POD] = await lab.up([
      { name: 'd20', provider: 'vagrant' },
      { name: 'pod', provider: 'aws', engine: 'podman' }
    ])
    for (const h of [D20, POD]) {
      for (const other of [D20, POD]) await waitFor(async () => await aliveAt(h, other.name), { timeoutMs: 60_000, intervalMs: 250, what: `${other.name} alive at ${h.name}` })
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

  it('goto peers shows the Podman host\'s engine as podman 4.3.1', async () => {
    const r = await lab.cli(['peers', '--json'])
    expect(r.code, r.stderr).to.equal(0)
    const rows = JSON.parse(r.stdout) as PeerRow[]
    expect(rows.find(p => p.name === POD.name)?.dockerVersion).to.equal('podman 4.3.1')
    expect(rows.find(p => p.name === D20.name)?.dockerVersion).to.match(/^docker 20\.10\.\S+ overlay2$/)
  })

  it('moves a container with a named volume 20.10 → Podman: it runs there with its data', async () => {
    await docker(D20, 'run', '-d', '--name', 'web', '-p', '18080:8080', '-v', 'webdata:/data', 'app:v1', 'httpd', '-f', '-p', '8080', '-h', '/www')
    await docker(D20, 'exec', 'web', 'sh', '-c', 'echo vol > /data/v.txt && echo one > /srv/1.txt')
    const ev = await move('web', POD)
    expect(ev.layersSkipped, 'Podman reuses no layer in a load').to.equal(0)
    await arrived(POD, 'vol\none')
    expect(await names(D20)).to.not.include('web')
    expect(await docker(D20, 'volume', 'ls', '-q')).to.not.contain('webdata')
  })

  it('moves it back Podman → 20.10 with the volume\'s data in the volume, not in /', async () => {
    await docker(POD, 'exec', 'web', 'sh', '-c', 'echo two > /srv/2.txt')
    await move('web', D20)
    await arrived(D20, 'vol\none\ntwo')
    expect(await docker(D20, 'exec', 'web', 'ls', '/')).to.not.match(/^v\.txt$/m)
    expect(await names(POD)).to.not.include('web')
    expect(await docker(POD, 'volume', 'ls', '-q')).to.not.contain('webdata')
  })
})
