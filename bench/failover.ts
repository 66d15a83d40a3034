/**
 * Failover benchmarks (issue 4), in their own three-host lab with the `lan` timing profile:
 *   1. failover time: host killed (agent, engine, containers) → its protected container running on
 *      a survivor, over KILLS kills; median and max (target: median < 5 s). Baseline: the profile's
 *      deadAfterMs, the part of it that is waiting to be sure the host is dead.
 *   2. snapshot cost of a container that rewrites 1 MiB of its files every second: freeze time
 *      (pause → unpause) and bytes sent per snapshot, from the owner's log (the first snapshot,
 *      which also carries the image, is left out). Baseline: the 1 MiB that changed.
 * Each kill is followed by the host's restart and the mesh's recovery (not timed), so every kill
 * starts from a full mesh.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { readFile } from 'node:fs/promises'
import { Lab, waitFor, type LabHost } from '../test/lab/index.js'
import { PROFILES } from '../agent/timings.js'
import type { AgentStatus, PeerRow } from '../protocol/messages.js'

const run = promisify(execFile)
const MiB = 1024 * 1024
const KILLS = 5
/** Snapshots often, so the snapshot-cost sample is quick to gather; it does not change failover time. */
const SNAPSHOT_INTERVAL_S = 2
const SNAPSHOT_SAMPLES = 8
const TARGET_MEDIAN_MS = 5000
const WAIT_MS = 90_000

async function docker (h: LabHost, ...args: string[]): Promise<string> {
  const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * MiB })
  return stdout.trim()
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

interface SnapshotLine { message?: string, container?: string, seq?: number, freezeMs?: number, bytes?: number }

export interface FailoverBenchResult {
  profile: 'lan'
  kills: number
  failoverMs: number[]
  failoverMedianMs: number
  failoverMaxMs: number
  deadAfterMs: number
  targetMedianMs: number
  snapshots: number
  freezeMedianMs: number
  freezeMaxMs: number
  bytesMedian: number
  changedBytes: number
}

export async function failoverBench (prefix: string, subnet: string): Promise<FailoverBenchResult> {
  const lab = new Lab({ prefix, subnet, agentProfile: 'lan', agentArgs: () => ['--snapshot-interval', String(SNAPSHOT_INTERVAL_S)], log: line => { console.log(`lab: ${line}`) } })
  // Interrupted: tear the lab down before leaving (the finally below never runs on a signal).
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { void lab.down().finally(() => process.exit(130)) })
  try {
    await lab.down()
    const hosts = await lab.up(3)
    const meshUp = async (): Promise<void> => {
      for (const h of hosts) {
        await waitFor(async () => {
          const r = await lab.cli(['peers', '--json'], { agent: h.agentAddr })
          return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).every(p => p.state === 'alive') && (JSON.parse(r.stdout) as PeerRow[]).length === 3
        }, { timeoutMs: WAIT_MS, intervalMs: 200, what: `a full mesh at ${h.name}` })
      }
    }
    await meshUp()
    const owned = async (h: LabHost): Promise<{ seq: number } | undefined> => {
      const r = await lab.cli(['status', '--json'], { agent: h.agentAddr })
      const row = r.code === 0 ? (JSON.parse(r.stdout) as AgentStatus).failover?.containers.find(c => c.name === 'fo' && c.owner === h.name) : undefined
      return row === undefined ? undefined : { seq: row.snapshotSeq ?? 0 }
    }

    let owner = hosts[0]
    await docker(owner, 'run', '-d', '--name', 'fo', '-l', 'goto.protect=true', '-v', 'fodata:/data', 'gotolab/base:latest',
      'sh', '-c', 'echo v > /data/v; while true; do head -c 1m /dev/urandom > /blob; sleep 1; done')

    console.log(`\n== snapshot cost: a container rewriting 1 MiB every second, snapshotted every ${SNAPSHOT_INTERVAL_S} s (lan profile)`)
    await waitFor(async () => ((await owned(owner))?.seq ?? 0) > SNAPSHOT_SAMPLES, { timeoutMs: WAIT_MS * 2, intervalMs: 500, what: `${SNAPSHOT_SAMPLES + 1} snapshots` })
    const lines = (await readFile(owner.agentLog, 'utf8')).split('\n').flatMap(l => {
      try { return [JSON.parse(l) as SnapshotLine] } catch { return [] }
    }).filter(l => l.message === 'snapshot taken' && l.container === 'fo' && (l.seq ?? 0) > 1)
    const freeze = lines.map(l => l.freezeMs ?? 0)
    const bytes = lines.map(l => l.bytes ?? 0)
    console.log(`   ${lines.length} snapshots: freeze median ${median(freeze)} ms (max ${Math.max(...freeze)}), sent median ${(median(bytes) / MiB).toFixed(2)} MiB per snapshot (1 MiB changed)`)

    console.log(`\n== failover time: ${KILLS} kills of the owner's host, lan profile (dead after ${PROFILES.lan.deadAfterMs} ms)`)
    const times: number[] = []
    for (let i = 0; i < KILLS; i++) {
      const seq = (await owned(owner))?.seq ?? 0
      await waitFor(async () => ((await owned(owner))?.seq ?? 0) > seq, { timeoutMs: WAIT_MS, intervalMs: 200, what: `a fresh snapshot on ${owner.name}` })
      const victim = owner
      await lab.kill(victim.name)
      const killed = performance.now()
      const survivors = hosts.filter(h => h !== victim)
      owner = await waitFor(async () => {
        for (const h of survivors) {
          if ((await docker(h, 'ps', '--filter', 'status=running', '--format', '{{.Names}}')).split('\n').includes('fo')) return h
        }
        return undefined
      }, { timeoutMs: WAIT_MS, intervalMs: 50, what: 'fo running on a survivor' })
      const ms = Math.round(performance.now() - killed)
      times.push(ms)
      console.log(`   kill ${i + 1}: ${victim.name} → ${owner.name} in ${ms} ms`)
      await lab.start(victim.name)
      await meshUp()
      await waitFor(async () => await owned(owner), { timeoutMs: WAIT_MS, intervalMs: 200, what: `${owner.name} to own fo` })
    }
    const result: FailoverBenchResult = {
      profile: 'lan',
      kills: KILLS,
      failoverMs: times,
      failoverMedianMs: median(times),
      failoverMaxMs: Math.max(...times),
      deadAfterMs: PROFILES.lan.deadAfterMs,
      targetMedianMs: TARGET_MEDIAN_MS,
      snapshots: lines.length,
      freezeMedianMs: median(freeze),
      freezeMaxMs: Math.max(...freeze),
      bytesMedian: median(bytes),
      changedBytes: MiB
    }
    console.log(`   failover median ${result.failoverMedianMs} ms, max ${result.failoverMaxMs} ms (of which ${result.deadAfterMs} ms waiting for death); target median < ${TARGET_MEDIAN_MS} ms ${result.failoverMedianMs < TARGET_MEDIAN_MS ? 'met' : 'MISSED'}`)
    return result
  } finally {
    await lab.down()
  }
}
