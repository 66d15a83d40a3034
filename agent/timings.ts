/**
 * Every timing the agent uses, named, with units and the reason for its value. Two profiles: the
 * default for real networks (LAN or WAN between clouds) and `test` for the lab, where hosts share one
 * machine and tests should not wait long for a state change.
 *
 * Peer states follow from the time since the last successful heartbeat exchange with the peer:
 *   alive   — heard within suspectAfterMs
 *   suspect — silent for suspectAfterMs (a few missed heartbeats: packet loss, a GC pause, a busy host)
 *   dead    — silent for deadAfterMs (long enough that a pause or a restart of the agent would be over)
 */
export interface Timings {
  /** How often each pair of agents exchanges a heartbeat (one message each way on a long-lived stream). */
  heartbeatIntervalMs: number
  /** How long one heartbeat (dial, auth if needed, request, reply) may take before it counts as missed. */
  heartbeatTimeoutMs: number
  /** Silence after which a peer is `suspect`: about three missed heartbeats. */
  suspectAfterMs: number
  /** Silence after which a peer is `dead`. */
  deadAfterMs: number
  /** A connection that has not completed /goto/auth within this time is closed. */
  authTimeoutMs: number
  /** How often the agent re-reads the engine's version and container count for heartbeats. */
  dockerRefreshMs: number
  /** How often a dead peer is redialled, so a host that comes back is found again. */
  redialDeadMs: number
  /** A peer dead for this long is dropped from the table (and no longer redialled). */
  forgetAfterMs: number
}

export const PROFILES: Record<'default' | 'test', Timings> = {
  default: {
    // For hosts in different clouds: WAN round trips of 50-300 ms, and an idle agent below 1 % CPU
    // (npm run bench). Suspect after three missed heartbeats; dead after about seven, long enough for
    // a GC pause, a busy engine or an agent restart to pass without being declared dead.
    heartbeatIntervalMs: 2000,
    heartbeatTimeoutMs: 3000,
    suspectAfterMs: 6000,
    deadAfterMs: 15_000,
    authTimeoutMs: 5000,
    dockerRefreshMs: 10_000,
    redialDeadMs: 5000,
    // A day: a host down for maintenance overnight is still listed (as dead) and found when back.
    forgetAfterMs: 24 * 3600_000
  },
  test: {
    heartbeatIntervalMs: 250,
    heartbeatTimeoutMs: 1000,
    suspectAfterMs: 1000,
    deadAfterMs: 3000,
    authTimeoutMs: 3000,
    dockerRefreshMs: 1000,
    redialDeadMs: 1000,
    forgetAfterMs: 120_000
  }
}

export type ProfileName = keyof typeof PROFILES
