/**
 * Volume benchmarks (issue 16), in their own two-host lab with the default timing profile: move
 * downtime of a container with a 16 MiB and with a 512 MiB named volume, the same 1 MiB written
 * into the volume while the move runs (a writer started just before it), as the ratio 512/16 —
 * with volume rounds the freeze carries only the last difference, so the ratio should stay near 1.
 * Beside it, today's figure: the same two moves with the agents restarted with
 * --volume-spool-only (the whole volume as a tar inside the freeze).
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { multiaddr } from '@multiformats/multiaddr'
import { Lab, waitFor, type LabHost } from '../test/lab/index.js'
import { readBundle } from '../certs/index.js'
import { AgentClient } from '../control/client.js'
import type { MoveEvent } from '../protocol/move-messages.js'
import type { PeerRow } from '../protocol/messages.js'

const run = promisify(execFile)
const MiB = 1024 * 1024
const SIZES_MIB = [16, 512] as const

async function docker (h: LabHost, ...args: string[]): Promise<string> {
  const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * MiB })
  return stdout.trim()
}

interface Moved { downtimeMs: number, rounds: Array<Extract<MoveEvent, { event: 'round' }>>, bytesSent: number }

async function move (lab: Lab, from: LabHost, container: string, to: string): Promise<Moved> {
  const bundle = await readBundle(lab.operatorBundle)
  const client = await AgentClient.connect(bundle, multiaddr(from.agentAddr), AbortSignal.timeout(10_000))
  try {
    let last: MoveEvent | undefined
    const rounds: Moved['rounds'] = []
    for await (const ev of client.move({ container, to, dryRun: false, allowBindMounts: false }, AbortSignal.timeout(600_000))) {
      if (ev.event === 'round') rounds.push(ev)
      last = ev
    }
    if (last?.event !== 'done') throw new Error(`move failed: ${JSON.stringify(last)}`)
    return { downtimeMs: last.downtimeMs, rounds, bytesSent: last.bytesSent }
  } finally {
    await client.close()
  }
}

/** A container on `h` with a volume of `mib` MiB of random data, which writes 1 MiB into it (64 KiB every 50 ms) once told to. */
async function volumeContainer (h: LabHost, name: string, mib: number): Promise<void> {
  await docker(h, 'volume', 'create', `${name}-data`)
  await docker(h, 'run', '--rm', '-v', `${name}-data:/data`, 'gotolab/base:latest', 'sh', '-c', `head -c ${mib}m /dev/urandom > /data/bulk`)
  await docker(h, 'run', '-d', '--name', name, '-v', `${name}-data:/data`, 'gotolab/base:latest', 'sh', '-c',
    'while [ ! -e /data/go ]; do sleep 0.05; done; i=0; while [ $i -lt 16 ]; do head -c 65536 /dev/urandom >> /data/written; i=$((i+1)); sleep 0.05; done; exec sleep 36000')
}

async function measure (lab: Lab, A: LabHost, B: LabHost, tag: string): Promise<Record<number, Moved>> {
  const out: Record<number, Moved> = {}
  for (const mib of SIZES_MIB) {
    const name = `v${mib}-${tag}`
    await volumeContainer(A, name, mib)
    await docker(A, 'exec', name, 'touch', '/data/go')
    out[mib] = await move(lab, A, name, B.name)
    await docker(B, 'rm', '-f', name)
    await docker(B, 'volume', 'rm', `${name}-data`)
  }
  return out
}

const fmt = (n: number, d = 2): string => n.toFixed(d)

export async function volumesBench (prefix: string, subnet: string): Promise<Record<string, unknown>> {
  let spoolOnly = false
  const lab = new Lab({ prefix, subnet, agentProfile: 'default', agentArgs: () => spoolOnly ? ['--volume-spool-only'] : [], log: line => { console.log(`lab: ${line}`) } })
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { void lab.down().finally(() => process.exit(130)) })
  const aliveAt = async (from: LabHost, name: string): Promise<boolean> => {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === name && p.state === 'alive')
  }
  const meshUp = async (hosts: LabHost[]): Promise<void> => {
    for (const h of hosts) for (const o of hosts) await waitFor(async () => await aliveAt(h, o.name), { timeoutMs: 90_000, intervalMs: 250, what: `${o.name} alive at ${h.name}` })
  }
  try {
    await lab.down()
    const [A, B] = await lab.up(2)
    await meshUp([A, B])
    console.log(`\n== volumes: move downtime with a ${SIZES_MIB.join(' and a ')} MiB named volume, 1 MiB written during the move; rounds vs the spool path`)
    const rounds = await measure(lab, A, B, 'r')
    spoolOnly = true
    for (const h of [A, B]) { await lab.killAgent(h.name, 'SIGTERM'); await lab.startAgent(h.name) }
    await meshUp([A, B])
    const spool = await measure(lab, A, B, 's')
    const [small, large] = SIZES_MIB
    const ratio = rounds[large].downtimeMs / rounds[small].downtimeMs
    const spoolRatio = spool[large].downtimeMs / spool[small].downtimeMs
    for (const mib of SIZES_MIB) {
      const r = rounds[mib]
      console.log(`   ${String(mib).padStart(4)} MiB: rounds downtime ${r.downtimeMs} ms (${r.rounds.map(x => `${x.final ? 'final' : `#${x.round}`} ${fmt(x.bytes / MiB, 1)} MiB`).join(', ')}); spool path ${spool[mib].downtimeMs} ms`)
    }
    console.log(`   ratio ${large}/${small}: rounds ${fmt(ratio)}x, spool path (today) ${fmt(spoolRatio)}x`)
    return {
      sizesMiB: SIZES_MIB,
      writtenDuringMoveBytes: MiB,
      rounds: Object.fromEntries(SIZES_MIB.map(m => [m, { downtimeMs: rounds[m].downtimeMs, bytesSent: rounds[m].bytesSent, rounds: rounds[m].rounds.map(x => ({ round: x.round, bytes: x.bytes, files: x.files, final: x.final })) }])),
      spool: Object.fromEntries(SIZES_MIB.map(m => [m, { downtimeMs: spool[m].downtimeMs, bytesSent: spool[m].bytesSent }])),
      ratio,
      spoolRatio
    }
  } finally {
    await lab.down()
  }
}
