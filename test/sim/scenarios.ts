/**
 * The measured scenarios of the membership simulation, for both designs, each bounded in fake time
 * (and so in wall time): steady cost (bytes and messages per node per second, with and without
 * loss), a death (first suspicion, known everywhere), a join (listed everywhere, verified
 * everywhere, the joiner's table complete) and a paused node shorter than the suspicion timeout.
 * test/sim/main.ts prints them as a table; bench/membership-sim.ts and the unit tests use them too.
 */
import { SWIM_PROFILES, suspicionBoundsMs, type SwimTimings } from '../../agent/membership/swim/timings.js'
import { PROFILES, type ProfileName } from '../../agent/timings.js'
import { SwimSim } from './swim-sim.js'
import { FullTableSim } from './full-table-sim.js'

export interface SwimFigures {
  design: 'swim'
  n: number
  profile: ProfileName
  /** Idle, no loss. */
  bytesPerNodeS: number
  msgsPerNodeS: number
  /** With `loss` of every message lost. */
  lossBytesPerNodeS?: number
  lossMsgsPerNodeS?: number
  loss: number
  /** Suspicion episodes of live members (one member at one incarnation), and how many nodes' tables showed one (events). */
  falseSuspicionsUnderLoss?: number
  falseSuspicionEventsUnderLoss?: number
  falseDeathsUnderLoss?: number
  /** A node killed: when first suspected, when every live node holds it dead (ms, undefined if not within the run). */
  deathFirstSuspectMs?: number
  deathEverywhereMs?: number
  /** A node joined through one seed: listed alive by every node, verified by every node, the joiner holding (and verifying) every member. */
  joinEverywhereMs?: number
  joinVerifiedEverywhereMs?: number
  joinerCompleteMs?: number
  /** A node paused for pauseMs (under `loss`): suspicion episodes of it, and deaths of it in any table (must be 0). */
  pauseMs?: number
  pauseSuspicions?: number
  pauseFalseDeaths?: number
  suspicionMinMs: number
  wallMs: number
}

const STEADY_MS = 20_000
const WARMUP_MS = 2000

/** All SWIM scenarios at mesh size n (three simulations: idle + death + join, loss, pause). */
export async function swimFigures (n: number, profile: ProfileName = 'lan', opts: { loss?: number, seed?: number, /** idle cost, death and join only */ core?: boolean } = {}): Promise<SwimFigures> {
  const started = performance.now()
  const timings: SwimTimings = SWIM_PROFILES[profile]
  const loss = opts.loss ?? 0.05
  const seed = opts.seed ?? 1
  const { min } = suspicionBoundsMs(timings, n)
  const bound = 10 * (min + 10 * timings.probeIntervalMs)

  // Idle cost, then a death, then a join (one mesh, no loss).
  const sim = await SwimSim.create({ n, timings, seed, spare: 1 })
  sim.run(WARMUP_MS)
  sim.resetCounters()
  sim.run(STEADY_MS)
  const idle = sim.rates(STEADY_MS)
  const victim = sim.ids[Math.floor(sim.random() * n)]
  sim.kill(victim)
  const t0 = sim.now
  const deathEverywhereMs = sim.runUntil(() => sim.deadEverywhere(victim), bound)
  const firstSuspect = sim.events.find(e => e.id === victim && e.to === 'suspect')
  const joiner = sim.spare[0]
  const seedId = sim.live()[0]
  const node = sim.join(joiner, seedId)
  const others = (): number => sim.live().filter(x => x !== joiner).length
  const j0 = sim.now
  let joinEverywhereMs: number | undefined
  let joinVerifiedEverywhereMs: number | undefined
  let joinerCompleteMs: number | undefined
  sim.runUntil(() => {
    const t = sim.now - j0
    if (joinEverywhereMs === undefined && sim.holding(joiner, 'alive') >= others()) joinEverywhereMs = t
    if (joinVerifiedEverywhereMs === undefined && joinEverywhereMs !== undefined && sim.live().every(x => x === joiner || sim.nodes.get(x)?.isVerified(joiner) === true)) joinVerifiedEverywhereMs = t
    if (joinerCompleteMs === undefined && node.verifiedMembers() >= n) joinerCompleteMs = t
    return joinEverywhereMs !== undefined && joinVerifiedEverywhereMs !== undefined && joinerCompleteMs !== undefined
  }, bound)

  const base = {
    design: 'swim' as const,
    n,
    profile,
    bytesPerNodeS: idle.bytesPerNodeS,
    msgsPerNodeS: idle.msgsPerNodeS,
    loss,
    ...(firstSuspect === undefined ? {} : { deathFirstSuspectMs: firstSuspect.at - t0 }),
    ...(deathEverywhereMs === undefined ? {} : { deathEverywhereMs }),
    ...(joinEverywhereMs === undefined ? {} : { joinEverywhereMs }),
    ...(joinVerifiedEverywhereMs === undefined ? {} : { joinVerifiedEverywhereMs }),
    ...(joinerCompleteMs === undefined ? {} : { joinerCompleteMs }),
    suspicionMinMs: min
  }
  if (opts.core === true) return { ...base, wallMs: performance.now() - started }

  // Steady cost under loss: false suspicions and deaths.
  const lossy = await SwimSim.create({ n, timings, seed: seed + 1, loss, keys: sim.keys })
  lossy.run(WARMUP_MS)
  lossy.resetCounters()
  lossy.run(STEADY_MS)
  const lossRates = lossy.rates(STEADY_MS)
  const lossReports = lossy.falseReports()

  // A pause shorter than the shortest suspicion timeout, under the same loss.
  const pauseMs = Math.round(min / 2)
  const paused = await SwimSim.create({ n, timings, seed: seed + 2, loss, keys: sim.keys })
  paused.run(WARMUP_MS)
  paused.resetCounters()
  const sleeper = paused.ids[1]
  paused.pause(sleeper)
  paused.run(pauseMs)
  paused.resume(sleeper)
  paused.run(3 * min)
  const pauseEvents = paused.events.filter(e => e.id === sleeper)

  return {
    ...base,
    lossBytesPerNodeS: lossRates.bytesPerNodeS,
    lossMsgsPerNodeS: lossRates.msgsPerNodeS,
    falseSuspicionsUnderLoss: lossReports.episodes,
    falseSuspicionEventsUnderLoss: lossReports.suspicions,
    falseDeathsUnderLoss: lossReports.deaths,
    pauseMs,
    pauseSuspicions: new Set(pauseEvents.filter(e => e.to === 'suspect').map(e => e.inc)).size,
    pauseFalseDeaths: pauseEvents.filter(e => e.to === 'dead').length,
    wallMs: performance.now() - started
  }
}

export interface FullTableFigures {
  design: 'full-table'
  n: number
  profile: ProfileName
  bytesPerNodeS: number
  msgsPerNodeS: number
  lossBytesPerNodeS: number
  loss: number
  falseDeathsUnderLoss: number
  deathEverywhereMs?: number
  joinEverywhereMs?: number
  deadAfterMs: number
  wallMs: number
}

/** Today's design (full table in every heartbeat, each pair every interval) at mesh size n. */
export function fullTableFigures (n: number, profile: ProfileName = 'lan', opts: { loss?: number, seed?: number } = {}): FullTableFigures {
  const started = performance.now()
  const timings = PROFILES[profile]
  const loss = opts.loss ?? 0.05
  const rounds = Math.ceil(STEADY_MS / timings.heartbeatIntervalMs)
  const sim = new FullTableSim({ n: n + 1, timings, seed: opts.seed ?? 1 })
  sim.leaveOut(n) // the joiner
  sim.run(2)
  sim.resetCounters()
  sim.run(rounds)
  const idle = sim.rates(rounds)
  const victim = 1
  const t0 = sim.now
  sim.kill(victim)
  const deathEverywhereMs = sim.runUntil(() => sim.deadEverywhere(victim), 100) === undefined ? undefined : sim.now - t0
  const j0 = sim.now
  sim.join(n, 0)
  const joinEverywhereMs = sim.runUntil(() => sim.knownEverywhere(n), 100) === undefined ? undefined : sim.now - j0
  const lossy = new FullTableSim({ n, timings, seed: (opts.seed ?? 1) + 1, loss })
  lossy.run(2)
  lossy.resetCounters()
  lossy.run(rounds)
  return {
    design: 'full-table',
    n,
    profile,
    bytesPerNodeS: idle.bytesPerNodeS,
    msgsPerNodeS: idle.msgsPerNodeS,
    lossBytesPerNodeS: lossy.rates(rounds).bytesPerNodeS,
    loss,
    falseDeathsUnderLoss: lossy.falseDeaths,
    ...(deathEverywhereMs === undefined ? {} : { deathEverywhereMs }),
    ...(joinEverywhereMs === undefined ? {} : { joinEverywhereMs }),
    deadAfterMs: timings.deadAfterMs,
    wallMs: performance.now() - started
  }
}
