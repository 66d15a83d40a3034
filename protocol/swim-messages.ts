/**
 * Messages of the scalable membership protocol (agent/membership/swim): SWIM probes, their
 * piggybacked deltas, the anti-entropy exchange and certificate requests, with the checks that
 * turn untrusted JSON into these types. Every count is bounded; anything else is a ProtocolError.
 *
 *   ping      { t: 'ping', seq, d? }                 "are you there?" (direct probe)
 *   ack       { t: 'ack', seq, d? }                  the answer (also forwarded by an indirect prober)
 *   nack      { t: 'nack', seq }                     an indirect prober's "the target did not answer me" (Lifeguard)
 *   ping-req  { t: 'ping-req', seq, target, d? }     "probe `target` for me" (indirect probe)
 *   gossip    { t: 'gossip', d }                     deltas alone, when there are some to spread
 *   sync      { t: 'sync', h, certs? }               anti-entropy: the sender's table as SYNC_BUCKETS hashes
 *   state     { t: 'state', h?, e, back? }            entries of the buckets that differ (and the answer back)
 *   want      { t: 'want', ids }                     certificates asked for (members learned without one)
 *   certs     { t: 'certs', c: [{ id, pem }] }       the answer: certificates the sender verified itself
 *
 * A delta is `{ k: 'alive', r: MemberRecord }`, `{ k: 'suspect' | 'dead', id, inc, by }`. A
 * MemberRecord is what a member says of itself (its MemberInfo, incarnation, whether it left), signed
 * with its own identity key over `recordBytes` — so only the member can raise its incarnation or
 * change what it says, however many hands the record passed through.
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { ProtocolError } from './errors.js'
import { parseMemberInfo, type MemberInfo, MAX_WANTED_CERTS, MAX_MEMBER_CERT_CHARS } from './messages.js'
import { count, obj, str } from './parse.js'

/** What a member says of itself at one incarnation; `sig` (base64) is its own signature over recordBytes. */
export interface MemberRecord { inc: number, info: MemberInfo, left?: true, sig: string }

export type SwimState = 'alive' | 'suspect' | 'dead'

export type Delta =
  | { k: 'alive', r: MemberRecord }
  | { k: 'suspect' | 'dead', id: string, inc: number, by: string }

/** One member in an anti-entropy exchange: its record, the sender's view of its state, its certificate when asked for. */
export interface SyncEntry { r: MemberRecord, s: SwimState, c?: string }

export type SwimMessage =
  | { t: 'ping', seq: number, d?: Delta[] }
  | { t: 'ack', seq: number, d?: Delta[] }
  | { t: 'nack', seq: number }
  | { t: 'ping-req', seq: number, target: string, d?: Delta[] }
  | { t: 'gossip', d: Delta[] }
  | { t: 'sync', h: string[], certs?: true }
  | { t: 'state', h?: string[], e: SyncEntry[], back?: true }
  | { t: 'want', ids: string[] }
  | { t: 'certs', c: Array<{ id: string, pem: string }> }

/** Most deltas one message may carry (a sender fills messages up to its byte budget, far below). */
export const MAX_DELTAS = 64
/** Buckets of the anti-entropy digest: members fall into one by their peer ID's hash. */
export const SYNC_BUCKETS = 64
/** Most entries one `state` message may carry: a whole table of a 1,000-host mesh, with room. */
export const MAX_SYNC_ENTRIES = 1536
/** Length of one bucket hash (hex). */
export const SYNC_HASH_CHARS = 16
/** Length of a record's signature (base64 of an Ed25519 signature: 64 bytes). */
const MAX_SIG_CHARS = 128

function peerIdStr (v: unknown, what: string): string {
  const s = str(v, what, 128)
  try {
    peerIdFromString(s)
  } catch {
    throw new ProtocolError(`${what} is not a peer ID`)
  }
  return s
}

function list<T> (v: unknown, what: string, max: number, f: (x: unknown, i: number) => T): T[] {
  if (!Array.isArray(v) || v.length > max) throw new ProtocolError(`${what} must be an array of at most ${max} entries`)
  return v.map(f)
}

/** JSON with object keys sorted at every level: the bytes a record's signature covers, whoever re-encoded it. */
export function canonicalJson (v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>
    return `{${Object.keys(o).filter(k => o[k] !== undefined).sort().map(k => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`
  }
  return JSON.stringify(v)
}

/** What a member signs of its record. */
export function recordBytes (r: Pick<MemberRecord, 'inc' | 'info' | 'left'>): Uint8Array {
  return new TextEncoder().encode(canonicalJson(['goto-swim-record/1', r.inc, r.left === true, r.info]))
}

export function parseMemberRecord (v: unknown, what = 'record'): MemberRecord {
  const o = obj(v, what)
  return {
    inc: count(o.inc, `${what} inc`),
    info: parseMemberInfo(o.info),
    ...(o.left === true ? { left: true as const } : {}),
    sig: str(o.sig, `${what} sig`, MAX_SIG_CHARS)
  }
}

function parseDelta (v: unknown, i: number): Delta {
  const o = obj(v, `d[${i}]`)
  if (o.k === 'alive') return { k: 'alive', r: parseMemberRecord(o.r, `d[${i}].r`) }
  if (o.k === 'suspect' || o.k === 'dead') {
    return { k: o.k, id: peerIdStr(o.id, `d[${i}].id`), inc: count(o.inc, `d[${i}].inc`), by: peerIdStr(o.by, `d[${i}].by`) }
  }
  throw new ProtocolError(`d[${i}].k must be alive, suspect or dead`)
}

function deltas (v: unknown): Delta[] {
  return v === undefined || v === null ? [] : list(v, 'd', MAX_DELTAS, parseDelta)
}

function optDeltas (v: unknown): { d?: Delta[] } {
  const d = deltas(v)
  return d.length === 0 ? {} : { d }
}

function hashes (v: unknown): string[] {
  if (!Array.isArray(v) || v.length !== SYNC_BUCKETS) throw new ProtocolError(`h must be an array of ${SYNC_BUCKETS} hashes`)
  return v.map((x, i) => {
    const s = str(x, `h[${i}]`, SYNC_HASH_CHARS)
    if (!/^[0-9a-f]*$/.test(s)) throw new ProtocolError(`h[${i}] is not a hex hash`)
    return s
  })
}

function state (v: unknown, what: string): SwimState {
  if (v !== 'alive' && v !== 'suspect' && v !== 'dead') throw new ProtocolError(`${what} must be alive, suspect or dead`)
  return v
}

/** Checks one message of the membership protocol (untrusted JSON in, typed message or ProtocolError out). */
export function parseSwimMessage (v: unknown): SwimMessage {
  const o = obj(v, 'membership message')
  switch (o.t) {
    case 'ping': return { t: 'ping', seq: count(o.seq, 'ping seq'), ...optDeltas(o.d) }
    case 'ack': return { t: 'ack', seq: count(o.seq, 'ack seq'), ...optDeltas(o.d) }
    case 'nack': return { t: 'nack', seq: count(o.seq, 'nack seq') }
    case 'ping-req': return { t: 'ping-req', seq: count(o.seq, 'ping-req seq'), target: peerIdStr(o.target, 'ping-req target'), ...optDeltas(o.d) }
    case 'gossip': return { t: 'gossip', d: deltas(o.d) }
    case 'sync': return { t: 'sync', h: hashes(o.h), ...(o.certs === true ? { certs: true as const } : {}) }
    case 'state': return {
      t: 'state',
      ...(o.h === undefined || o.h === null ? {} : { h: hashes(o.h) }),
      e: list(o.e, 'e', MAX_SYNC_ENTRIES, (x, i) => {
        const e = obj(x, `e[${i}]`)
        const c = e.c === undefined || e.c === null ? {} : { c: str(e.c, `e[${i}].c`, MAX_MEMBER_CERT_CHARS) }
        return { r: parseMemberRecord(e.r, `e[${i}].r`), s: state(e.s, `e[${i}].s`), ...c }
      }),
      ...(o.back === true ? { back: true as const } : {})
    }
    case 'want': return { t: 'want', ids: list(o.ids, 'want ids', MAX_WANTED_CERTS, (x, i) => peerIdStr(x, `ids[${i}]`)) }
    case 'certs': return {
      t: 'certs',
      c: list(o.c, 'certs c', MAX_WANTED_CERTS, (x, i) => {
        const e = obj(x, `c[${i}]`)
        return { id: peerIdStr(e.id, `c[${i}].id`), pem: str(e.pem, `c[${i}].pem`, MAX_MEMBER_CERT_CHARS) }
      })
    }
    default: throw new ProtocolError('membership message t is not a known kind')
  }
}
