/**
 * The `docker save` stream parser (agent/docker/saved-image.ts) on archives built here with
 * tar-stream: the classic layout (with a symlinked duplicate layer), OCI plain and gzip, an engine's
 * OCI layout with both manifest.json and index.json, nested indexes, and the broken ones that must
 * be a SavedImageFormatError. Also: skipped and half-read layers, a source error passed on as
 * itself, and backpressure (the parser never reads far ahead of the consumer).
 */
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import tarStream from 'tar-stream'
import { readSavedImage } from '../../agent/docker/saved-image.js'
import type { SavedEntry } from '../../agent/docker/types.js'
import { SavedImageFormatError } from '../../protocol/errors.js'

interface TarEntry { name: string, data?: Buffer, type?: 'file' | 'symlink' | 'directory', linkname?: string }

async function tar (entries: TarEntry[]): Promise<Buffer> {
  const pack = tarStream.pack()
  const chunks: Buffer[] = []
  const done = (async () => { for await (const c of pack) chunks.push(c as Buffer) })()
  for (const e of entries) {
    if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: e.linkname ?? '' })
    else if (e.type === 'directory') pack.entry({ name: e.name, type: 'directory' })
    else pack.entry({ name: e.name, size: e.data?.length ?? 0 }, e.data ?? Buffer.alloc(0))
  }
  pack.finalize()
  await done
  return Buffer.concat(chunks)
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** Feeds `bytes` in small chunks, so entries and headers straddle chunk boundaries. */
async function * chunked (bytes: Buffer, size = 777): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size)
}

interface Read {
  order: string[]
  config?: { digest: string, bytes: Buffer }
  layers: Map<string, { sha256: string, size: number | undefined, compressed: boolean, bytes: number }>
  manifest?: { config: string, layers: string[] }
}

async function readAll (source: AsyncIterable<SavedEntry>): Promise<Read> {
  const out: Read = { order: [], layers: new Map() }
  for await (const e of source) {
    out.order.push(e.kind === 'layer' ? `layer ${e.path}` : e.kind)
    if (e.kind === 'config') out.config = { digest: e.digest, bytes: Buffer.from(e.bytes) }
    else if (e.kind === 'manifest') out.manifest = { config: e.config, layers: e.layers }
    else {
      const h = createHash('sha256')
      let bytes = 0
      for await (const c of e.stream) { h.update(c); bytes += c.byteLength }
      out.layers.set(e.path, { sha256: `sha256:${h.digest('hex')}`, size: e.size, compressed: e.compressed, bytes })
    }
  }
  return out
}

async function formatError (source: AsyncIterable<SavedEntry>): Promise<SavedImageFormatError> {
  try {
    await readAll(source)
  } catch (err) {
    expect(err, String(err)).to.be.instanceOf(SavedImageFormatError)
    return err as SavedImageFormatError
  }
  expect.fail('expected a SavedImageFormatError')
}

/** Three layer tars (the second a repeat of the first, as an empty layer often is) and their config. */
async function fixture (): Promise<{ layers: Buffer[], diffIds: string[], config: Buffer, configHex: string }> {
  const a = await tar([{ name: 'etc/', type: 'directory' }, { name: 'etc/a.txt', data: Buffer.from('layer a\n') }, { name: 'big.bin', data: randomBytes(300_000) }])
  const c = await tar([{ name: 'c.txt', data: Buffer.from('layer c\n') }])
  const layers = [a, a, c]
  const diffIds = layers.map(l => `sha256:${sha(l)}`)
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: diffIds } }))
  return { layers, diffIds, config, configHex: sha(config) }
}

/** The classic layout in the engine's (lexical) order: a layer dir, the config, more layer dirs, manifest.json. */
async function classic (f: Awaited<ReturnType<typeof fixture>>, opts: { manifest?: unknown, omitManifest?: boolean } = {}): Promise<Buffer> {
  const ids = ['1111', 'aaaa', 'cccc'].map(p => p.padEnd(64, '0'))
  const [id0, id1, id2] = ids as [string, string, string]
  const entries: TarEntry[] = [
    { name: `${id0}/`, type: 'directory' },
    { name: `${id0}/VERSION`, data: Buffer.from('1.0') },
    { name: `${id0}/json`, data: Buffer.from('{"id":"x"}') },
    { name: `${id0}/layer.tar`, data: f.layers[0] },
    { name: `${f.configHex}.json`, data: f.config },
    { name: `${id1}/`, type: 'directory' },
    { name: `${id1}/layer.tar`, type: 'symlink', linkname: `../${id0}/layer.tar` },
    { name: `${id2}/`, type: 'directory' },
    { name: `${id2}/layer.tar`, data: f.layers[2] }
  ]
  const manifest = opts.manifest ?? [{ Config: `${f.configHex}.json`, RepoTags: ['x:1'], Layers: ids.map(i => `${i}/layer.tar`) }]
  if (opts.omitManifest !== true) entries.push({ name: 'manifest.json', data: Buffer.from(JSON.stringify(manifest)) })
  entries.push({ name: 'repositories', data: Buffer.from('{"x":{"1":"abc"}}') })
  return await tar(entries)
}

/**
 * Podman's layout (`podman save`, 4.3, as its Docker API serves it): layers once each at the root
 * as `<diff id hex>.tar`, then the config, `<v1 id>/layer.tar` symlinks to them, `manifest.json`
 * naming the root files, `repositories`.
 */
async function podman (f: Awaited<ReturnType<typeof fixture>>): Promise<Buffer> {
  const hexes = f.diffIds.map(d => d.slice('sha256:'.length))
  const entries: TarEntry[] = []
  for (const [i, h] of hexes.entries()) if (hexes.indexOf(h) === i) entries.push({ name: `${h}.tar`, data: f.layers[i] })
  entries.push({ name: `${f.configHex}.json`, data: f.config })
  for (const [i, h] of hexes.entries()) {
    const v1 = String(i).padEnd(64, 'e')
    entries.push({ name: `${v1}/layer.tar`, type: 'symlink', linkname: `../${h}.tar` })
    entries.push({ name: `${v1}/VERSION`, data: Buffer.from('1.0') })
    entries.push({ name: `${v1}/json`, data: Buffer.from('{"id":"x"}') })
  }
  entries.push({ name: 'manifest.json', data: Buffer.from(JSON.stringify([{ Config: `${f.configHex}.json`, RepoTags: ['docker.io/x:1'], Layers: hexes.map(h => `${h}.tar`) }])) })
  entries.push({ name: 'repositories', data: Buffer.from('{"x":{"1":"abc"}}') })
  return await tar(entries)
}

/** The OCI layout: blobs in digest order, then index.json and oci-layout (skopeo's oci-archive). */
async function oci (f: Awaited<ReturnType<typeof fixture>>, opts: { gzip?: boolean, nested?: boolean, dockerManifest?: boolean, mediaType?: string } = {}): Promise<Buffer> {
  const blobs = new Map<string, Buffer>()
  const put = (b: Buffer): string => { const h = sha(b); blobs.set(h, b); return `sha256:${h}` }
  const layerDigests = f.layers.map(l => put(opts.gzip === true ? gzipSync(l) : l))
  const configDigest = put(f.config)
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: f.config.length },
    layers: layerDigests.map(d => ({ mediaType: opts.mediaType ?? `application/vnd.oci.image.layer.v1.tar${opts.gzip === true ? '+gzip' : ''}`, digest: d }))
  }))
  const manifestDigest = put(manifest)
  let top = { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length }] }
  if (opts.nested === true) {
    // An attestation-like manifest whose config is not an image config, beside ours, in an inner index.
    const otherConfig = put(Buffer.from('{"predicateType":"x"}'))
    const attestation = put(Buffer.from(JSON.stringify({ schemaVersion: 2, config: { digest: otherConfig }, layers: [] })))
    const inner = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ digest: manifestDigest }, { digest: attestation }, { digest: `sha256:${'9'.repeat(64)}` }] }))
    top = { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: put(inner), size: inner.length }] }
  }
  const entries: TarEntry[] = [{ name: 'blobs/', type: 'directory' }, { name: 'blobs/sha256/', type: 'directory' }]
  for (const h of [...blobs.keys()].sort()) entries.push({ name: `blobs/sha256/${h}`, data: blobs.get(h) })
  entries.push({ name: 'index.json', data: Buffer.from(JSON.stringify(top)) })
  if (opts.dockerManifest === true) {
    entries.push({ name: 'manifest.json', data: Buffer.from(JSON.stringify([{ Config: `blobs/sha256/${f.configHex}`, RepoTags: null, Layers: layerDigests.map(d => `blobs/sha256/${d.slice(7)}`) }])) })
  }
  entries.push({ name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') })
  return await tar(entries)
}

describe('readSavedImage (docker save stream parser)', () => {
  it('reads the classic layout: config, layers, then the manifest with a repeated layer resolved', async () => {
    const f = await fixture()
    const r = await readAll(readSavedImage(chunked(await classic(f))))
    const id0 = '1111'.padEnd(64, '0')
    const id2 = 'cccc'.padEnd(64, '0')
    expect(r.order).to.deep.equal([`layer ${id0}/layer.tar`, 'config', `layer ${id2}/layer.tar`, 'manifest'])
    expect(r.config?.digest).to.equal(`sha256:${f.configHex}`)
    expect(r.config?.bytes.equals(f.config)).to.equal(true)
    expect(r.manifest).to.deep.equal({ config: `${f.configHex}.json`, layers: [`${id0}/layer.tar`, `${id0}/layer.tar`, `${id2}/layer.tar`] })
    expect(r.manifest?.layers.map(p => r.layers.get(p)?.sha256)).to.deep.equal(f.diffIds)
    for (const l of r.layers.values()) {
      expect(l.compressed).to.equal(false)
      expect(l.size).to.equal(l.bytes)
    }
  })

  it('reads Podman\'s layout: each layer once at the archive root as <diff id hex>.tar', async () => {
    const f = await fixture()
    const r = await readAll(readSavedImage(chunked(await podman(f))))
    const [a, , c] = f.diffIds.map(d => `${d.slice('sha256:'.length)}.tar`) as [string, string, string]
    expect(r.order).to.deep.equal([`layer ${a}`, `layer ${c}`, 'config', 'manifest'])
    expect(r.config?.digest).to.equal(`sha256:${f.configHex}`)
    expect(r.manifest).to.deep.equal({ config: `${f.configHex}.json`, layers: [a, a, c] })
    expect(r.manifest?.layers.map(p => r.layers.get(p)?.sha256)).to.deep.equal(f.diffIds)
  })

  it('reads the OCI layout with uncompressed blobs', async () => {
    const f = await fixture()
    const r = await readAll(readSavedImage(chunked(await oci(f))))
    expect(r.config?.digest).to.equal(`sha256:${f.configHex}`)
    expect(r.manifest?.config).to.equal(`blobs/sha256/${f.configHex}`)
    expect(r.manifest?.layers.map(p => r.layers.get(p)?.sha256)).to.deep.equal(f.diffIds)
    expect(r.order.filter(o => o.startsWith('layer'))).to.have.length(2) // the repeated layer is one blob
    for (const l of r.layers.values()) expect(l).to.deep.include({ compressed: false })
    expect(r.order.at(-1)).to.equal('manifest')
  })

  it('reads the OCI layout with gzip blobs, inflating them: the layer hashes are the diff IDs', async () => {
    const f = await fixture()
    const r = await readAll(readSavedImage(chunked(await oci(f, { gzip: true }))))
    expect(r.manifest?.layers.map(p => r.layers.get(p)?.sha256)).to.deep.equal(f.diffIds)
    for (const l of r.layers.values()) expect(l).to.deep.include({ compressed: true, size: undefined })
    // The blob paths are the digests of the compressed bytes, not the diff IDs.
    expect(r.manifest?.layers[0]).to.not.equal(`blobs/sha256/${(f.diffIds[0] as string).slice(7)}`)
  })

  it('trusts the bytes, not the media type: uncompressed blobs labelled tar+gzip (as skopeo 1.9 writes them)', async () => {
    const f = await fixture()
    const r = await readAll(readSavedImage(chunked(await oci(f, { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }))))
    expect(r.manifest?.layers.map(p => r.layers.get(p)?.sha256)).to.deep.equal(f.diffIds)
  })

  it('reads an engine\'s OCI layout with both manifest.json and index.json, and nested indexes', async () => {
    const f = await fixture()
    for (const opts of [{ dockerManifest: true }, { nested: true }, { nested: true, gzip: true }]) {
      const r = await readAll(readSavedImage(chunked(await oci(f, opts))))
      expect(r.manifest?.layers.map(p => r.layers.get(p)?.sha256), JSON.stringify(opts)).to.deep.equal(f.diffIds)
    }
  })

  it('classifies an empty layer (1024 zero bytes, no tar magic) as a layer', async () => {
    const empty = Buffer.alloc(1024)
    const config = Buffer.from(JSON.stringify({ os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha(empty)}`] } }))
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, config: { digest: `sha256:${sha(config)}` }, layers: [{ digest: `sha256:${sha(empty)}` }] }))
    const archive = await tar([
      ...[empty, config, manifest].map(b => ({ name: `blobs/sha256/${sha(b)}`, data: b })),
      { name: 'index.json', data: Buffer.from(JSON.stringify({ manifests: [{ digest: `sha256:${sha(manifest)}` }] })) }
    ])
    const r = await readAll(readSavedImage(chunked(archive)))
    expect(r.manifest?.layers.map(p => r.layers.get(p)?.sha256)).to.deep.equal([`sha256:${sha(empty)}`])
  })

  it('lets the consumer skip layers or stop reading one midway', async () => {
    const f = await fixture()
    for (const archive of [await classic(f), await oci(f, { gzip: true })]) {
      const kinds: string[] = []
      let n = 0
      for await (const e of readSavedImage(chunked(archive))) {
        kinds.push(e.kind)
        if (e.kind === 'layer' && n++ === 0) {
          for await (const c of e.stream) { expect(c.byteLength).to.be.above(0); break } // one chunk, then leave it
        }
      }
      expect(kinds.filter(k => k === 'layer')).to.have.length(2)
      expect(kinds.at(-1)).to.equal('manifest')
    }
  })

  it('refuses an archive without manifest.json or index.json', async () => {
    const f = await fixture()
    const err = await formatError(readSavedImage(chunked(await classic(f, { omitManifest: true }))))
    expect(err.message).to.match(/neither manifest\.json nor index\.json/)
  })

  it('refuses an unexpected manifest: not a list, no entry for the config, or naming a layer it does not hold', async () => {
    const f = await fixture()
    await formatError(readSavedImage(chunked(await classic(f, { manifest: { Config: 'x' } }))))
    await formatError(readSavedImage(chunked(await classic(f, { manifest: [{ Config: 'other.json', Layers: [] }] }))))
    const err = await formatError(readSavedImage(chunked(await classic(f, { manifest: [{ Config: `${f.configHex}.json`, Layers: ['dddd/layer.tar'] }] }))))
    expect(err.message).to.include('dddd/layer.tar')
  })

  it('refuses a tarball that is no image archive at all, or has no config', async () => {
    await formatError(readSavedImage(chunked(randomBytes(5000))))
    await formatError(readSavedImage(chunked(await tar([{ name: 'hello.txt', data: Buffer.from('hi') }]))))
  })

  it('refuses a truncated archive, whether cut inside a layer or between entries', async () => {
    const f = await fixture()
    const whole = await classic(f)
    await formatError(readSavedImage(chunked(whole.subarray(0, 200_000))))
    // Cut where manifest.json's header begins: every entry before it is whole.
    await formatError(readSavedImage(chunked(whole.subarray(0, whole.indexOf(Buffer.from('manifest.json\0'))))))
  })

  it('refuses a blob or config whose bytes do not match the digest in its name', async () => {
    const f = await fixture()
    const archive = await oci(f)
    // Change one byte inside the first layer blob's data (its header is left intact).
    const layerHex = sha(f.layers[0] as Buffer)
    const at = archive.indexOf(Buffer.from(`blobs/sha256/${layerHex}`)) + 512 + 100_000
    const bad = Buffer.from(archive)
    bad[at] = (bad[at] as number) ^ 0xff
    const err = await formatError(readSavedImage(chunked(bad)))
    expect(err.message).to.include(layerHex)

    const wrongConfig = await tar([{ name: `${'e'.repeat(64)}.json`, data: f.config }])
    await formatError(readSavedImage(chunked(wrongConfig)))
  })

  it('refuses zstd-compressed layers with a clear error', async () => {
    const zstd = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(600)])
    const err = await formatError(readSavedImage(chunked(await tar([{ name: `blobs/sha256/${sha(zstd)}`, data: zstd }]))))
    expect(err.message).to.match(/zstd/)
  })

  it('passes an error of the source stream on as itself', async () => {
    const f = await fixture()
    const whole = await classic(f)
    class SourceBroke extends Error {}
    async function * breaking (): AsyncGenerator<Uint8Array> {
      yield whole.subarray(0, 100_000)
      throw new SourceBroke('connection reset')
    }
    let err: unknown
    try { await readAll(readSavedImage(breaking())) } catch (e) { err = e }
    expect(err).to.be.instanceOf(SourceBroke)
  })

  it('reads no further ahead of the consumer than a few chunks (backpressure)', async () => {
    const big = randomBytes(8 * 2 ** 20)
    const layer = await tar([{ name: 'big.bin', data: big }])
    const config = Buffer.from(JSON.stringify({ os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layer)}`] } }))
    const archive = await tar([
      { name: `${'a'.repeat(64)}/layer.tar`, data: layer },
      { name: `${sha(config)}.json`, data: config },
      { name: 'manifest.json', data: Buffer.from(JSON.stringify([{ Config: `${sha(config)}.json`, Layers: [`${'a'.repeat(64)}/layer.tar`] }])) }
    ])
    let pulled = 0
    async function * counting (): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < archive.length; i += 64 * 1024) {
        const c = archive.subarray(i, i + 64 * 1024)
        pulled += c.length
        yield c
      }
    }
    let maxAhead = 0
    for await (const e of readSavedImage(counting())) {
      if (e.kind !== 'layer') continue
      let consumed = 0
      for await (const c of e.stream) {
        consumed += c.byteLength
        maxAhead = Math.max(maxAhead, pulled - consumed)
        await new Promise(resolve => setImmediate(resolve)) // a slow consumer
      }
      expect(consumed).to.equal(layer.length)
    }
    expect(maxAhead).to.be.below(1024 * 1024)
  })
})
