/** fromPodmanInspect (agent/docker/podman-inspect.ts) on an inspect as Podman 4.3.1 serves it. */
import { expect } from 'chai'
import { fromPodmanInspect, toPodmanCreate } from '../../agent/docker/podman-inspect.js'
import { containerInfoFromInspect, type EngineContainer } from '../../agent/docker/spec.js'
import { judgeContainer } from '../../protocol/fidelity.js'

const podman = (): EngineContainer => ({
  Id: '1d5d4e2c5ad7'.padEnd(64, '0'),
  Name: '/web',
  Image: 'sha256:' + '6'.repeat(64),
  Config: {
    Hostname: '1d5d4e2c5ad7',
    Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm', 'container=podman', 'HOME=/root', 'HOSTNAME=1d5d4e2c5ad7', 'MODE=prod'],
    Cmd: ['httpd', '-f']
  },
  HostConfig: { NetworkMode: 'bridge', PidMode: 'private', UTSMode: 'private', Runtime: 'oci', IpcMode: 'shareable', Ulimits: [{ Name: 'RLIMIT_NOFILE', Soft: 20000, Hard: 20000 }] },
  NetworkSettings: { Networks: { podman: { IPAddress: '10.88.0.2' } } }
}) as EngineContainer

describe('fromPodmanInspect (Podman\'s inspect in Docker\'s words)', () => {
  it('is refused as it comes (Podman\'s defaults read as host powers, another runtime and a user network)', () => {
    const fields = judgeContainer(podman()).refused.map(r => r.field)
    expect(fields).to.include.members(['HostConfig.PidMode', 'HostConfig.UTSMode', 'HostConfig.Runtime', 'NetworkSettings.Networks.podman'])
  })

  it('turns Podman\'s defaults into Docker\'s: nothing refused, the default bridge, no Podman env', () => {
    const c = fromPodmanInspect(podman(), [])
    expect(judgeContainer(c).refused).to.deep.equal([])
    expect(Object.keys(c.NetworkSettings?.Networks ?? {})).to.deep.equal(['bridge'])
    expect(c.Config?.Env).to.deep.equal(['MODE=prod'])
    expect(c.HostConfig?.Ulimits).to.deep.equal([{ Name: 'nofile', Soft: 20000, Hard: 20000 }])
    expect(() => containerInfoFromInspect(c)).to.not.throw()
  })

  it('keeps what the image sets and what is not Podman\'s value', () => {
    const c = podman()
    c.Config = { ...c.Config, User: 'app', Env: ['PATH=/opt/bin:/bin', 'TERM=vt100', 'container=podman', 'HOME=/home/app', 'HOSTNAME=1d5d4e2c5ad7', 'LANG=C'] }
    expect(fromPodmanInspect(c, []).Config?.Env).to.deep.equal(['PATH=/opt/bin:/bin', 'TERM=vt100', 'HOME=/home/app', 'LANG=C'])
    const root = podman()
    const imageEnv = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'TERM=xterm', 'HOME=/root']
    expect(fromPodmanInspect(root, imageEnv).Config?.Env).to.deep.equal([...imageEnv, 'MODE=prod'])
  })

  it('asks Podman\'s create to add neither container= nor, without a tty, TERM', () => {
    expect(toPodmanCreate({ Image: 'x', Env: ['A=1'] })).to.deep.equal({ Image: 'x', Env: ['A=1'], UnsetEnv: ['container', 'TERM'] })
    expect(toPodmanCreate({ Image: 'x', Tty: true }).UnsetEnv).to.deep.equal(['container'])
  })

  it('keeps a user network and a real host mode refused', () => {
    const c = podman()
    c.HostConfig = { ...c.HostConfig, PidMode: 'host' }
    c.NetworkSettings = { Networks: { appnet: {} } }
    const fields = judgeContainer(fromPodmanInspect(c, [])).refused.map(r => r.field)
    expect(fields).to.include('NetworkSettings.Networks.appnet')
    expect(judgeContainer(fromPodmanInspect(c, [])).hostPowers).to.include('HostConfig.PidMode')
  })
})
