/**
 * The lab itself: two simulated hosts (engines only, no agents) with their own prefix and subnet,
 * so a developer's `npm run lab -- up` is left alone. Checks addresses, engines and the base
 * image, container traffic across hosts, partition/heal, kill/start, and that down leaves nothing.
 * Needs root, dockerd, iproute2 and iptables.
 */
import { expect } from 'chai'
import { readdir, readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import type Docker from 'dockerode'
import { Lab, BASE_IMAGE, tcpOpen, waitFor, type LabHost } from '../lab/index.js'
import { run, inNetns } from '../lab/sys.js'
import { isAlive, pidsInContainers, pidsInNetns } from '../lab/procs.js'

const PREFIX = 'gotolabt'
const SUBNET = '10.213.100.0/24'
const ROOT = `/var/lib/${PREFIX}`
const RUN_ROOT = `/run/${PREFIX}`
const WEB_PORT = 8080

/**
 * Runs a one-shot container and returns its exit code and output (TTY, so no stream framing).
 * Init: a command running as PID 1 ignores the SIGTERM that busybox `timeout` sends it.
 */
async function runOnce (docker: Docker, cmd: string[]): Promise<{ code: number, output: string }> {
  const c = await docker.createContainer({ Image: BASE_IMAGE, Cmd: cmd, Tty: true, HostConfig: { Init: true } })
  try {
    await c.start()
    const { StatusCode } = await c.wait() as { StatusCode: number }
    const logs = await c.logs({ stdout: true, stderr: true }) as unknown as Buffer
    return { code: StatusCode, output: logs.toString('utf8') }
  } finally {
    await c.remove({ force: true })
  }
}

/** busybox wget with an outer timeout: this busybox's own `wget -T` segfaults. */
function fetch (ip: string, path: string, seconds = 3): string[] {
  return ['timeout', String(seconds), 'wget', '-q', '-O', '-', `http://${ip}:${WEB_PORT}${path}`]
}

/** A TCP connect from inside a host's namespace (not from a container), given up after 2 s. */
async function nsCanConnect (from: LabHost, ip: string, port: number): Promise<boolean> {
  const probe = `const s = require('node:net').connect(${port}, '${ip}'); s.setTimeout(2000, () => process.exit(1));` +
    ' s.on(\'connect\', () => process.exit(0)); s.on(\'error\', () => process.exit(1))'
  const r = await run(inNetns(from.netns, [process.execPath, '-e', probe]), { allowFail: true })
  return r.code === 0
}

async function nsCanPing (from: LabHost, ip: string): Promise<boolean> {
  const r = await run(inNetns(from.netns, ['busybox', 'ping', '-c', '1', '-W', '1', ip]), { allowFail: true })
  return r.code === 0
}

describe('lab (simulated hosts)', function () {
  this.timeout(120_000)
  const lab = new Lab({ prefix: PREFIX, subnet: SUBNET, agents: false })
  let h1: LabHost
  let h2: LabHost
  let webId: string

  before(async function () {
    await lab.down()
    const hosts = await lab.up(2)
    ;[h1, h2] = hosts
  })

  after(async function () {
    await lab.down()
  })

  it('gives each host its namespace, address and default route', async () => {
    expect(lab.hosts.map(h => h.name)).to.deep.equal(['vagrant-1', 'aws-1'])
    expect([h1.ip, h2.ip]).to.deep.equal(['10.213.100.10', '10.213.100.11'])
    const namespaces = await readdir('/run/netns')
    for (const h of [h1, h2]) {
      expect(namespaces).to.include(h.netns)
      const addr = await run(['ip', '-n', h.netns, '-4', '-o', 'addr', 'show', 'dev', 'eth0'])
      expect(addr.stdout).to.include(`${h.ip}/24`)
      const route = await run(['ip', '-n', h.netns, 'route', 'show', 'default'])
      expect(route.stdout).to.include('via 10.213.100.1')
    }
  })

  it('runs an engine per host that answers and has the base image', async () => {
    for (const h of [h1, h2]) {
      const docker = lab.docker(h.name)
      expect((await docker.ping()).toString()).to.equal('OK')
      const image = await docker.getImage(BASE_IMAGE).inspect()
      expect(image.RepoTags).to.include(BASE_IMAGE)
    }
    // One deterministic tarball: the same layer in every engine.
    const [a, b] = await Promise.all([h1, h2].map(async h => await lab.docker(h.name).getImage(BASE_IMAGE).inspect()))
    expect(a.RootFS.Layers).to.deep.equal(b.RootFS.Layers)
  })

  it('lets a container on one host reach a published port on another host', async () => {
    const web = await lab.docker(h2.name).createContainer({
      Image: BASE_IMAGE,
      Cmd: ['httpd', '-f', '-p', '80', '-h', '/etc'],
      ExposedPorts: { '80/tcp': {} },
      HostConfig: { PortBindings: { '80/tcp': [{ HostPort: String(WEB_PORT) }] } }
    })
    await web.start()
    webId = web.id
    await waitFor(async () => await tcpOpen(h2.ip, WEB_PORT), { timeoutMs: 10_000, what: `httpd on ${h2.ip}:${WEB_PORT}` })
    const r = await runOnce(lab.docker(h1.name), fetch(h2.ip, '/passwd'))
    expect(r.code, r.output).to.equal(0)
    expect(r.output).to.include('root:x:0:0')
    expect(await nsCanConnect(h1, h2.ip, WEB_PORT)).to.equal(true)
  })

  it('partition cuts the hosts apart but not the root namespace, and heal restores them', async () => {
    expect(await nsCanPing(h2, h1.ip)).to.equal(true)
    await lab.partition(h1.name)
    try {
      expect(await nsCanConnect(h1, h2.ip, WEB_PORT)).to.equal(false)
      expect(await nsCanPing(h2, h1.ip)).to.equal(false)
      const r = await runOnce(lab.docker(h1.name), fetch(h2.ip, '/passwd', 2))
      expect(r.code, r.output).to.not.equal(0)
      expect(await tcpOpen(h2.ip, WEB_PORT)).to.equal(true)
    } finally {
      await lab.heal()
    }
    expect(await nsCanConnect(h1, h2.ip, WEB_PORT)).to.equal(true)
    expect(await nsCanPing(h2, h1.ip)).to.equal(true)
    const r = await runOnce(lab.docker(h1.name), fetch(h2.ip, '/group'))
    expect(r.code, r.output).to.equal(0)
    expect(r.output).to.include('root:x:0:')
  })

  it('kill leaves a dead host running nothing, start brings its engine back', async () => {
    const before = lab.host(h2.name)
    expect(before.dockerdPid).to.be.a('number')
    // A paused (frozen) container too: its processes die only once thawed.
    const frozen = await lab.docker(h2.name).createContainer({ Image: BASE_IMAGE, Cmd: ['sleep', '600'] })
    await frozen.start()
    await frozen.pause()
    const ids = new Set([webId, frozen.id])
    expect(await pidsInContainers(ids)).to.have.length.at.least(2)

    await lab.kill(h2.name)
    expect(await isAlive(before.dockerdPid ?? 0)).to.equal(false)
    expect((await pidsInNetns([h2.netns])).get(h2.netns)).to.deep.equal([])
    expect(await pidsInContainers(ids)).to.deep.equal([])
    expect(await tcpOpen(h2.ip, WEB_PORT, 500)).to.equal(false)
    let answered = true
    try {
      await lab.docker(h2.name).ping()
    } catch {
      answered = false
    }
    expect(answered).to.equal(false)
    expect((await lab.status()).find(s => s.name === h2.name)?.dockerd).to.equal('stopped')

    await lab.start(h2.name)
    const after = lab.host(h2.name)
    expect(after.dockerdPid).to.be.a('number').and.not.equal(before.dockerdPid)
    expect((await lab.docker(h2.name).ping()).toString()).to.equal('OK')
    await lab.docker(h2.name).getImage(BASE_IMAGE).inspect()
    // The killed container is still known to the engine and starts again.
    const web = lab.docker(h2.name).getContainer(webId)
    await web.start()
    await waitFor(async () => await tcpOpen(h2.ip, WEB_PORT), { timeoutMs: 10_000, what: `httpd on ${h2.ip}:${WEB_PORT} after restart` })
  })

  it('down removes everything with the prefix and can run twice', async () => {
    await lab.down()
    await lab.down()
    expect((await readdir('/run/netns').catch(() => [] as string[])).filter(n => n.startsWith(`${PREFIX}-`))).to.deep.equal([])
    expect((await readdir('/sys/class/net')).filter(n => n.startsWith(PREFIX))).to.deep.equal([])
    const mountinfo = await readFile('/proc/self/mountinfo', 'utf8')
    expect(mountinfo).to.not.include(ROOT)
    expect(mountinfo).to.not.include(RUN_ROOT)
    expect(existsSync(ROOT)).to.equal(false)
    expect(existsSync(RUN_ROOT)).to.equal(false)
    const forward = await run(['iptables', '-w', '10', '-S', 'FORWARD'])
    expect(forward.stdout).to.not.include(`${PREFIX}0`)
    const ours: string[] = []
    for (const pid of (await readdir('/proc')).filter(n => /^\d+$/.test(n))) {
      const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
      if (cmd.includes(ROOT) || cmd.includes(RUN_ROOT)) ours.push(`${pid}: ${cmd.replace(/\0/g, ' ')}`)
    }
    expect(ours).to.deep.equal([])
    expect(await pidsInContainers(new Set([webId]))).to.deep.equal([])
  })
})
