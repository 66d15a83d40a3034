/**
 * rerootArchive (agent/docker/archive-root.ts): Podman's archive of a paused container's path,
 * rooted at `/`, comes out rooted at the path's last component as Docker's is; Docker's archives
 * pass through byte for byte; a broken tar is an ArchiveFormatError; stopping it early stops its source.
 */
import { expect } from 'chai'
import tarStream from 'tar-stream'
import { rerootArchive } from '../../agent/docker/archive-root.js'
import { ArchiveFormatError } from '../../protocol/errors.js'

interface E { name: string, data?: string, type?: 'file' | 'directory' | 'link' | 'symlink', linkname?: string }

async function tar (entries: E[]): Promise<Buffer> {
  const pack = tarStream.pack()
  const chunks: Buffer[] = []
  const done = (async () => { for await (const c of pack) chunks.push(c as Buffer) })()
  for (const e of entries) {
    if (e.type === 'directory') pack.entry({ name: e.name, type: 'directory' })
    else if (e.type === 'link' || e.type === 'symlink') pack.entry({ name: e.name, type: e.type, linkname: e.linkname ?? '' })
    else pack.entry({ name: e.name, size: Buffer.byteLength(e.data ?? '') }, e.data ?? '')
  }
  pack.finalize()
  await done
  return Buffer.concat(chunks)
}

async function * chunked (b: Buffer, size = 300): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size)
}

async function collect (source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Buffer[] = []
  for await (const c of source) out.push(Buffer.from(c))
  return Buffer.concat(out)
}

async function list (bytes: Buffer): Promise<Array<{ name: string, type: string, linkname?: string | null, data: string }>> {
  const extract = tarStream.extract()
  const out: Array<{ name: string, type: string, linkname?: string | null, data: string }> = []
  const feed = (async () => { extract.end(bytes) })()
  for await (const e of extract) {
    let data = ''
    for await (const c of e) data += (c as Buffer).toString()
    out.push({ name: e.header.name, type: e.header.type ?? 'file', ...e.header.linkname != null ? { linkname: e.header.linkname } : {}, data })
  }
  await feed
  return out
}

describe('rerootArchive (engine archives rooted at /)', () => {
  it('moves Podman\'s paused-container archive under the path\'s last component, links too', async () => {
    const podman = await tar([{ name: '/', type: 'directory' }, { name: '/v.txt', data: 'vol\n' }, { name: '/sub/', type: 'directory' }, { name: '/sub/w.txt', data: 'w' }, { name: '/h', type: 'link', linkname: '/v.txt' }, { name: '/s', type: 'symlink', linkname: '/etc/x' }])
    const out = await list(await collect(rerootArchive(chunked(podman), '/data')))
    expect(out.map(e => e.name)).to.deep.equal(['data/', 'data/v.txt', 'data/sub/', 'data/sub/w.txt', 'data/h', 'data/s'])
    expect(out[1].data).to.equal('vol\n')
    expect(out[3].data).to.equal('w')
    expect(out[4].linkname).to.equal('data/v.txt')
    expect(out[5].linkname, 'a symlink\'s target is the container\'s, not the archive\'s').to.equal('/etc/x')
  })

  it('passes Docker\'s archive through byte for byte, and an empty stream as empty', async () => {
    const docker = await tar([{ name: 'data/', type: 'directory' }, { name: 'data/v.txt', data: 'vol\n' }])
    expect((await collect(rerootArchive(chunked(docker, 100), '/data'))).equals(docker)).to.equal(true)
    expect((await collect(rerootArchive(chunked(Buffer.alloc(0)), '/data'))).length).to.equal(0)
  })

  it('refuses a stream that is no tar once it must be parsed', async () => {
    const bad = await tar([{ name: '/', type: 'directory' }, { name: '/v.txt', data: 'x'.repeat(2000) }])
    let err: unknown
    try { await collect(rerootArchive(chunked(bad.subarray(0, 1200)), '/data')) } catch (e) { err = e }
    expect(err).to.be.instanceOf(ArchiveFormatError)
  })

  it('stops its source when it is stopped early, passed through or parsed (an engine answer left open holds the container\'s lock)', async () => {
    const docker = await tar([{ name: 'data/', type: 'directory' }, { name: 'data/v.txt', data: 'x'.repeat(4000) }])
    const podman = await tar([{ name: '/', type: 'directory' }, { name: '/v.txt', data: 'x'.repeat(4000) }])
    for (const archive of [docker, podman]) {
      let stopped = false
      async function * answer (): AsyncGenerator<Uint8Array> { try { yield * chunked(archive, 512) } finally { stopped = true } }
      for await (const chunk of rerootArchive(answer(), '/data')) { expect(chunk.byteLength).to.be.above(0); break }
      expect(stopped, archive === docker ? 'passed through' : 'parsed').to.equal(true)
    }
  })

  it('passes an error of the source on as itself', async () => {
    const podman = await tar([{ name: '/', type: 'directory' }, { name: '/v.txt', data: 'x'.repeat(2000) }])
    const boom = new Error('engine went away')
    async function * failing (): AsyncGenerator<Uint8Array> { yield podman.subarray(0, 1024); throw boom }
    let err: unknown
    try { await collect(rerootArchive(failing(), '/data')) } catch (e) { err = e }
    expect(err).to.equal(boom)
  })
})
