/**
 * Timings of the scalable membership protocol (SWIM with Lifeguard's refinements), one profile per
 * agent timing profile (agent/timings.ts), and the formulas that scale them with the mesh size N
 * — memberlist's, so its documentation and measurements carry over:
 *
 *   probe:        every probeIntervalMs × (1 + lhm) a member pings the next peer of a shuffled
 *                 round-robin list; no ack within probeTimeoutMs × (1 + lhm) → ping-req through
 *                 indirectChecks others; no ack by the end of the interval → suspect.
 *                 lhm is Lifeguard's local health multiplier, 0 … awarenessMax: +1 per failed probe
 *                 (and per nack missing from an indirect prober), +1 when refuting, −1 per acked probe.
 *                 A slow or overloaded member thus probes more slowly and waits longer before
 *                 blaming others.
 *   suspicion:    min(N) = suspicionMult × max(1, log10 N) × probeIntervalMs
 *                 max(N) = suspicionMaxTimeoutMult × min(N)
 *                 timeout(C) = max(min, max − (max − min) × log(C + 1) / log(K + 1)),  K = suspicionMult − 2
 *                 where C counts independent suspicions (distinct suspecting members) seen: the
 *                 more members agree, the sooner a suspect is dead (Lifeguard's dynamic suspicion).
 *   retransmits:  each delta rides on at most retransmitMult × ceil(log10(N + 1)) outgoing messages
 *                 (memberlist's retransmitLimit), then it is dropped from the queue.
 *   gossip:       every gossipIntervalMs, if deltas are queued, a `gossip` to gossipNodes random
 *                 members (alive or suspect, so a wrongly suspected member hears it and refutes).
 *   push/pull:    every pushPullIntervalMs × pushPullScale(N) a digest exchange with one random
 *                 member; pushPullScale(N) = 1 for N ≤ 32, ceil(log2 N − log2 32) + 1 above
 *                 (memberlist's pushPullScale). A converged pair exchanges one digest of
 *                 SYNC_BUCKETS hashes and nothing more.
 *
 * Death is known everywhere roughly at: a probe of the dead member (≤ a few intervals) + the probe
 * interval + the suspicion timeout + a few gossip intervals of dissemination (log N hops).
 */
import type { ProfileName } from '../../timings.js'

export interface SwimTimings {
  /** How often a member probes one peer. */
  probeIntervalMs: number
  /** How long a direct ping may go unanswered before the indirect probes go out. */
  probeTimeoutMs: number
  /** How many other members are asked to probe a peer that missed its direct ping (k). */
  indirectChecks: number
  /** Scales the suspicion timeout with log10 N (memberlist SuspicionMult). */
  suspicionMult: number
  /** The longest suspicion, as a multiple of the shortest (memberlist SuspicionMaxTimeoutMult). */
  suspicionMaxTimeoutMult: number
  /** Each delta is retransmitted retransmitMult × ceil(log10(N + 1)) times (memberlist RetransmitMult). */
  retransmitMult: number
  /** How often queued deltas go out on their own, to gossipNodes random members. */
  gossipIntervalMs: number
  gossipNodes: number
  /** How often (before pushPullScale) a member repairs its table with one random peer. */
  pushPullIntervalMs: number
  /** Highest local health multiplier (Lifeguard's awareness). */
  awarenessMax: number
  /** Bytes of deltas one message may carry (the rest wait for the next message). */
  maxDeltaBytes: number
}

export const SWIM_PROFILES: Record<ProfileName, SwimTimings> = {
  // Hosts in different clouds: round trips up to 300 ms, so a 700 ms probe timeout; one probe a
  // second per member. Death at 1,000 hosts: min suspicion 4 × 3 × 1 s = 12 s.
  default: {
    probeIntervalMs: 1000,
    probeTimeoutMs: 700,
    indirectChecks: 3,
    suspicionMult: 4,
    suspicionMaxTimeoutMult: 3,
    retransmitMult: 4,
    gossipIntervalMs: 200,
    gossipNodes: 3,
    pushPullIntervalMs: 30_000,
    awarenessMax: 8,
    maxDeltaBytes: 1200
  },
  // One network, sub-millisecond round trips: five probes a second. Death at 1,000 hosts: min
  // suspicion 4 × 3 × 200 ms = 2.4 s, known everywhere within about 4 s (3 × deadAfterMs is 7.5 s).
  lan: {
    probeIntervalMs: 200,
    probeTimeoutMs: 100,
    indirectChecks: 3,
    suspicionMult: 4,
    suspicionMaxTimeoutMult: 3,
    retransmitMult: 4,
    gossipIntervalMs: 100,
    gossipNodes: 3,
    pushPullIntervalMs: 15_000,
    awarenessMax: 8,
    maxDeltaBytes: 1200
  },
  // The lab: hosts share one machine, so timers slip; close to lan with a looser probe timeout.
  test: {
    probeIntervalMs: 250,
    probeTimeoutMs: 150,
    indirectChecks: 3,
    suspicionMult: 4,
    suspicionMaxTimeoutMult: 3,
    retransmitMult: 4,
    gossipIntervalMs: 100,
    gossipNodes: 3,
    pushPullIntervalMs: 10_000,
    awarenessMax: 8,
    maxDeltaBytes: 1200
  }
}

/** The shortest and longest suspicion at mesh size n (ms). */
export function suspicionBoundsMs (t: SwimTimings, n: number): { min: number, max: number } {
  const min = t.suspicionMult * Math.max(1, Math.log10(Math.max(1, n))) * t.probeIntervalMs
  return { min, max: t.suspicionMaxTimeoutMult * min }
}

/** Lifeguard's dynamic suspicion timeout after `confirmations` independent suspicions (ms). */
export function suspicionTimeoutMs (t: SwimTimings, n: number, confirmations: number): number {
  const { min, max } = suspicionBoundsMs(t, n)
  const k = Math.max(1, t.suspicionMult - 2)
  const frac = Math.log(Math.min(confirmations, k) + 1) / Math.log(k + 1)
  return Math.max(min, max - (max - min) * frac)
}

/** How many messages one delta rides on at mesh size n. */
export function retransmitLimit (t: SwimTimings, n: number): number {
  return t.retransmitMult * Math.ceil(Math.log10(n + 1))
}

/** The push/pull interval at mesh size n (ms). */
export function pushPullIntervalMs (t: SwimTimings, n: number): number {
  const scale = n <= 32 ? 1 : Math.ceil(Math.log2(n) - Math.log2(32)) + 1
  return t.pushPullIntervalMs * scale
}
