/**
 * Messages of failover: what each agent gossips in its heartbeats about the protected containers it
 * owns and the snapshots it holds, and the requests of /goto/failover (a takeover claim between
 * agents; protect/unprotect from an operator). Checks turn untrusted JSON into these types.
 */
import { ProtocolError } from './errors.js'
import { count, obj, str } from './parse.js'
import { parseSignedOrder, type SignedOrder } from './orders.js'
import { parseEpochCertificate, parseSignedGrant, type EpochCertificate, type SignedGrant } from './epoch-certs.js'

/**
 * A protected container this member owns, at its ownership epoch, with the certificate of that
 * epoch (epoch-certs.ts) when it is above 1. An epoch above 1 without a valid one is not shown.
 */
export interface OwnedEntry { name: string, epoch: number, cert?: EpochCertificate }
/** A snapshot this member holds for `owner` (a peer ID), at (epoch, seq). */
export interface HeldEntry { name: string, owner: string, epoch: number, seq: number }

/** Rides in every heartbeat (MemberInfo.failover). */
export interface FailoverGossip { owned: OwnedEntry[], held: HeldEntry[] }

/**
 * "Let me own `name` at `epoch`, taking over from `previousOwner`, who owned it at `previousEpoch`".
 * The rules a member grants it by are judgeClaim's (agent/failover/placement.ts). `previous`: the
 * highest epoch certificate of the name the claimant knows, so that a member that missed it learns
 * the epoch to go past.
 */
export interface ClaimRequest { op: 'claim', name: string, epoch: number, previousOwner: string, previousEpoch: number, previous?: EpochCertificate }
/** `epoch`: the highest epoch the member knows for the name (after this claim); `grant`: its signed grant, when granted. */
export interface ClaimReply { granted: boolean, epoch: number, grant?: SignedGrant }

/**
 * An operator's order to the agent running `container`; `order` is its signature on it (a protect
 * order naming that agent, protocol/orders.ts), without which the agent refuses.
 */
export interface ProtectRequest { op: 'protect' | 'unprotect', container: string, order?: SignedOrder }
export interface ProtectReply { container: string, protected: boolean, epoch: number }

export type FailoverRequest = ClaimRequest | ProtectRequest

/** One container in `goto status`'s failover section. */
export interface FailoverContainerRow {
  name: string
  protected: boolean
  /** This host's name when it owns the container (protected and running here), else null. */
  owner: string | null
  epoch: number | null
  /** Stopped because this host lost the majority. */
  fenced: boolean
  lastSnapshotAt: string | null
  snapshotAgeS: number | null
  snapshotSeq: number | null
  /** Names of the members holding the last snapshot. */
  holders: string[]
  freezeMs: number | null
  snapshotBytes: number | null
}

/** A snapshot this host holds for another member. */
export interface HeldSnapshotRow { name: string, owner: string, epoch: number, seq: number, takenAt: string, ageS: number }

export interface FailoverStatus {
  /** Whether a failover of this host's or another's containers can happen now. */
  safe: boolean
  /** Why not, when not safe. */
  reason: string | null
  /** Known members, this host counted; how many it reaches; how many make a majority. */
  members: number
  reachable: number
  majority: number
  replicas: number
  snapshotIntervalS: number
  containers: FailoverContainerRow[]
  held: HeldSnapshotRow[]
}

/** The most entries a gossip list may carry: bounds a heartbeat. */
export const MAX_GOSSIP_ENTRIES = 512
/**
 * The most owned entries a heartbeat carries: each may bring a certificate of a few KiB (a grant
 * per member of a majority, each with its PEM), so 128 of them stay well under MAX_MESSAGE_BYTES.
 */
export const MAX_OWNED_GOSSIP = 128

function list<T> (v: unknown, what: string, f: (x: Record<string, unknown>, what: string) => T, max = MAX_GOSSIP_ENTRIES): T[] {
  if (v === undefined) return []
  if (!Array.isArray(v) || v.length > max) throw new ProtocolError(`${what} must be a list of at most ${max}`)
  return v.map((x, i) => f(obj(x, `${what}[${i}]`), `${what}[${i}]`))
}

function ownedEntry (x: Record<string, unknown>, w: string): OwnedEntry {
  const e: OwnedEntry = { name: str(x.name, `${w}.name`, 256), epoch: count(x.epoch, `${w}.epoch`) }
  if (x.cert !== undefined && x.cert !== null) e.cert = parseEpochCertificate(x.cert, `${w}.cert`)
  return e
}

export function parseFailoverGossip (v: unknown): FailoverGossip | undefined {
  if (v === undefined || v === null) return undefined
  const o = obj(v, 'failover gossip')
  return {
    owned: list(o.owned, 'owned', ownedEntry, MAX_OWNED_GOSSIP),
    held: list(o.held, 'held', (x, w) => ({
      name: str(x.name, `${w}.name`, 256), owner: str(x.owner, `${w}.owner`, 256), epoch: count(x.epoch, `${w}.epoch`), seq: count(x.seq, `${w}.seq`)
    }))
  }
}

export function parseFailoverRequest (v: unknown): FailoverRequest {
  const o = obj(v, 'failover request')
  switch (o.op) {
    case 'claim':
      return {
        op: 'claim',
        name: str(o.name, 'name', 256),
        epoch: count(o.epoch, 'epoch'),
        previousOwner: str(o.previousOwner, 'previousOwner', 256),
        previousEpoch: count(o.previousEpoch, 'previousEpoch'),
        ...(o.previous === undefined || o.previous === null ? {} : { previous: parseEpochCertificate(o.previous, 'previous') })
      }
    case 'protect':
    case 'unprotect':
      return { op: o.op, container: str(o.container, 'container', 256), ...o.order === undefined || o.order === null ? {} : { order: parseSignedOrder(o.order) } }
    default:
      throw new ProtocolError(`unknown failover op '${String(o.op)}'`)
  }
}

export function parseClaimReply (v: unknown): ClaimReply {
  const o = obj(v, 'claim reply')
  const granted = o.granted === true
  return { granted, epoch: count(o.epoch, 'epoch'), ...(granted && o.grant !== undefined ? { grant: parseSignedGrant(o.grant) } : {}) }
}

export function parseProtectReply (v: unknown): ProtectReply {
  const o = obj(v, 'protect reply')
  return { container: str(o.container, 'container', 256), protected: o.protected === true, epoch: count(o.epoch, 'epoch') }
}

/** The failover section of a status reply, checked enough that printing it cannot fail. */
export function parseFailoverStatus (v: unknown): FailoverStatus {
  const o = obj(v, 'failover status')
  const num = (x: unknown, what: string): number => {
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new ProtocolError(`failover ${what} must be a number`)
    return x
  }
  const optNum = (x: unknown, what: string): number | null => x === null || x === undefined ? null : num(x, what)
  const optStr = (x: unknown, what: string): string | null => x === null || x === undefined ? null : str(x, what, 1024)
  const rows = (x: unknown, what: string): Array<Record<string, unknown>> => {
    if (!Array.isArray(x) || x.length > 4096) throw new ProtocolError(`failover ${what} must be a list`)
    return x.map((r, i) => obj(r, `${what}[${i}]`))
  }
  return {
    safe: o.safe === true,
    reason: optStr(o.reason, 'reason'),
    members: num(o.members, 'members'),
    reachable: num(o.reachable, 'reachable'),
    majority: num(o.majority, 'majority'),
    replicas: num(o.replicas, 'replicas'),
    snapshotIntervalS: num(o.snapshotIntervalS, 'snapshotIntervalS'),
    containers: rows(o.containers, 'containers').map(c => ({
      name: str(c.name, 'name', 256),
      protected: c.protected === true,
      owner: optStr(c.owner, 'owner'),
      epoch: optNum(c.epoch, 'epoch'),
      fenced: c.fenced === true,
      lastSnapshotAt: optStr(c.lastSnapshotAt, 'lastSnapshotAt'),
      snapshotAgeS: optNum(c.snapshotAgeS, 'snapshotAgeS'),
      snapshotSeq: optNum(c.snapshotSeq, 'snapshotSeq'),
      holders: Array.isArray(c.holders) ? c.holders.slice(0, 64).map((h, i) => str(h, `holders[${i}]`, 256)) : [],
      freezeMs: optNum(c.freezeMs, 'freezeMs'),
      snapshotBytes: optNum(c.snapshotBytes, 'snapshotBytes')
    })),
    held: rows(o.held, 'held').map(h => ({
      name: str(h.name, 'name', 256), owner: str(h.owner, 'owner', 256), epoch: num(h.epoch, 'epoch'), seq: num(h.seq, 'seq'),
      takenAt: str(h.takenAt, 'takenAt', 64), ageS: num(h.ageS, 'ageS')
    }))
  }
}
