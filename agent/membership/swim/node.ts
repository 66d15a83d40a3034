/**
 * The scalable membership protocol's logic, for one member: SWIM failure detection with Lifeguard's
 * refinements, deltas piggybacked on probes, digest-based anti-entropy, and the verification rules
 * of agent/membership (only verified members count toward quorum). Pure: no I/O, no timers — the
 * clock, the random source, signatures and the send function are injected, and `tick()` is called
 * by whoever drives it (the agent's transport, or test/sim's in-memory network with a fake clock).
 *
 *   const node = new SwimNode({ self, timings, crypto, now, random, send })
 *   node.receive(from, parseSwimMessage(json), certOfFrom)   // every message, `from` authenticated
 *   node.tick()                                              // often (every few ms of its clock)
 *   node.join([seed]); node.update(newInfo); node.leave()
 *
 * Every member still learns every member (so quorum counting and `goto peers` keep working); what
 * changes is the cost: per probe interval one ping and one ack per member, deltas only when
 * something changed, and an occasional digest exchange with one peer.
 *
 * Trust: `from` is the authenticated sender (its certificate came with the connection). What a
 * member says of itself is a MemberRecord it signed: only it can raise its incarnation, change its
 * addresses or labels, or leave. Anyone may suspect or declare dead at the incarnation the receiver
 * already knows (never higher: a third party cannot move a member's incarnation), and the member
 * refutes by signing a higher one. A member learned second-hand is listed but not verified until it
 * is heard from directly or its certificate — asked for (`want`) from the member that told of it,
 * once — verifies here; new unverified members are capped per sender and window and in all.
 */
import { createHash } from 'node:crypto'
import type { MemberInfo } from '../../../protocol/messages.js'
import {
  MAX_DELTAS, MAX_SYNC_ENTRIES, SYNC_BUCKETS, SYNC_HASH_CHARS, recordBytes,
  type Delta, type MemberRecord, type SwimMessage, type SwimState, type SyncEntry
} from '../../../protocol/swim-messages.js'
import { MAX_WANTED_CERTS } from '../../../protocol/messages.js'
import { BroadcastQueue } from './broadcasts.js'
import { pushPullIntervalMs, retransmitLimit, suspicionTimeoutMs, type SwimTimings } from './timings.js'

/** A certificate this member verified (at the handshake, or relayed and checked here), and its expiry. */
export interface SwimCert { pem: string, notAfter: number }

export interface SwimCrypto {
  /** This member's signature (base64) over `bytes`, with its identity key. */
  sign: (bytes: Uint8Array) => string
  /** Whether `sig` is `peerId`'s signature over `bytes` (an Ed25519 peer ID holds its public key). */
  verify: (peerId: string, bytes: Uint8Array, sig: string) => boolean
  /** A relayed certificate of `peerId` checked against the mesh CA (agent role, in date, not revoked). */
  verifyCert: (peerId: string, pem: string, now: number) => SwimCert | undefined
}

export interface SwimDeps {
  self: MemberInfo
  timings: SwimTimings
  crypto: SwimCrypto
  now: () => number
  /** Uniform in [0, 1). */
  random: () => number
  /** Sends one message to one member (fire and forget: a lost message is a missed probe). */
  send: (to: string, msg: SwimMessage) => void
  /** Every change of a member's state in this member's view. */
  onChange?: (c: SwimChange) => void
  /** The incarnation to start at (a restarted member that kept it; 0 otherwise). */
  incarnation?: number
}

export interface SwimChange { id: string, from: SwimState | 'unknown', to: SwimState, inc: number, left: boolean }

export interface SwimMember {
  id: string
  record: MemberRecord
  state: SwimState
  /** When it entered its state (this member's clock). */
  since: number
  /** Heard from directly (on an authenticated connection). */
  direct: boolean
  cert?: SwimCert
  suspicion?: { start: number, by: Set<string> }
  bucket: number
}

/** New unverified members one sender may make us list per LEARN_WINDOW_MS (as in service.ts). */
export const LEARN_PER_SENDER = 16
export const LEARN_WINDOW_MS = 10_000
/** Relayed certificates of unsolicited messages one sender may make us check per window. */
export const CERT_CHECKS_PER_SENDER = 2 * LEARN_PER_SENDER
/**
 * Record signatures one sender's unsolicited messages may make us check per window: far more than
 * the changes a mesh of thousands makes in ten seconds, far fewer than a flood of forged records.
 */
export const SIG_CHECKS_PER_SENDER = 1024
/** Most unverified members listed at once, whoever told of them. */
export const MAX_UNVERIFIED = 256
/**
 * Bytes of entries one `state` message carries (JSON): a joiner's whole table with certificates
 * (~1.7 KB a member) goes in several, each well under the wire's MAX_MESSAGE_BYTES (1 MiB).
 */
export const STATE_CHUNK_BYTES = 512 * 1024
/** Most indirect probes this member runs for others at once (a flood of ping-reqs is dropped). */
export const MAX_RELAYS = 64

interface Probe { target: string, seq: number, indirectAt: number, endAt: number, acked: boolean, indirect: boolean, helpers: Set<string>, nacksExpected: number, nacks: number }
interface Quota { since: number, learned: number, certChecks: number, sigChecks: number }

const verified = (m: SwimMember, now: number): boolean => m.direct || (m.cert !== undefined && m.cert.notAfter > now)

/** The anti-entropy bucket of a peer ID (FNV-1a: the same on every member, and cheap). */
function bucketOf (id: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193)
  return (h >>> 0) % SYNC_BUCKETS
}

export class SwimNode {
  readonly id: string
  private inc: number
  private record: MemberRecord
  private readonly members = new Map<string, SwimMember>()
  /** Peer IDs of `members`, for O(1) random choice. */
  private readonly ids: string[] = []
  private readonly index = new Map<string, number>()
  private readonly queue = new BroadcastQueue()
  private lhm = 0
  private seq = 0
  private probe: Probe | undefined
  private probeList: string[] = []
  private nextProbeAt: number
  private nextGossipAt: number
  private nextSyncAt: number
  private readonly relays = new Map<number, { origin: string, originSeq: number, deadline: number }>()
  private readonly quotas = new Map<string, Quota>()
  /** Certificates we asked each sender for, and when we last asked for each member's. */
  private readonly asked = new Map<string, Set<string>>()
  private readonly askedAt = new Map<string, number>()
  /** Syncs we started (a `state` with `h` answers one) and syncs we answered (a `state` back follows). */
  private readonly syncOut = new Map<string, { at: number, certs: boolean }>()
  private readonly syncIn = new Map<string, number>()
  /** Certificates from handshakes of senders not yet listed (bounded like unverified members). */
  private readonly handshakeCerts = new Map<string, SwimCert>()
  private left = false
  /** Listed members with neither direct contact nor a verified certificate. */
  private readonly unverified = new Set<string>()
  /** Unverified members the message being handled told of: their certificates are asked of its sender. */
  private toAsk: string[] = []
  /** Members now suspect (their suspicion timers run in tick()). */
  private readonly suspects = new Set<string>()

  constructor (private readonly deps: SwimDeps) {
    this.id = deps.self.peerId
    this.inc = deps.incarnation ?? 0
    this.record = this.sign(deps.self, false)
    const now = deps.now()
    const t = deps.timings
    // Spread out first actions so a mesh started at once does not probe in lockstep.
    this.nextProbeAt = now + deps.random() * t.probeIntervalMs
    this.nextGossipAt = now + deps.random() * t.gossipIntervalMs
    this.nextSyncAt = now + deps.random() * pushPullIntervalMs(t, 1)
  }

  // --- what the rest of the agent reads ------------------------------------------------

  get incarnation (): number { return this.inc }
  get localHealth (): number { return this.lhm }
  /** Members, itself counted. */
  get size (): number { return this.members.size + 1 }
  get (id: string): SwimMember | undefined { return this.members.get(id) }
  entries (): SwimMember[] { return [...this.members.values()] }
  selfRecord (): MemberRecord { return this.record }
  isVerified (id: string): boolean {
    const m = this.members.get(id)
    return m !== undefined && verified(m, this.deps.now())
  }

  /** Verified members (heard from directly, or a certificate verified here), itself counted: what quorum counts. */
  verifiedMembers (): number {
    const now = this.deps.now()
    let n = 1
    for (const m of this.members.values()) if (verified(m, now)) n++
    return n
  }

  // --- what the driver calls -------------------------------------------------------------

  /** Starts a full exchange with each seed (asking for certificates, so the whole table counts at once). */
  join (seeds: string[]): void {
    this.queue.push(this.id, { k: 'alive', r: this.record })
    for (const s of seeds) if (s !== this.id) this.startSync(s, true)
  }

  /** What this member says of itself changed (addresses, labels, versions, failover gossip). */
  update (info: MemberInfo): void {
    this.inc++
    this.record = this.sign(info, false)
    this.queue.push(this.id, { k: 'alive', r: this.record })
  }

  /** Leaves the mesh gracefully: a signed record saying so, spread like any delta. */
  leave (): void {
    this.left = true
    this.inc++
    this.record = this.sign(this.record.info, true)
    this.queue.push(this.id, { k: 'alive', r: this.record })
  }

  /**
   * A known member was just heard from on an authenticated connection whose certificate is `cert`
   * (the transport's handshake): it is verified from now on.
   */
  heardDirectly (from: string, cert?: SwimCert): void {
    const m = this.members.get(from)
    if (m !== undefined) {
      m.direct = true
      if (cert !== undefined) m.cert = cert
      this.unverified.delete(from)
    } else if (cert !== undefined && (this.handshakeCerts.has(from) || this.handshakeCerts.size < MAX_UNVERIFIED)) {
      this.handshakeCerts.set(from, cert)
    }
  }

  /** One checked message from authenticated member `from`. */
  receive (from: string, msg: SwimMessage, cert?: SwimCert): void {
    if (from === this.id) return
    this.heardDirectly(from, cert)
    this.toAsk = []
    switch (msg.t) {
      case 'ping':
        this.apply(from, msg.d)
        this.deps.send(from, { t: 'ack', seq: msg.seq, ...this.piggyback() })
        break
      case 'ack': this.onAck(from, msg.seq, msg.d); break
      case 'nack':
        if (this.probe?.seq === msg.seq && this.probe.helpers.has(from)) this.probe.nacks++
        break
      case 'ping-req': this.onPingReq(from, msg.seq, msg.target, msg.d); break
      case 'gossip': this.apply(from, msg.d); break
      case 'sync': this.onSync(from, msg.h, msg.certs === true); break
      case 'state': this.onState(from, msg); break
      case 'want': this.onWant(from, msg.ids); break
      case 'certs': this.onCerts(from, msg.c); break
    }
    this.askForCerts(from)
  }

  /** Runs what is due: probes, their timeouts, relays, suspicions, gossip, anti-entropy. */
  tick (): void {
    const now = this.deps.now()
    const t = this.deps.timings
    const scale = 1 + this.lhm
    const p = this.probe
    if (p !== undefined) {
      if (!p.acked && !p.indirect && now >= p.indirectAt) this.indirect(p)
      if (now >= p.endAt) {
        this.probe = undefined
        if (!p.acked) {
          // Lifeguard: a failed probe, and every indirect prober that did not even nack, says as
          // much about our own health as about the target's.
          this.health(1 + Math.max(0, p.nacksExpected - p.nacks))
          this.suspect(p.target, this.members.get(p.target)?.record.inc ?? 0, this.id)
        }
      }
    }
    if (this.probe === undefined && now >= this.nextProbeAt) {
      this.nextProbeAt = now + t.probeIntervalMs * scale
      this.startProbe(now, scale)
    }
    for (const [seq, r] of this.relays) {
      if (now < r.deadline) continue
      this.relays.delete(seq)
      this.deps.send(r.origin, { t: 'nack', seq: r.originSeq })
    }
    for (const id of this.suspects) {
      const m = this.members.get(id)
      if (m === undefined || m.state !== 'suspect' || m.suspicion === undefined) continue
      if (now - m.suspicion.start >= suspicionTimeoutMs(t, this.size, m.suspicion.by.size - 1)) this.declareDead(m, this.id)
    }
    if (now >= this.nextGossipAt) {
      this.nextGossipAt = now + t.gossipIntervalMs
      if (this.queue.size > 0) {
        for (const to of this.pick(t.gossipNodes, m => m.state !== 'dead')) {
          const d = this.takeDeltas()
          if (d.length > 0) this.deps.send(to, { t: 'gossip', d })
        }
      }
    }
    if (now >= this.nextSyncAt) {
      const interval = pushPullIntervalMs(t, this.size)
      this.nextSyncAt = now + interval * (0.5 + this.deps.random())
      const [to] = this.pick(1, m => m.state === 'alive')
      if (to !== undefined) this.startSync(to, false)
    }
    for (const [peer, at] of this.syncOut) if (now - at.at > t.pushPullIntervalMs) this.syncOut.delete(peer)
    for (const [peer, at] of this.syncIn) if (now - at > t.pushPullIntervalMs) this.syncIn.delete(peer)
  }

  // --- probes -----------------------------------------------------------------------------

  private startProbe (now: number, scale: number): void {
    const t = this.deps.timings
    let target: SwimMember | undefined
    for (let tries = 0; tries < 2 && target === undefined; tries++) {
      while (this.probeList.length > 0) {
        const m = this.members.get(this.probeList.pop() as string)
        if (m !== undefined && m.state !== 'dead') { target = m; break }
      }
      if (target === undefined) this.probeList = this.shuffled()
    }
    if (target === undefined) return
    const seq = ++this.seq
    this.probe = { target: target.id, seq, indirectAt: now + t.probeTimeoutMs * scale, endAt: now + t.probeIntervalMs * scale, acked: false, indirect: false, helpers: new Set(), nacksExpected: 0, nacks: 0 }
    this.deps.send(target.id, { t: 'ping', seq, ...this.piggyback() })
  }

  private indirect (p: Probe): void {
    p.indirect = true
    const helpers = this.pick(this.deps.timings.indirectChecks, m => m.state === 'alive' && m.id !== p.target)
    p.nacksExpected = helpers.length
    p.helpers = new Set(helpers)
    // A second direct ping with the indirect ones (memberlist sends its fallback over TCP): one
    // lost message then no longer makes a suspicion.
    this.deps.send(p.target, { t: 'ping', seq: p.seq })
    for (const h of helpers) this.deps.send(h, { t: 'ping-req', seq: p.seq, target: p.target, ...this.piggyback() })
  }

  private onAck (from: string, seq: number, d: Delta[] | undefined): void {
    this.apply(from, d)
    const p = this.probe
    // The target's own ack, or one forwarded by a member we asked: no one else can answer for it.
    if (p !== undefined && p.seq === seq && !p.acked && (from === p.target || p.helpers.has(from))) {
      p.acked = true
      this.health(-1)
      return
    }
    const relay = this.relays.get(seq)
    if (relay !== undefined) {
      this.relays.delete(seq)
      this.deps.send(relay.origin, { t: 'ack', seq: relay.originSeq })
    }
  }

  private onPingReq (from: string, originSeq: number, target: string, d: Delta[] | undefined): void {
    this.apply(from, d)
    if (target === this.id || this.relays.size >= MAX_RELAYS || this.members.get(target) === undefined) return
    const seq = ++this.seq
    this.relays.set(seq, { origin: from, originSeq, deadline: this.deps.now() + this.deps.timings.probeTimeoutMs * (1 + this.lhm) })
    this.deps.send(target, { t: 'ping', seq })
  }

  private health (delta: number): void {
    this.lhm = Math.max(0, Math.min(this.deps.timings.awarenessMax, this.lhm + delta))
  }

  // --- deltas -----------------------------------------------------------------------------

  private piggyback (): { d?: Delta[] } {
    const d = this.takeDeltas()
    return d.length === 0 ? {} : { d }
  }

  private takeDeltas (): Delta[] {
    return this.queue.take(this.deps.timings.maxDeltaBytes, retransmitLimit(this.deps.timings, this.size), MAX_DELTAS)
  }

  private apply (from: string, d: Delta[] | undefined): void {
    if (d === undefined) return
    for (const x of d) {
      if (x.k === 'alive') this.alive(x.r, from, false)
      else if (x.k === 'suspect') this.suspect(x.id, x.inc, x.by)
      else this.dead(x.id, x.inc, x.by)
    }
  }

  /**
   * A member's own record. Taken only if newer than what we hold and signed by that member; a new
   * member only within the sender's quota (or verified by a certificate that came with it).
   */
  private alive (r: MemberRecord, from: string, solicited: boolean, certPem?: string): void {
    const id = r.info.peerId
    const now = this.deps.now()
    if (id === this.id) {
      // An older life of ours (we restarted) or a forgery: signed by us and higher, we go past it.
      if (r.inc >= this.inc && !this.left && (r.inc > this.inc || r.left === true) && this.deps.crypto.verify(id, recordBytes(r), r.sig)) this.refute(r.inc)
      return
    }
    const known = this.members.get(id)
    if (known !== undefined && this.unverified.has(id) && certPem === undefined) this.toAsk.push(id)
    if (known !== undefined && r.inc <= known.record.inc) return
    // Cheap refusals before the signature check: a newcomer without a certificate when there is no
    // room for it, a sender whose checks for this window are spent.
    const hasCert = this.handshakeCerts.has(id) || certPem !== undefined
    if (known === undefined && !hasCert && !this.roomForUnverified(from, now)) return
    const q = this.quota(from, now)
    if (!solicited && ++q.sigChecks > SIG_CHECKS_PER_SENDER) return
    if (!this.deps.crypto.verify(id, recordBytes(r), r.sig)) return
    if (known === undefined) {
      const cert = this.certFor(id, certPem, from, solicited, now)
      if (cert === undefined && !this.mayLearnUnverified(from, now)) return
      const m: SwimMember = { id, record: r, state: 'alive', since: now, direct: false, bucket: bucketOf(id), ...(cert === undefined ? {} : { cert }) }
      if (r.left === true) m.state = 'dead'
      this.add(m)
      if (cert === undefined) {
        this.unverified.add(id)
        this.toAsk.push(id)
      }
      this.queue.push(id, { k: 'alive', r })
      this.deps.onChange?.({ id, from: 'unknown', to: m.state, inc: r.inc, left: r.left === true })
      return
    }
    if (known.cert === undefined && certPem !== undefined) {
      const cert = this.certFor(id, certPem, from, solicited, now)
      if (cert !== undefined) {
        known.cert = cert
        this.unverified.delete(id)
      }
    }
    const from0 = known.state
    known.record = r
    known.suspicion = undefined
    this.setState(known, r.left === true ? 'dead' : 'alive', now, from0)
    this.queue.push(id, { k: 'alive', r })
  }

  /** Suspicion of `id` by `by`, at most at the incarnation we know (a third party cannot raise it). */
  private suspect (id: string, inc: number, by: string): void {
    if (id === this.id) {
      if (inc >= this.inc && !this.left) this.refute(this.inc)
      return
    }
    const m = this.members.get(id)
    if (m === undefined || m.state === 'dead' || inc < m.record.inc) return
    const now = this.deps.now()
    const d: Delta = { k: 'suspect', id, inc: m.record.inc, by }
    if (m.state === 'suspect') {
      // Lifeguard: an independent suspicion (a verified member we had not counted) shortens the
      // timeout, and is passed on so others count it too.
      if (m.suspicion !== undefined && !m.suspicion.by.has(by) && (by === this.id || this.isVerified(by))) {
        m.suspicion.by.add(by)
        this.queue.push(id, d)
      }
      return
    }
    m.suspicion = { start: now, by: new Set([by]) }
    this.setState(m, 'suspect', now, m.state)
    this.queue.push(id, d)
  }

  private dead (id: string, inc: number, by: string): void {
    if (id === this.id) {
      if (inc >= this.inc && !this.left) this.refute(this.inc)
      return
    }
    const m = this.members.get(id)
    if (m === undefined || m.state === 'dead' || inc < m.record.inc) return
    this.declareDead(m, by)
  }

  private declareDead (m: SwimMember, by: string): void {
    const now = this.deps.now()
    m.suspicion = undefined
    this.setState(m, 'dead', now, m.state)
    this.queue.push(m.id, { k: 'dead', id: m.id, inc: m.record.inc, by })
  }

  /** Someone suspects us, or holds a record of ours at `above` or higher: a newer one, signed by us. */
  private refute (above: number): void {
    this.inc = Math.max(this.inc, above) + 1
    this.record = this.sign(this.record.info, false)
    this.queue.push(this.id, { k: 'alive', r: this.record })
    this.health(1)
  }

  private setState (m: SwimMember, to: SwimState, now: number, from: SwimState): void {
    if (from === to) return
    m.state = to
    m.since = now
    if (to === 'suspect') this.suspects.add(m.id)
    else this.suspects.delete(m.id)
    this.deps.onChange?.({ id: m.id, from, to, inc: m.record.inc, left: m.record.left === true })
  }

  // --- anti-entropy ------------------------------------------------------------------------

  private startSync (to: string, certs: boolean): void {
    this.syncOut.set(to, { at: this.deps.now(), certs })
    this.deps.send(to, { t: 'sync', h: this.hashes(), ...(certs ? { certs: true as const } : {}) })
  }

  /** A peer's digest: answer with our entries of the buckets that differ (nothing when none do). */
  private onSync (from: string, theirs: string[], certs: boolean): void {
    const ours = this.hashes()
    const differ = new Set<number>()
    for (let b = 0; b < SYNC_BUCKETS; b++) if (ours[b] !== theirs[b]) differ.add(b)
    if (differ.size === 0) return
    this.syncIn.set(from, this.deps.now())
    const chunks = this.chunked(this.entriesOf(differ, certs))
    // Our digest rides on the last chunk: the initiator answers with what still differs once it has all.
    chunks.forEach((e, i) => { this.deps.send(from, { t: 'state', ...(i === chunks.length - 1 ? { h: ours } : {}), e, back: true }) })
  }

  /** Entries in messages of at most STATE_CHUNK_BYTES (at least one message, maybe empty). */
  private chunked (entries: SyncEntry[]): SyncEntry[][] {
    const out: SyncEntry[][] = [[]]
    let bytes = 0
    for (const e of entries) {
      const size = JSON.stringify(e).length + 1
      if (bytes + size > STATE_CHUNK_BYTES && out[out.length - 1].length > 0) { out.push([]); bytes = 0 }
      out[out.length - 1].push(e)
      bytes += size
    }
    return out
  }

  private onState (from: string, msg: Extract<SwimMessage, { t: 'state' }>): void {
    const out = this.syncOut.get(from)
    // Solicited: the answer to our sync (we asked for these entries, and maybe their certificates),
    // or the entries back after we answered one. Anything else is taken like gossip (with its quotas).
    const solicited = (msg.back === true && out !== undefined) || (msg.back !== true && this.syncIn.has(from))
    // The answer to our sync may come in chunks: it is over with the one that carries the digest.
    if (msg.back === true && msg.h !== undefined) this.syncOut.delete(from)
    else if (msg.back !== true) this.syncIn.delete(from)
    for (const e of msg.e) {
      this.alive(e.r, from, solicited, e.c)
      // As memberlist does: a remote `dead` is only a suspicion here, so a false death does not
      // spread by anti-entropy faster than the member can refute it.
      if (e.s !== 'alive') this.suspect(e.r.info.peerId, e.r.inc, from)
    }
    if (msg.back === true && msg.h !== undefined) {
      const ours = this.hashes()
      const differ = new Set<number>()
      for (let b = 0; b < SYNC_BUCKETS; b++) if (ours[b] !== msg.h[b]) differ.add(b)
      if (differ.size > 0) for (const e of this.chunked(this.entriesOf(differ, false))) this.deps.send(from, { t: 'state', e })
    }
  }

  private entriesOf (buckets: Set<number>, certs: boolean): SyncEntry[] {
    const out: SyncEntry[] = []
    if (buckets.has(bucketOf(this.id))) out.push({ r: this.record, s: 'alive' })
    for (const m of this.members.values()) {
      if (out.length >= MAX_SYNC_ENTRIES) break
      if (!buckets.has(m.bucket)) continue
      out.push({ r: m.record, s: m.state, ...(certs && m.cert !== undefined ? { c: m.cert.pem } : {}) })
    }
    return out
  }

  /** The table (itself included) as SYNC_BUCKETS hashes of (peer ID, incarnation, state). */
  hashes (): string[] {
    const lines: string[][] = Array.from({ length: SYNC_BUCKETS }, () => [])
    lines[bucketOf(this.id)].push(`${this.id}:${this.inc}:a`)
    for (const m of this.members.values()) lines[m.bucket].push(`${m.id}:${m.record.inc}:${m.state[0]}`)
    return lines.map(l => l.length === 0 ? '' : createHash('sha256').update(l.sort().join('\n')).digest('hex').slice(0, SYNC_HASH_CHARS))
  }

  // --- certificates --------------------------------------------------------------------------

  /** After a message from `from` told of members we cannot vouch for, ask it for their certificates (once a window each). */
  private askForCerts (from: string): void {
    if (this.toAsk.length === 0) return
    const now = this.deps.now()
    const want: string[] = []
    for (const id of new Set(this.toAsk)) {
      if (want.length >= MAX_WANTED_CERTS) break
      const at = this.askedAt.get(id)
      if (!this.unverified.has(id) || (at !== undefined && now - at < LEARN_WINDOW_MS)) continue
      want.push(id)
    }
    this.toAsk = []
    if (want.length === 0) return
    for (const id of want) this.askedAt.set(id, now)
    this.asked.set(from, new Set(want))
    this.deps.send(from, { t: 'want', ids: want })
  }

  private onWant (from: string, ids: string[]): void {
    const c: Array<{ id: string, pem: string }> = []
    for (const id of ids.slice(0, MAX_WANTED_CERTS)) {
      const m = this.members.get(id)
      if (m?.cert !== undefined) c.push({ id, pem: m.cert.pem })
    }
    if (c.length > 0) this.deps.send(from, { t: 'certs', c })
  }

  /** Only certificates we asked this sender for are checked. */
  private onCerts (from: string, certs: Array<{ id: string, pem: string }>): void {
    const asked = this.asked.get(from)
    if (asked === undefined) return
    this.asked.delete(from)
    const now = this.deps.now()
    for (const { id, pem } of certs) {
      const m = this.members.get(id)
      if (!asked.has(id) || m === undefined || m.cert !== undefined) continue
      const cert = this.deps.crypto.verifyCert(id, pem, now)
      if (cert !== undefined) {
        m.cert = cert
        this.unverified.delete(id)
      }
    }
  }

  /** A certificate for a new member: from a handshake, or relayed (checked within the sender's quota unless we asked). */
  private certFor (id: string, pem: string | undefined, from: string, solicited: boolean, now: number): SwimCert | undefined {
    const hs = this.handshakeCerts.get(id)
    if (hs !== undefined) {
      this.handshakeCerts.delete(id)
      return hs
    }
    if (pem === undefined) return undefined
    const q = this.quota(from, now)
    if (!solicited && q.certChecks >= CERT_CHECKS_PER_SENDER) return undefined
    if (!solicited) q.certChecks++
    return this.deps.crypto.verifyCert(id, pem, now)
  }

  private roomForUnverified (from: string, now: number): boolean {
    return this.quota(from, now).learned < LEARN_PER_SENDER && this.unverified.size < MAX_UNVERIFIED
  }

  private mayLearnUnverified (from: string, now: number): boolean {
    const q = this.quota(from, now)
    if (q.learned >= LEARN_PER_SENDER || this.unverified.size >= MAX_UNVERIFIED) return false
    q.learned++
    return true
  }

  private quota (from: string, now: number): Quota {
    let q = this.quotas.get(from)
    if (q === undefined || now - q.since >= LEARN_WINDOW_MS) {
      q = { since: now, learned: 0, certChecks: 0, sigChecks: 0 }
      this.quotas.set(from, q)
    }
    return q
  }

  // --- table helpers ---------------------------------------------------------------------------

  private sign (info: MemberInfo, left: boolean): MemberRecord {
    const r = { inc: this.inc, info, ...(left ? { left: true as const } : {}) }
    return { ...r, sig: this.deps.crypto.sign(recordBytes(r)) }
  }

  private add (m: SwimMember, probeSoon = true): void {
    this.members.set(m.id, m)
    this.index.set(m.id, this.ids.length)
    this.ids.push(m.id)
    if (!probeSoon) return
    // A newcomer is probed soon, at a random place in the current round (as memberlist inserts it).
    this.probeList.splice(Math.floor(this.deps.random() * (this.probeList.length + 1)), 0, m.id)
  }

  /**
   * Fills the table from state this member kept itself (a restart's saved table, the simulation's
   * converged start): taken as is, no signature checked, nothing queued to spread.
   */
  restore (saved: Array<{ record: MemberRecord, state: SwimState, direct: boolean, cert?: SwimCert }>): void {
    const now = this.deps.now()
    for (const x of saved) {
      const id = x.record.info.peerId
      if (id === this.id || this.members.has(id)) continue
      this.add({ id, record: x.record, state: x.state, since: now, direct: x.direct, bucket: bucketOf(id), ...(x.cert === undefined ? {} : { cert: x.cert }) }, false)
      if (!x.direct && x.cert === undefined) this.unverified.add(id)
    }
  }

  /**
   * Drops every queued delta: for a table filled from elsewhere that every member already holds
   * (the simulation's converged start), whose learning is no news to spread.
   */
  clearBroadcasts (): void { this.queue.clear() }

  /** Forgets a member (revoked, or dead long enough). */
  remove (id: string): void {
    const i = this.index.get(id)
    if (i === undefined) return
    const last = this.ids.pop() as string
    if (last !== id) { this.ids[i] = last; this.index.set(last, i) }
    this.index.delete(id)
    this.members.delete(id)
    this.unverified.delete(id)
    this.suspects.delete(id)
    this.askedAt.delete(id)
  }

  private shuffled (): string[] {
    const a = [...this.ids]
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.deps.random() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]]
    }
    return a
  }

  /** Up to `n` distinct random members passing `ok` (a few tries per pick: O(n), not O(N)). */
  private pick (n: number, ok: (m: SwimMember) => boolean): string[] {
    const out = new Set<string>()
    for (let tries = 0; tries < n * 8 && out.size < n && this.ids.length > 0; tries++) {
      const id = this.ids[Math.floor(this.deps.random() * this.ids.length)]
      const m = this.members.get(id)
      if (m !== undefined && ok(m)) out.add(id)
    }
    return [...out]
  }
}
