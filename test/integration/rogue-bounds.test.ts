/**
 * The bounds a member (or a stranger) meets at a real agent, in the lab: one host with a real engine
 * and agent (the victim); the attackers are this test process — a libp2p node with no certificate,
 * and members holding bundles the lab's CA issued (one that expires while connected, one that is
 * revoked while connected, and a few 'rogue-N' agents that flood /goto/transfer). Each attack is
 * refused with its typed error, logged by the victim (with the member's name where it has one),
 * and the victim's containers, volumes, images, held snapshots and staged layers are as before.
 *
 * The flood needs no operator: a transfer prepared for a snapshot carries no order (it is only
 * kept, never started), so pending transfers, spec size and disk are what bound a member there.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { mkdir, mkdtemp, readdir, readFile, rm, statfs } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes, createHash } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { MeshClient } from '../fixtures/mesh-client.js'
import { logged as agentLogged } from '../fixtures/agent-log.js'
import { rejection } from '../fixtures/assert.js'
import { issueCertificate, readBundle, revoke, type Bundle } from '../../certs/index.js'
import { createMeshNode } from '../../protocol/node.js'
import { JsonStream, readResult } from '../../protocol/wire.js'
import { FAILOVER_PROTOCOL, HEARTBEAT_PROTOCOL, LOCATE_PROTOCOL, MOVE_PROTOCOL, PEERS_PROTOCOL, STATUS_PROTOCOL, TRANSFER_PROTOCOL } from '../../protocol/ids.js'
import { PeerNotAuthenticatedError } from '../../protocol/errors.js'
import { CERT_RECHECK_MS } from '../../agent/net/auth-service.js'
import { MAX_PENDING_PER_PEER, MAX_PENDING_TRANSFERS, MAX_SPEC_BYTES } from '../../agent/move/destination.js'
import { DEFAULT_MIN_FREE_BYTES } from '../../agent/transfer/layer-store.js'
import { PROFILES } from '../../agent/timings.js'
import type { ContainerSpec } from '../../protocol/container.js'

const run = promisify(execFile)
/** The small filesystem B stages layers on in the disk test: its floor (256 MiB) plus room for the test's layers. */
const STAGING_FS_BYTES = 768 * 1024 * 1024
const TIMINGS = PROFILES.test
/** Slack for a loaded machine on top of a bound's own time. */
const SLACK_MS = 4000
/** What the victim's agent may grow by while it refuses a flood (the unbounded attack took +175 MiB). */
const RSS_GROWTH_BYTES = 64 * 1024 ** 2
/** Bytes one disk attack sends at most, whatever happens at the victim (this machine's disk is shared). */
const SEND_CAP_BYTES = 64 * 1024 ** 2

describe('bounds against a stranger and a rogue member (lab: 1 host, real agent)', function () {
  this.timeout(120_000)
  const lab = new Lab({ prefix: 'gotolabt', subnet: '10.213.240.0/24' })
  let B: LabHost
  let scratch: string
  let base: { Id: string, Architecture: string, RootFS: { Layers: string[] } }
  let initial: string
  const clients: MeshClient[] = []
  const stops: Array<() => Promise<void>> = []
  let rogue1: MeshClient

  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
    return stdout.trim()
  }

  /** What B holds: containers, images, volumes, held snapshots, staged layers (and ones half-received). */
  async function state (h: LabHost): Promise<string> {
    const ls = async (d: string): Promise<string> => (await readdir(join(h.dir, 'state', d)).catch(() => [] as string[])).sort().join(' ')
    return [
      await docker(h, 'ps', '-a', '--format', '{{.Names}} {{.State}} {{.Image}} {{.Mounts}}'), await docker(h, 'images', '-a', '-q', '--no-trunc'),
      await docker(h, 'volume', 'ls', '-q'), await ls('snapshots'), await ls('layers'), await ls('layers/incoming'), await ls('incoming')
    ].map(s => s.split('\n').sort().join('\n')).join('\n--\n')
  }

  async function logged (h: LabHost, message: string, fields: Record<string, unknown>): Promise<boolean> {
    return await agentLogged(h.agentLog, message, fields)
  }

  async function connect (bundle: Bundle): Promise<MeshClient> {
    const c = await MeshClient.connect(bundle, multiaddr(B.agentAddr))
    clients.push(c)
    return c
  }

  /** A bundle of `name` from the lab's CA, valid until `notAfter` if given. */
  async function member (name: string, notAfter?: Date): Promise<Bundle> {
    const out = join(scratch, name)
    await issueCertificate(lab.caDir, { role: 'agent', name, out, ...notAfter === undefined ? {} : { notAfter } })
    return await readBundle(out)
  }

  async function rss (h: LabHost): Promise<number> {
    const status = await readFile(`/proc/${h.agentPid as number}/status`, 'utf8')
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024
  }

  function spec (name: string, labels: Record<string, string> = {}): ContainerSpec {
    return {
      name, image: base.Id, env: [], cmd: ['sleep', '1000000'], entrypoint: null, workingDir: '', user: '', labels, hostname: '',
      exposedPorts: [], portBindings: {}, restartPolicy: { name: 'no', maximumRetryCount: 0 }, mounts: []
    }
  }

  /** A snapshot's prepare: no operator's order is needed for one (it is kept, never started). */
  function prepare (moveId: string, s: ContainerSpec): Record<string, unknown> {
    return {
      op: 'prepare', moveId, purpose: 'snapshot', spec: s,
      image: { id: base.Id, diffIds: base.RootFS.Layers, os: 'linux', architecture: base.Architecture, size: 0 },
      volumes: []
    }
  }

  /**
   * One layer step of a prepared transfer: announces `size`, sends random frames until the victim
   * answers (or `send` bytes went out), and returns the victim's answer.
   */
  async function layer (client: MeshClient, moveId: string, size: number, send: number, stop?: Promise<unknown>): Promise<Error | unknown> {
    const js = await client.open(TRANSFER_PROTOCOL)
    await js.write({ op: 'layer', moveId, diffId: `sha256:${createHash('sha256').update(randomBytes(8)).digest('hex')}`, size })
    let answered = false
    const answer = readResult(js, AbortSignal.timeout(60_000)).then(r => r, err => err as Error).finally(() => { answered = true })
    const frame = randomBytes(512 * 1024)
    for (let sent = 0; sent < send && !answered; sent += frame.byteLength) {
      const stopped = await Promise.race([js.writeBytes([frame]).then(() => false, () => true), stop?.then(() => true) ?? new Promise<boolean>(() => {})])
      if (stopped) break
    }
    // An answer that has not come once we stopped sending is not coming: the victim waits for bytes.
    const deadline = sleep(2000, undefined, { ref: false })
    const result = answered ? await answer : await Promise.race([answer, deadline])
    js.abort(new Error('the rogue stopped sending'))
    return result ?? await answer
  }

  const moveId = (prefix: string, i: number): string => `${prefix}${i.toString(16).padStart(16 - prefix.length, '0')}`

  before(async function () {
    this.timeout(300_000)
    scratch = await mkdtemp(join(tmpdir(), 'goto-rogue-bounds-'))
    await lab.down()
    ;[B] = await lab.up(1)
    base = JSON.parse(await docker(B, 'image', 'inspect', 'gotolab/base:latest'))[0]
    await docker(B, 'run', '-d', '--name', 'db', '-v', 'dbdata:/var/db', 'gotolab/base:latest', 'sleep', '1000000')
    initial = await state(B)
  })

  after(async function () {
    this.timeout(120_000)
    for (const c of clients.splice(0)) await c.close().catch(() => {})
    for (const s of stops.splice(0)) await s().catch(() => {})
    await lab.down()
    await rm(scratch, { recursive: true, force: true })
  })

  it('refuses at once every member protocol a connection opens before /goto/auth, and closes it at the auth timeout', async () => {
    const stranger = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], isRefused: () => false })
    await stranger.start()
    stops.push(async () => { await stranger.stop() })
    const conn = await stranger.dial(multiaddr(B.agentAddr), { signal: AbortSignal.timeout(10_000) })
    const opened = Date.now()
    const protocols = [TRANSFER_PROTOCOL, HEARTBEAT_PROTOCOL, FAILOVER_PROTOCOL, PEERS_PROTOCOL, STATUS_PROTOCOL, MOVE_PROTOCOL, LOCATE_PROTOCOL]
    const refusals = await Promise.all(protocols.flatMap(p => Array.from({ length: 8 }, async () => {
      const js = new JsonStream(await conn.newStream(p, { signal: AbortSignal.timeout(10_000) }))
      await js.write({ op: 'prepare' })
      return await rejection(readResult(js, AbortSignal.timeout(TIMINGS.authTimeoutMs)))
    })))
    for (const r of refusals) expect(r, r.message).to.be.instanceOf(PeerNotAuthenticatedError)
    expect(Date.now() - opened, 'all refused long before the auth timeout').to.be.below(TIMINGS.authTimeoutMs / 2)
    await waitFor(() => conn.status !== 'open', { timeoutMs: TIMINGS.authTimeoutMs + SLACK_MS, intervalMs: 50, what: 'the unauthenticated connection to be closed' })
    expect(Date.now() - opened, 'closed at the auth timeout, not before').to.be.at.least(TIMINGS.authTimeoutMs - 500)
    const peer = stranger.peerId.toString()
    expect(await logged(B, 'refused stream', { peer, reason: 'PeerNotAuthenticatedError', level: 'warn' })).to.equal(true)
    const warnings = (await readFile(B.agentLog, 'utf8')).split('\n').filter(l => l.includes('"refused stream"') && l.includes(peer) && l.includes('"warn"'))
    expect(warnings, 'one warning for the connection, not one per stream').to.have.length(1)
    expect(await logged(B, 'closing unauthenticated connection', { peer })).to.equal(true)
  })

  it('disconnects a member whose certificate expires while its connection is open, within CERT_RECHECK_MS', async () => {
    // Whole seconds: the CA rounds validity down to the second.
    const notAfter = new Date(Math.floor((Date.now() + 5000) / 1000) * 1000)
    const brief = await member('brief', notAfter)
    const client = await connect(brief)
    // Served while valid: the transfer handler itself answers (no such move), not the gate.
    expect((await rejection(client.request(TRANSFER_PROTOCOL, { op: 'abort', moveId: moveId('e', 1) }))).name).to.equal('UnknownMoveError')
    await waitFor(async () => await logged(B, 'closing connection of a peer whose certificate is no longer valid', { name: 'brief', reason: 'CertificateExpiredError' }),
      { timeoutMs: notAfter.getTime() - Date.now() + CERT_RECHECK_MS + SLACK_MS, intervalMs: 100, what: 'B to disconnect the expired member' })
    expect(Date.now() - notAfter.getTime()).to.be.below(CERT_RECHECK_MS + SLACK_MS)
    await rejection(client.request(TRANSFER_PROTOCOL, { op: 'abort', moveId: moveId('e', 2) }, AbortSignal.timeout(5000)))
    // And it cannot come back: the handshake refuses the expired certificate.
    const again = await rejection(MeshClient.connect(brief, multiaddr(B.agentAddr)))
    expect(again.name, again.message).to.equal('PeerRejectedUsError')
    expect(again.message).to.contain('expired')
  })

  it('disconnects a member revoked while connected once the victim adopts the revocation list', async () => {
    const gone = await member('gone')
    const client = await connect(gone)
    expect((await rejection(client.request(TRANSFER_PROTOCOL, { op: 'abort', moveId: moveId('c', 1) }))).name).to.equal('UnknownMoveError')
    await revoke(lab.caDir, { name: 'gone' }, { bundles: [lab.operatorBundle] })
    // Any operator command hands the newer list to the agent it asks.
    const r = await lab.cli(['peers'], { agent: B.agentAddr })
    expect(r.code, r.stderr).to.equal(0)
    await waitFor(async () => await logged(B, 'closing connection of revoked peer', { name: 'gone', reason: 'CertificateRevokedError' }),
      { timeoutMs: SLACK_MS, intervalMs: 100, what: 'B to disconnect the revoked member' })
    await rejection(client.request(TRANSFER_PROTOCOL, { op: 'abort', moveId: moveId('c', 2) }, AbortSignal.timeout(5000)))
    const again = await rejection(MeshClient.connect(gone, multiaddr(B.agentAddr)))
    expect(again.name, again.message).to.equal('PeerRejectedUsError')
    expect(again.message).to.contain('revoked')
  })

  it('refuses prepares beyond the pending bounds (per member, in all) and oversized specs, with the heap bounded', async () => {
    const rogues = await Promise.all(Array.from({ length: Math.ceil(MAX_PENDING_TRANSFERS / MAX_PENDING_PER_PEER) + 1 }, async (_, i) => await connect(await member(`rogue-${i + 1}`))))
    rogue1 = rogues[0]
    const before = await rss(B)
    // A spec just under the bound, so that every pending transfer holds as much as one may.
    const padded = (name: string): ContainerSpec => spec(name, { pad: 'x'.repeat(MAX_SPEC_BYTES - 2048) })
    const tooBig = await rejection(rogues[0].request(TRANSFER_PROTOCOL, prepare(moveId('b', 0), spec('big', { a: 'x'.repeat(40_000), b: 'x'.repeat(40_000) }))))
    expect(tooBig.name, tooBig.message).to.equal('SpecTooLargeError')
    const flood = async (client: MeshClient, r: number, count: number): Promise<Error[]> => {
      const refused: Error[] = []
      for (let i = 0; i < count; i += 8) {
        const batch = await Promise.all(Array.from({ length: Math.min(8, count - i) }, async (_, j) =>
          await client.request(TRANSFER_PROTOCOL, prepare(moveId(`f${r}`, i + j), padded(`s${r}-${i + j}`))).then(() => undefined, err => err as Error)))
        for (const e of batch) if (e !== undefined) refused.push(e)
      }
      return refused
    }
    // The first member asks for three times its bound: all beyond it are refused.
    const first = await flood(rogues[0], 0, 3 * MAX_PENDING_PER_PEER)
    expect(first).to.have.length(2 * MAX_PENDING_PER_PEER)
    for (const e of first) expect(e.name, e.message).to.equal('TooManyTransfersError')
    // More members fill the bound of all pending transfers; the next one gets none.
    for (let r = 1; r < rogues.length - 1; r++) expect(await flood(rogues[r], r, MAX_PENDING_PER_PEER)).to.have.length(0)
    const last = await flood(rogues[rogues.length - 1], rogues.length - 1, 4)
    expect(last.map(e => e.name)).to.deep.equal(Array(4).fill('TooManyTransfersError'))
    expect(last[0].message).to.contain(`${MAX_PENDING_TRANSFERS} transfers are pending`)
    expect(await rss(B) - before, 'B\'s memory after the flood').to.be.below(RSS_GROWTH_BYTES)
    expect(await logged(B, 'transfer step refused', { op: 'prepare', from: 'rogue-1', reason: 'TooManyTransfersError' })).to.equal(true)
    expect(await logged(B, 'transfer step refused', { op: 'prepare', from: `rogue-${rogues.length}`, reason: 'TooManyTransfersError' })).to.equal(true)
    expect(await logged(B, 'transfer step refused', { op: 'prepare', from: 'rogue-1', reason: 'SpecTooLargeError' })).to.equal(true)
  })

  it('stops a layer whose bytes would take the disk below its floor, or pass its announced size, as they arrive', async () => {
    const rogue = rogue1 // its transfers of the flood are pending
    const layersDir = join(B.dir, 'state', 'layers')
    // B's staging store on a small filesystem of its own for this test: its free space is then what
    // this test leaves it, not what other work on the machine's disk does meanwhile.
    await run('mount', ['-t', 'tmpfs', '-o', `size=${STAGING_FS_BYTES},mode=0700`, 'gotolabt-layers', layersDir])
    stops.push(async () => { await run('umount', [layersDir]).catch(() => {}) })
    await mkdir(join(layersDir, 'incoming'), { mode: 0o700 })
    // Announced beyond what the disk has: refused before a byte is kept (the prepare's size said 0).
    const fs = await statfs(layersDir)
    const free = fs.bavail * fs.bsize
    const huge = await layer(rogue, moveId('f0', 0), free, 4 * 1024 * 1024) as Error
    expect(huge.name, huge.message).to.equal('InsufficientDiskError')
    // Announced at about 1 MB, sends more: refused at the first frame that goes past it.
    const liar = await layer(rogue, moveId('f0', 1), 1_000_000, 8 * 1024 * 1024) as Error
    expect(liar.name, liar.message).to.equal('LayerTooLargeError')
    // Two layers, each announced to fit the disk alone (its floor kept, 8 MiB to spare), sent at
    // once: the free space each sees as bytes arrive shrinks by the other's, and one is stopped.
    const fits = (await statfs(layersDir)).bavail * fs.bsize - DEFAULT_MIN_FREE_BYTES - 8 * 1024 ** 2
    let stop!: () => void
    const stopped = new Promise<void>(resolve => { stop = resolve })
    const both = await Promise.all([2, 3].map(async i => {
      const r = await layer(rogue, moveId('f0', i), fits, SEND_CAP_BYTES, stopped)
      stop()
      return r
    }))
    const refusals = both.filter((r): r is Error => r instanceof Error)
    const disk = refusals.filter(e => e.name === 'InsufficientDiskError')
    expect(disk, refusals.map(e => e.message).join('; ')).to.not.have.length(0)
    // Stopped after bytes came: less than the whole announced size was still to come.
    const toCome = disk.map(e => Number(/(\d+) MiB still to come/.exec(e.message)?.[1]))
    expect(Math.min(...toCome), disk.map(e => e.message).join('; ')).to.be.below(Math.ceil(fits / 2 ** 20))
    expect(await logged(B, 'transfer step refused', { op: 'layer', from: 'rogue-1', reason: 'InsufficientDiskError' })).to.equal(true)
    expect(await logged(B, 'transfer step refused', { op: 'layer', from: 'rogue-1', reason: 'LayerTooLargeError' })).to.equal(true)
    // Nothing half-received stays: every temp file is gone once its step ended.
    await waitFor(async () => (await readdir(join(layersDir, 'incoming'))).length === 0, { timeoutMs: SLACK_MS, intervalMs: 100, what: 'B to remove the refused layers\' temp files' })
    expect(await readdir(layersDir), 'nothing staged from the refused layers').to.deep.equal(['incoming'])
    await run('umount', [layersDir])
  })

  it('expires the flood\'s pending transfers, then takes prepares again, and left B as it was', async () => {
    for (const c of clients.splice(0)) await c.close()
    const fresh = await connect(await member('rogue-after'))
    // Silent for moveIdleTimeoutMs, every pending transfer is rolled back (and its staged layers pruned).
    await waitFor(async () => await fresh.request(TRANSFER_PROTOCOL, prepare(moveId('a', 1), spec('after'))).then(() => true, () => false),
      { timeoutMs: TIMINGS.moveIdleTimeoutMs + TIMINGS.moveExpireCheckMs + SLACK_MS, intervalMs: 500, what: 'B to expire the flood and admit a prepare again' })
    await fresh.request(TRANSFER_PROTOCOL, { op: 'abort', moveId: moveId('a', 1) })
    expect(await state(B)).to.equal(initial)
    expect(await docker(B, 'inspect', '-f', '{{.State.Running}}', 'db')).to.equal('true')
  })
})
