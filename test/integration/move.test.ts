/**
 * goto move in the lab: three hosts with real engines and agents, the real CLI. One lab for the
 * file; after() tears it down even when a test failed. Tests run in order and share containers
 * where a scenario continues (web moves A→B, then back).
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { moveJson, type MoveRun } from '../fixtures/move-cli.js'
import { promisify } from 'node:util'
import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { killOnEvent } from '../fixtures/docker.js'
import { readBundle, TrustStore } from '../../certs/index.js'
import { createMeshNode } from '../../protocol/node.js'
import { authenticateOutbound } from '../../protocol/auth.js'
import { JsonStream, readResult, sendBlob } from '../../protocol/wire.js'
import { MOVE_PROTOCOL, TRANSFER_PROTOCOL } from '../../protocol/ids.js'
import { RoleNotAllowedError, LayerDigestMismatchError } from '../../protocol/errors.js'
import type { MoveEvent } from '../../protocol/move-messages.js'
import type { PeerRow } from '../../protocol/messages.js'
import type { ContainerSpec } from '../../protocol/container.js'
import { signOrder, specDigest, type MoveOrderBody } from '../../protocol/orders.js'

const run = promisify(execFile)
const STATE_TIMEOUT_MS = 30_000
type Done = Extract<MoveEvent, { event: 'done' }>
type Failed = Extract<MoveEvent, { event: 'failed' }>

describe('goto move in the lab (3 hosts, real engines and agents)', function () {
  this.timeout(240_000)
  // The third host's agent reads layers only through `docker save` (the path for an engine whose
  // storage it cannot read); the others read them from their engine's storage.
  const lab = new Lab({ prefix: 'gotolabv', subnet: '10.213.90.0/24', agentArgs: h => h.name === 'azure-1' ? ['--docker-save-only'] : [] })
  let A: LabHost
  let B: LabHost
  let C: LabHost

  /** The docker CLI against one lab engine. */
  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
    return stdout.trim()
  }

  async function inspect (h: LabHost, name: string): Promise<any> {
    return JSON.parse(await docker(h, 'inspect', name))[0]
  }

  async function exists (h: LabHost, name: string): Promise<boolean> {
    return (await docker(h, 'ps', '-a', '--format', '{{.Names}}')).split('\n').includes(name)
  }

  /** Runs `goto move ... --json` and returns its events (the last is done or failed) and exit code. */
  async function move (container: string, to: string, extra: string[] = [], onEvent?: (ev: MoveEvent) => void): Promise<MoveRun> {
    return await moveJson(container, to, { controlMain: lab.controlMain, bundle: lab.operatorBundle, agent: A.agentAddr, extra, onEvent })
  }

  /** Runs `goto move` and kills the agent of `victim` the moment its engine reports `event` for the container. */
  async function moveKilling (container: string, to: string, victim: LabHost, event: string): ReturnType<typeof move> {
    const pid = (await lab.load()).hosts.find(h => h.name === victim.name)?.agent?.pid as number
    const watch = await killOnEvent(victim, container, event, pid, STATE_TIMEOUT_MS)
    try {
      const r = await move(container, to)
      await watch.killed
      return r
    } finally {
      watch.close()
    }
  }

  function done (r: { code: number | null, events: MoveEvent[], stderr: string }): Done {
    const last = r.events.at(-1)
    expect(last?.event, `${JSON.stringify(last)} ${r.stderr}`).to.equal('done')
    expect(r.code).to.equal(0)
    return last as Done
  }

  function failed (r: { code: number | null, events: MoveEvent[], stderr: string }, name: string): Failed {
    expect(r.code, r.stderr).to.equal(1)
    const last = r.events.at(-1) as Failed
    expect(last?.event, JSON.stringify(last)).to.equal('failed')
    expect(last.error.name).to.equal(name)
    return last
  }

  async function aliveAt (from: LabHost, name: string): Promise<boolean> {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === name && p.state === 'alive')
  }

  /** What an engine holds, to show a refused or dry-run move changed nothing. */
  async function snapshot (h: LabHost): Promise<string> {
    return [await docker(h, 'ps', '-a', '--format', '{{.Names}} {{.State}} {{.Image}}'), await docker(h, 'images', '-a', '-q', '--no-trunc'), await docker(h, 'volume', 'ls', '-q')]
      .map(s => s.split('\n').sort().join('\n')).join('\n--\n')
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[A, B, C] = await lab.up(3)
    for (const h of [A, B, C]) {
      for (const other of [A, B, C]) await waitFor(async () => await aliveAt(h, other.name), { timeoutMs: 60_000, intervalMs: 250, what: `${other.name} alive at ${h.name}` })
    }
    // A three-layer image: the base, then two commits.
    await docker(A, 'run', '--name', 'build1', 'gotolab/base:latest', 'sh', '-c', 'mkdir -p /srv /www && chmod 777 /srv && echo v1 > /www/index.html')
    await docker(A, 'commit', 'build1', 'app:v1')
    await docker(A, 'run', '--name', 'build2', 'app:v1', 'sh', '-c', 'echo three > /www/l3.txt')
    await docker(A, 'commit', 'build2', 'app:v1')
    await docker(A, 'rm', 'build1', 'build2')
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('moves a running container A→B with its spec, its changed files and its volume data; A keeps nothing', async () => {
    expect((JSON.parse(await docker(A, 'image', 'inspect', 'app:v1'))[0].RootFS.Layers as string[]).length).to.equal(3)
    await docker(A, 'run', '-d', '--name', 'web', '-e', 'FOO=bar', '-l', 'app=web', '-l', 'tier=front', '-p', '18080:8080',
      '--restart', 'unless-stopped', '-w', '/srv', '-u', '1000:1000', '-h', 'webhost', '-v', 'webdata:/data',
      'app:v1', 'httpd', '-f', '-p', '8080', '-h', '/www')
    await docker(A, 'exec', '-u', '0', 'web', 'sh', '-c', 'echo vol > /data/v.txt && echo changed > /srv/state.txt')
    // A local tag at B that a received image must never move.
    await docker(B, 'tag', 'gotolab/base:latest', 'app:v1')
    const victim = await docker(B, 'image', 'inspect', '--format', '{{.Id}}', 'app:v1')
    const before = await inspect(A, 'web')

    const ev = done(await move('web', B.name))
    expect(ev).to.deep.include({ container: 'web', from: A.name, to: B.name })
    expect(ev.layersSent).to.be.greaterThan(0)
    expect(ev.downtimeMs).to.be.a('number')

    const after = await inspect(B, 'web')
    expect(after.State.Running).to.equal(true)
    for (const k of ['Env', 'Cmd', 'Entrypoint', 'WorkingDir', 'User', 'Labels', 'Hostname', 'ExposedPorts']) {
      expect(after.Config[k], `Config.${k}`).to.deep.equal(before.Config[k])
    }
    expect(after.HostConfig.PortBindings).to.deep.equal(before.HostConfig.PortBindings)
    expect(after.HostConfig.RestartPolicy).to.deep.equal(before.HostConfig.RestartPolicy)
    expect(after.Mounts.map((m: any) => [m.Type, m.Name, m.Destination])).to.deep.equal(before.Mounts.map((m: any) => [m.Type, m.Name, m.Destination]))
    expect(await docker(B, 'exec', 'web', 'cat', '/srv/state.txt', '/data/v.txt', '/www/l3.txt')).to.equal('changed\nvol\nthree')
    // It serves from B, reachable from another host.
    const { stdout } = await run('ip', ['netns', 'exec', A.netns, 'wget', '-qO-', `http://${B.ip}:18080/index.html`])
    expect(stdout.trim()).to.equal('v1')
    expect(await exists(A, 'web')).to.equal(false)
    expect(await docker(A, 'volume', 'ls', '-q')).to.not.contain('webdata')
    expect(await docker(B, 'image', 'inspect', '--format', '{{.Id}}', 'app:v1')).to.equal(victim)
  })

  it('moves it back B→A sending only the new top layer', async () => {
    await docker(B, 'exec', '-u', '0', 'web', 'sh', '-c', 'echo again > /srv/state2.txt')
    const imageSize = Number(await docker(B, 'image', 'inspect', '--format', '{{.Size}}', (await inspect(B, 'web')).Image))
    const ev = done(await move('web', A.name))
    expect(ev.layersSent).to.equal(1)
    expect(ev.layersSkipped).to.equal(4)
    expect(ev.bytesSent).to.be.below(imageSize / 10)
    expect(await docker(A, 'exec', 'web', 'cat', '/srv/state.txt', '/srv/state2.txt', '/data/v.txt')).to.equal('changed\nagain\nvol')
    expect(await exists(B, 'web')).to.equal(false)
  })

  it('--dry-run prints the plan and changes nothing', async () => {
    const before = [await snapshot(A), await snapshot(B)]
    const r = await move('web', B.name, ['--dry-run'])
    const plan = r.events.find(e => e.event === 'plan')
    expect(plan).to.not.equal(undefined)
    expect(done(r).bytesSent).to.equal(0)
    expect([await snapshot(A), await snapshot(B)]).to.deep.equal(before)
    const human = await lab.cli(['move', 'web', '--to', B.name, '--dry-run'])
    expect(human.code).to.equal(0)
    expect(human.stdout).to.match(/plan [0-9a-f]{16}: web .* → .*layer\(s\)/).and.to.contain('dry run: nothing changed')
  })

  it('refuses, with a clear error and no change: unknown container, unknown or dead destination, bind mount, name conflict', async () => {
    const unknown = await lab.cli(['move', 'no-such', '--to', B.name])
    expect(unknown.code).to.equal(1)
    expect(unknown.stderr).to.contain("no container 'no-such'")

    const before = [await snapshot(A), await snapshot(B)]
    failed(await move('web', 'nowhere'), 'DestinationUnavailableError')

    await docker(A, 'run', '-d', '--name', 'bound', '-v', '/tmp:/host-tmp', 'gotolab/base:latest', 'sleep', '3600')
    const bound = failed(await move('bound', B.name), 'BindMountRefusedError')
    expect(bound.error.message).to.contain('/tmp').and.to.contain('--allow-bind-mounts')
    expect(bound.rollback).to.equal('none-needed')
    await docker(A, 'rm', '-f', 'bound')

    await docker(A, 'run', '-d', '--name', 'twin', 'gotolab/base:latest', 'sleep', '3600')
    await docker(B, 'run', '-d', '--name', 'twin', 'gotolab/base:latest', 'sleep', '3600')
    const snapA = await snapshot(A)
    const snapB = await snapshot(B)
    failed(await move('twin', B.name), 'NameConflictError')
    expect([await snapshot(A), await snapshot(B)]).to.deep.equal([snapA, snapB])
    expect((await inspect(A, 'twin')).State.Running).to.equal(true)
    await docker(A, 'rm', '-f', 'twin')
    await docker(B, 'rm', '-f', 'twin')
    expect([await snapshot(A), await snapshot(B)]).to.deep.equal(before)

    await lab.killAgent(C.name)
    await waitFor(async () => {
      const r = await lab.cli(['peers', '--json'], { agent: A.agentAddr })
      return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === C.name && p.state === 'dead')
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${C.name} dead at ${A.name}` })
    const dead = failed(await move('web', C.name), 'DestinationUnavailableError')
    expect(dead.error.message).to.contain('dead')
    await lab.startAgent(C.name)
    expect((await inspect(A, 'web')).State.Running).to.equal(true)
  })

  it('refuses a move ordered with an agent certificate', async () => {
    // The CLI refuses an agent bundle outright ...
    const r = await lab.cli(['move', 'web', '--to', B.name], { bundle: A.bundleDir })
    expect(r.code).to.equal(2)
    expect(r.stderr).to.contain('--bundle')
    // ... and the agent refuses one too, whoever sends it.
    const bundle = await readBundle(B.bundleDir)
    const trust = new TrustStore(bundle.caCertPem, bundle.crl)
    const node = await createMeshNode({ privateKey: bundle.privateKey, listen: [], isRefused: () => false })
    await node.start()
    try {
      const conn = await node.dial(multiaddr(A.agentAddr))
      await authenticateOutbound(conn, { certPem: bundle.certPem, trust }, AbortSignal.timeout(10_000))
      const js = new JsonStream(await conn.newStream(MOVE_PROTOCOL))
      await js.write({ container: 'web', to: B.name, dryRun: false, allowBindMounts: false })
      let err: unknown
      try { await readResult(js, AbortSignal.timeout(10_000)) } catch (e) { err = e }
      expect(err).to.be.instanceOf(RoleNotAllowedError)
    } finally {
      await node.stop()
    }
    expect((await inspect(A, 'web')).State.Running).to.equal(true)
  })

  it('refuses a corrupted layer before the engine can load it (a faulty sender)', async () => {
    const bundleDir = await lab.issueBundle('faulty', 'agent')
    const bundle = await readBundle(bundleDir)
    const trust = new TrustStore(bundle.caCertPem, bundle.crl)
    const node = await createMeshNode({ privateKey: bundle.privateKey, listen: [], isRefused: () => false })
    await node.start()
    try {
      const conn = await node.dial(multiaddr(B.agentAddr))
      await authenticateOutbound(conn, { certPem: bundle.certPem, trust }, AbortSignal.timeout(10_000))
      const call = async (req: unknown, blob?: Uint8Array): Promise<unknown> => {
        const js = new JsonStream(await conn.newStream(TRANSFER_PROTOCOL))
        await js.write(req)
        if (blob !== undefined) await sendBlob(js, (async function * () { yield blob })(), blob.byteLength)
        return await readResult(js, AbortSignal.timeout(10_000))
      }
      // A layer B cannot have: one file in a tar, with its real digest announced.
      const layer = new Uint8Array(4096)
      layer.set(new TextEncoder().encode('faulty.txt'), 0)
      const diffId = `sha256:${createHash('sha256').update(layer).digest('hex')}`
      const base = JSON.parse(await docker(B, 'image', 'inspect', 'gotolab/base:latest'))[0]
      const moveId = '00000000000000aa'
      const spec: ContainerSpec = { name: 'faulty-c', image: base.Id, env: [], cmd: null, entrypoint: null, workingDir: '', user: '', labels: {}, hostname: '', exposedPorts: [], portBindings: {}, restartPolicy: { name: 'no', maximumRetryCount: 0 }, mounts: [] }
      // An operator did order this move (the sender is faulty, not rogue).
      const order = await signOrder<MoveOrderBody>(await readBundle(lab.operatorBundle), {
        kind: 'move', id: moveId, container: spec.name, from: bundle.peerId, to: conn.remotePeer.toString(), specDigest: specDigest(spec), allow: { binds: [] }
      })
      await call({
        op: 'prepare', moveId, spec,
        image: { id: base.Id, diffIds: [...base.RootFS.Layers, diffId], os: 'linux', architecture: base.Architecture, size: 4096 },
        volumes: [],
        order
      })
      const corrupted = layer.slice()
      corrupted[100] ^= 0xff
      let err: unknown
      try { await call({ op: 'layer', moveId, diffId, size: corrupted.byteLength }, corrupted) } catch (e) { err = e }
      expect(err).to.be.instanceOf(LayerDigestMismatchError)
      // Sent unnamed (as a save stream's layers are), it must still be one the move needs.
      err = undefined
      try { await call({ op: 'layer', moveId, diffId: null, size: corrupted.byteLength }, corrupted) } catch (e) { err = e }
      expect(err).to.be.instanceOf(LayerDigestMismatchError)
      const staged = await readdir(join(B.dir, 'state', 'layers')).catch(() => [] as string[])
      expect(staged.filter(f => f.includes(diffId.slice(7)))).to.deep.equal([])
      await call({ op: 'abort', moveId })
    } finally {
      await node.stop()
    }
    expect(await exists(B, 'faulty-c')).to.equal(false)
  })

  it('after a cut, a retry does not resend layers the destination already verified', async () => {
    await docker(A, 'run', '--name', 'twobuild', 'gotolab/base:latest', 'sh', '-c', 'head -c 24m /dev/urandom > /one')
    await docker(A, 'commit', 'twobuild', 'two:v1')
    await docker(A, 'rm', 'twobuild')
    await docker(A, 'run', '--name', 'twobuild', 'two:v1', 'sh', '-c', 'head -c 48m /dev/urandom > /two')
    await docker(A, 'commit', 'twobuild', 'two:v1')
    await docker(A, 'rm', 'twobuild')
    await docker(A, 'run', '-d', '--name', 'two', 'two:v1', 'sleep', '3600')
    const logLines = async (): Promise<string[]> => (await run('cat', [B.agentLog])).stdout.split('\n')
    const verifiedBefore = (await logLines()).filter(l => l.includes('"layer verified"')).length

    // Cut the destination off as soon as it has verified the first of the two layers.
    let killed: Promise<void> | undefined
    const watcher = waitFor(async () => (await logLines()).filter(l => l.includes('"layer verified"')).length > verifiedBefore,
      { timeoutMs: 60_000, intervalMs: 20, what: 'the first layer verified at the destination' })
      .then(() => { killed = lab.killAgent(B.name) })
    const first = await move('two', B.name)
    await watcher
    await killed
    failed(first, (first.events.at(-1) as Failed).error.name)
    expect((await inspect(A, 'two')).State.Running).to.equal(true)

    await lab.startAgent(B.name)
    await waitFor(async () => await aliveAt(A, B.name), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${B.name} alive again` })
    const retry = await move('two', B.name)
    const plan = retry.events.find(e => e.event === 'plan') as Extract<MoveEvent, { event: 'plan' }>
    expect(plan.plan.layersTotal).to.equal(3)
    expect(plan.plan.layersToSend, 'one of the two new layers was verified before the cut').to.equal(1)
    done(retry)
    expect(await docker(B, 'exec', 'two', 'sh', '-c', 'wc -c < /one; wc -c < /two')).to.equal(`${24 * 1024 * 1024}\n${48 * 1024 * 1024}`)
  })

  it('survives the destination agent dying mid-transfer: the source runs on, nothing half-made remains, a retry succeeds', async () => {
    await docker(A, 'run', '--name', 'bigbuild', 'gotolab/base:latest', 'sh', '-c', 'head -c 96m /dev/urandom > /big')
    await docker(A, 'commit', 'bigbuild', 'big:v1')
    await docker(A, 'rm', 'bigbuild')
    await docker(A, 'run', '-d', '--name', 'big', '-v', 'bigdata:/data', 'big:v1', 'sleep', '3600')
    const before = await snapshot(B)

    let killed: Promise<void> | undefined
    const r = await move('big', B.name, [], ev => {
      if (killed === undefined && ev.event === 'progress' && ev.step === 'pre-copy') killed = lab.killAgent(B.name)
    })
    await killed
    expect(killed, 'the move never reported pre-copy progress').to.not.equal(undefined)
    const f = failed(r, r.events.at(-1)?.event === 'failed' ? (r.events.at(-1) as Failed).error.name : 'none')
    expect(f.rollback).to.be.oneOf(['done', 'none-needed'])
    const state = (await inspect(A, 'big')).State
    expect(state.Running).to.equal(true)
    expect(state.Paused).to.equal(false)
    expect(await snapshot(B)).to.equal(before)

    // Further moves of the same container are refused while the first runs — each of them, not
    // only the first: a refused move must not release the running one's lock.
    await lab.startAgent(B.name)
    await waitFor(async () => await aliveAt(A, B.name), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${B.name} alive again` })
    let planned: () => void = () => {}
    const running = new Promise<void>(resolve => { planned = resolve })
    const winner = move('big', B.name, [], ev => { if (ev.event === 'plan') planned() })
    await running
    const losers = [await move('big', B.name), await move('big', B.name)]
    done(await winner)
    for (const loser of losers) {
      expect(loser.events.at(-1)?.event, JSON.stringify(loser.events.at(-1))).to.equal('failed')
      // Refused while it runs, or, once it is done, not found here any more.
      expect((loser.events.at(-1) as Failed).error.name).to.be.oneOf(['MoveInProgressError', 'UnknownContainerError'])
    }
    expect((await inspect(B, 'big')).State.Running).to.equal(true)
    expect(await docker(B, 'exec', 'big', 'sh', '-c', 'wc -c < /big')).to.equal(String(96 * 1024 * 1024))
    expect(await exists(A, 'big')).to.equal(false)
  })

  it('survives the source agent dying while the container is frozen: restarted, it runs the container again and the destination keeps nothing', async () => {
    await docker(A, 'run', '-d', '--name', 'frozen', '-v', 'frozendata:/data', 'app:v1', 'sleep', '3600')
    await docker(A, 'exec', 'frozen', 'sh', '-c', 'echo kept > /data/v.txt && echo mine > /state.txt')
    const before = await snapshot(B)
    // The agent dies the moment the engine has paused the container for the move.
    const r = await moveKilling('frozen', B.name, A, 'pause')
    expect(r.code, r.stderr).to.not.equal(0)
    expect((await inspect(A, 'frozen')).State.Paused, 'the agent died after the freeze ended').to.equal(true)

    await lab.startAgent(A.name)
    await waitFor(async () => { const s = (await inspect(A, 'frozen')).State; return s.Running === true && s.Paused === false }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 100, what: `${A.name} to unpause frozen` })
    // Once it sees B again it tells B to abort, and B removes what the move made there.
    await waitFor(async () => await snapshot(B) === before, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${B.name} to drop the move cut short` })
    expect(await docker(A, 'exec', 'frozen', 'cat', '/data/v.txt', '/state.txt')).to.equal('kept\nmine')
    await waitFor(async () => await aliveAt(A, B.name), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${B.name} alive at ${A.name}` })
    done(await move('frozen', B.name))
    expect(await docker(B, 'exec', 'frozen', 'cat', '/data/v.txt', '/state.txt')).to.equal('kept\nmine')
    expect(await exists(A, 'frozen')).to.equal(false)
  })

  it('survives the source agent dying as it removes the moved container: restarted, it finishes letting go', async () => {
    // 'frozen' runs on B now (the test above); move it back to A and kill B's agent at its removal.
    await moveKilling('frozen', A.name, B, 'kill')
    expect((await inspect(A, 'frozen')).State.Running).to.equal(true)
    await lab.startAgent(B.name)
    // Restarted, B's agent removes the container if the engine had not finished, and the volume
    // that left with it, and tells A the move is committed.
    await waitFor(async () => !await exists(B, 'frozen') && !(await docker(B, 'volume', 'ls', '-q')).split('\n').includes('frozendata'), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${B.name} to let go of frozen and its volume` })
    await waitFor(async () => (await readFile(B.agentLog, 'utf8')).includes('told to commit'), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${B.name} to tell ${A.name} to commit` })
    expect((await inspect(A, 'frozen')).State.Running).to.equal(true)
    expect(await docker(A, 'exec', 'frozen', 'cat', '/data/v.txt', '/state.txt')).to.equal('kept\nmine')
  })

  it('survives the destination agent dying while it starts the container: restarted, it removes what the move made; a retry succeeds', async () => {
    await docker(A, 'run', '-d', '--name', 'halfmade', '-v', 'halfdata:/data', 'app:v1', 'sleep', '3600')
    await docker(A, 'exec', 'halfmade', 'sh', '-c', 'echo kept > /data/v.txt')
    const before = await snapshot(B)
    // B's agent dies the moment its engine starts the restored container, before it can answer.
    const r = await moveKilling('halfmade', B.name, B, 'start')
    expect(r.code, r.stderr).to.not.equal(0)
    const state = (await inspect(A, 'halfmade')).State
    expect([state.Running, state.Paused]).to.deep.equal([true, false])

    await lab.startAgent(B.name)
    await waitFor(async () => await snapshot(B) === before, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${B.name} to remove what the move made` })
    expect(await readFile(B.agentLog, 'utf8')).to.contain('removed what it made')
    await waitFor(async () => await aliveAt(A, B.name), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${B.name} alive at ${A.name}` })
    done(await move('halfmade', B.name))
    expect(await docker(B, 'exec', 'halfmade', 'cat', '/data/v.txt')).to.equal('kept')
    expect(await exists(A, 'halfmade')).to.equal(false)
  })

  it('goto drain empties a host: its running containers run elsewhere with their data, as planned; a stopped one stays', async () => {
    // d1's image has a layer only C holds: it travels through C's `docker save` (--docker-save-only).
    await docker(C, 'run', '--name', 'dbuild', 'gotolab/base:latest', 'sh', '-c', 'echo saved > /layer.txt')
    await docker(C, 'commit', 'dbuild', 'dimg:v1')
    await docker(C, 'rm', 'dbuild')
    await docker(C, 'run', '-d', '--name', 'd1', '-v', 'd1data:/data', 'dimg:v1', 'sleep', '3600')
    await docker(C, 'exec', 'd1', 'sh', '-c', 'echo kept > /data/v.txt && echo mine > /state.txt')
    await docker(C, 'run', '-d', '--name', 'd2', 'gotolab/base:latest', 'sleep', '3600')
    await docker(C, 'create', '--name', 'd3', 'gotolab/base:latest', 'true')

    const dry = await lab.cli(['drain', C.name, '--dry-run'])
    expect(dry.code, dry.stderr).to.equal(0)
    expect(dry.stdout).to.contain(`drain ${C.name}: 2 running container(s) to move`).and.to.contain('dry run: nothing changed')
    expect((await inspect(C, 'd1')).State.Running).to.equal(true)

    const r = await lab.cli(['drain', C.name, '--json'])
    expect(r.code, r.stderr).to.equal(0)
    const events = r.stdout.split('\n').filter(l => l.trim() !== '').map(l => JSON.parse(l) as { event: string, [k: string]: any })
    const plan = events.find(e => e.event === 'drain-plan')?.plan as { assignments: Array<{ container: string, to: string }> }
    expect(plan.assignments.map(a => a.container)).to.deep.equal(['d1', 'd2'])
    const last = events.at(-1)
    expect(last?.event).to.equal('drained')
    expect(last?.moved).to.deep.equal(plan.assignments)
    expect(last?.left).to.deep.equal([{ container: 'd3', state: 'created' }])
    const byName = new Map([A, B].map(h => [h.name, h]))
    for (const a of plan.assignments) {
      const h = byName.get(a.to)
      expect(h, `${a.container} planned onto ${a.to}`).to.not.equal(undefined)
      expect((await inspect(h as LabHost, a.container)).State.Running).to.equal(true)
    }
    const d1At = byName.get(plan.assignments[0].to) as LabHost
    expect(await docker(d1At, 'exec', 'd1', 'cat', '/data/v.txt', '/state.txt', '/layer.txt')).to.equal('kept\nmine\nsaved')
    expect(await docker(C, 'ps', '--format', '{{.Names}}')).to.equal('')
    expect(await exists(C, 'd3')).to.equal(true)
  })
})
