/**
 * Moves between Docker Engine 20.10 and Podman 4.3 (Debian 12's, its Docker-API service; the lab's
 * engine kind 'podman', which never pulls and knows no registry). One lab of two hosts: a container
 * with a two-layer image, an env of its own, a named volume, a file written after start and a
 * published port moves 20.10 → Podman and back, arriving running with its data each time and with
 * exactly the env it had (none of the variables Podman adds at create, none carried back), the move
 * back sending only the container's changes; a move
 * to Podman whose agent is killed mid-move rolls back and leaves nothing there; `goto peers` shows
 * the Podman host's engine as `podman 4.3.1`. Needs Debian's podman (.ci/setup installs it).
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { Lab, type LabHost } from '../lab/index.js'
import { engineMoves } from '../fixtures/engine-moves.js'
import { DockerodeHost } from '../../agent/docker/host.js'
import { parseDockerEndpoint } from '../../agent/config.js'
import type { PeerRow } from '../../protocol/messages.js'

const MOVE_TIMEOUT_MS = 120_000

describe('moves between Docker 20.10 and Podman 4.3', function () {
  this.timeout(180_000)
  const lab = new Lab({ prefix: 'gotolabk', subnet: '10.213.30.0/24' })
  let D20: LabHost
  let POD: LabHost

  const { docker, names, move, arrived, aliveAt, allAlive, buildApp, killedDestination, moveBackChangesOnly } = engineMoves(lab, { moveTimeoutMs: MOVE_TIMEOUT_MS, probeFrom: () => D20 })

  /** `web`'s env as its engine keeps it (inspect's Config.Env) and as its processes see it (exec env), sorted. */
  async function envOf (h: LabHost): Promise<{ config: string[], process: string[] }> {
    const config = (JSON.parse(await docker(h, 'inspect', 'web'))[0].Config.Env ?? []) as string[]
    const process = (await docker(h, 'exec', 'web', 'env')).split('\n').filter(l => l !== '')
    return { config: [...config].sort(), process: process.sort() }
  }
  /** The env at the 20.10 source before the first move. */
  let sourceEnv: { config: string[], process: string[] }

  before(async function () {
    this.timeout(180_000)
    await lab.down()
    ;[D20, POD] = await lab.up([
      { name: 'd20', provider: 'vagrant' },
      { name: 'pod', provider: 'aws', engine: 'podman' }
    ])
    await allAlive([D20, POD])
    await buildApp(D20)
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
    await docker(D20, 'run', '-d', '--name', 'web', '-p', '18080:8080', '-v', 'webdata:/data', '-e', 'MODE=prod', 'app:v1', 'httpd', '-f', '-p', '8080', '-h', '/www')
    await docker(D20, 'exec', 'web', 'sh', '-c', 'echo vol > /data/v.txt && echo one > /srv/1.txt')
    sourceEnv = await envOf(D20)
    expect(sourceEnv.config).to.include('MODE=prod')
    const ev = await move('web', POD)
    expect(ev.layersSkipped, 'Podman reuses no layer in a load').to.equal(0)
    await arrived(POD, 'vol\none')
    // Its processes see exactly the source's env; Podman kept none of its create-time additions
    // (PATH, HOME and HOSTNAME it keeps as Docker's runtime gives them), and Go-To reads it as the source's.
    const env = await envOf(POD)
    expect(env.process).to.deep.equal(sourceEnv.process)
    expect(env.config.filter(e => /^(container|TERM)=/.test(e)), 'Podman\'s own additions').to.deep.equal([])
    const seen = await new DockerodeHost(parseDockerEndpoint('--docker', POD.dockerHost)).inspectContainer('web')
    expect([...seen.spec.env].sort()).to.deep.equal(sourceEnv.config)
    expect(await names(D20)).to.not.include('web')
    expect(await docker(D20, 'volume', 'ls', '-q')).to.not.contain('webdata')
  })

  it('moves it back Podman → 20.10 with the volume\'s data in the volume, not in /', async () => {
    await docker(POD, 'exec', 'web', 'sh', '-c', 'echo two > /srv/2.txt')
    await moveBackChangesOnly(POD, D20, 'vol\none\ntwo')
    expect(await docker(D20, 'exec', 'web', 'ls', '/')).to.not.match(/^v\.txt$/m)
    expect(await names(POD)).to.not.include('web')
    expect(await docker(POD, 'volume', 'ls', '-q')).to.not.contain('webdata')
    // Back with exactly the env it left with: none of what Podman added carried as if set by the user.
    expect(await envOf(D20)).to.deep.equal(sourceEnv)
  })

  it('a Podman destination whose agent is killed mid-move: the source runs on, nothing is left at Podman', async () => {
    await killedDestination(D20, POD, 'vol\none\ntwo')
  })
})
