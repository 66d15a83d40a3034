/**
 * Every timing the agent uses, named, with units and the reason for its value. Three profiles: the
 * default for hosts in different clouds (WAN), `lan` for hosts on one network (fast failover), and
 * `test` for the lab, where hosts share one machine and tests should not wait long for a change.
 *
 * Peer states follow from the time since the last successful heartbeat exchange with the peer:
 *   alive   — heard within suspectAfterMs
 *   suspect — silent for suspectAfterMs (a few missed heartbeats: packet loss, a GC pause, a busy host)
 *   dead    — silent for deadAfterMs (long enough that a pause or a restart of the agent would be over)
 *
 * Failover (agent/failover) adds two rules, and one inequality between them that makes a partition
 * safe (never two copies of a protected container running):
 *   - a host that has heard from fewer than a majority of the mesh's known members (itself counted)
 *     within fenceAfterMs stops its protected containers (self-fencing), at the latest one
 *     failoverTickMs later, taking at most fenceStopS to stop each;
 *   - the majority side restores a container only once its owner has been silent for deadAfterMs
 *     (every member that grants the takeover must see the owner dead itself).
 * Both sides measure silence from the same heartbeat exchange, give or take one heartbeatIntervalMs,
 * so fencing is finished before any restore starts when
 *
 *     fenceAfterMs + failoverTickMs + fenceStopS * 1000 + heartbeatIntervalMs  <  deadAfterMs
 *
 * and a paused agent (SIGSTOP, a long GC) that resumes within suspectAfterMs fences nothing when
 *
 *     suspectAfterMs  <=  fenceAfterMs
 *
 * `assertFailoverSafe` checks both for every profile (and the unit tests call it).
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
  /** Without word from a majority for this long, a host stops its protected containers (see above). */
  fenceAfterMs: number
  /** How often failover checks quorum, fencing, orphans and due snapshots (no engine call when idle). */
  failoverTickMs: number
  /** Grace a fenced container gets between SIGTERM and SIGKILL, in seconds (the engine counts whole seconds). */
  fenceStopS: number
  /** How often a protected container is snapshotted to its replica holders (the data-loss window). */
  snapshotIntervalMs: number
  /**
   * A transfer (move or snapshot) prepared at a destination that has no step running and has not
   * been heard from for this long is rolled back there: its source died or gave up. Long on a WAN,
   * where a source may be busy reading a large layer between two steps.
   */
  moveIdleTimeoutMs: number
  /** How often a destination looks for transfers gone idle (a check costs no engine call). */
  moveExpireCheckMs: number
  /**
   * One transfer step that carries no data (a request's first message, prepare, abort, commit, the
   * source telling a destination the outcome of a move cut short) may take this long.
   */
  transferControlTimeoutMs: number
  /** How long a restored container may take to be seen running before the restore fails. */
  restoreStartTimeoutMs: number
  /** How often containers left frozen by an interrupted move or snapshot are looked at again. */
  settleIntervalMs: number
  /**
   * A move copies its named volumes in rounds while the container runs (agent/move/rounds.ts) and
   * freezes after the first round whose difference (bytes of blocks that travelled, all volumes)
   * is at most this: the freeze then carries about that much more. Smaller: shorter downtime,
   * more rounds.
   */
  volumeFreezeBytes: number
  /**
   * ... or whose difference is not below this fraction of the previous round's: the container
   * writes about as fast as the link carries, more rounds would not shrink the freeze.
   */
  volumeShrinkRatio: number
  /** ... or after this many rounds before the freeze, whatever they carried (a bound on a move's length). */
  volumeRoundsMax: number
}

/** Transfer timings of the default and lan profiles: engines, not links, set them. */
const TRANSFER_DEFAULTS = {
  // Ten minutes of silence between two steps: longer than any engine call between them (a save of
  // a large image starting up), short enough that a dead source's half-made copy does not linger.
  moveIdleTimeoutMs: 10 * 60_000,
  moveExpireCheckMs: 60_000,
  transferControlTimeoutMs: 30_000,
  // An entrypoint that takes half a minute to stay up is slow, not broken.
  restoreStartTimeoutMs: 30_000,
  settleIntervalMs: 5000,
  // 8 MiB crosses a 1 Gbit/s link in about 70 ms and a 100 Mbit/s one in under a second; inside the
  // freeze only files changed since the last round are hashed again: the freeze stays short.
  volumeFreezeBytes: 8 * 1024 ** 2,
  // A round that shrank by less than a fifth: the writer keeps pace with the link.
  volumeShrinkRatio: 0.8,
  // Five rounds before the freeze: a volume written faster than it can be sent freezes anyway,
  // having sent its bulk while it ran.
  volumeRoundsMax: 5
}

export const PROFILES: Record<'default' | 'lan' | 'test', Timings> = {
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
    forgetAfterMs: 24 * 3600_000,
    // 6 + 2 + 2 + 2 = 12 s < 15 s: fenced three seconds before the majority may restore.
    fenceAfterMs: 6000,
    failoverTickMs: 2000,
    fenceStopS: 2,
    // A minute of work at most is lost; a snapshot freezes the container for ~0.1-0.5 s.
    snapshotIntervalMs: 60_000,
    ...TRANSFER_DEFAULTS
  },
  lan: {
    // One network, sub-millisecond RTT: a dead host is found in 2.5 s and its containers run again
    // elsewhere within about 4 s (npm run bench). Costs a few heartbeats per second per peer.
    heartbeatIntervalMs: 300,
    heartbeatTimeoutMs: 900,
    suspectAfterMs: 1000,
    deadAfterMs: 2500,
    authTimeoutMs: 3000,
    dockerRefreshMs: 5000,
    redialDeadMs: 1000,
    forgetAfterMs: 24 * 3600_000,
    // 1000 + 300 + 0 + 300 = 1.6 s < 2.5 s. A fenced container is killed at once:
    // on a LAN a failover is quick, and a graceful stop would eat the margin.
    fenceAfterMs: 1000,
    failoverTickMs: 300,
    fenceStopS: 0,
    snapshotIntervalMs: 15_000,
    ...TRANSFER_DEFAULTS
  },
  test: {
    heartbeatIntervalMs: 250,
    heartbeatTimeoutMs: 1000,
    suspectAfterMs: 1000,
    deadAfterMs: 3000,
    authTimeoutMs: 3000,
    dockerRefreshMs: 1000,
    redialDeadMs: 1000,
    forgetAfterMs: 120_000,
    // 1500 + 250 + 0 + 250 = 2 s < 3 s.
    fenceAfterMs: 1500,
    failoverTickMs: 250,
    fenceStopS: 0,
    snapshotIntervalMs: 2000,
    // A silent source is given up on within seconds (no lab move stays silent between two steps
    // that long: a running step never counts as silence), and the settle loop retries quickly.
    moveIdleTimeoutMs: 20_000,
    moveExpireCheckMs: 1000,
    transferControlTimeoutMs: 15_000,
    restoreStartTimeoutMs: 15_000,
    settleIntervalMs: 1000,
    // Lab hosts share one disk: 1 MiB makes a test's second round (a few KiB written meanwhile)
    // the last before the freeze, and a test that writes more sees several rounds.
    volumeFreezeBytes: 1024 ** 2,
    volumeShrinkRatio: 0.8,
    volumeRoundsMax: 4
  }
}

export type ProfileName = keyof typeof PROFILES

/** Throws if `t` breaks either failover inequality above (a profile that could run two copies). */
export function assertFailoverSafe (t: Timings): void {
  const fencedBy = t.fenceAfterMs + t.failoverTickMs + t.fenceStopS * 1000 + t.heartbeatIntervalMs
  if (fencedBy >= t.deadAfterMs) throw new RangeError(`fencing may end at ${fencedBy} ms, not before death at ${t.deadAfterMs} ms`)
  if (t.suspectAfterMs > t.fenceAfterMs) throw new RangeError(`fenceAfterMs ${t.fenceAfterMs} is shorter than suspectAfterMs ${t.suspectAfterMs}: a short pause would fence`)
}
