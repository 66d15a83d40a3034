import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { promisify } from 'node:util'
import { LayerStore } from '../../agent/transfer/layer-store.js'
import { buildLoadTarball, configDigest, loadBase, loadVerified, ociManifest, type ImageLoader } from '../../agent/transfer/load.js'
import { LiveLoad } from '../../agent/transfer/live-load.js'
import { chainIds } from '../../agent/transfer/plan.js'
import { tarHeader, tarPadding } from '../../agent/transfer/tar.js'
import type { ImageInfo } from '../../agent/docker/types.js'
import {
  ImageIdMismatchError, ImageLoadError, LayerDigestMismatchError, LayerMissingError, TransferError
} from '../../protocol/errors.js'
import { rejection } from '../fixtures/assert.js'

const sha = (b: Uint8Array): string => 'sha256:' + createHash('sha256').update(b).digest('hex')
const hex = (id: string): string => id.slice('sha256:'.length)


async function * once (b: Uint8Array): AsyncGenerator<Uint8Array> { yield b }

/** Writes the stream to a file and unpacks it with the system's tar (GNU tar: strict about headers). */
async function untar (tar: Readable, dir: string): Promise<string[]> {
  const chunks: Buffer[] = []
  for await (const c of tar) chunks.push(c as Buffer)
  const file = join(dir, 'image.tar')
  await writeFile(file, Buffer.concat(chunks))
  const out = join(dir, 'out')
  await promisify(execFile)('mkdir', ['-p', out])
  await promisify(execFile)('tar', ['-x', '-f', file, '-C', out])
  const { stdout } = await promisify(execFile)('tar', ['-t', '-f', file])
  return stdout.trim().split('\n')
}

describe('transfer: load tarball and verified load', () => {
  let dir: string
  let store: LayerStore
  // sizes on, below and above a block boundary, and a repeated (empty-looking) layer
  const layers = [randomBytes(3 * 512), randomBytes(1000), randomBytes(70_001), randomBytes(1000)]
  layers[3] = layers[1]
  const diffIds = layers.map(sha)
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } }))
  const imageId = configDigest(config)

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-load-'))
    store = await LayerStore.open(join(dir, 'layers'))
    for (const l of layers) await store.receive(sha(l), l.byteLength, once(l))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('writes ustar headers that tar reads, with base-256 sizes past 8 GiB', () => {
    const h = Buffer.from(tarHeader({ name: 'a/layer.tar', size: 9 * 1024 ** 3 }))
    expect(h.byteLength).to.equal(512)
    expect(h[124]).to.equal(0x80)
    expect(h.readBigUInt64BE(128)).to.equal(BigInt(9 * 1024 ** 3))
    const sum = [...h].reduce((s, b, i) => s + (i >= 148 && i < 156 ? 0x20 : b), 0)
    expect(parseInt(h.toString('latin1', 148, 154), 8)).to.equal(sum)
    expect(h.toString('latin1', 124, 135)).to.not.match(/^[0-7]+$/)
    expect(Buffer.from(tarHeader({ name: 'x', size: 0o77777777777 })).toString('latin1', 124, 136)).to.equal('77777777777\u0000')
    expect(tarPadding(512).byteLength).to.equal(0)
    expect(tarPadding(513).byteLength).to.equal(511)
    expect(() => tarHeader({ name: 'n'.repeat(101), size: 1 })).to.throw(TransferError)
  })

  it('builds a full classic tarball: one <chain id>/layer.tar per layer, the config, a manifest with RepoTags null', async () => {
    const names = await untar(buildLoadTarball({ config, diffIds, present: 0, store }), dir)
    const dirs = chainIds(diffIds).map(hex)
    expect(new Set(dirs).size).to.equal(4)
    expect(names).to.deep.equal([
      ...dirs.map(d => `${d}/layer.tar`),
      `${hex(imageId)}.json`,
      'manifest.json'
    ])
    const out = join(dir, 'out')
    expect(await readFile(join(out, `${hex(imageId)}.json`))).to.deep.equal(config)
    for (let i = 0; i < layers.length; i++) expect(await readFile(join(out, dirs[i], 'layer.tar'))).to.deep.equal(layers[i])
    expect(JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8'))).to.deep.equal([{
      Config: `${hex(imageId)}.json`,
      RepoTags: null,
      Layers: dirs.map(d => `${d}/layer.tar`)
    }])
  })

  it('builds a thin tarball: layers the engine has are in the manifest but their files are omitted', async () => {
    // only the layers after `present` need be in the store
    await store.remove(diffIds[0])
    const names = await untar(buildLoadTarball({ config, diffIds, present: 2, store }), dir)
    const dirs = chainIds(diffIds).map(hex)
    expect(names).to.deep.equal([`${dirs[2]}/layer.tar`, `${dirs[3]}/layer.tar`, `${hex(imageId)}.json`, 'manifest.json'])
    const manifest = JSON.parse(await readFile(join(dir, 'out', 'manifest.json'), 'utf8'))
    expect(manifest[0].Layers).to.deep.equal(dirs.map(d => `${d}/layer.tar`))
    expect(await readdir(join(dir, 'out'))).to.not.include(dirs[0])
  })

  it('fails the tarball stream with LayerMissingError when a layer is not in the store', async () => {
    await store.remove(diffIds[2])
    const err = await rejection(untar(buildLoadTarball({ config, diffIds, present: 0, store }), dir))
    expect(err).to.be.instanceOf(LayerMissingError)
    expect(() => buildLoadTarball({ config, diffIds, present: 5, store })).to.throw(TransferError)
  })

  /** An engine stand-in: drains the tarball (checking it is one) and answers as told. */
  function fakeEngine (answer: { loaded?: string[], fail?: Error, info?: ImageInfo | undefined }): ImageLoader & { loads: number, removed: string[] } {
    const fake = {
      loads: 0,
      removed: [] as string[],
      async removeImage (id: string): Promise<void> { fake.removed.push(id) },
      async loadImage (tar: Readable): Promise<string[]> {
        fake.loads++
        await untar(tar, dir)
        if (answer.fail !== undefined) throw answer.fail
        return answer.loaded ?? [imageId]
      },
      async inspectImage (ref: string): Promise<ImageInfo | undefined> {
        if ('info' in answer) return answer.info
        return { id: ref, diffIds: [...diffIds], os: 'linux', architecture: 'amd64', size: 0, repoTags: [] }
      }
    }
    return fake
  }

  it('loads and returns the image ID when the engine then holds exactly that image', async () => {
    const engine = fakeEngine({})
    expect(await loadVerified(engine, { config, diffIds, present: 1, store, imageId }, AbortSignal.timeout(10_000))).to.equal(imageId)
    expect(engine.loads).to.equal(1)
  })

  describe('into the containerd image store', () => {
    const manifestId = (): string => sha(ociManifest(config, diffIds, layers.map(l => l.byteLength)))

    it('loads an OCI layout with uncompressed blobs named by diff ID, and confirms the image by its manifest digest and diff IDs', async () => {
      let entries: string[] = []
      const engine = fakeEngine({ loaded: [manifestId()] })
      engine.loadImage = async (tar: Readable): Promise<string[]> => { entries = await untar(tar, dir); return [manifestId()] }
      expect(await loadVerified(engine, { config, diffIds, present: 0, store, imageId, imageStore: 'containerd' }, AbortSignal.timeout(10_000))).to.equal(manifestId())
      // The repeated layer is one blob.
      expect(entries).to.have.members([...new Set(diffIds)].map(d => `blobs/sha256/${hex(d)}`).concat(
        `blobs/sha256/${hex(imageId)}`, `blobs/sha256/${hex(manifestId())}`, 'oci-layout', 'index.json'))
      const index = JSON.parse(await readFile(join(dir, 'out', 'index.json'), 'utf8'))
      expect(index.manifests).to.have.length(1)
      expect(index.manifests[0].digest).to.equal(manifestId())
      expect(index.manifests[0].annotations, 'no ref name: no tag moves').to.equal(undefined)
      expect(engine.removed).to.deep.equal([])
    })

    it('leaves out the blobs of a chain it loaded there itself (present), referencing them in the manifest', async () => {
      let entries: string[] = []
      const engine = fakeEngine({})
      engine.loadImage = async (tar: Readable): Promise<string[]> => { entries = await untar(tar, dir); return [manifestId()] }
      await loadVerified(engine, { config, diffIds, present: 3, store, imageId, imageStore: 'containerd' })
      expect(entries.filter(e => e.startsWith('blobs/')).length).to.equal(3) // layer 4 (same as 2), config, manifest
      const manifest = JSON.parse(await readFile(join(dir, 'out', 'blobs/sha256', hex(manifestId())), 'utf8'))
      expect(manifest.layers.map((l: { digest: string }) => l.digest)).to.deep.equal(diffIds)
    })

    it('removes a loaded image whose layers are not the ones sent, and says so', async () => {
      const engine = fakeEngine({ loaded: [manifestId()], info: { id: manifestId(), diffIds: [diffIds[0]], os: 'linux', architecture: 'amd64', size: 0, repoTags: [] } })
      const err = await loadVerified(engine, { config, diffIds, present: 0, store, imageId, imageStore: 'containerd' }).catch(e => e)
      expect(err).to.be.instanceOf(ImageIdMismatchError)
      expect(engine.removed).to.deep.equal([manifestId()])
    })

    it('plans on that store only the chains the caller loaded itself (loadBase), and the engine\'s chains on a graph driver', async () => {
      const chains = [[diffIds[0]]]
      const engine = (imageStore: 'containerd' | 'graphdriver'): Parameters<typeof loadBase>[0] => ({ info: async () => ({ imageStore }), imageChains: async () => chains })
      expect(await loadBase(engine('containerd'))).to.deep.equal({ imageStore: 'containerd', chains: [] })
      expect(await loadBase(engine('containerd'), undefined, [diffIds.slice(0, 2)])).to.deep.equal({ imageStore: 'containerd', chains: [diffIds.slice(0, 2)] })
      expect(await loadBase(engine('graphdriver'))).to.deep.equal({ imageStore: 'graphdriver', chains })
    })
  })

  it('removes an image loaded under an unexpected ID (graph driver)', async () => {
    const other = 'sha256:' + 'd'.repeat(64)
    const engine = fakeEngine({ loaded: [other] })
    const err = await loadVerified(engine, { config, diffIds, present: 1, store, imageId }).catch(e => e)
    expect(err).to.be.instanceOf(ImageIdMismatchError)
    expect(engine.removed).to.deep.equal([other])
  })

  it('refuses a config that does not match the image ID or the layers, before the engine sees anything', async () => {
    const engine = fakeEngine({})
    const other = 'sha256:' + '0'.repeat(64)
    expect(await rejection(loadVerified(engine, { config, diffIds, present: 0, store, imageId: other }))).to.be.instanceOf(ImageIdMismatchError)
    expect(await rejection(loadVerified(engine, { config, diffIds: diffIds.slice(0, 3), present: 0, store }))).to.be.instanceOf(ImageIdMismatchError)
    expect(await rejection(loadVerified(engine, { config, diffIds: [...diffIds].reverse(), present: 0, store }))).to.be.instanceOf(ImageIdMismatchError)
    expect(await rejection(loadVerified(engine, { config: Buffer.from('{"rootfs":{}}'), diffIds, present: 0, store }))).to.be.instanceOf(ImageIdMismatchError)
    expect(await rejection(loadVerified(engine, { config: Buffer.from('not json'), diffIds, present: 0, store }))).to.be.instanceOf(ImageIdMismatchError)
    expect(await rejection(loadVerified(engine, { config, diffIds, present: -1, store }))).to.be.instanceOf(TransferError)
    expect(engine.loads).to.equal(0)
  })

  it('refuses to start a load when a layer to send is not in the store', async () => {
    await store.remove(diffIds[2])
    const engine = fakeEngine({})
    expect(await rejection(loadVerified(engine, { config, diffIds, present: 1, store }))).to.be.instanceOf(LayerMissingError)
    expect(engine.loads).to.equal(0)
    // with the layer counted as present on the engine, it is not needed
    await store.remove(diffIds[0])
    await store.remove(diffIds[1])
    expect(await rejection(loadVerified(engine, { config, diffIds, present: 3, store }))).to.be.instanceOf(LayerMissingError)
    expect(await loadVerified(engine, { config, diffIds, present: 4, store })).to.equal(imageId)
  })

  it('turns an engine refusal into ImageLoadError with the cause', async () => {
    const cause = new Error('open /var/lib/docker/tmp/docker-import-1/x/layer.tar: no such file or directory')
    const err = await rejection(loadVerified(fakeEngine({ fail: cause }), { config, diffIds, present: 2, store }))
    expect(err).to.be.instanceOf(ImageLoadError)
    expect(err.cause).to.equal(cause)
    expect(err.message).to.include('first 2 layers')
  })

  it('refuses when the engine loaded or holds another image than the config\'s', async () => {
    const other = 'sha256:' + '0'.repeat(64)
    const info = (id: string, ids: string[]): ImageInfo => ({ id, diffIds: ids, os: 'linux', architecture: 'amd64', size: 0, repoTags: [] })
    for (const answer of [
      { loaded: [other] },
      { info: undefined },
      { info: info(other, diffIds) },
      { info: info(imageId, diffIds.slice(1)) }
    ]) {
      expect(await rejection(loadVerified(fakeEngine(answer), { config, diffIds, present: 0, store }))).to.be.instanceOf(ImageIdMismatchError)
    }
  })

  describe('live load', () => {
    /** An engine stand-in that keeps every byte it is sent and says whether the tarball ended or was cut off. */
    function recordingEngine (fail?: Error): ImageLoader & { bytes: () => Buffer, outcome: Promise<'ended' | 'cut'> } {
      const chunks: Buffer[] = []
      let settle: (how: 'ended' | 'cut') => void = () => {}
      const outcome = new Promise<'ended' | 'cut'>(resolve => { settle = resolve })
      return {
        bytes: () => Buffer.concat(chunks),
        outcome,
        async loadImage (tar: Readable, signal?: AbortSignal): Promise<string[]> {
          if (fail !== undefined) { tar.resume(); throw fail }
          try {
            for await (const c of tar) chunks.push(c as Buffer)
          } catch (err) {
            settle('cut')
            throw err
          }
          settle(signal?.aborted === true ? 'cut' : 'ended')
          return [imageId]
        },
        async removeImage (): Promise<void> {},
        async inspectImage (ref: string): Promise<ImageInfo | undefined> {
          return { id: ref, diffIds: [...diffIds], os: 'linux', architecture: 'amd64', size: 0, repoTags: [] }
        }
      }
    }
    /** A layer arriving in three chunks, as a network stream would deliver it. */
    async function * arriving (b: Uint8Array): AsyncGenerator<Uint8Array> {
      const third = Math.ceil(b.byteLength / 3)
      for (let i = 0; i < b.byteLength; i += third) yield b.subarray(i, i + third)
    }
    const receive = (l: Uint8Array) => async (s: AsyncIterable<Uint8Array>) => ({ diffId: sha(l), ...await store.receive(sha(l), l.byteLength, s) })

    beforeEach(async () => {
      for (const d of diffIds) await store.remove(d)
    })

    it('streams layers into the engine as they arrive; the manifest comes last and names them', async () => {
      const engine = recordingEngine()
      const live = new LiveLoad(engine)
      await live.layer(layers[1].byteLength, arriving(layers[1]), receive(layers[1]))
      // staged by an earlier attempt: streamed from the store at finish
      await store.receive(diffIds[2], layers[2].byteLength, once(layers[2]))
      expect(await live.finish({ config, diffIds, present: 1, store, imageId })).to.equal(imageId)
      expect(await engine.outcome).to.equal('ended')
      await writeFile(join(dir, 'image.tar'), engine.bytes())
      const out = join(dir, 'out')
      await promisify(execFile)('mkdir', ['-p', out])
      await promisify(execFile)('tar', ['-x', '-f', join(dir, 'image.tar'), '-C', out])
      const [manifest] = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8'))
      expect(manifest.RepoTags).to.equal(null)
      expect(manifest.Layers[1]).to.equal(manifest.Layers[3]) // the same layer twice: one file
      for (const i of [1, 2, 3]) expect(await readFile(join(out, manifest.Layers[i]))).to.deep.equal(layers[i])
      expect(await readFile(join(out, manifest.Config))).to.deep.equal(config)
      expect(await store.has(diffIds[1])).to.equal(true)
    })

    it('a refused layer never reaches the engine whole: its last chunk is held back and the load is cut off', async () => {
      const engine = recordingEngine()
      const live = new LiveLoad(engine)
      const bad = Buffer.from(layers[2])
      bad[bad.byteLength - 1] ^= 1
      const err = await rejection(live.layer(bad.byteLength, arriving(bad), receive(layers[2])))
      expect(err).to.be.instanceOf(LayerDigestMismatchError)
      expect(await engine.outcome).to.equal('cut')
      expect(engine.bytes().includes(bad.subarray(-100))).to.equal(false)
      expect(live.isAbandoned).to.equal(true)
      expect(await live.finish({ config, diffIds, present: 2, store })).to.equal(undefined)
      expect(await store.has(diffIds[2])).to.equal(false)
    })

    it('an engine that fails midway abandons the live load but not the layer: it is staged for a load from the store', async () => {
      const live = new LiveLoad(recordingEngine(new Error('no space left on device')))
      await live.layer(layers[2].byteLength, arriving(layers[2]), receive(layers[2]))
      expect(await store.has(diffIds[2])).to.equal(true)
      expect(await live.finish({ config, diffIds, present: 2, store })).to.equal(undefined)
    })

    it('refuses to finish without every layer after present, naming the missing one', async () => {
      const live = new LiveLoad(recordingEngine())
      await live.layer(layers[2].byteLength, arriving(layers[2]), receive(layers[2]))
      const err = await rejection(live.finish({ config, diffIds, present: 1, store }))
      expect(err).to.be.instanceOf(LayerMissingError)
      expect(err.message).to.include(diffIds[1])
      live.abort(new Error('test over'))
    })
  })
})
