/**
 * Moves that take layers from a member near the destination (agent/transfer/holders.ts), end to
 * end in this process: three agents over real libp2p on loopback with real certificates and a real
 * operator's signed order, on in-memory engines — a source in one cloud (vagrant), its destination
 * and a holder in another (aws). The holder has the image's layer in its staging store. Taken from
 * the holder when it serves it right; from the source when the holder refuses or serves a wrong
 * byte; the move succeeds either way. The lab test (links.test.ts) runs the same on real engines
 * and counts the bytes on shaped links.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { open, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { ContainerSpec } from '../../agent/docker/types.js'
import { diffIdHex } from '../../agent/transfer/layer-store.js'
import type { HeldBy } from '../../agent/transfer/holders.js'
import type { MoveEvent } from '../../protocol/move-messages.js'
import { MemoryDockerHost } from '../fixtures/memory-docker-host.js'
import { introduce, miniMesh, runMove, type MiniAgent } from '../fixtures/mini-agent.js'

const BASE = { '/bin/sh': 'a shell' }
const APP = { '/app/run': 'version 1\n'.repeat(1000) }

function spec (image: string): ContainerSpec {
  return {
    name: 'web', image, env: [], cmd: ['/app/run'], entrypoint: null, workingDir: '/app', user: '', labels: {}, hostname: 'web',
    exposedPorts: [], portBindings: {}, restartPolicy: { name: 'no', maximumRetryCount: 0 }, mounts: []
  }
}

type Done = Extract<MoveEvent, { event: 'done' }>

describe('moves with layers from a holder near the destination (in-memory engines, libp2p on loopback)', function () {
  this.timeout(60_000)
  const mesh = miniMesh('goto-holders-sm-')
  let run = 0

  /**
   * a (vagrant) runs `web`; b (aws) has the base layer; c (aws) has the app layer staged, and with
   * `two`, d (aws) too (and layers of any size come in parts from both).
   */
  async function world (two = false): Promise<{ a: MiniAgent, b: MiniAgent, c: MiniAgent, d?: MiniAgent, A: MemoryDockerHost, B: MemoryDockerHost, app: { diffId: string, size: number } }> {
    run++
    const A = new MemoryDockerHost({ name: 'A' })
    const B = new MemoryDockerHost({ name: 'B' })
    const C = new MemoryDockerHost({ name: 'C' })
    const image = await A.addImage([BASE, APP])
    await B.addImage([BASE])
    await A.start(await A.create(spec(image)))
    const start = async (name: string, docker: MemoryDockerHost, provider: string): Promise<MiniAgent> => {
      return await mesh.start({ name, docker, state: `state-${run}`, labels: { provider }, holders: true, ...two ? { holderPartsMinBytes: 1 } : {} })
    }
    const [a, b, c] = [await start('a', A, 'vagrant'), await start('b', B, 'aws'), await start('c', C, 'aws')]
    const d = two ? await start('d', new MemoryDockerHost({ name: 'D' }), 'aws') : undefined
    introduce(...[a, b, c, ...d === undefined ? [] : [d]])
    const diffId = (await A.inspectImage(image)).diffIds[1]
    let size = 0
    for await (const entry of A.saveImage(image)) {
      if (entry.kind !== 'layer') continue
      const parts: Uint8Array[] = []
      for await (const chunk of entry.stream) parts.push(chunk)
      const bytes = Buffer.concat(parts)
      for (const x of [c, ...d === undefined ? [] : [d]]) {
        if (await x.store.receiveAny(new Set([diffId]), bytes.byteLength, (async function * () { yield bytes })()).then(() => true, () => false)) size = bytes.byteLength
      }
    }
    expect(size).to.be.above(0)
    return { a, b, c, ...d === undefined ? {} : { d }, A, B, app: { diffId, size } }
  }

  function done (events: MoveEvent[]): Done {
    const last = events.at(-1)
    expect(last?.event, JSON.stringify(last)).to.equal('done')
    return last as Done
  }

  async function expectRunningAtB (B: MemoryDockerHost): Promise<void> {
    const moved = await B.inspectContainer('web')
    expect(moved.state.running).to.equal(true)
    expect(B.readFile(moved.id, '/app/run')?.toString()).to.equal(APP['/app/run'])
  }

  it('the dry run names the holder for its layer; the move takes the layer from it, not from the source', async () => {
    const { a, B, app } = await world()
    const dry = await runMove(a, { container: 'web', to: 'b', dryRun: true })
    const plan = dry.find(e => e.event === 'plan')
    if (plan?.event !== 'plan') throw new Error(JSON.stringify(dry))
    expect(plan.plan.layers?.find(l => l.diffId === app.diffId)).to.include({ send: true, from: 'c', link: 'free', cost: 0 })
    expect(plan.plan.linkBytes).to.deep.equal({ free: app.size, cheap: 0, expensive: 0 })
    const d = done(await runMove(a, { container: 'web', to: 'b' }))
    expect(d.bytesFromHolders).to.equal(app.size)
    // Only the container's changes came from the source.
    expect(d.bytesSent).to.be.below(app.size)
    await expectRunningAtB(B)
  })

  it('a holder that refuses (no grant for the destination) costs the layer a trip from the source, not the move', async () => {
    const { a, c, B, app } = await world()
    // The source is told c holds it, but c never granted anything for this move.
    let asked = 0
    a.sessions.holders = { find: async () => { asked++; return new Map<string, HeldBy>([[app.diffId, { name: 'c', peerId: c.peerId, size: app.size, link: 'free', costPerGiB: 0 }]]) } }
    const d = done(await runMove(a, { container: 'web', to: 'b' }))
    expect(asked).to.equal(1)
    expect(d.bytesFromHolders).to.equal(undefined)
    expect(d.bytesSent).to.be.at.least(app.size)
    await expectRunningAtB(B)
  })

  it('a holder whose copy has a wrong byte: the destination refuses it as it streams, the source sends the layer', async () => {
    const { a, c, B, app } = await world()
    const fh = await open(join(c.store.dir, `${diffIdHex(app.diffId)}.tar`), 'r+')
    try {
      await fh.write(Buffer.from('X'), 0, 1, 600)
    } finally {
      await fh.close()
    }
    const dry = await runMove(a, { container: 'web', to: 'b', dryRun: true })
    expect(dry.some(e => e.event === 'plan' && e.plan.layers?.some(l => l.diffId === app.diffId && l.from === 'c'))).to.equal(true)
    const d = done(await runMove(a, { container: 'web', to: 'b' }))
    expect(d.bytesFromHolders).to.equal(undefined)
    expect(d.bytesSent).to.be.at.least(app.size)
    await expectRunningAtB(B)
  })

  it('two holders serve a layer in two parts at once; the destination puts them together and verifies the whole', async () => {
    const { a, b, c, d, B, app } = await world(true)
    const dry = await runMove(a, { container: 'web', to: 'b', dryRun: true })
    expect(dry.some(e => e.event === 'plan' && e.plan.layers?.some(l => l.diffId === app.diffId && l.from === 'c'))).to.equal(true)
    const moved = done(await runMove(a, { container: 'web', to: 'b' }))
    expect(moved.bytesFromHolders).to.equal(app.size)
    const fromC = c.holder?.bytesServed ?? 0
    const fromD = d?.holder?.bytesServed ?? 0
    expect(fromC).to.be.above(0)
    expect(fromD).to.be.above(0)
    expect(fromC + fromD).to.equal(app.size)
    await expectRunningAtB(B)
    // The spooled part is gone.
    expect(await readdir(join(b.store.dir, 'incoming'))).to.deep.equal([])
  })

  it('a wrong byte in the second holder\'s part fails the whole layer from holders; the source sends it', async () => {
    const { a, d, B, app } = await world(true)
    const fh = await open(join(d?.store.dir ?? '', `${diffIdHex(app.diffId)}.tar`), 'r+')
    try {
      await fh.write(Buffer.from('X'), 0, 1, app.size - 700)
    } finally {
      await fh.close()
    }
    const r = done(await runMove(a, { container: 'web', to: 'b' }))
    expect(r.bytesFromHolders).to.equal(undefined)
    expect(r.bytesSent).to.be.at.least(app.size)
    await expectRunningAtB(B)
  })
})
