/**
 * Links between clouds in the lab: three "clouds" by provider label — vagrant (vagrant-1,
 * vagrant-2), aws (aws-1, aws-2) and azure (azure-1) — whose agents share one link table: vagrant ↔
 * aws is 'expensive' at 0.09/GiB, zstd, capped at 40 Mbit/s (other pairs of clouds: the default,
 * expensive). Traffic between clouds leaves each host's namespace through a tbf (SHAPED_MBIT) on
 * its own htb class, so the kernel counts the bytes that cross a shaped link; traffic within a
 * cloud is not shaped. A move of a compressible image arrives identical with fewer bytes on the
 * wire than its layer; an incompressible 16 MiB layer takes the cap's time; a dry run prices each
 * layer; a move into aws where aws-2 holds the image takes it from there (no image bytes on the
 * shaped links), and one whose holder serves a corrupted byte takes it from the source instead.
 * One lab for the file (prefix gotolabz), torn down in after() even when a test failed.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { open, readFile } from 'node:fs/promises'
import { moveJson } from '../fixtures/move-cli.js'
import { shapeTowards, shapedBytes as tbfBytes } from '../fixtures/shaped-link.js'
import { promisify } from 'node:util'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import type { MoveEvent } from '../../protocol/move-messages.js'
import type { PeerRow } from '../../protocol/messages.js'

const run = promisify(execFile)
type Done = Extract<MoveEvent, { event: 'done' }>
type Plan = Extract<MoveEvent, { event: 'plan' }>['plan']
const MiB = 1024 * 1024
/** The cap of the lab's vagrant ↔ aws link, and what a 16 MiB random layer takes under it (3.4 s). */
const RATE_MBIT = 40
/** The tbf between clouds (on every host's egress towards another cloud). */
const SHAPED_MBIT = 100
const LINKS = [{ from: { provider: 'vagrant' }, to: { provider: 'aws' }, class: 'expensive', costPerGiB: 0.09, rateMbit: RATE_MBIT, compress: 'zstd' }]

describe('links between clouds in the lab (3 clouds, zstd, a rate cap, dry-run costs, layers from a holder)', function () {
  this.timeout(120_000)
  const lab = new Lab({ prefix: 'gotolabz', subnet: '10.213.20.0/24', agentArgs: () => ['--links-json', JSON.stringify(LINKS)] })
  let A: LabHost
  let B: LabHost
  /** aws-2: a member in B's cloud that holds images the tests give it. */
  let E: LabHost
  let hosts: LabHost[]

  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * MiB })
    return stdout.trim()
  }

  /** `goto move ... --json`: its events, each with the time it arrived (ms since the start). */
  async function move (container: string, to: string, extra: string[] = []): Promise<{ code: number | null, events: Array<MoveEvent & { at: number }>, stderr: string }> {
    const t0 = performance.now()
    const events: Array<MoveEvent & { at: number }> = []
    const r = await moveJson(container, to, { controlMain: lab.controlMain, bundle: lab.operatorBundle, agent: A.agentAddr, extra, onEvent: ev => { events.push({ ...ev, at: performance.now() - t0 }) } })
    return { code: r.code, events, stderr: r.stderr }
  }

  function done (r: Awaited<ReturnType<typeof move>>): Done {
    const last = r.events.at(-1)
    expect(last?.event, `${JSON.stringify(last)} ${r.stderr}`).to.equal('done')
    expect(r.code).to.equal(0)
    return last as Done
  }

  /** Bytes every host has sent through its tbf to other clouds so far (the kernel's count, not the agents'). */
  async function shapedBytes (): Promise<number> {
    let total = 0
    for (const h of hosts) total += await tbfBytes(h.netns)
    return total
  }

  /** Image `ref` from A's engine into `to`'s (through this process, not the lab's network). */
  async function copyImage (ref: string, to: LabHost): Promise<void> {
    await run('/bin/sh', ['-c', `/usr/bin/docker -H ${A.dockerHost} save ${ref} | /usr/bin/docker -H ${to.dockerHost} load`])
  }

  async function aliveAt (from: LabHost, name: string): Promise<boolean> {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === name && p.state === 'alive')
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    hosts = await lab.up(5)
    ;[A, B, , , E] = hosts
    expect(hosts.map(h => h.name)).to.deep.equal(['vagrant-1', 'aws-1', 'azure-1', 'vagrant-2', 'aws-2'])
    // Each host's egress to the hosts of other clouds through a tbf of SHAPED_MBIT; its own cloud unshaped.
    for (const h of hosts) await shapeTowards(h.netns, 'eth0', SHAPED_MBIT, hosts.filter(o => o.provider !== h.provider).map(o => o.ip))
    for (const h of [A, B, E]) {
      for (const other of hosts) await waitFor(async () => await aliveAt(h, other.name), { timeoutMs: 90_000, intervalMs: 500, what: `${other.name} alive at ${h.name}` })
    }
    // A compressible 24 MiB layer (text), and an incompressible 16 MiB one (random bytes).
    await docker(A, 'run', '--name', 'b1', 'gotolab/base:latest', 'sh', '-c', 'yes "a line of text that zstd makes small, as logs and code are" | head -c 25165824 > /text.txt')
    await docker(A, 'commit', 'b1', 'text:v1')
    await docker(A, 'run', '--name', 'b2', 'gotolab/base:latest', 'sh', '-c', 'head -c 16777216 /dev/urandom > /rand.bin')
    await docker(A, 'commit', 'b2', 'rand:v1')
    await docker(A, 'rm', 'b1', 'b2')
    await docker(A, 'run', '-d', '--name', 'zipme', 'text:v1', 'sleep', '3600')
    await docker(A, 'run', '-d', '--name', 'capped', 'rand:v1', 'sleep', '3600')
    // Two images aws-2 holds too (loaded from A's engine): one it serves as it is, one it corrupts.
    for (const [tag, mib] of [['held:v1', 24], ['spoilt:v1', 8]] as const) {
      await docker(A, 'run', '--name', 'b3', 'gotolab/base:latest', 'sh', '-c', `head -c ${mib * MiB} /dev/urandom > /rand.bin`)
      await docker(A, 'commit', 'b3', tag)
      await docker(A, 'rm', 'b3')
      await copyImage(tag, E)
    }
    await docker(A, 'run', '-d', '--name', 'near', 'held:v1', 'sleep', '3600')
    await docker(A, 'run', '-d', '--name', 'spoilt', 'spoilt:v1', 'sleep', '3600')
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('--dry-run shows each layer\'s bytes, the link class and the estimated cost, in --json and in text', async () => {
    const r = await move('zipme', B.name, ['--dry-run'])
    done(r)
    const plan = (r.events.find(e => e.event === 'plan') as Extract<MoveEvent, { event: 'plan' }>).plan as Plan
    expect(plan.link).to.deep.equal({ class: 'expensive', costPerGiB: 0.09, compress: 'zstd', rateMbit: RATE_MBIT })
    const sent = (plan.layers ?? []).filter(l => l.send)
    expect(sent).to.have.length(1)
    expect(sent[0].bytes).to.be.within(24 * MiB, 25 * MiB)
    expect(plan.bytesToSend).to.equal(sent[0].bytes)
    expect(plan.estimatedCost).to.be.closeTo((sent[0].bytes as number) / 2 ** 30 * 0.09, 1e-9)
    const text = await lab.cli(['move', 'zipme', '--to', B.name, '--dry-run'], { agent: A.agentAddr })
    expect(text.code, text.stderr).to.equal(0)
    expect(text.stdout).to.match(/link vagrant-1 → aws-1: expensive, 0\.09\/GiB, zstd, capped at 40 Mbit\/s/)
    expect(text.stdout).to.match(/layer [0-9a-f]{12} 24\.\d MiB from vagrant-1 sent over expensive link, cost 0\.002\d/)
    expect(text.stdout).to.match(/estimated cost 0\.002\d/)
    expect(await docker(B, 'ps', '-a', '-q')).to.equal('')
  })

  it('moves a compressible image across the expensive link zstd-compressed: identical, fewer bytes on the wire', async () => {
    const layersOf = async (h: LabHost): Promise<string[]> => JSON.parse(await docker(h, 'image', 'inspect', '--format', '{{json .RootFS.Layers}}', await docker(h, 'inspect', '--format', '{{.Image}}', 'zipme'))) as string[]
    const layers = await layersOf(A)
    const sum = await docker(A, 'exec', 'zipme', 'md5sum', '/text.txt')
    const d = done(await move('zipme', B.name))
    // The layer (and the container's small changes) were sent; the wire carried a fraction.
    expect(d.bytesSent).to.be.at.least(24 * MiB)
    expect(d.bytesOnWire).to.be.a('number').and.below(d.bytesSent / 4)
    console.log(`      zstd: ${(d.bytesSent / MiB).toFixed(1)} MiB of blobs, ${((d.bytesOnWire ?? 0) / 1024).toFixed(1)} KiB on the wire`)
    // The destination verified every layer against its diff ID: its image is A's layers plus the
    // container's changes on top.
    const there = await layersOf(B)
    expect(there.slice(0, layers.length)).to.deep.equal(layers)
    expect(there).to.have.length(layers.length + 1)
    expect(await docker(B, 'inspect', '--format', '{{.State.Running}}', 'zipme')).to.equal('true')
    expect(await docker(B, 'exec', 'zipme', 'md5sum', '/text.txt')).to.equal(sum)
  })

  it(`keeps to the link's ${RATE_MBIT} Mbit/s cap: a 16 MiB incompressible layer takes ≥ 3 s (and < 20 s: the pre-copy includes the destination's load, slow on a busy machine)`, async () => {
    const r = await move('capped', B.name)
    const d = done(r)
    const pre = r.events.find(e => e.event === 'step' && e.step === 'pre-copy')
    const freeze = r.events.find(e => e.event === 'step' && e.step === 'freeze')
    const seconds = ((freeze?.at ?? 0) - (pre?.at ?? 0)) / 1000
    console.log(`      16 MiB random layer under a ${RATE_MBIT} Mbit/s cap: pre-copy ${seconds.toFixed(2)} s, ${((d.bytesOnWire ?? 0) / MiB).toFixed(1)} MiB on the wire`)
    expect(d.bytesOnWire).to.be.at.least(16 * MiB)
    expect(seconds).to.be.at.least(3).and.below(20)
    expect(await docker(B, 'inspect', '--format', '{{.State.Running}}', 'capped')).to.equal('true')
  })

  it('a move into aws, where aws-2 holds the image, takes it from aws-2: no image bytes on the shaped links; --dry-run says so', async () => {
    const layers = JSON.parse(await docker(A, 'image', 'inspect', '--format', '{{json .RootFS.Layers}}', 'held:v1')) as string[]
    const top = layers[layers.length - 1]
    const r = await move('near', B.name, ['--dry-run'])
    done(r)
    const plan = (r.events.find(e => e.event === 'plan') as Extract<MoveEvent, { event: 'plan' }>).plan as Plan
    const held = (plan.layers ?? []).find(l => l.diffId === top)
    expect(held).to.include({ send: true, from: E.name, link: 'free', cost: 0 })
    expect(plan.linkBytes?.free).to.be.at.least(24 * MiB)
    expect(plan.linkBytes?.expensive).to.equal(0)
    expect(plan.estimatedCost).to.equal(0)
    const text = await lab.cli(['move', 'near', '--to', B.name, '--dry-run'], { agent: A.agentAddr })
    expect(text.code, text.stderr).to.equal(0)
    expect(text.stdout).to.match(/layer [0-9a-f]{12} 24\.0 MiB from aws-2 sent over free link, cost 0\.0000/)
    expect(text.stdout).to.match(/total 24\.0 MiB \(expensive 0\.0 MiB, cheap 0\.0 MiB, free 24\.0 MiB\), estimated cost 0\.0000/)

    const sum = await docker(A, 'exec', 'near', 'md5sum', '/rand.bin')
    const before = await shapedBytes()
    const d = done(await move('near', B.name))
    const shaped = await shapedBytes() - before
    console.log(`      holder aws-2: ${((d.bytesFromHolders ?? 0) / MiB).toFixed(1)} MiB from it, ${(d.bytesSent / 1024).toFixed(1)} KiB from the source, ${(shaped / 1024).toFixed(1)} KiB on the shaped links`)
    expect(d.bytesFromHolders).to.be.at.least(24 * MiB)
    expect(d.bytesSent).to.be.below(MiB)
    // The layer is 24 MiB of random bytes (no compression shrinks it): what crossed is control
    // messages, the container's changes and five agents' heartbeats (about 1.6 MiB measured here).
    expect(shaped).to.be.below(4 * MiB)
    expect(JSON.parse(await docker(B, 'image', 'inspect', '--format', '{{json .RootFS.Layers}}', await docker(B, 'inspect', '--format', '{{.Image}}', 'near')))).to.include(top)
    expect(await docker(B, 'exec', 'near', 'md5sum', '/rand.bin')).to.equal(sum)
  })

  it('a holder that serves a corrupted byte: the destination refuses its copy and takes the layer from the source, byte-identical', async () => {
    const layers = JSON.parse(await docker(A, 'image', 'inspect', '--format', '{{json .RootFS.Layers}}', 'spoilt:v1')) as string[]
    // One byte of aws-2's copy of the layer, flipped where its engine keeps the layer's files.
    const file = `${await docker(E, 'image', 'inspect', '--format', '{{.GraphDriver.Data.UpperDir}}', 'spoilt:v1')}/rand.bin`
    const fh = await open(file, 'r+')
    try {
      const b = Buffer.alloc(1)
      await fh.read(b, 0, 1, 4 * MiB)
      b[0] ^= 0xff
      await fh.write(b, 0, 1, 4 * MiB)
    } finally {
      await fh.close()
    }
    const sum = await docker(A, 'exec', 'spoilt', 'md5sum', '/rand.bin')
    const before = await shapedBytes()
    const d = done(await move('spoilt', B.name))
    const shaped = await shapedBytes() - before
    console.log(`      corrupted holder: ${((d.bytesFromHolders ?? 0) / MiB).toFixed(1)} MiB from it, ${(d.bytesSent / MiB).toFixed(1)} MiB from the source, ${(shaped / MiB).toFixed(1)} MiB on the shaped links`)
    expect(d.bytesFromHolders ?? 0).to.equal(0)
    expect(d.bytesSent).to.be.at.least(8 * MiB)
    expect(shaped).to.be.at.least(8 * MiB)
    const there = JSON.parse(await docker(B, 'image', 'inspect', '--format', '{{json .RootFS.Layers}}', await docker(B, 'inspect', '--format', '{{.Image}}', 'spoilt'))) as string[]
    expect(there.slice(0, layers.length)).to.deep.equal(layers)
    expect(await docker(B, 'exec', 'spoilt', 'md5sum', '/rand.bin')).to.equal(sum)
    const log = await readFile(B.agentLog, 'utf8')
    expect(log).to.match(/LayerDigestMismatchError/)
  })
})
