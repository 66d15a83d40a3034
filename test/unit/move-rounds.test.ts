/**
 * Volume rounds: when a move stops its rounds and freezes (agent/move/rounds.ts), and a tree sync
 * carried on a /goto/transfer stream between a request and its reply (agent/transfer/sync-stream.ts).
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { mkdtemp, mkdir, rm, writeFile, symlink, link } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Libp2p } from 'libp2p'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { createMeshNode } from '../../protocol/node.js'
import { JsonStream } from '../../protocol/wire.js'
import { nextAfterRound, treeBytes, type RoundTally } from '../../agent/move/rounds.js'
import { syncDuplex } from '../../agent/transfer/sync-stream.js'
import { HashCache, listTree, listingDifferences, syncDestination, syncSource } from '../../agent/sync/index.js'

const t = { volumeFreezeBytes: 1000, volumeShrinkRatio: 0.8, volumeRoundsMax: 4 }
const r = (...bytes: number[]): RoundTally[] => bytes.map((b, i) => ({ round: i + 1, bytes: b, files: 1 }))

describe('volume rounds: when to freeze', () => {
  it('goes on before any round, freezes after a round at most volumeFreezeBytes', () => {
    expect(nextAfterRound([], t)).to.equal('again')
    expect(nextAfterRound(r(1000), t)).to.equal('freeze')
    expect(nextAfterRound(r(50_000, 900), t)).to.equal('freeze')
  })

  it('goes on while rounds shrink enough, freezes when one does not', () => {
    expect(nextAfterRound(r(50_000), t)).to.equal('again')
    expect(nextAfterRound(r(50_000, 10_000), t)).to.equal('again')
    expect(nextAfterRound(r(50_000, 45_000), t)).to.equal('freeze')
    expect(nextAfterRound(r(50_000, 60_000), t)).to.equal('freeze')
  })

  it('freezes after volumeRoundsMax rounds whatever they carried', () => {
    expect(nextAfterRound(r(1e9, 1e8, 1e7), t)).to.equal('again')
    expect(nextAfterRound(r(1e9, 1e8, 1e7, 1e6), t)).to.equal('freeze')
  })

  it('counts the data of a tree as the disk holds it (holes do not count)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rounds-'))
    try {
      await writeFile(join(dir, 'a'), Buffer.alloc(5000, 1))
      await mkdir(join(dir, 'd'))
      await writeFile(join(dir, 'd', 'b'), Buffer.alloc(3000, 2))
      const fh = await (await import('node:fs/promises')).open(join(dir, 'sparse'), 'w')
      await fh.truncate(64 * 1024 * 1024)
      await fh.close()
      expect(await treeBytes(dir, AbortSignal.timeout(5000))).to.equal(8000)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('a tree sync on a transfer stream (syncDuplex over JsonStream, libp2p loopback)', function () {
  this.timeout(30_000)
  const PROTO = '/goto/test-sync/1.0.0'
  let a: Libp2p
  let b: Libp2p
  let accepted: Array<(js: JsonStream) => void> = []
  let dir: string

  before(async () => {
    a = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], isRefused: () => false })
    b = await createMeshNode({ privateKey: await generateKeyPair('Ed25519'), listen: [], isRefused: () => false })
    await a.handle(PROTO, stream => { accepted.shift()?.(new JsonStream(stream)) })
    await a.start()
    await b.start()
    dir = await mkdtemp(join(tmpdir(), 'rounds-sync-'))
  })

  after(async () => {
    await b.stop()
    await a.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('syncs a tree between a request and its reply envelope, twice, the second round sending only the change', async () => {
    const src = join(dir, 'src')
    const dst = join(dir, 'dst')
    await mkdir(join(src, 'd'), { recursive: true })
    await writeFile(join(src, 'd', 'big'), Buffer.alloc(3 * 1024 * 1024 + 17, 7))
    await writeFile(join(src, 'small'), 'hello')
    await link(join(src, 'small'), join(src, 'hard'))
    await symlink('d/big', join(src, 'sym'))
    const caches = { src: new HashCache(), dst: new HashCache() }
    const round = async (): Promise<number> => {
      const server = new Promise<JsonStream>(resolve => { accepted.push(resolve) })
      const client = new JsonStream(await b.dialProtocol(a.getMultiaddrs()[0], PROTO, { signal: AbortSignal.timeout(10_000) }))
      await client.write({ op: 'volume' })
      const s = await server
      expect(await s.read()).to.deep.equal({ op: 'volume' })
      const signal = AbortSignal.timeout(20_000)
      const serverSide = (async () => {
        const d = syncDuplex(s, signal)
        const result = await syncDestination(dst, d, { signal, hashCache: caches.dst })
        await d.ended
        await s.write({ ok: true, result: { bytes: result.bytesReceived } })
        await s.close()
      })()
      const result = await syncSource(src, syncDuplex(client, signal), { signal, hashCache: caches.src })
      expect(await client.read(signal)).to.deep.equal({ ok: true, result: { bytes: result.bytesReceived } })
      await client.close()
      await serverSide
      return result.bytesReceived
    }
    expect(await round()).to.equal(3 * 1024 * 1024 + 17 + 5)
    expect(listingDifferences(await listTree(src, { signal: AbortSignal.timeout(5000) }), await listTree(dst, { signal: AbortSignal.timeout(5000) }))).to.deep.equal([])
    await writeFile(join(src, 'small'), 'hello again')
    expect(await round()).to.equal(11)
    expect(listingDifferences(await listTree(src, { signal: AbortSignal.timeout(5000) }), await listTree(dst, { signal: AbortSignal.timeout(5000) }))).to.deep.equal([])
  })
})
