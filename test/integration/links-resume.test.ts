/**
 * Resume inside a layer and a per-move rate cap, in the lab (issue 13): two hosts of different
 * providers (vagrant-1 → aws-1: an expensive link, zstd), the source's eth0 shaped with tbf. A move
 * of a container with a 64 MiB layer of random bytes is cut at ~50 % of that layer by killing the
 * source agent; the agent comes back and the retried move sends only the rest — counted on the
 * shaped interface in the namespace, not in the agent, against a whole move of a layer of the same
 * size — and the container runs at the destination with a byte-identical layer. Killed instead, the
 * destination agent continues after its restart from the partial's last record. A `--max-rate` move keeps within 10 % of its cap on the same link.
 * One lab for the file (prefix gotolaby, subnet 10.213.200.0/24), torn down in after() even when a
 * test failed.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { moveJson, type MoveRun } from '../fixtures/move-cli.js'
import { bytesDuring, cutWhen, shapeLink, txBytes } from '../fixtures/shaped-link.js'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { PARTIAL_RECORD_BYTES } from '../../agent/transfer/layer-store.js'
import type { MoveEvent } from '../../protocol/move-messages.js'
import type { PeerRow } from '../../protocol/messages.js'

const run = promisify(execFile)
const MiB = 1024 * 1024
const LAYER_BYTES = 64 * MiB
/** The shaped link out of the source: 64 MiB take ~11 s, long enough to cut it in the middle. */
const SHAPED_MBIT = 48
/** The --max-rate of the capped move, well under the link, and its layer (12 MiB: ~6 s at the cap). */
const MAX_RATE = '16Mbit'
const MAX_RATE_BYTES_PER_SECOND = 2_000_000
const CAPPED_BYTES = 12 * MiB

describe('resume inside a layer and --max-rate over a tbf-shaped link, in the lab', function () {
  this.timeout(240_000)
  const lab = new Lab({ prefix: 'gotolaby', subnet: '10.213.200.0/24' })
  let A: LabHost
  let B: LabHost

  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * MiB })
    return stdout.trim()
  }

  function move (container: string, extra: string[] = [], onEvent?: (ev: MoveEvent) => void): Promise<MoveRun> {
    return moveJson(container, B.name, { controlMain: lab.controlMain, bundle: lab.operatorBundle, agent: A.agentAddr, extra, onEvent })
  }

  async function aliveAt (from: LabHost, name: string): Promise<boolean> {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === name && p.state === 'alive')
  }

  async function meshUp (): Promise<void> {
    for (const h of [A, B]) {
      for (const other of [A, B]) if (other !== h) await waitFor(async () => await aliveAt(h, other.name), { timeoutMs: 60_000, intervalMs: 250, what: `${other.name} alive at ${h.name}` })
    }
  }

  /**
   * Moves `container`, kills the agent of `victim` (SIGKILL) once half its layer crossed the shaped
   * link, and starts that agent again; the failed run and the bytes it put on the link.
   */
  async function cutAtHalf (container: string, victim: LabHost): Promise<{ result: MoveRun, bytes: number }> {
    let precopy = false
    const first = await cutWhen(A.netns, LAYER_BYTES / 2,
      async () => await move(container, [], ev => { if (ev.event === 'step' && ev.step === 'pre-copy') precopy = true }),
      () => precopy, async () => { await lab.killAgent(victim.name) },
      async (cond, what) => { await waitFor(cond, { timeoutMs: 120_000, intervalMs: 100, what }) })
    expect(first.result.code, 'the cut move fails').to.not.equal(0)
    expect(first.result.events.some(e => e.event === 'done')).to.equal(false)
    await lab.startAgent(victim.name)
    await meshUp()
    return first
  }

  const layersOf = async (h: LabHost, container: string): Promise<string[]> =>
    JSON.parse(await docker(h, 'image', 'inspect', '--format', '{{json .RootFS.Layers}}', await docker(h, 'inspect', '--format', '{{.Image}}', container))) as string[]

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[A, B] = await lab.up(2)
    expect([A.name, B.name]).to.deep.equal(['vagrant-1', 'aws-1'])
    await meshUp()
    // `ref`: a layer of the same size, moved whole, for what a move without a cut puts on the link.
    for (const [name, bytes] of [['big', LAYER_BYTES], ['ref', LAYER_BYTES], ['far', LAYER_BYTES], ['capped', CAPPED_BYTES]] as const) {
      await docker(A, 'run', '--name', `${name}-b`, 'gotolab/base:latest', 'sh', '-c', `head -c ${bytes} /dev/urandom > /data.bin`)
      await docker(A, 'commit', `${name}-b`, `${name}:v1`)
      await docker(A, 'rm', `${name}-b`)
      await docker(A, 'run', '-d', '--name', name, `${name}:v1`, 'sleep', '3600')
    }
    await shapeLink(A.netns, 'eth0', SHAPED_MBIT)
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('a move cut at ~50 % of a 64 MiB layer (the source agent killed) and retried sends only the rest; the layer arrives byte-identical', async () => {
    const layers = await layersOf(A, 'big')
    const sum = await docker(A, 'exec', 'big', 'md5sum', '/data.bin')
    // What a whole move of a layer of that size puts on the link (frames' headers and all).
    const whole = await bytesDuring(A.netns, async () => await move('ref'))
    expect(whole.result.events.at(-1)?.event, whole.result.stderr).to.equal('done')
    const first = await cutAtHalf('big', A)

    const retry = await bytesDuring(A.netns, async () => await move('big'))
    const last = retry.result.events.at(-1)
    expect(last?.event, `${JSON.stringify(last)} ${retry.result.stderr}`).to.equal('done')
    const resent = first.bytes + retry.bytes - whole.bytes
    console.log(`      whole move ${(whole.bytes / MiB).toFixed(1)} MiB on the link; cut try ${(first.bytes / MiB).toFixed(1)} MiB, retry ${(retry.bytes / MiB).toFixed(1)} MiB ` +
      `(${(100 * retry.bytes / LAYER_BYTES).toFixed(1)} % of the layer); sent twice: ${(resent / MiB).toFixed(2)} MiB (${(100 * resent / LAYER_BYTES).toFixed(2)} % of the layer)`)
    expect(first.bytes, 'the first try sent about half').to.be.at.least(0.45 * LAYER_BYTES)
    expect(retry.bytes, 'the retry sent only about the rest').to.be.at.most(0.55 * LAYER_BYTES)
    // The engine at B checked every layer against the config's diff IDs: the same layers, the
    // container's changes on top, and the same bytes in the file.
    expect((await layersOf(B, 'big')).slice(0, layers.length)).to.deep.equal(layers)
    expect(await docker(B, 'inspect', '--format', '{{.State.Running}}', 'big')).to.equal('true')
    expect(await docker(B, 'exec', 'big', 'md5sum', '/data.bin')).to.equal(sum)
  })

  it('a move cut at ~50 % by killing the destination agent continues, once it is back, from its last record (at most 8 MiB before the cut)', async () => {
    const sum = await docker(A, 'exec', 'far', 'md5sum', '/data.bin')
    const first = await cutAtHalf('far', B)
    const retry = await bytesDuring(A.netns, async () => await move('far'))
    const last = retry.result.events.at(-1)
    expect(last?.event, `${JSON.stringify(last)} ${retry.result.stderr}`).to.equal('done')
    console.log(`      destination killed: cut try ${(first.bytes / MiB).toFixed(1)} MiB, retry ${(retry.bytes / MiB).toFixed(1)} MiB (${(100 * retry.bytes / LAYER_BYTES).toFixed(1)} % of the layer)`)
    expect(retry.bytes, 'the retry sent the rest and at most one record interval more').to.be.at.most(0.6 * LAYER_BYTES + PARTIAL_RECORD_BYTES)
    expect(await docker(B, 'inspect', '--format', '{{.State.Running}}', 'far')).to.equal('true')
    expect(await docker(B, 'exec', 'far', 'md5sum', '/data.bin')).to.equal(sum)
  })

  it(`a --max-rate ${MAX_RATE} move keeps within 10 % of its cap on a ${SHAPED_MBIT} Mbit/s link`, async () => {
    // The link's bytes over time, read in the namespace while the move runs.
    const samples: Array<{ at: number, tx: number }> = []
    let sampling = true
    const t0 = await txBytes(A.netns)
    const sampler = (async () => {
      while (sampling) {
        samples.push({ at: performance.now(), tx: await txBytes(A.netns) - t0 })
        await new Promise(resolve => setTimeout(resolve, 100))
      }
    })()
    let r: MoveRun
    try {
      r = await move('capped', ['--max-rate', MAX_RATE])
    } finally {
      sampling = false
      await sampler
    }
    const last = r.events.at(-1)
    expect(last?.event, `${JSON.stringify(last)} ${r.stderr}`).to.equal('done')
    const plan = r.events.find(e => e.event === 'plan')
    expect(plan?.event === 'plan' && plan.plan.rateCap).to.deep.equal({ bytesPerSecond: MAX_RATE_BYTES_PER_SECOND, by: 'move' })
    // The rate between 20 % and 80 % of the layer on the link: no start-up, no load at the end.
    const at = (bytes: number): number => {
      const s = samples.find(x => x.tx >= bytes)
      if (s === undefined) throw new Error(`the link never carried ${bytes} bytes: ${JSON.stringify(samples.at(-1))}`)
      return s.at
    }
    const seconds = (at(0.8 * CAPPED_BYTES) - at(0.2 * CAPPED_BYTES)) / 1000
    const rate = 0.6 * CAPPED_BYTES / seconds
    console.log(`      --max-rate ${MAX_RATE}: ${(rate * 8 / 1e6).toFixed(2)} Mbit/s on the link (frames' headers included)`)
    expect(rate).to.be.within(0.9 * MAX_RATE_BYTES_PER_SECOND, 1.1 * MAX_RATE_BYTES_PER_SECOND)
    expect(await docker(B, 'inspect', '--format', '{{.State.Running}}', 'capped')).to.equal('true')
  })
})
