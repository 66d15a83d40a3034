/**
 * The receiving side of a layer transfer, against real disks and real engines: the staging store's
 * memory bound with a 1 GiB layer, then, in a two-host lab (engines only, prefix gotolabx), layers
 * taken from one engine's `docker save` are received into the store and loaded into the other
 * engine, fully and thin; a wrong claim of a present layer, a local tag and a corrupted layer are
 * handled as the move needs. Needs root, dockerd, iproute2 and iptables (see test/lab/README.md).
 */
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Transform, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type Docker from 'dockerode'
import { LayerStore } from '../../agent/transfer/layer-store.js'
import { loadVerified, type ImageLoader } from '../../agent/transfer/load.js'
import { LiveLoad } from '../../agent/transfer/live-load.js'
import { chainIds, layersToSend } from '../../agent/transfer/plan.js'
import type { ImageInfo } from '../../agent/docker/types.js'
import { DockerodeHost } from '../../agent/docker/host.js'
import { DockerLoadError, ImageLoadError, LayerDigestMismatchError, LayerMissingError } from '../../protocol/errors.js'
import { commitLayer } from '../fixtures/docker.js'
import { Lab, BASE_IMAGE, waitFor, type LabHost } from '../lab/index.js'
import { rejection } from '../fixtures/assert.js'

const PREFIX = 'gotolabx'
const SUBNET = '10.213.80.0/24'
const MiB = 1024 * 1024


describe('transfer: layer store memory with a 1 GiB layer', function () {
  this.timeout(60_000)
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'goto-layer-mem-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('measures RSS growth while a 1 GiB layer is received and verified: stays below 64 MiB', async () => {
    const TOTAL = 1024 * MiB
    const FRAME = 256 * 1024 // the wire's largest bulk frame
    const block = randomBytes(MiB)
    // Fresh buffers per frame, as from a network: a receiver that kept any of them would show it.
    function * frames (): Generator<Buffer> {
      for (let off = 0; off < TOTAL; off += FRAME) yield Buffer.from(block.subarray(off % MiB, off % MiB + FRAME))
    }
    const h = createHash('sha256')
    for (let i = 0; i < TOTAL / MiB; i++) h.update(block)
    const diffId = `sha256:${h.digest('hex')}`
    async function * source (): AsyncGenerator<Buffer> { yield * frames() }

    const store = await LayerStore.open(join(dir, 'layers'))
    const base = process.memoryUsage().rss
    let peak = base
    const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 20)
    const t0 = Date.now()
    try {
      const { bytes } = await store.receive(diffId, TOTAL, source(), AbortSignal.timeout(50_000))
      expect(bytes).to.equal(TOTAL)
    } finally {
      clearInterval(sampler)
    }
    peak = Math.max(peak, process.memoryUsage().rss)
    const growth = (peak - base) / MiB
    console.log(`      1 GiB layer received in ${Date.now() - t0} ms; RSS ${(base / MiB).toFixed(0)} MiB -> peak ${(peak / MiB).toFixed(0)} MiB (growth ${growth.toFixed(1)} MiB)`)
    expect(await store.size(diffId)).to.equal(TOTAL)
    expect(growth).to.be.below(64)
  })
})

/** An image as `docker save` wrote it, unpacked: its config bytes and one file per layer. */
interface SavedImage { id: string, config: Buffer, diffIds: string[], layerFiles: string[] }

/**
 * What the load needs of an engine, over dockerode for this test (independent of agent/docker):
 * `docker load` reading the whole progress stream for errors, and inspect. Counts loads and bytes.
 */
function engineOf (docker: Docker): ImageLoader & { loads: number, lastTarBytes: number } {
  const engine = {
    loads: 0,
    lastTarBytes: 0,
    async loadImage (tar: Readable): Promise<string[]> {
      engine.loads++
      engine.lastTarBytes = 0
      const counted = tar.pipe(new Transform({
        transform (chunk: Buffer, _enc, done) { engine.lastTarBytes += chunk.byteLength; done(null, chunk) }
      }))
      tar.once('error', err => counted.destroy(err))
      const res = await docker.loadImage(counted, { quiet: true }) as unknown as Readable
      let text = ''
      for await (const c of res) text += (c as Buffer).toString('utf8')
      const ids: string[] = []
      for (const line of text.split('\n').filter(l => l.trim() !== '')) {
        const m = JSON.parse(line) as { stream?: string, error?: string, errorDetail?: { message?: string } }
        if (m.error !== undefined || m.errorDetail !== undefined) throw new Error(m.error ?? m.errorDetail?.message)
        const id = /Loaded image ID: (sha256:[0-9a-f]{64})/.exec(m.stream ?? '')
        if (id !== null) ids.push(id[1])
      }
      return ids
    },
    async removeImage (id: string): Promise<void> {
      await docker.getImage(id).remove()
    },
    async inspectImage (ref: string): Promise<ImageInfo | undefined> {
      try {
        const i = await docker.getImage(ref).inspect()
        return { id: i.Id, diffIds: i.RootFS.Layers ?? [], os: i.Os, architecture: i.Architecture, size: i.Size, repoTags: i.RepoTags ?? [] }
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 404) return undefined
        throw err
      }
    }
  }
  return engine
}

/** The layer chains (diff IDs) of every image the engine holds. */
async function chainsOf (docker: Docker): Promise<string[][]> {
  const images = await docker.listImages({ all: true })
  return await Promise.all(images.map(async i => (await docker.getImage(i.Id).inspect()).RootFS.Layers ?? []))
}

async function imageIds (docker: Docker): Promise<string[]> {
  return (await docker.listImages({ all: true })).map(i => i.Id).sort()
}

async function removeImages (docker: Docker, ids: string[]): Promise<void> {
  for (const id of ids) {
    try {
      await docker.getImage(id).remove({ force: true })
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw err
    }
  }
}

/** `docker save` of one image, unpacked with the system's tar into `dir`. */
async function save (docker: Docker, id: string, dir: string): Promise<SavedImage> {
  await mkdir(dir, { recursive: true })
  const res = await docker.getImage(id).get() as unknown as Readable
  const tar = spawn('tar', ['-x', '-C', dir], { stdio: ['pipe', 'ignore', 'inherit'] })
  const exited = new Promise<number | null>(resolve => tar.once('close', resolve))
  await pipeline(res, tar.stdin)
  expect(await exited).to.equal(0)
  const [m] = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as Array<{ Config: string, Layers: string[] }>
  const config = await readFile(join(dir, m.Config))
  const diffIds = (JSON.parse(config.toString('utf8')) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids
  return { id: `sha256:${createHash('sha256').update(config).digest('hex')}`, config, diffIds, layerFiles: m.Layers.map(l => join(dir, l)) }
}

/** Receives the image's layers `from` on into the store, from the saved files (verifying each). */
async function receiveLayers (store: LayerStore, img: SavedImage, from = 0): Promise<void> {
  for (let i = from; i < img.diffIds.length; i++) {
    const { size } = await stat(img.layerFiles[i])
    await store.receive(img.diffIds[i], size, createReadStream(img.layerFiles[i]), AbortSignal.timeout(10_000))
  }
}

describe('transfer: receive and load into a real engine (lab)', function () {
  this.timeout(120_000)
  const lab = new Lab({ prefix: PREFIX, subnet: SUBNET, agents: false })
  let h1: LabHost
  let h2: LabHost
  let d1: Docker
  let d2: Docker
  let work: string
  let img1: SavedImage // base + 1 layer
  let img2: SavedImage // base + 2 layers
  let store: LayerStore
  let engine2: ReturnType<typeof engineOf>
  const timeout = (): AbortSignal => AbortSignal.timeout(30_000)

  before(async () => {
    await lab.down()
    ;[h1, h2] = await lab.up(2)
    d1 = lab.docker(h1.name)
    d2 = lab.docker(h2.name)
    engine2 = engineOf(d2)
    work = await mkdtemp(join(tmpdir(), 'goto-transfer-'))
    const id1 = await commitLayer(d1, BASE_IMAGE, 'echo x > /f')
    const id2 = await commitLayer(d1, id1, 'echo y > /g')
    img1 = await save(d1, id1, join(work, 'save1'))
    img2 = await save(d1, id2, join(work, 'save2'))
    expect([img1.id, img2.id]).to.deep.equal([id1, id2])
    expect(img2.diffIds).to.have.length(3)
    expect(img2.diffIds.slice(0, 2)).to.deep.equal(img1.diffIds)
    store = await LayerStore.open(join(work, 'state/layers'))
  })

  after(async () => {
    try {
      await lab.down()
    } finally {
      if (work !== undefined) await rm(work, { recursive: true, force: true })
    }
  })

  it('receives the saved layers into the store, each verified; chain IDs match the engine\'s', async () => {
    await receiveLayers(store, img2)
    expect(await store.list()).to.deep.equal([...img2.diffIds].sort())
    // the engine keeps a layer under its chain ID, which names the layer directories of our tarball
    const layerdb = await readdir(join(h1.dir, 'docker/image/overlay2/layerdb/sha256'))
    for (const c of chainIds(img2.diffIds)) expect(layerdb).to.include(c.slice('sha256:'.length))
  })

  it('(a) loads the whole image (present 0): the engine holds the same image ID', async () => {
    const id = await loadVerified(engine2, { config: img2.config, diffIds: img2.diffIds, present: 0, store, imageId: img2.id }, timeout())
    expect(id).to.equal(img2.id)
    const info = await engine2.inspectImage(img2.id)
    expect(info?.diffIds).to.deep.equal(img2.diffIds)
    expect(info?.repoTags).to.deep.equal([])
  })

  it('(b) loads a thin tarball (present 2) holding only the layer the engine lacks', async () => {
    // the intermediate image arrives with no layer file at all, then the top image goes: the
    // engine keeps the base chain of two layers through the intermediate image
    const p1 = layersToSend(img1.diffIds, await chainsOf(d2))
    expect(p1).to.deep.equal({ present: 2, missing: [] })
    expect(await loadVerified(engine2, { config: img1.config, diffIds: img1.diffIds, present: p1.present, store }, timeout())).to.equal(img1.id)
    await removeImages(d2, [img2.id])
    expect(await engine2.inspectImage(img2.id)).to.equal(undefined)

    const plan = layersToSend(img2.diffIds, await chainsOf(d2))
    expect(plan).to.deep.equal({ present: 2, missing: [img2.diffIds[2]] })
    const thin = await LayerStore.open(join(work, 'thin/layers'))
    await receiveLayers(thin, img2, plan.present)
    expect(await thin.list()).to.deep.equal([img2.diffIds[2]])
    const id = await loadVerified(engine2, { config: img2.config, diffIds: img2.diffIds, present: plan.present, store: thin }, timeout())
    expect(id).to.equal(img2.id)
    expect((await engine2.inspectImage(img2.id))?.diffIds).to.deep.equal(img2.diffIds)
    // config + one small layer + manifest: far below the 2 MiB base layer
    expect(engine2.lastTarBytes).to.be.below(16 * 1024)
  })

  it('(c) a thin tarball claiming a layer the engine lacks fails with ImageLoadError and leaves no image', async () => {
    await removeImages(d2, [img2.id, img1.id])
    const before = await imageIds(d2)
    const layerdb = join(h2.dir, 'docker/image/overlay2/layerdb/sha256')
    const layersBefore = (await readdir(layerdb)).sort()
    // only the base is there now, but the tarball claims the first two layers are
    expect(layersToSend(img2.diffIds, await chainsOf(d2)).present).to.equal(1)
    const err = await rejection(loadVerified(engine2, { config: img2.config, diffIds: img2.diffIds, present: 2, store }, timeout()))
    expect(err).to.be.instanceOf(ImageLoadError)
    expect(err.message).to.include(img2.id).and.include('first 2 layers')
    expect(await engine2.inspectImage(img2.id)).to.equal(undefined)
    expect(await imageIds(d2)).to.deep.equal(before)
    expect((await readdir(layerdb)).sort()).to.deep.equal(layersBefore)
  })

  it('(d) a load never changes a local tag, even when the source calls its image by that name', async () => {
    await removeImages(d2, [img2.id, img1.id])
    const victim = await commitLayer(d2, BASE_IMAGE, 'echo mine > /v')
    await d2.getImage(victim).tag({ repo: 'victim', tag: 'latest' })
    await d1.getImage(img2.id).tag({ repo: 'victim', tag: 'latest' })
    const { present } = layersToSend(img2.diffIds, await chainsOf(d2))
    expect(await loadVerified(engine2, { config: img2.config, diffIds: img2.diffIds, present, store }, timeout())).to.equal(img2.id)
    expect((await engine2.inspectImage('victim:latest'))?.id).to.equal(victim)
    expect((await engine2.inspectImage(img2.id))?.repoTags).to.deep.equal([])
    expect((await engine2.inspectImage(BASE_IMAGE))?.repoTags).to.deep.equal([BASE_IMAGE])
  })

  it('(e) a layer with one flipped byte is refused by the store before anything reaches the engine', async () => {
    // the engine holds the first two layers (as the intermediate image); only the top one travels
    await removeImages(d2, [img2.id])
    await loadVerified(engine2, { config: img1.config, diffIds: img1.diffIds, present: 1, store }, timeout())
    const before = await imageIds(d2)
    const loads = engine2.loads
    const top = img2.diffIds[2]
    const bytes = await readFile(img2.layerFiles[2])
    bytes[Math.floor(bytes.byteLength / 2)] ^= 0x01
    const fresh = await LayerStore.open(join(work, 'corrupt/layers'))
    async function * fromPeer (): AsyncGenerator<Uint8Array> {
      for (let off = 0; off < bytes.byteLength; off += 700) yield bytes.subarray(off, off + 700)
    }
    const err = await rejection(fresh.receive(top, bytes.byteLength, fromPeer(), timeout()))
    expect(err).to.be.instanceOf(LayerDigestMismatchError)
    expect(await fresh.has(top)).to.equal(false)
    expect(await fresh.list()).to.deep.equal([])
    expect(await readdir(join(fresh.dir, 'incoming'))).to.deep.equal([])
    // a load attempt with the refused layer stops before the engine
    const { present } = layersToSend(img2.diffIds, await chainsOf(d2))
    expect(present).to.equal(2)
    const err2 = await rejection(loadVerified(engine2, { config: img2.config, diffIds: img2.diffIds, present, store: fresh }, timeout()))
    expect(err2).to.be.instanceOf(LayerMissingError)
    expect(engine2.loads).to.equal(loads)
    expect(await imageIds(d2)).to.deep.equal(before)
  })

  it('loads through the agent\'s own engine driver (DockerodeHost): thin load, and a refused one', async () => {
    const host = new DockerodeHost({ kind: 'unix', socketPath: h2.dockerSocket, url: h2.dockerHost })
    await removeImages(d2, [img2.id, img1.id])
    // a wrong claim: the engine holds only the base
    const err = await rejection(loadVerified(host, { config: img2.config, diffIds: img2.diffIds, present: 2, store }, timeout()))
    expect(err).to.be.instanceOf(ImageLoadError)
    expect(err.cause).to.be.instanceOf(DockerLoadError)
    expect(await engine2.inspectImage(img2.id)).to.equal(undefined)
    // the right plan, from the driver's own view of the engine's chains
    const { present } = layersToSend(img2.diffIds, await host.imageChains(timeout()))
    expect(present).to.equal(1)
    expect(await loadVerified(host, { config: img2.config, diffIds: img2.diffIds, present, store }, timeout())).to.equal(img2.id)
    expect((await host.inspectImage(img2.id)).diffIds).to.deep.equal(img2.diffIds)
  })

  it('(f) a live load (fed while layers arrive) loads the image; one cut off by a corrupted layer leaves the engine as it was', async () => {
    const host = new DockerodeHost({ kind: 'unix', socketPath: h2.dockerSocket, url: h2.dockerHost })
    await removeImages(d2, [img2.id, img1.id])
    const { present } = layersToSend(img2.diffIds, await host.imageChains(timeout()))
    expect(present).to.equal(1)
    const before = await imageIds(d2)
    const layerdb = join(h2.dir, 'docker/image/overlay2/layerdb/sha256')
    const layersBefore = (await readdir(layerdb)).sort()
    const engineTmp = join(h2.dir, 'docker/tmp')
    const fileOf = async (i: number, flip = false): Promise<{ size: number, bytes: AsyncIterable<Uint8Array> }> => {
      const bytes = await readFile(img2.layerFiles[i])
      if (flip) bytes[bytes.byteLength - 3] ^= 0x01
      async function * fromPeer (): AsyncGenerator<Uint8Array> {
        for (let off = 0; off < bytes.byteLength; off += 700) yield bytes.subarray(off, off + 700)
      }
      return { size: bytes.byteLength, bytes: fromPeer() }
    }
    const receiveInto = (into: LayerStore, i: number) => async (s: AsyncIterable<Uint8Array>) => ({ diffId: img2.diffIds[i], ...await into.receive(img2.diffIds[i], (await stat(img2.layerFiles[i])).size, s, timeout()) })

    // a corrupted second layer: refused by the store, and the engine's load is cut off
    const cutStore = await LayerStore.open(join(work, 'live-cut/layers'))
    const cut = new LiveLoad(host)
    const l1 = await fileOf(1)
    await cut.layer(l1.size, l1.bytes, receiveInto(cutStore, 1))
    const bad = await fileOf(2, true)
    expect(await rejection(cut.layer(bad.size, bad.bytes, receiveInto(cutStore, 2)))).to.be.instanceOf(LayerDigestMismatchError)
    expect(await cut.finish({ config: img2.config, diffIds: img2.diffIds, present, store: cutStore }, timeout())).to.equal(undefined)
    // the engine drops its unpacked copy once the request is gone
    await waitFor(async () => (await readdir(engineTmp)).length === 0, { timeoutMs: 20_000, what: 'the engine to remove the cut-off load from its tmp directory' })
    expect(await imageIds(d2)).to.deep.equal(before)
    expect((await readdir(layerdb)).sort()).to.deep.equal(layersBefore)

    // the same image, fed whole: loaded as it arrived, with the layer staged by the cut attempt taken from the store
    const ok = new LiveLoad(host)
    const l2 = await fileOf(2)
    await ok.layer(l2.size, l2.bytes, receiveInto(cutStore, 2))
    expect(await ok.finish({ config: img2.config, diffIds: img2.diffIds, present, store: cutStore, imageId: img2.id }, timeout())).to.equal(img2.id)
    expect((await host.inspectImage(img2.id)).diffIds).to.deep.equal(img2.diffIds)
    expect((await host.inspectImage(img2.id)).repoTags).to.deep.equal([])
  })
})
