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

/** A member that gossips owning a container, as this member last heard it. */
export interface GossipedOwner {
  peerId: string
  epoch: number
  /** Epoch 1, or its certificate verified (certificates.ts). */
  shown: boolean
  /** Dead in this member's table. */
  dead: boolean
}

/** What a member knows when it judges a takeover claim for one container name. */
export interface ClaimContext {
  /** This member's peer ID. */
  self: string
  /** The highest grant it has recorded for the name. */
  grant?: { epoch: number, claimant: string }
  /** The epoch at which it owns the container itself, if it does. */
  ownEpoch?: number
  /** The other members it hears (or last heard) gossip owning the name. */
  owners: readonly GossipedOwner[]
  /** The highest epoch of the name a verified certificate showed it (0 if none). */
  certified: number
  /** For its own claim: the highest epoch the other members made it go past (consensus.ts floor). */
  passed?: number
  /** Whether it sees that peer dead (a peer it does not know counts as dead: long gone). */
  isDead: (peerId: string) => boolean
}

type Verdict = { granted: true, epoch: number } | { granted: false, epoch: number, why: string }

/**
 * The exactly-once rule: whether a member grants `claimant` the container at `epoch`, replacing
 * `previousOwner`'s ownership at `previousEpoch`. Every condition is judged in this member's own view:
 *
 *   - `epoch` is the highest epoch it knows for the name + 1 (its grants, its own ownership, shown
 *     owners, verified certificates, the dead previous owner's last word) — or repeats its grant of
 *     that epoch to the same claimant;
 *   - no verified certificate shows an epoch above `previousEpoch` (the claim names the latest owner);
 *   - no live member but the claimant owns the name at `previousEpoch` or higher (itself included);
 *   - a previous owner other than the claimant is a member it sees dead, whose last gossip owns the
 *     name at `previousEpoch`, above every shown owner; a claimant naming itself must be the highest
 *     shown owner, at `previousEpoch` (a fenced owner reclaiming its own container);
 *   - it has granted nothing above `previousEpoch` to another claimant still alive.
 *
 * `epoch` in the answer is the highest this member knows for the name (the claimed one when granted).
 */
export function judgeClaim (req: { epoch: number, previousOwner: string, previousEpoch: number }, claimant: string, c: ClaimContext): Verdict {
  const g = c.grant
  const shown = c.owners.filter(o => o.shown)
  const prev = c.owners.find(o => o.peerId === req.previousOwner)
  const prevDead = req.previousOwner !== claimant && req.previousOwner !== c.self && prev !== undefined && prev.dead && c.isDead(req.previousOwner)
  const highest = Math.max(g?.epoch ?? 0, c.ownEpoch ?? 0, c.certified, c.passed ?? 0, ...shown.map(o => o.epoch), prevDead ? prev.epoch : 0)
  const refuse = (why: string): Verdict => ({ granted: false, epoch: highest, why })
  const repeat = g !== undefined && g.epoch === req.epoch && g.claimant === claimant
  if (!repeat && req.epoch !== highest + 1) return refuse(`epoch ${req.epoch} is not the highest known (${highest}) + 1`)
  if (c.certified > req.previousEpoch) return refuse(`a certificate shows an owner at epoch ${c.certified}, after the previous epoch named`)
  if (c.ownEpoch !== undefined && claimant !== c.self && c.ownEpoch >= req.previousEpoch) return refuse('this member owns it')
  if (c.owners.some(o => o.peerId !== claimant && !o.dead && !c.isDead(o.peerId) && o.epoch >= req.previousEpoch)) return refuse('a live member owns it')
  const topShown = Math.max(0, ...shown.map(o => o.epoch), c.ownEpoch ?? 0)
  if (req.previousOwner === claimant) {
    const own = claimant === c.self ? c.ownEpoch : shown.find(o => o.peerId === claimant)?.epoch
    if (own === undefined || own !== req.previousEpoch || own < topShown) return refuse('the claimant is not its highest shown owner')
  } else {
    if (!prevDead) return refuse('the previous owner is not a dead member that owned it')
    // A dead member's unshown epoch (a moved-in container's label) stands only while no live member shows it owns the name.
    if (!prev.shown && (c.ownEpoch !== undefined || c.owners.some(o => o.shown && o.peerId !== claimant && !o.dead && !c.isDead(o.peerId)))) {
      return refuse('a live member shows it owns it, the previous owner does not')
    }
    if (prev.epoch !== req.previousEpoch || prev.epoch < topShown) return refuse(`the previous owner did not own it at epoch ${req.previousEpoch}, above every shown owner`)
  }
  if (g !== undefined && g.claimant !== claimant && g.epoch > req.previousEpoch && (g.claimant === c.self || !c.isDead(g.claimant))) return refuse('another live claimant took it over already')
  return { granted: true, epoch: req.epoch }
}
