/**
 * The in-memory engine (test/fixtures/memory-docker-host.ts) against the DockerHost conformance
 * suite, and its test API: fault injection, the call log and events.
 */
import { expect } from 'chai'
import { describeDockerHost } from '../conformance/docker-host.js'
import { MemoryDockerHost } from '../fixtures/memory-docker-host.js'
import { DockerUnavailableError } from '../../protocol/errors.js'

/** A base image as a lab engine's: a shell and sleep (files only; the fake runs nothing). */
async function withBase (host: MemoryDockerHost): Promise<string> {
  return await host.addImage([{ '/bin/sh': 'busybox', '/bin/sleep': 'busybox', '/etc/passwd': 'root:x:0:0::/root:/bin/sh\n', '/tmp': { type: 'directory', mode: 0o1777 } }], { tags: ['gotolab/base:latest'] })
}

describeDockerHost('MemoryDockerHost', async () => {
  const host = new MemoryDockerHost({ name: 'a' })
  const other = new MemoryDockerHost({ name: 'b' })
  const baseImage = await withBase(host)
  await withBase(other)
  return {
    host,
    other,
    baseImage,
    deletePath: async (id, path) => { host.deletePath(id, path) },
    cleanup: async () => {}
  }
})

describe('MemoryDockerHost test API', () => {
  const spec = (name: string, image: string) => ({
    name, image, env: [], cmd: ['sleep', '1'], entrypoint: null, workingDir: '', user: '', labels: {}, hostname: '',
    exposedPorts: [], portBindings: {}, restartPolicy: { name: 'no' as const, maximumRetryCount: 0 }, mounts: []
  })

  it('fails the next call of a method, then behaves again', async () => {
    const host = new MemoryDockerHost()
    const id = await host.create(spec('web', await withBase(host)))
    await host.start(id)
    const gone = new DockerUnavailableError('engine gone')
    host.failNext('pause', gone)
    let err: unknown
    try { await host.pause(id) } catch (e) { err = e }
    expect(err).to.equal(gone)
    expect((await host.inspectContainer(id)).state.paused).to.equal(false)
    await host.pause(id)
    expect(host.callsOf('pause').map(c => c.state)).to.deep.equal(['error', 'ok'])
    expect(host.events.filter(e => e.id === id).map(e => e.action)).to.deep.equal(['create', 'start', 'pause'])
  })

  it('hangs a call until its signal aborts, or until released', async () => {
    const host = new MemoryDockerHost()
    const id = await host.create(spec('web', await withBase(host)))
    host.hangAlways('start')
    const ac = new AbortController()
    const started = host.nextCall('start')
    const hung = host.start(id, ac.signal)
    expect((await started).args).to.deep.equal([id])
    ac.abort(new Error('took too long'))
    let err: unknown
    try { await hung } catch (e) { err = e }
    expect((err as Error).message).to.equal('took too long')
    expect((await host.inspectContainer(id)).state.running).to.equal(false)
    const late = host.start(id)
    const event = host.nextEvent(e => e.action === 'start')
    host.clearFaults()
    host.releaseHung()
    await late
    expect((await event).id).to.equal(id)
  })

  it('keeps a container\'s file changes over its image and through its volume mounts', async () => {
    const host = new MemoryDockerHost()
    const id = await host.create({ ...spec('web', await withBase(host)), mounts: [{ type: 'volume', name: 'v', destination: '/data', readOnly: false, driver: 'local' }] })
    host.writeFile(id, '/srv/a.txt', 'a')
    host.writeFile(id, '/data/b.txt', 'b')
    expect(host.deletePath(id, '/etc/passwd')).to.equal(true)
    expect(host.readFile(id, '/srv/a.txt')?.toString()).to.equal('a')
    expect(host.readVolumeFile('v', '/b.txt')?.toString()).to.equal('b')
    const changes = await host.containerChanges(id)
    expect(changes).to.deep.include({ path: '/srv/a.txt', kind: 'added' })
    expect(changes).to.deep.include({ path: '/etc/passwd', kind: 'deleted' })
    expect(changes.some(c => c.path.startsWith('/data/'))).to.equal(false)
  })
})
