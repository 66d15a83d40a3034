/**
 * The `membership-sim` section of `npm run bench`: the scalable membership protocol
 * (agent/membership/swim) simulated at 1,000 nodes in one process (test/sim: real message encoding
 * and checkers, in-memory network, fake clock, lan profile), against today's full-table heartbeats
 * at 100 nodes in the same harness as the baseline. No lab, no root.
 *
 * Targets (issue 19): ≤ 2 KiB/s sent per node at 1,000 nodes; a death known to every node within
 * 3 × the lan profile's deadAfterMs.
 */
import { PROFILES } from '../agent/timings.js'
import { fullTableFigures, swimFigures } from '../test/sim/scenarios.js'

const NODES = 1000
const BASELINE_NODES = 100
const TARGET_BYTES_PER_NODE_S = 2048
const TARGET_DEATH_MS = 3 * PROFILES.lan.deadAfterMs

const fmt = (n: number | undefined, d = 0): string => n === undefined ? 'not within the run' : n.toFixed(d)

export async function membershipSimBench (): Promise<Record<string, unknown>> {
  console.log(`\n== membership simulation: SWIM at ${NODES} nodes vs today's full-table heartbeats at ${BASELINE_NODES}, lan profile, fake clock`)
  const swim = await swimFigures(NODES, 'lan', { core: true })
  const today = fullTableFigures(BASELINE_NODES, 'lan')
  const swimAtBaseline = await swimFigures(BASELINE_NODES, 'lan', { core: true })
  const bytesMet = swim.bytesPerNodeS <= TARGET_BYTES_PER_NODE_S
  const deathMet = swim.deathEverywhereMs !== undefined && swim.deathEverywhereMs <= TARGET_DEATH_MS
  console.log(`   SWIM ${NODES}: ${fmt(swim.bytesPerNodeS)} B/s and ${fmt(swim.msgsPerNodeS, 1)} msgs/s sent per node; death first suspected after ${fmt(swim.deathFirstSuspectMs)} ms, known everywhere after ${fmt(swim.deathEverywhereMs)} ms; a join listed everywhere after ${fmt(swim.joinEverywhereMs)} ms (simulated in ${fmt(swim.wallMs / 1000, 1)} s)`)
  console.log(`   SWIM ${BASELINE_NODES}: ${fmt(swimAtBaseline.bytesPerNodeS)} B/s per node; today ${BASELINE_NODES}: ${fmt(today.bytesPerNodeS)} B/s per node, death known everywhere after ${fmt(today.deathEverywhereMs)} ms`)
  console.log(`   ratio SWIM ${NODES} / today ${BASELINE_NODES}: ${(swim.bytesPerNodeS / today.bytesPerNodeS).toExponential(2)}; SWIM ${BASELINE_NODES} / today ${BASELINE_NODES}: ${(swimAtBaseline.bytesPerNodeS / today.bytesPerNodeS).toExponential(2)}`)
  console.log(`   targets: ≤ ${TARGET_BYTES_PER_NODE_S} B/s per node at ${NODES} ${bytesMet ? 'met' : 'MISSED'}; death everywhere ≤ ${TARGET_DEATH_MS} ms (3 × lan deadAfterMs) ${deathMet ? 'met' : 'MISSED'}`)
  return {
    nodes: NODES,
    swim,
    swimAtBaseline,
    today,
    ratioToToday: swim.bytesPerNodeS / today.bytesPerNodeS,
    targets: { bytesPerNodeS: TARGET_BYTES_PER_NODE_S, bytesMet, deathEverywhereMs: TARGET_DEATH_MS, deathMet }
  }
}
