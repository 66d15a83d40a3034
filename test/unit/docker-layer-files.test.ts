/**
 * LayerFiles against a made-up engine root (the real engine's layers are tested in docker.test):
 * the tar is replayed from the record and the diff directory; a record naming a path outside the
 * layer, or a file whose size differs from the record, fails the read; anything missing is "not here".
 * Nothing outside the layer is read through a symlink: a symlinked directory on a file's way or a
 * symlinked file fails the read, symlinked storage (the layer's directories) is "not here".
 */
import { expect } from 'chai'
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { LayerFiles, parseTarSplitLine } from '../../agent/docker/layer-files.js'
import { LayerFilesError } from '../../protocol/errors.js'

const CHAIN = `sha256:${'1'.repeat(64)}`
const CACHE = '2'.repeat(64)

async function collect (source: AsyncIterable<Uint8Array> | Uint8Array[]): Promise<Buffer> {
  const chunks: Uint8Array[] = []
  for await (const c of source) chunks.push(c)
  return Buffer.concat(chunks)
}

describe('docker: layers read from the engine\'s storage (LayerFiles)', () => {
  let root: string
  const record = async (lines: object[]): Promise<void> => {
    const meta = join(root, 'image', 'overlay2', 'layerdb', 'sha256', CHAIN.slice(7))
    await mkdir(meta, { recursive: true })
    await writeFile(join(meta, 'cache-id'), CACHE)
    await writeFile(join(meta, 'tar-split.json.gz'), gzipSync(lines.map(l => JSON.stringify(l)).join('\n') + '\n'))
  }
  const segment = (text: string): object => ({ type: 2, payload: Buffer.from(text).toString('base64'), position: 0 })

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'goto-layer-files-'))
    await mkdir(join(root, 'overlay2', CACHE, 'diff', 'etc'), { recursive: true })
    await writeFile(join(root, 'overlay2', CACHE, 'diff', 'etc', 'app.conf'), 'hello')
    // A file whose name is not UTF-8: 'raw' and the byte 0xe9.
    await writeFile(Buffer.concat([Buffer.from(join(root, 'overlay2', CACHE, 'diff') + '/raw'), Buffer.from([0xe9])]), 'bytes')
  })
  afterEach(async () => { await rm(root, { recursive: true, force: true }) })

  it('replays segments and files in order, and tells the size first', async () => {
    const raw = Buffer.concat([Buffer.from('raw'), Buffer.from([0xe9])]).toString('base64')
    await record([
      segment('<header>'), { type: 1, name: 'etc/app.conf', size: 5, payload: null, position: 1 }, segment('<pad>'),
      { type: 1, name: 'empty', size: 0, position: 2 }, { type: 1, name_raw: raw, size: 5, position: 3 }, segment('<end>')
    ])
    const layer = await new LayerFiles(root).open(CHAIN)
    expect(layer?.size).to.equal('<header>hello<pad>bytes<end>'.length)
    expect((await collect(layer?.stream() ?? [])).toString()).to.equal('<header>hello<pad>bytes<end>')
  })

  it('refuses a record naming a path outside the layer, a file of another size than recorded, a file missing', async () => {
    for (const entry of [{ type: 1, name: '../../../etc/passwd', size: 5 }, { type: 1, name: 'etc/app.conf', size: 6 }, { type: 1, name: 'etc/gone', size: 1 }]) {
      await record([segment('<header>'), entry])
      const layer = await new LayerFiles(root).open(CHAIN)
      let err: unknown
      try { await collect(layer?.stream() ?? []) } catch (e) { err = e }
      expect(err, JSON.stringify(entry)).to.be.instanceOf(LayerFilesError)
    }
  })

  it('reads nothing outside the layer through a symlinked directory, a symlinked file or a FIFO: the read fails', async () => {
    // Outside the layer: a secret of the host, of the size the record claims.
    const outside = await mkdtemp(join(tmpdir(), 'goto-layer-outside-'))
    try {
      await writeFile(join(outside, 'shadow'), 'SECRET')
      const diff = join(root, 'overlay2', CACHE, 'diff')
      await symlink(outside, join(diff, 'etc', 'up'))
      await symlink('/', join(diff, 'root'))
      await symlink(join(outside, 'shadow'), join(diff, 'etc', 'shadow'))
      execFileSync('mkfifo', [join(diff, 'etc', 'fifo')])
      for (const entry of [
        { type: 1, name: 'etc/up/shadow', size: 6 },
        { type: 1, name: './etc/./up//shadow', size: 6 },
        { type: 1, name: 'etc/shadow', size: 6 },
        { type: 1, name: 'root/' + outside.slice(1) + '/shadow', size: 6 },
        { type: 1, name: 'etc/fifo', size: 6 }
      ]) {
        await record([segment('<header>'), entry])
        const layer = await new LayerFiles(root).open(CHAIN)
        expect(layer, entry.name).to.not.equal(undefined)
        const chunks: Uint8Array[] = []
        let err: unknown
        try { for await (const c of layer?.stream() ?? []) chunks.push(c) } catch (e) { err = e }
        expect(err, entry.name).to.be.instanceOf(LayerFilesError)
        expect(Buffer.concat(chunks).toString(), entry.name).to.not.include('SECRET')
      }
    } finally {
      await rm(outside, { recursive: true, force: true })
    }
  })

  it('answers undefined (docker save) when the layer\'s storage is reached through a symlink', async () => {
    const file = { type: 1, name: 'etc/app.conf', size: 5 }
    await record([segment('<header>'), file])
    expect(await new LayerFiles(root).open(CHAIN)).to.not.equal(undefined)
    const elsewhere = await mkdtemp(join(tmpdir(), 'goto-layer-elsewhere-'))
    try {
      // The layer's directory, then its diff directory, then the layerdb entry moved out and linked back.
      const layerDir = join(root, 'overlay2', CACHE)
      await rename(layerDir, join(elsewhere, 'layer'))
      await symlink(join(elsewhere, 'layer'), layerDir)
      expect(await new LayerFiles(root).open(CHAIN), 'symlinked layer directory').to.equal(undefined)
      await rm(layerDir)
      await mkdir(layerDir)
      await symlink(join(elsewhere, 'layer', 'diff'), join(layerDir, 'diff'))
      expect(await new LayerFiles(root).open(CHAIN), 'symlinked diff directory').to.equal(undefined)
      const meta = join(root, 'image', 'overlay2', 'layerdb', 'sha256', CHAIN.slice(7))
      await rename(meta, join(elsewhere, 'meta'))
      await symlink(join(elsewhere, 'meta'), meta)
      expect(await new LayerFiles(root).open(CHAIN), 'symlinked layerdb entry').to.equal(undefined)
    } finally {
      await rm(elsewhere, { recursive: true, force: true })
    }
  })

  it('answers undefined for a layer it cannot read: no record, a bad cache ID, a record that is not tar-split', async () => {
    expect(await new LayerFiles(root).open(CHAIN)).to.equal(undefined)
    await record([{ type: 7 }])
    expect(await new LayerFiles(root).open(CHAIN)).to.equal(undefined)
    await writeFile(join(root, 'image', 'overlay2', 'layerdb', 'sha256', CHAIN.slice(7), 'cache-id'), '../../etc')
    expect(await new LayerFiles(root).open(CHAIN)).to.equal(undefined)
  })

  it('reads an image config only when it hashes to the image ID', async () => {
    const config = Buffer.from('{"rootfs":{"type":"layers","diff_ids":[]}}')
    const id = createHash('sha256').update(config).digest('hex')
    const dir = join(root, 'image', 'overlay2', 'imagedb', 'content', 'sha256')
    await mkdir(dir, { recursive: true })
    await writeFile(join(dir, id), config)
    expect(Buffer.from(await new LayerFiles(root).config(`sha256:${id}`) ?? [])).to.deep.equal(config)
    await writeFile(join(dir, id), Buffer.concat([config, Buffer.from(' ')]))
    expect(await new LayerFiles(root).config(`sha256:${id}`)).to.equal(undefined)
  })

  it('parses a name given as raw bytes (not UTF-8) as those bytes', () => {
    const entry = parseTarSplitLine(JSON.stringify({ type: 1, name_raw: Buffer.from([0x72, 0xe9]).toString('base64'), size: 3 }))
    expect(entry).to.deep.equal({ kind: 'file', name: Buffer.from([0x72, 0xe9]), size: 3 })
    expect(() => parseTarSplitLine('{"type":1,"size":-1,"name":"a"}')).to.throw(LayerFilesError)
  })
})
