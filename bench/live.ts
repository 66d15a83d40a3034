/**
 * Live moves (issue 18, `GOTO_BENCH_ONLY=live`), in their own lab of two hosts with CRIU and
 * experimental engines: a container whose shell holds 16 MiB and then 512 MiB resident (a variable
 * filled from /dev/zero through `tr`: CRIU dumps every resident page whatever its content), moved
 * live and, the same container started again, moved ordinarily; the downtime of each, the live
 * move's checkpoint (its dump time and size) and the checkpoint's transfer and restore times.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Lab, waitFor, type LabHost } from '../test/lab/index.js'
import { moveJson } from '../test/fixtures/move-cli.js'
import type { PeerRow } from '../protocol/messages.js'

const run = promisify(execFile)
const SIZES_MIB = [16, 512]
/** Filling 512 MiB through a busybox shell's command substitution on a loaded 2-core machine. */
const FILL_TIMEOUT_MS = 300_000

async function docker (h: LabHost, ...args: string[]): Promise<string> {
  const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
  return stdout.trim()
}

/** A container whose shell holds `mib` MiB in a variable; resolves with its resident KiB once filled. */
async function holding (h: LabHost, name: string, mib: number): Promise<number> {
  await docker(h, 'run', '-d', '--name', name, 'gotolab/base:latest', 'sh', '-c',
    `b=$(head -c ${mib}m /dev/zero | tr '\\000' a); echo ready > /tmp/ready; while true; do usleep 100000; done`)
  await waitFor(async () => (await docker(h, 'exec', name, 'cat', '/tmp/ready').catch(() => '')) === 'ready', { timeoutMs: FILL_TIMEOUT_MS, intervalMs: 500, what: `${name} filled` })
  const status = await docker(h, 'exec', name, 'cat', '/proc/1/status')
  return Number(/VmRSS:\s*(\d+)/.exec(status)?.[1] ?? 0)
}

export async function liveBench (prefix: string, subnet: string): Promise<Record<string, unknown>> {
  const lab = new Lab({ prefix, subnet, agentProfile: 'default', log: line => { console.log(`lab: ${line}`) } })
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { void lab.down().finally(() => process.exit(130)) })
  try {
    await lab.down()
    const [a, b] = await lab.up([{ name: 'la', provider: 'aws', criu: true }, { name: 'lb', provider: 'azure', criu: true }])
    for (const h of [a, b]) {
      await waitFor(async () => {
        const r = await lab.cli(['peers', '--json'], { agent: h.agentAddr })
        return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).filter(p => p.state === 'alive').length === 2
      }, { timeoutMs: 120_000, intervalMs: 250, what: `both hosts alive at ${h.name}` })
    }
    console.log('\n== live: downtime of a live move (checkpoint, transfer, restore) against an ordinary move of the same container')
    const out: Record<string, unknown> = {}
    for (const mib of SIZES_MIB) {
      const row: Record<string, unknown> = {}
      for (const live of [true, false]) {
        const name = `${live ? 'live' : 'plain'}${mib}`
        const rssKiB = await holding(a, name, mib)
        const t0 = Date.now()
        const r = await moveJson(name, b.name, { controlMain: lab.controlMain, bundle: lab.operatorBundle, agent: a.agentAddr, extra: live ? ['--live'] : [] })
        const last = r.events.at(-1)
        if (last?.event !== 'done') throw new Error(`move of ${name} failed: ${JSON.stringify(last)} ${r.stderr}`)
        row[live ? 'live' : 'ordinary'] = { rssKiB, ms: Date.now() - t0, downtimeMs: last.downtimeMs, ...last.live === undefined ? {} : { checkpoint: last.live } }
        console.log(`   ${mib} MiB ${live ? 'live' : 'ordinary'}: resident ${(rssKiB / 1024).toFixed(1)} MiB, downtime ${last.downtimeMs} ms, ${Date.now() - t0} ms end to end${last.live === undefined ? '' : `; checkpoint ${last.live.checkpointMs} ms, ${(last.live.checkpointBytes / 1024 ** 2).toFixed(1)} MiB in ${last.live.checkpointFiles} files, transfer ${last.live.transferMs} ms, restore ${last.live.restoreMs} ms`}`)
        await docker(b, 'rm', '-f', name)
      }
      out[`${mib}MiB`] = row
    }
    const down = (mib: number, k: string): number => ((out[`${mib}MiB`] as Record<string, { downtimeMs: number }>)[k]).downtimeMs
    console.log(`   live downtime 512 MiB / 16 MiB: ${(down(512, 'live') / down(16, 'live')).toFixed(1)}x`)
    return { sizesMiB: SIZES_MIB, moves: out, ratio512to16: down(512, 'live') / down(16, 'live') }
  } finally {
    await lab.down()
  }
}
