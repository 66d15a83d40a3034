/**
 * The move and snapshot state machines (agent/move/session.ts and its two scripts, source.ts and
 * failover/snapshotter.ts), driven end to end in this process: two agents' transfer parts over real
 * libp2p on loopback with real certificates, each on an in-memory engine (MemoryDockerHost, held to
 * the real engine's behaviour by the DockerHost conformance suite). No root, no lab: a failure is
 * injected at every step, and each must leave the source running and unpaused and nothing at the
 * destination. The lab tests (move.test.ts, failover.test.ts) run the same paths on real engines.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { initCa } from '../../certs/index.js'
import type { ContainerSpec, NetworkSpec } from '../../agent/docker/types.js'
import { TransferSession } from '../../agent/move/session.js'
import { layersToSend } from '../../agent/transfer/plan.js'
import { DockerEngineError, MoveInProgressError } from '../../protocol/errors.js'
import type { MoveEvent, MoveStep } from '../../protocol/move-messages.js'
import { specDigest } from '../../protocol/orders.js'
import { MemoryDockerHost, type DockerHostMethod } from '../fixtures/memory-docker-host.js'
import { introduce, miniMesh, operatorSigner, runMove, startMiniAgent, type MiniAgent } from '../fixtures/mini-agent.js'
import { waitFor } from '../lab/wait.js'

const BASE = { '/bin/sh': 'a shell', '/etc/os-release': 'ID=test\n' }
const APP = { '/app/run': 'version 1\n' }

function webSpec (image: string): ContainerSpec {
  return {
    name: 'web', image, env: ['MODE=test'], cmd: ['/app/run'], entrypoint: null, workingDir: '/app', user: '', labels: { app: 'web' }, hostname: 'web',
    exposedPorts: ['80/tcp'], portBindings: {}, restartPolicy: { name: 'unless-stopped', maximumRetryCount: 0 },
    mounts: [{ type: 'volume', name: 'web-data', destination: '/data', readOnly: false, driver: 'local' }]
  }
}

interface World { a: MiniAgent, b: MiniAgent, A: MemoryDockerHost, B: MemoryDockerHost, web: string, imagesB: string[] }

/** The last event of a move (its outcome). */
function outcome (events: MoveEvent[]): MoveEvent {
  const last = events.at(-1)
  if (last === undefined) throw new Error('the move reported nothing')
  return last
}

describe('move and snapshot state machines (in-memory engines, libp2p on loopback)', function () {
  this.timeout(60_000)
  const mesh = miniMesh('goto-sm-')
  let run = 0

  async function agent (name: string, docker: MemoryDockerHost, opts: { state?: string, timings?: Parameters<typeof startMiniAgent>[0]['timings'], labels?: Record<string, string> } = {}): Promise<MiniAgent> {
    return await mesh.start({ name, docker, state: opts.state ?? `state-${run}`, timings: opts.timings, labels: opts.labels })
  }

  /** A with a running `web` (changed files, volume data); B with only the base layer. */
  async function world (timingsB?: Parameters<typeof startMiniAgent>[0]['timings'], where?: { a: Record<string, string>, b: Record<string, string> }): Promise<World> {
    run++
    const A = new MemoryDockerHost({ name: 'A' })
    const B = new MemoryDockerHost({ name: 'B' })
    const image = await A.addImage([BASE, APP], { config: { Env: ['PATH=/bin'], Cmd: ['/app/run'] } })
    await B.addImage([BASE])
    const web = await A.create(webSpec(image))
    await A.start(web)
    A.writeFile(web, '/app/state', 'changed while running\n')
    A.writeVolumeFile('web-data', '/rows', 'row 1\n')
    const a = await agent('a', A, { labels: where?.a })
    const b = await agent('b', B, { timings: timingsB, labels: where?.b })
    introduce(a, b)
    return { a, b, A, B, web, imagesB: B.imageIds().sort() }
  }

  /** Nothing lost at the source, nothing left at the destination, no journal record anywhere. */
  async function expectRolledBack (w: World): Promise<void> {
    const info = await w.A.inspectContainer('web')
    expect(info.state.running, 'source running').to.equal(true)
    expect(info.state.paused, 'source paused').to.equal(false)
    expect(w.A.readFile(w.web, '/app/state')?.toString()).to.equal('changed while running\n')
    expect(w.A.readVolumeFile('web-data', '/rows')?.toString()).to.equal('row 1\n')
    expect(w.B.containerIds(), 'containers at the destination').to.deep.equal([])
    expect(w.B.volumeNames(), 'volumes at the destination').to.deep.equal([])
    expect(w.B.imageIds().sort(), 'images at the destination').to.deep.equal(w.imagesB)
    expect((await w.a.freezeJournal.list()).records, 'freeze records').to.deep.equal([])
    expect((await w.b.incomingJournal.list()).records, 'incoming records').to.deep.equal([])
  }

  /** The container runs at B with its spec, files and volume data, and is gone from A. */
  async function expectMoved (w: World): Promise<void> {
    const moved = await w.B.inspectContainer('web')
    expect(moved.state.running).to.equal(true)
    expect(moved.spec.env).to.include('MODE=test')
    expect(moved.spec.labels).to.include({ app: 'web' })
    expect(w.B.readFile(moved.id, '/app/state')?.toString()).to.equal('changed while running\n')
    expect(w.B.readVolumeFile('web-data', '/rows')?.toString()).to.equal('row 1\n')
    expect(w.A.containerIds()).to.deep.equal([])
    expect(w.A.volumeNames()).to.deep.equal([])
    expect((await w.a.freezeJournal.list()).records).to.deep.equal([])
    expect((await w.b.incomingJournal.list()).records).to.deep.equal([])
  }

  it('moves across an expensive link (another provider) zstd-compressed: the same container, fewer bytes on the wire', async () => {
    const w = await world(undefined, { a: { provider: 'vagrant' }, b: { provider: 'aws', region: 'eu-west-1' } })
    const events = await runMove(w.a, { container: 'web', to: 'b' })
    const done = outcome(events)
    expect(done.event, JSON.stringify(done)).to.equal('done')
    if (done.event !== 'done') return
    expect(done.bytesSent).to.be.above(0)
    expect(done.bytesOnWire).to.be.above(0).and.below(done.bytesSent)
    await expectMoved(w)
  })

  it('moves between hosts of one provider and region uncompressed: the wire carries the blobs as they are', async () => {
    const w = await world(undefined, { a: { provider: 'aws', region: 'r1' }, b: { provider: 'aws', region: 'r1' } })
    const done = outcome(await runMove(w.a, { container: 'web', to: 'b' }))
    expect(done.event === 'done' && done.bytesOnWire === done.bytesSent && done.bytesSent > 0, JSON.stringify(done)).to.equal(true)
    await expectMoved(w)
  })

  it('a dry run across providers shows the link\'s class, each layer and the estimated cost, and changes nothing', async () => {
    const w = await world(undefined, { a: { provider: 'vagrant' }, b: { provider: 'azure' } })
    const events = await runMove(w.a, { container: 'web', to: 'b', dryRun: true })
    const plan = events.find(e => e.event === 'plan')
    if (plan?.event !== 'plan') throw new Error(JSON.stringify(events))
    expect(plan.plan.link).to.deep.equal({ class: 'expensive', costPerGiB: 0.09, compress: 'zstd' })
    expect(plan.plan.layers?.map(l => l.send)).to.deep.equal([false, true])
    expect(plan.plan.estimatedCost).to.be.closeTo(plan.plan.bytesToSend / 2 ** 30 * 0.09, 1e-12)
    await expectRolledBack(w)
  })

  it('a move\'s --max-rate below the link\'s cap is the cap the sender keeps to, and the plan says so', async () => {
    const w = await world(undefined, { a: { provider: 'vagrant' }, b: { provider: 'azure' } })
    const events = await runMove(w.a, { container: 'web', to: 'b', maxRate: 1_000_000 })
    const plan = events.find(e => e.event === 'plan')
    if (plan?.event !== 'plan') throw new Error(JSON.stringify(events))
    expect(plan.plan.rateCap).to.deep.equal({ bytesPerSecond: 1_000_000, by: 'move' })
    expect(outcome(events).event).to.equal('done')
    await expectMoved(w)
  })

  it('moves a running container with its changes and volume data, sending only the layers the destination lacks', async () => {
    const w = await world()
    const image = await w.A.inspectImage((await w.A.inspectContainer(w.web)).spec.image)
    const { present } = layersToSend(image.diffIds, await w.B.imageChains())
    const events = await runMove(w.a, { container: 'web', to: 'b' })
    const done = outcome(events)
    expect(done.event, JSON.stringify(done)).to.equal('done')
    const plan = events.find(e => e.event === 'plan')
    expect(plan?.event === 'plan' && plan.plan.layersPresent).to.equal(present)
    expect(plan?.event === 'plan' && plan.plan.layersToSend).to.equal(image.diffIds.length - present)
    expect(events.filter(e => e.event === 'step').map(e => e.event === 'step' && e.step)).to.deep.equal(['plan', 'pre-copy', 'freeze', 'hand-over', 'restore', 'commit'])
    await expectMoved(w)
  })

  it('a dry run prepares, reports the plan and changes nothing', async () => {
    const w = await world()
    const done = outcome(await runMove(w.a, { container: 'web', to: 'b', dryRun: true }))
    expect(done.event).to.equal('done')
    await expectRolledBack(w)
  })

  // Each case: when the source reports `at`, the next call of `method` on that engine fails, and
  // the move fails with `error` (default: the engine's DockerEngineError, passed on as it is).
  const cases: Array<{ at: MoveStep, engine: 'A' | 'B', method: DockerHostMethod, always?: boolean, rollback: 'none-needed' | 'done', error?: string }> = [
    { at: 'plan', engine: 'A', method: 'inspectImage', rollback: 'none-needed' },
    { at: 'plan', engine: 'B', method: 'info', rollback: 'none-needed' },
    { at: 'plan', engine: 'B', method: 'imageChains', rollback: 'none-needed' },
    { at: 'pre-copy', engine: 'A', method: 'saveImage', rollback: 'done' },
    // The live load and the preload's fallback both fail: the preload fails.
    { at: 'pre-copy', engine: 'B', method: 'loadImage', always: true, rollback: 'done', error: 'ImageLoadError' },
    { at: 'freeze', engine: 'A', method: 'pause', rollback: 'done' },
    { at: 'freeze', engine: 'A', method: 'exportChanges', rollback: 'done' },
    { at: 'freeze', engine: 'A', method: 'inspectImageConfig', rollback: 'done' },
    { at: 'hand-over', engine: 'A', method: 'getArchive', rollback: 'done' },
    { at: 'restore', engine: 'B', method: 'createVolume', rollback: 'done' },
    { at: 'restore', engine: 'B', method: 'create', rollback: 'done' },
    { at: 'restore', engine: 'B', method: 'putArchive', rollback: 'done' },
    { at: 'restore', engine: 'B', method: 'start', rollback: 'done' }
  ]
  for (const c of cases) {
    it(`a failure of ${c.engine}'s ${c.method} at ${c.at} leaves the source running and nothing at the destination; a retry moves it`, async () => {
      const w = await world()
      const engine = c.engine === 'A' ? w.A : w.B
      const injected = new DockerEngineError(`injected: ${c.method} fails`)
      const events: MoveEvent[] = []
      await w.a.moves.move({ container: 'web', to: 'b', dryRun: false, allowBindMounts: false }, async ev => {
        events.push(ev)
        if (ev.event === 'step' && ev.step === c.at) {
          if (c.always === true) engine.failAlways(c.method, injected)
          else engine.failNext(c.method, injected)
        }
      }, AbortSignal.timeout(30_000), await operatorSigner(mesh.dir, mesh.caDir))
      const failed = outcome(events)
      expect(failed.event, JSON.stringify(failed)).to.equal('failed')
      if (failed.event !== 'failed') return
      expect(failed.error.name).to.equal(c.error ?? 'DockerEngineError')
      expect(failed.error.message).to.contain('injected')
      expect(failed.rollback).to.equal(c.rollback)
      expect(engine.callsOf(c.method).some(call => call.state === 'error' && call.error === injected), 'the fault was hit').to.equal(true)
      await expectRolledBack(w)
      engine.clearFaults()
      expect(outcome(await runMove(w.a, { container: 'web', to: 'b' })).event).to.equal('done')
      await expectMoved(w)
    })
  }

  it('a pause whose answer is lost (the engine paused it, the call failed) is undone all the same', async () => {
    const w = await world()
    w.A.beforeCall('pause', async args => {
      w.A.clearFaults('pause')
      await w.A.pause(args[0] as string)
      throw new DockerEngineError('injected: the answer to pause was lost')
    }, 1)
    const failed = outcome(await runMove(w.a, { container: 'web', to: 'b' }))
    expect(failed.event === 'failed' && failed.rollback).to.equal('done')
    await expectRolledBack(w)
  })

  it('a second move, or a snapshot, of a container being moved is refused and touches nothing', async () => {
    const w = await world()
    w.A.hangNext('pause')
    const first = runMove(w.a, { container: 'web', to: 'b' })
    await waitFor(() => w.A.callsOf('pause').length === 1, { timeoutMs: 10_000, intervalMs: 10, what: 'the first move to pause' })
    const second = outcome(await runMove(w.a, { container: 'web', to: 'b' }))
    expect(second.event === 'failed' && second.error.name).to.equal('MoveInProgressError')
    expect(second.event === 'failed' && second.rollback).to.equal('none-needed')
    let snapshotError: unknown
    await w.a.snapshotter.snapshot('web', 'b', { epoch: 1, seq: 1 }, AbortSignal.timeout(10_000)).catch(err => { snapshotError = err })
    expect(snapshotError).to.be.instanceOf(MoveInProgressError)
    w.A.releaseHung()
    expect(outcome(await first).event).to.equal('done')
    await expectMoved(w)
  })

  it('a commit lost midway (the destination restarts, the source cannot remove its copy) is finished by freeze recovery', async () => {
    const w = await world()
    const events: MoveEvent[] = []
    await w.a.moves.move({ container: 'web', to: 'b', dryRun: false, allowBindMounts: false }, async ev => {
      events.push(ev)
      if (ev.event === 'step' && ev.step === 'commit') {
        // The destination runs the container; now its agent goes away (the commit is lost) and
        // the source's removal of its own copy fails.
        await w.b.stop()
        w.A.failNext('remove', new DockerEngineError('injected: remove fails'))
      }
    }, AbortSignal.timeout(30_000), await operatorSigner(mesh.dir, mesh.caDir))
    expect(outcome(events).event, 'the move is done: the destination runs it').to.equal('done')
    expect((await w.a.freezeJournal.list()).records.map(r => r.stage)).to.deep.equal(['committing'])
    expect((await w.A.inspectContainer('web')).state.paused, 'never unpaused once committing').to.equal(true)
    // The destination agent starts again on its state: the move is pending there, waiting for the source.
    const b2 = await agent('b', w.B, { state: `state-${run}` })
    introduce(w.a, b2)
    expect((await b2.incomingJournal.list()).records.map(r => r.stage)).to.deep.equal(['restored'])
    await w.a.recovery.settleNow()
    expect((await w.a.freezeJournal.list()).records).to.deep.equal([])
    expect((await b2.incomingJournal.list()).records).to.deep.equal([])
    await expectMoved(w)
  })

  it('a destination rolls back a transfer whose source went silent', async () => {
    const w = await world({ moveIdleTimeoutMs: 300, moveExpireCheckMs: 50 })
    const session = new TransferSession(w.a.sessions, 'move', await w.A.inspectContainer('web'))
    await session.connect('b', AbortSignal.timeout(10_000))
    const spec = (await w.A.inspectContainer('web')).spec
    const sign = await operatorSigner(mesh.dir, mesh.caDir)
    const order = await sign({ moveId: session.moveId, container: 'web', from: w.a.peerId, fromName: 'a', to: w.b.peerId, toName: 'b', spec, specDigest: specDigest(spec) }, AbortSignal.timeout(10_000))
    await session.prepare(spec, AbortSignal.timeout(10_000), order)
    await session.precopy(() => {}, AbortSignal.timeout(10_000))
    expect(w.B.imageIds().length, 'preloaded at the destination').to.equal(w.imagesB.length + 1)
    expect((await w.b.incomingJournal.list()).records).to.have.length(1)
    // The source says nothing more: the destination undoes the preload and forgets the move.
    await waitFor(async () => (await w.b.incomingJournal.list()).records.length === 0, { timeoutMs: 10_000, intervalMs: 20, what: 'the destination to expire the move' })
    expect(w.B.imageIds().sort()).to.deep.equal(w.imagesB)
    // A source that speaks again hears that the move is unknown; its rollback then needs nothing more.
    expect(await session.abort()).to.equal('done')
    await session.close()
    await expectRolledBack(w)
  })

  it('a snapshot stores the frozen state at the holder and leaves the container running here', async () => {
    const w = await world()
    const r = await w.a.snapshotter.snapshot('web', 'b', { epoch: 1, seq: 1 }, AbortSignal.timeout(30_000))
    expect(r.bytes).to.be.greaterThan(0)
    const info = await w.A.inspectContainer('web')
    expect(info.state.running && !info.state.paused).to.equal(true)
    const held = w.b.snapshots.get('web', w.a.peerId)
    expect(held?.manifest.epoch).to.equal(1)
    expect(held?.manifest.seq).to.equal(1)
    expect(held?.manifest.owner).to.equal(w.a.peerId)
    expect(w.B.containerIds()).to.deep.equal([])
    expect((await w.a.freezeJournal.list()).records).to.deep.equal([])
  })

  it('a snapshot of a volume the owner reads as a directory syncs it as a tree: the next one sends only the change', async () => {
    const w = await world()
    const vol = await mkdtemp(join(tmpdir(), 'goto-snapvol-'))
    try {
      await writeFile(join(vol, 'rows'), Buffer.alloc(3 * 1024 * 1024, 7))
      w.A.volumeDirectory = async () => vol
      const first = await w.a.snapshotter.snapshot('web', 'b', { epoch: 1, seq: 1 }, AbortSignal.timeout(30_000))
      expect(first.volumeBytes).to.equal(3 * 1024 * 1024)
      const held = w.b.snapshots.get('web', w.a.peerId)
      expect(held?.manifest.trees).to.deep.equal([{ name: 'web-data', destination: '/data' }])
      expect(held?.manifest.volumes).to.deep.equal([])
      const fh = await open(join(vol, 'rows'), 'r+')
      await fh.write(Buffer.alloc(100, 1), 0, 100, 1024 * 1024 + 5)
      await fh.close()
      const second = await w.a.snapshotter.snapshot('web', 'b', { epoch: 1, seq: 2 }, AbortSignal.timeout(30_000))
      expect(second.volumeBytes, 'the one changed block').to.equal(1024 * 1024)
      expect(w.b.snapshots.get('web', w.a.peerId)?.manifest.seq).to.equal(2)
      const info = await w.A.inspectContainer('web')
      expect(info.state.running && !info.state.paused).to.equal(true)
    } finally {
      await rm(vol, { recursive: true, force: true })
    }
  })

  // `times`: how many calls fail (Infinity: until cleared). Two failed unpauses: the thaw's and the rollback's.
  const snapshotCases: Array<{ engine: 'A' | 'B', method: DockerHostMethod, times: number, error?: string }> = [
    { engine: 'A', method: 'saveImage', times: 1 },
    { engine: 'B', method: 'loadImage', times: Infinity, error: 'ImageLoadError' },
    { engine: 'A', method: 'pause', times: 1 },
    { engine: 'A', method: 'exportChanges', times: 1 },
    { engine: 'A', method: 'getArchive', times: 1 },
    { engine: 'A', method: 'unpause', times: 1 },
    { engine: 'A', method: 'unpause', times: 2 }
  ]
  for (const c of snapshotCases) {
    it(`a snapshot whose ${c.engine} ${c.method} fails (${c.times} time(s)) leaves the container running here and nothing held there`, async () => {
      const w = await world()
      const engine = c.engine === 'A' ? w.A : w.B
      const injected = new DockerEngineError(`injected: ${c.method} fails`)
      engine.failNext(c.method, injected, c.times)
      let error: Error | undefined
      await w.a.snapshotter.snapshot('web', 'b', { epoch: 1, seq: 1 }, AbortSignal.timeout(30_000)).catch(err => { error = err })
      expect(error?.name).to.equal(c.error ?? 'DockerEngineError')
      expect(error?.message).to.contain('injected')
      engine.clearFaults()
      if (c.method === 'unpause' && c.times > 1) {
        // The rollback's unpause failed too: the record stays for recovery, which unpauses it.
        expect((await w.a.freezeJournal.list()).records.map(r => r.stage)).to.deep.equal(['frozen'])
        expect((await w.A.inspectContainer('web')).state.paused).to.equal(true)
        await w.a.recovery.settleNow()
      }
      expect(w.b.snapshots.get('web', w.a.peerId)).to.equal(undefined)
      await expectRolledBack(w)
      await w.a.snapshotter.snapshot('web', 'b', { epoch: 1, seq: 2 }, AbortSignal.timeout(30_000))
      expect(w.b.snapshots.get('web', w.a.peerId)?.manifest.seq).to.equal(2)
    })
  }

  describe('a container on user-defined networks', () => {
    const APPNET: NetworkSpec = { name: 'appnet', driver: 'bridge', options: {}, labels: { 'com.docker.compose.network': 'default' }, subnets: [{ subnet: '10.77.0.0/24', gateway: '10.77.0.1', ipRange: '' }], internal: false, attachable: false, enableIPv6: false }
    const BACKNET: NetworkSpec = { ...APPNET, name: 'backnet', labels: {}, subnets: [{ subnet: '10.78.0.0/24', gateway: '10.78.0.1', ipRange: '' }] }

    /** A's `web` made again on appnet (alias svc, its NetworkMode) and backnet (a static address). */
    async function netted (w: World): Promise<void> {
      await w.A.createNetwork(APPNET)
      await w.A.createNetwork(BACKNET)
      const spec = (await w.A.inspectContainer('web')).spec
      await w.A.remove(w.web, { force: true, volumes: false })
      w.web = await w.A.create({
        ...spec, primaryNetwork: 'appnet',
        networks: [{ network: APPNET, aliases: ['svc'], ipv4Address: '', ipv6Address: '' }, { network: BACKNET, aliases: [], ipv4Address: '10.78.0.9', ipv6Address: '' }]
      })
      await w.A.start(w.web)
      w.A.writeFile(w.web, '/app/state', 'changed while running\n')
    }

    it('moves with them: the destination creates both with the source\'s settings, the same aliases and static address; the plan lists them', async () => {
      const w = await world()
      await netted(w)
      await w.B.createNetwork({ ...APPNET, name: 'other', subnets: [{ subnet: '10.78.0.0/24', gateway: '10.78.0.1', ipRange: '' }] }) // backnet's subnet is taken at B
      const events = await runMove(w.a, { container: 'web', to: 'b' })
      expect(outcome(events).event, JSON.stringify(outcome(events))).to.equal('done')
      const plan = events.find(e => e.event === 'plan')
      expect(plan?.event === 'plan' ? plan.plan.networks : undefined).to.deep.equal([
        { name: 'appnet', aliases: ['svc'], ipv4Address: '', at: 'create', subnet: 'kept' },
        { name: 'backnet', aliases: [], ipv4Address: '10.78.0.9', at: 'create', subnet: 'engine' }
      ])
      expect(plan?.event === 'plan' ? plan.plan.warnings?.join('\n') : '').to.contain('10.78.0.9 is not kept')
      await expectMoved(w)
      const moved = await w.B.inspectContainer('web')
      expect(moved.spec.primaryNetwork).to.equal('appnet')
      expect(moved.spec.networks?.map(a => [a.network.name, a.aliases, a.ipv4Address])).to.deep.equal([['appnet', ['svc'], ''], ['backnet', [], '']])
      const appnet = await w.B.inspectNetwork('appnet')
      expect({ ...appnet, id: '', containers: 0 }).to.deep.equal({ ...APPNET, id: '', containers: 0 })
      expect((await w.B.inspectNetwork('backnet')).labels).to.deep.equal({ 'org.goto.network.stand-in-for': '10.78.0.0/24' })
    })

    it('a failed start at the destination removes the networks the move made there; one that existed stays', async () => {
      const w = await world()
      await netted(w)
      await w.B.createNetwork(BACKNET)
      w.B.failNext('start', new DockerEngineError('injected: start fails'))
      expect(outcome(await runMove(w.a, { container: 'web', to: 'b' })).event).to.equal('failed')
      expect((await w.B.listNetworks()).map(n => n.name).sort()).to.deep.equal(['backnet', 'bridge', 'host', 'none'])
      expect((await w.A.inspectContainer('web')).state.running).to.equal(true)
    })

    it('a network at the destination with other settings is a conflict at prepare: refused by its name, nothing changes', async () => {
      const w = await world()
      await netted(w)
      await w.B.createNetwork({ ...APPNET, options: { 'com.docker.network.bridge.enable_icc': 'false' } })
      const before = (await w.B.listNetworks()).map(n => n.name).sort()
      for (const dryRun of [false, true]) {
        const last = outcome(await runMove(w.a, { container: 'web', to: 'b', dryRun }))
        expect(last.event === 'failed' && last.error.name).to.equal('NetworkConflictError')
        expect(last.event === 'failed' && last.error.message).to.contain("'appnet'").and.to.contain('options')
        expect(last.event === 'failed' && last.rollback).to.equal('none-needed')
      }
      expect((await w.B.listNetworks()).map(n => n.name).sort()).to.deep.equal(before)
      expect(w.B.containerIds()).to.deep.equal([])
      expect((await w.A.inspectContainer('web')).state.running).to.equal(true)
    })
  })

  describe('a compose project (goto move --project)', () => {
    const SHOPNET: NetworkSpec = { name: 'shop_default', driver: 'bridge', options: {}, labels: { 'com.docker.compose.network': 'default', 'com.docker.compose.project': 'shop' }, subnets: [{ subnet: '10.79.0.0/24', gateway: '10.79.0.1', ipRange: '' }], internal: false, attachable: false, enableIPv6: false }

    const SHOPDATA_LABELS = { 'com.docker.compose.project': 'shop', 'com.docker.compose.volume': 'data' }

    /** A's shop: web → app → db (db with a volume), all on shop_default by their service names; and A's `web` of another project. */
    async function shop (w: World): Promise<void> {
      await w.A.createNetwork(SHOPNET)
      await w.A.createVolume('shop_data', 'local', SHOPDATA_LABELS)
      const base = (await w.A.inspectContainer('web')).spec
      for (const [service, dependsOn] of [['db', ''], ['app', 'db:service_started:false'], ['web', 'app:service_started:false']]) {
        const id = await w.A.create({
          ...base, name: `shop-${service}-1`, mounts: service === 'db' ? [{ type: 'volume', name: 'shop_data', destination: '/data', readOnly: false, driver: 'local' }] : [],
          labels: { 'com.docker.compose.project': 'shop', 'com.docker.compose.service': service, 'com.docker.compose.container-number': '1', 'com.docker.compose.depends_on': dependsOn },
          primaryNetwork: 'shop_default', networks: [{ network: SHOPNET, aliases: [`shop-${service}-1`, service], ipv4Address: '', ipv6Address: '' }]
        })
        await w.A.start(id)
      }
      w.A.writeVolumeFile('shop_data', '/rows', 'row 1\n')
    }

    it('moves every container of the project together: frozen together, restored db, app, web, committed together; the other container stays', async () => {
      const w = await world()
      await shop(w)
      const events = await runMove(w.a, { container: 'shop', project: true, to: 'b' })
      const last = outcome(events)
      expect(last.event, JSON.stringify(last)).to.equal('done')
      expect(last.event === 'done' && last.container).to.equal('shop')
      const steps = events.flatMap(e => e.event === 'step' ? [`${e.step}`] : [])
      // Every member is frozen before any is handed over, and every one runs there before any commit.
      expect(steps.lastIndexOf('freeze')).to.be.lessThan(steps.indexOf('hand-over'))
      expect(steps.lastIndexOf('restore')).to.be.lessThan(steps.indexOf('commit'))
      const starts = w.B.events.filter(e => e.type === 'container' && e.action === 'start').map(e => e.name)
      expect(starts).to.deep.equal(['shop-db-1', 'shop-app-1', 'shop-web-1'])
      for (const n of ['shop-db-1', 'shop-app-1', 'shop-web-1']) expect((await w.B.inspectContainer(n)).state.running, n).to.equal(true)
      expect(w.B.readVolumeFile('shop_data', '/rows')?.toString()).to.equal('row 1\n')
      // The volume made at B has compose's labels (docker compose there takes it as its own).
      expect((await w.B.inspectContainer('shop-db-1')).spec.mounts.find(m => m.type === 'volume')).to.deep.include({ labels: SHOPDATA_LABELS })
      expect((await w.B.inspectNetwork('shop_default')).labels).to.deep.equal(SHOPNET.labels)
      expect((await w.A.listContainers()).map(c => c.name)).to.deep.equal(['web'])
    })

    it('a failure of the last restore rolls every member back: all run at the source, nothing left at the destination', async () => {
      const w = await world()
      await shop(w)
      const before = (await w.B.listNetworks()).map(n => n.name).sort()
      let starts = 0
      w.B.beforeCall('start', () => { if (++starts === 3) throw new DockerEngineError('injected: the last start fails') })
      const last = outcome(await runMove(w.a, { container: 'shop', project: true, to: 'b' }))
      expect(last.event === 'failed' && last.rollback, JSON.stringify(last)).to.equal('done')
      for (const n of ['shop-db-1', 'shop-app-1', 'shop-web-1']) {
        const c = await w.A.inspectContainer(n)
        expect(c.state.running && !c.state.paused, n).to.equal(true)
      }
      expect(w.B.containerIds()).to.deep.equal([])
      expect(w.B.volumeNames()).to.deep.equal([])
      expect((await w.B.listNetworks()).map(n => n.name).sort()).to.deep.equal(before)
      expect((await w.b.incomingJournal.list()).records).to.deep.equal([])
      expect((await w.a.freezeJournal.list()).records).to.deep.equal([])
    })

    it('an unknown project is refused and changes nothing; a dry run plans every member and changes nothing', async () => {
      const w = await world()
      await shop(w)
      const none = outcome(await runMove(w.a, { container: 'nope', project: true, to: 'b' }))
      expect(none.event === 'failed' && none.error.name).to.equal('UnknownProjectError')
      const events = await runMove(w.a, { container: 'shop', project: true, to: 'b', dryRun: true })
      expect(outcome(events).event).to.equal('done')
      expect(events.filter(e => e.event === 'plan').map(e => e.event === 'plan' ? e.plan.container : '')).to.deep.equal(['shop-db-1', 'shop-app-1', 'shop-web-1'])
      expect(w.B.containerIds()).to.deep.equal([])
      expect((await w.B.listNetworks()).map(n => n.name)).to.not.include('shop_default')
    })
  })
})
