import { expect } from 'chai'
import { Readable } from 'node:stream'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { createHash, randomBytes } from 'node:crypto'
import { LinkTable, locationOf, parseLinkRules, costOf } from '../../agent/transfer/links.js'
import { rateLimited, type RateClock } from '../../agent/transfer/rate.js'
import { zstdCompress, zstdDecompress, zstdAvailable } from '../../agent/transfer/zstd.js'
import { loadConfig } from '../../agent/config.js'
import { CompressedStreamError, ConfigError } from '../../protocol/errors.js'

const run = promisify(execFile)

function configError (fn: () => unknown): ConfigError {
  try { fn() } catch (err) { expect(err).to.be.instanceOf(ConfigError); return err as ConfigError }
  throw new Error('no ConfigError')
}

async function * chunks (buf: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size)
}

async function collect (it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of it) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

/** Compressible but not trivial: text lines with counters, and some random runs. */
function mixed (bytes: number): Buffer {
  const parts: Buffer[] = []
  let n = 0
  for (let i = 0; n < bytes; i++) {
    const b = i % 50 === 0 ? randomBytes(512) : Buffer.from(`line ${i}: the quick brown fox jumps over the lazy dog ${i * 7}\n`)
    parts.push(b)
    n += b.length
  }
  return Buffer.concat(parts).subarray(0, bytes)
}

describe('link table (agent/transfer/links.ts)', () => {
  it('reads a location from provider and region labels', () => {
    expect(locationOf({ provider: 'aws', region: 'eu-west-1', other: 'x' })).to.deep.equal({ provider: 'aws', region: 'eu-west-1' })
    expect(locationOf({})).to.deep.equal({})
  })

  it('defaults: same provider and region free and uncompressed, anything else expensive with zstd', () => {
    const t = new LinkTable()
    expect(t.between({ provider: 'aws', region: 'a' }, { provider: 'aws', region: 'a' })).to.deep.equal({ class: 'free', costPerGiB: 0, rateMbit: undefined, compress: 'none' })
    expect(t.between({}, {})).to.include({ class: 'free', compress: 'none' })
    expect(t.between({ provider: 'aws', region: 'a' }, { provider: 'aws', region: 'b' })).to.include({ class: 'expensive', compress: 'zstd', costPerGiB: 0.09 })
    expect(t.between({ provider: 'aws' }, { provider: 'azure' })).to.include({ class: 'expensive', compress: 'zstd' })
  })

  it('takes the first matching rule, in either direction; an empty side matches every host', () => {
    const t = new LinkTable(parseLinkRules('links', [
      { from: { provider: 'aws', region: 'a' }, to: { provider: 'aws' }, class: 'cheap', costPerGiB: 0.01, rateMbit: 200 },
      { from: { provider: 'aws' }, to: { provider: 'azure' }, class: 'expensive', costPerGiB: 0.087, compress: 'none' },
      { from: {}, to: { provider: 'lab' }, class: 'free', compress: 'auto' }
    ]))
    expect(t.between({ provider: 'aws', region: 'b' }, { provider: 'aws', region: 'a' })).to.deep.equal({ class: 'cheap', costPerGiB: 0.01, rateMbit: 200, compress: 'zstd' })
    expect(t.between({ provider: 'azure' }, { provider: 'aws', region: 'x' })).to.deep.equal({ class: 'expensive', costPerGiB: 0.087, rateMbit: undefined, compress: 'none' })
    expect(t.between({ provider: 'gcp' }, { provider: 'lab' })).to.include({ class: 'free', compress: 'none', costPerGiB: 0 })
    // No rule: the defaults.
    expect(t.between({ provider: 'gcp' }, { provider: 'ovh' })).to.include({ class: 'expensive', compress: 'zstd' })
  })

  it('refuses a bad table with a ConfigError naming the bad key', () => {
    expect(configError(() => parseLinkRules('links', { from: {} })).option).to.equal('links')
    expect(configError(() => parseLinkRules('--links-json', '[{')).option).to.equal('--links-json')
    expect(configError(() => parseLinkRules('links', [{ from: {}, to: {}, class: 'pricey' }])).option).to.equal('links[0].class')
    expect(configError(() => parseLinkRules('links', [{ from: {}, to: {}, class: 'free', speed: 1 }])).option).to.equal('links[0].speed')
    expect(configError(() => parseLinkRules('links', [{ from: { zone: 'a' }, to: {}, class: 'free' }])).option).to.equal('links[0].from.zone')
    expect(configError(() => parseLinkRules('links', [{ to: {}, class: 'free' }])).option).to.equal('links[0].from')
    expect(configError(() => parseLinkRules('links', [{ from: {}, to: {}, class: 'free' }, { from: {}, to: {}, class: 'cheap', costPerGiB: -1 }])).option).to.equal('links[1].costPerGiB')
    expect(configError(() => parseLinkRules('links', [{ from: {}, to: {}, class: 'free', rateMbit: 0 }])).option).to.equal('links[0].rateMbit')
    expect(configError(() => parseLinkRules('links', [{ from: {}, to: {}, class: 'free', compress: 'gzip' }])).option).to.equal('links[0].compress')
  })

  it('comes from --links-json, GOTO_LINKS_JSON or the config file\'s links', () => {
    const rule = { from: { provider: 'aws' }, to: { provider: 'azure' }, class: 'expensive', rateMbit: 50 }
    const base = ['--bundle', '/b']
    expect(loadConfig({ argv: [...base, '--links-json', JSON.stringify([rule])], env: {} }).links).to.deep.equal([rule])
    expect(loadConfig({ argv: base, env: { GOTO_LINKS_JSON: JSON.stringify([rule]) } }).links).to.deep.equal([rule])
    expect(loadConfig({ argv: [...base, '--config', '/c.json'], env: {}, readFile: () => JSON.stringify({ links: [rule] }) }).links).to.deep.equal([rule])
    expect(loadConfig({ argv: base, env: {} }).links).to.deep.equal([])
    expect(configError(() => loadConfig({ argv: [...base, '--config', '/c.json'], env: {}, readFile: () => JSON.stringify({ links: [{ ...rule, class: 'x' }] }) })).option).to.equal("'links' in /c.json[0].class")
  })

  it('prices bytes by the GiB', () => {
    expect(costOf(2 ** 30 * 3, 0.09)).to.be.closeTo(0.27, 1e-9)
  })
})

describe('rate cap (agent/transfer/rate.ts)', () => {
  it('keeps a stream within 10 % of its rate (fake clock), cutting chunks to the bucket size', async () => {
    let now = 0
    const clock: RateClock = { now: () => now, sleep: async ms => { now += ms } }
    const bytesPerSecond = 40e6 / 8
    const total = 4 * 2 ** 20
    let seen = 0
    let largest = 0
    for await (const c of rateLimited(chunks(Buffer.alloc(total), 1024 * 1024), bytesPerSecond, AbortSignal.timeout(10_000), clock)) {
      seen += c.byteLength
      largest = Math.max(largest, c.byteLength)
    }
    expect(seen).to.equal(total)
    expect(largest).to.be.at.most(64 * 1024)
    const rate = total / (now / 1000)
    expect(rate).to.be.within(bytesPerSecond * 0.9, bytesPerSecond * 1.1)
  })

  it('keeps a real short run near its rate', async () => {
    const bytesPerSecond = 8e6 // 64 Mbit/s
    const total = 2 * 2 ** 20
    const t0 = performance.now()
    await collect(rateLimited(chunks(Buffer.alloc(total), 256 * 1024), bytesPerSecond, AbortSignal.timeout(10_000)))
    const seconds = (performance.now() - t0) / 1000
    // Never faster than the cap (+10 %: the bucket starts with one burst); slower only by this shared
    // machine's load (the ±10 % check of the schedule itself is the fake-clock test above).
    expect(total / seconds).to.be.within(bytesPerSecond * 0.5, bytesPerSecond * 1.1)
  })

  it('stops waiting when its signal aborts', async () => {
    const ac = new AbortController()
    const it = rateLimited(chunks(Buffer.alloc(1024 * 1024), 64 * 1024), 1000, ac.signal)
    setTimeout(() => { ac.abort(new Error('stop')) }, 50)
    let failed: unknown
    try { for (let r = await it.next(); r.done !== true; r = await it.next()); } catch (err) { failed = err }
    expect(failed).to.be.instanceOf(Error)
  })
})

describe('zstd stream (agent/transfer/zstd.ts)', function () {
  this.timeout(20_000)
  before(function () { if (!zstdAvailable()) this.skip() })

  it('round-trips mixed content, and compresses it', async () => {
    const data = mixed(8 * 2 ** 20)
    const signal = AbortSignal.timeout(15_000)
    const packed = await collect(zstdCompress(chunks(data, 100_000), signal))
    expect(packed.length).to.be.below(data.length / 2)
    const back = await collect(zstdDecompress(chunks(packed, 70_000), signal))
    expect(createHash('sha256').update(back).digest('hex')).to.equal(createHash('sha256').update(data).digest('hex'))
  })

  it('refuses corrupted or cut input with CompressedStreamError', async () => {
    const signal = AbortSignal.timeout(15_000)
    const packed = await collect(zstdCompress(chunks(mixed(2 * 2 ** 20), 65536), signal))
    const bad = Buffer.from(packed)
    for (let i = 100; i < bad.length; i += 997) bad[i] ^= 0xff
    const fails = async (input: Buffer): Promise<unknown> => {
      try { await collect(zstdDecompress(chunks(input, 65536), signal)) } catch (err) { return err }
      return undefined
    }
    expect(await fails(bad)).to.be.instanceOf(CompressedStreamError)
    expect(await fails(packed.subarray(0, packed.length - 1000))).to.be.instanceOf(CompressedStreamError)
    expect(await fails(randomBytes(4096))).to.be.instanceOf(CompressedStreamError)
  })

  it('refuses a stream whose window would need more than its memory bound (a hostile sender)', async () => {
    const { stdout } = await run('sh', ['-c', 'head -c 1048576 /dev/zero | zstd -3 --long=27 -c -q | base64 -w0'])
    let failed: unknown
    try { await collect(zstdDecompress(chunks(Buffer.from(stdout, 'base64'), 65536), AbortSignal.timeout(15_000))) } catch (err) { failed = err }
    expect(failed).to.be.instanceOf(CompressedStreamError)
    expect((failed as Error).message).to.match(/memory|window/i)
  })

  it('holds back its source while its consumer does not read (backpressure)', async () => {
    let pulled = 0
    const source = Readable.from((async function * () {
      for (let i = 0; i < 4096; i++) { pulled += 65536; yield randomBytes(65536) } // 256 MiB if unbounded
    })())
    const it = zstdCompress(source, AbortSignal.timeout(15_000))
    await it.next()
    // Let the pipes fill, then see that the source stopped far short of its end.
    for (let i = 0; i < 50; i++) await new Promise(resolve => setImmediate(resolve))
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(pulled).to.be.below(16 * 2 ** 20)
    await it.return(undefined)
  })
})
