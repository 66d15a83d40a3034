import { expect } from 'chai'
import { randomBytes } from 'node:crypto'
import { coalesce } from '../../agent/docker/coalesce.js'

async function * pieces (sizes: number[], data: Uint8Array): AsyncGenerator<Uint8Array> {
  let off = 0
  for (const n of sizes) {
    yield data.subarray(off, off + n)
    off += n
  }
}

async function collect (source: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = []
  for await (const c of source) out.push(c)
  return out
}

describe('docker: coalesce (gathering an engine stream\'s small chunks)', () => {
  it('yields chunks of exactly the size asked, the last shorter, with the same bytes in order', async () => {
    const sizes = [1, 7, 100, 3, 4096, 50, 1000, 999, 12]
    const data = randomBytes(sizes.reduce((a, b) => a + b, 0))
    const out = await collect(coalesce(pieces(sizes, data), 1024))
    expect(out.slice(0, -1).every(c => c.byteLength === 1024)).to.equal(true)
    expect(out.at(-1)?.byteLength).to.equal(data.byteLength % 1024 === 0 ? 1024 : data.byteLength % 1024)
    expect(Buffer.concat(out).equals(data)).to.equal(true)
  })

  it('passes a large chunk that arrives with nothing gathered as it is, and yields nothing for an empty source', async () => {
    const data = randomBytes(5000)
    const out = await collect(coalesce(pieces([3000, 2000], data), 1024))
    expect(out[0].byteLength).to.equal(3000)
    expect(out[0].buffer).to.equal(data.buffer)
    expect(Buffer.concat(out).equals(data)).to.equal(true)
    expect(await collect(coalesce(pieces([], data), 1024))).to.deep.equal([])
  })

  it('hands out fresh memory: a yielded chunk does not change when the source reuses its buffer', async () => {
    const reused = Buffer.alloc(100)
    async function * source (): AsyncGenerator<Uint8Array> {
      for (let i = 1; i <= 3; i++) {
        reused.fill(i)
        yield reused
      }
    }
    const out = await collect(coalesce(source(), 1000))
    expect(out).to.have.length(1)
    expect([...out[0].subarray(0, 300)]).to.deep.equal([...Buffer.alloc(100, 1), ...Buffer.alloc(100, 2), ...Buffer.alloc(100, 3)])
  })
})
