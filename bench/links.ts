/**
 * Links between clouds (issue 13): a move of a compressible 128 MiB image (a slice of this machine's
 * /usr/lib as a tar: binaries, libraries, text) over a link shaped to 100 Mbit/s with tbf, zstd
 * against no compression, in one run on one lab of three hosts: the source (vagrant-1) reaches
 * aws-1 over an expensive zstd link (the default between providers) and azure-1 over a rule that
 * says compress 'none'. The tbf sits on the source's eth0, so both moves cross the same shaped link.
 * Prints time and bytes-on-the-wire ratios; the result goes into bench-results.json as `links`.
 *
 * Resume (`linksResumeBench`, `GOTO_BENCH_ONLY=links-resume`): over the same shaped link, a move of
 * a 128 MiB random layer cut at 50 % (the source agent killed) and retried, against a whole move
 * of a layer of that size: the bytes sent twice, counted on the shaped interface (target: ≤ 1 % of
 * the layer). The result goes into bench-results.json as `linksResume`.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { Lab, waitFor, type LabHost } from '../test/lab/index.js'
import { bytesDuring, cutWhen, shapeLink } from '../test/fixtures/shaped-link.js'
import { readBundle } from '../certs/index.js'
import { AgentClient } from '../control/client.js'
import type { MoveEvent } from '../protocol/move-messages.js'
import type { PeerRow } from '../protocol/messages.js'

const run = promisify(execFile)
const MiB = 1024 * 1024
const IMAGE_MIB = 128
/** The shaped link: a WAN link between clouds at the low end of issue 13's 50-500 Mbit/s. */
const SHAPED_MBIT = 100
const LINKS = [{ from: { provider: 'vagrant' }, to: { provider: 'azure' }, class: 'expensive', costPerGiB: 0.09, compress: 'none' }]

async function docker (h: LabHost, ...args: string[]): Promise<string> {
  const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 64 * MiB })
  return stdout.trim()
}

async function move (lab: Lab, from: LabHost, container: string, to: string, onEvent?: (ev: MoveEvent) => void): Promise<{ ms: number, done: Extract<MoveEvent, { event: 'done' }> }> {
  const client = await AgentClient.connect(await readBundle(lab.operatorBundle), multiaddr(from.agentAddr), AbortSignal.timeout(10_000))
  try {
    const start = performance.now()
    let last: MoveEvent | undefined
    for await (const ev of client.move({ container, to, dryRun: false, allowBindMounts: false }, AbortSignal.timeout(600_000))) { last = ev; onEvent?.(ev) }
    if (last?.event !== 'done') throw new Error(`move failed: ${JSON.stringify(last)}`)
    return { ms: performance.now() - start, done: last }
  } finally {
    await client.close()
  }
}

/** A container on `h` whose image adds one layer of `bytes` random bytes to the lab's base. */
async function randomLayerContainer (h: LabHost, name: string, bytes: number): Promise<void> {
  await docker(h, 'run', '--name', `${name}-b`, 'gotolab/base:latest', 'sh', '-c', `head -c ${bytes} /dev/urandom > /data.bin`)
  await docker(h, 'commit', `${name}-b`, `${name}:v1`)
  await docker(h, 'rm', `${name}-b`)
  await docker(h, 'run', '-d', '--name', name, `${name}:v1`, 'sleep', '3600')
}

const RESUME_LAYER_MIB = 128

export async function linksResumeBench (prefix: string, subnet: string): Promise<Record<string, unknown>> {
  const lab = new Lab({ prefix, subnet, log: line => { console.log(`lab: ${line}`) } })
  await lab.down()
  try {
    const [A, B] = await lab.up(2)
    const alive = async (): Promise<void> => {
      await waitFor(async () => {
        const r = await lab.cli(['peers', '--json'], { agent: A.agentAddr })
        return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === B.name && p.state === 'alive')
      }, { timeoutMs: 60_000, intervalMs: 250, what: `${B.name} alive at ${A.name}` })
    }
    await alive()
    const layer = RESUME_LAYER_MIB * MiB
    for (const name of ['whole', 'cut']) await randomLayerContainer(A, name, layer)
    await shapeLink(A.netns, 'eth0', SHAPED_MBIT)
    console.log(`\n== links: resume after a cut at 50 % of a ${RESUME_LAYER_MIB} MiB random layer over a ${SHAPED_MBIT} Mbit/s tbf link`)
    const whole = await bytesDuring(A.netns, async () => await move(lab, A, 'whole', B.name))
    let sending = false
    const first = await cutWhen(A.netns, layer / 2, async () => await move(lab, A, 'cut', B.name, ev => { if (ev.event === 'step' && ev.step === 'pre-copy') sending = true }).catch(() => undefined),
      () => sending, async () => { await lab.killAgent(A.name) }, async (cond, what) => { await waitFor(cond, { timeoutMs: 300_000, intervalMs: 100, what }) })
    await lab.startAgent(A.name)
    await alive()
    const retry = await bytesDuring(A.netns, async () => await move(lab, A, 'cut', B.name))
    const resent = first.bytes + retry.bytes - whole.bytes
    console.log(`   whole move ${fmt(whole.bytes / MiB, 1)} MiB on the link; cut try ${fmt(first.bytes / MiB, 1)} MiB + retry ${fmt(retry.bytes / MiB, 1)} MiB (${fmt(retry.result.ms / 1000)} s)`)
    console.log(`   sent twice: ${fmt(resent / MiB)} MiB = ${fmt(100 * resent / layer)} % of the layer (target ≤ 1 %); cost of the re-sent bytes at 0.09/GiB ${fmt(Math.max(0, resent) / 2 ** 30 * 0.09, 5)}`)
    return { layerMiB: RESUME_LAYER_MIB, shapedMbit: SHAPED_MBIT, wholeBytes: whole.bytes, cutTryBytes: first.bytes, retryBytes: retry.bytes, retrySeconds: retry.result.ms / 1000, resentBytes: resent, resentFraction: resent / layer }
  } finally {
    await lab.down()
  }
}

const fmt = (n: number, d = 2): string => n.toFixed(d)

export async function linksBench (prefix: string, subnet: string): Promise<Record<string, unknown>> {
  const lab = new Lab({ prefix, subnet, agentArgs: () => ['--links-json', JSON.stringify(LINKS)], log: line => { console.log(`lab: ${line}`) } })
  const slice = join(tmpdir(), `goto-bench-links-${process.pid}.tar`)
  await lab.down()
  try {
    const [A, B, C] = await lab.up(3)
    for (const h of [B, C]) {
      await waitFor(async () => {
        const r = await lab.cli(['peers', '--json'], { agent: A.agentAddr })
        return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === h.name && p.state === 'alive')
      }, { timeoutMs: 60_000, intervalMs: 250, what: `${h.name} alive at ${A.name}` })
    }
    await run('sh', ['-c', `tar cf - /usr/lib 2>/dev/null | head -c ${IMAGE_MIB * MiB} > ${slice}`])
    for (const name of ['zipped', 'plain']) {
      await docker(A, 'run', '-d', '--name', name, 'gotolab/base:latest', 'sleep', '3600')
      await docker(A, 'cp', slice, `${name}:/usrlib.tar`)
      await docker(A, 'commit', name, `${name}:v1`)
      await docker(A, 'rm', '-f', name)
      await docker(A, 'run', '-d', '--name', name, `${name}:v1`, 'sleep', '3600')
    }
    await shapeLink(A.netns, 'eth0', SHAPED_MBIT)

    console.log(`\n== links: a ${IMAGE_MIB} MiB image of /usr/lib over a ${SHAPED_MBIT} Mbit/s tbf link, zstd vs none`)
    const zipped = await move(lab, A, 'zipped', B.name)
    const plain = await move(lab, A, 'plain', C.name)
    const wireZ = zipped.done.bytesOnWire ?? zipped.done.bytesSent
    const wireP = plain.done.bytesOnWire ?? plain.done.bytesSent
    console.log(`   zstd: ${fmt(zipped.ms / 1000)} s, ${fmt(zipped.done.bytesSent / MiB, 1)} MiB of layers, ${fmt(wireZ / MiB, 1)} MiB on the wire`)
    console.log(`   none: ${fmt(plain.ms / 1000)} s, ${fmt(plain.done.bytesSent / MiB, 1)} MiB of layers, ${fmt(wireP / MiB, 1)} MiB on the wire`)
    console.log(`   ratios zstd/none: time ${fmt(zipped.ms / plain.ms)}x, bytes on the wire ${fmt(wireZ / wireP)}x; cost at 0.09/GiB ${fmt(wireZ / 2 ** 30 * 0.09, 4)} vs ${fmt(wireP / 2 ** 30 * 0.09, 4)}`)
    return {
      imageMiB: IMAGE_MIB,
      shapedMbit: SHAPED_MBIT,
      zstd: { seconds: zipped.ms / 1000, layerBytes: zipped.done.bytesSent, wireBytes: wireZ },
      none: { seconds: plain.ms / 1000, layerBytes: plain.done.bytesSent, wireBytes: wireP },
      timeRatio: zipped.ms / plain.ms,
      wireRatio: wireZ / wireP
    }
  } finally {
    await rm(slice, { force: true })
    await lab.down()
  }
}
