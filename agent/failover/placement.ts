/**
 * The pure rules of failover, with no I/O so they are unit-tested directly: where a container's
 * replicas go (rendezvous hashing), what a majority is, how snapshots and epochs compare, and which
 * survivor restores which orphan. Every member computes the same answer from the same view, so
 * nobody has to coordinate to agree on a placement; the claim round (consensus.ts) makes a differing
 * view safe anyway.
 */
import { createHash } from 'node:crypto'

/**
 * Rendezvous (highest random weight) score of `member` for `key`: sha256(key, member) read as a
 * number. Each key ranks the members in its own pseudo-random order; removing a member moves only
 * the keys it ranked first.
 */
export function rendezvousScore (key: string, member: string): bigint {
  const h = createHash('sha256').update(key).update('\0').update(member).digest()
  return h.readBigUInt64BE(0)
}

/** `members` from highest to lowest score for `key` (ties, practically impossible, by member). */
export function rendezvousRank (key: string, members: readonly string[]): string[] {
  return [...new Set(members)]
    .map(m => ({ m, s: rendezvousScore(key, m) }))
    .sort((a, b) => (a.s === b.s ? (a.m < b.m ? -1 : 1) : a.s > b.s ? -1 : 1))
    .map(x => x.m)
}

/** The `k` replica holders of container `name` among `candidates` (alive peers, the owner excluded). */
export function replicaHolders (name: string, candidates: readonly string[], k: number): string[] {
  return rendezvousRank(name, candidates).slice(0, Math.max(0, k))
}

/** Votes that make a majority of `members` (the mesh's known members, this host counted). */
export function majority (members: number): number {
  return Math.floor(members / 2) + 1
}

/** Whether `reachable` members (this host counted) are a majority of `members`. */
export function hasQuorum (reachable: number, members: number): boolean {
  return reachable >= majority(members)
}

/**
 * Whether a failover can be safe at all: with fewer than three members, no majority survives the
 * death of one, so nobody may take over (and nobody fences on losing the other member).
 */
export function failoverPossible (members: number): boolean {
  return members >= 3
}

/** A snapshot's place in history: the ownership epoch it was taken in, then the owner's sequence. */
export interface SnapshotVersion { epoch: number, seq: number }

/** <0 when a is older than b, 0 when the same, >0 when newer. */
export function compareVersions (a: SnapshotVersion, b: SnapshotVersion): number {
  return a.epoch !== b.epoch ? a.epoch - b.epoch : a.seq - b.seq
}

/**
 * Whether a copy stamped `mine` must give way to an owner claimed at `theirs`: a higher epoch always
 * wins; within one epoch there is only ever one owner, so an equal epoch is not a conflict.
 */
export function isStale (mine: number, theirs: number): boolean {
  return theirs > mine
}

export interface Orphan {
  name: string
  /** Members (peer IDs) holding the newest snapshot of it. */
  holders: string[]
}

/**
 * Who restores which orphan. Orphans with the fewest holders go first (they have no choice), then in
 * name order; each goes to the holder of its newest snapshot that has been given the fewest orphans
 * so far, ties broken by rendezvous rank, so the orphans of dead hosts spread over the survivors
 * instead of piling onto one.
 */
export function assignRestorers (orphans: readonly Orphan[]): Map<string, string> {
  const load = new Map<string, number>()
  const out = new Map<string, string>()
  const order = [...orphans].sort((a, b) => new Set(a.holders).size - new Set(b.holders).size || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  for (const o of order) {
    const ranked = rendezvousRank(o.name, o.holders)
    if (ranked.length === 0) continue
    let best = ranked[0]
    for (const h of ranked) if ((load.get(h) ?? 0) < (load.get(best) ?? 0)) best = h
    load.set(best, (load.get(best) ?? 0) + 1)
    out.set(o.name, best)
  }
  return out
}

/** What a member knows when it judges a takeover claim for one container name. */
export interface ClaimContext {
  /** This member's peer ID. */
  self: string
  /** The highest grant it has recorded for the name. */
  grant?: { epoch: number, claimant: string }
  /** The epoch at which it owns the container itself, if it does. */
  ownEpoch?: number
  /** Whether it sees that peer dead (a peer it does not know counts as dead: long gone). */
  isDead: (peerId: string) => boolean
}

/**
 * The exactly-once rule: whether a member grants `claimant` the container at `epoch`, replacing
 * `previousOwner`'s ownership at `previousEpoch`. Granted only if the previous owner is dead in this
 * member's view (or reclaims its own copy), this member does not own it at that epoch or higher, has
 * granted no higher epoch and not this one to another claimant, and has granted nothing above
 * `previousEpoch` to another claimant still alive (someone took over already). `epoch` in the answer
 * is the highest this member knows for the name (the claimed one when granted).
 */
export function judgeClaim (req: { epoch: number, previousOwner: string, previousEpoch: number }, claimant: string, c: ClaimContext): { granted: boolean, epoch: number } {
  const g = c.grant
  const refuse = { granted: false, epoch: Math.max(g?.epoch ?? 0, c.ownEpoch ?? 0) }
  if (req.previousOwner !== claimant && (req.previousOwner === c.self || !c.isDead(req.previousOwner))) return refuse
  if (c.ownEpoch !== undefined && claimant !== c.self && c.ownEpoch >= req.epoch) return refuse
  if (g !== undefined && (g.epoch > req.epoch || (g.epoch === req.epoch && g.claimant !== claimant))) return refuse
  if (g !== undefined && g.claimant !== claimant && g.epoch > req.previousEpoch && (g.claimant === c.self || !c.isDead(g.claimant))) return refuse
  return { granted: true, epoch: req.epoch }
}
