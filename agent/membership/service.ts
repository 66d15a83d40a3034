/**
 * Heartbeats and peer exchange on /goto/heartbeat/1.0.0 (agents only).
 *
 * Every heartbeatIntervalMs each pair of agents exchanges one heartbeat on a long-lived stream (the
 * lower peer ID sends, the other answers): the request carries the sender's MemberInfo and the
 * members it has heard from, the reply the receiver's. So one bootstrap address is enough to learn
 * the whole mesh within a couple of rounds. A reply marks the peer alive and measures RTT;
 * silence drives it to suspect and dead (see PeerTable). A peer that misses a heartbeat has its
 * connections closed, so the next attempt dials afresh — that is how a partition heals and how a
 * restarted host is found again. Dead peers are redialled every redialDeadMs.
 *
 * Peer exchange is bounded and proves what it counts: a message lists at most
 * PEER_EXCHANGE_MAX_MEMBERS; one sender makes us learn at most LEARN_PER_SENDER new peers per
 * LEARN_WINDOW_MS, and at most MAX_UNVERIFIED_PEERS are held unverified in all. A member learned
 * without a certificate is asked for it (`wantCerts`) in our next message to the sender, which
 * answers with the certificate it verified itself; we verify it again (mesh CA, agent role, in date,
 * not revoked, for that peer ID) before the member counts toward quorum (PeerTable.isVerifiedMember).
 */
import type { Libp2p } from 'libp2p'
import type { Connection, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { VerifiedPeer, SignedCrl, TrustStore } from '../../certs/index.js'
import type { AuthService } from '../net/auth-service.js'
import type { PeerTable, PeerEntry, LearnedMember, MemberCert } from './peer-table.js'
import type { Timings } from '../timings.js'
import type { Logger } from '../log.js'
import { HEARTBEAT_PROTOCOL } from '../../protocol/ids.js'
import { JsonStream, readResult } from '../../protocol/wire.js'
import { MAX_WANTED_CERTS, parseHeartbeatReply, parseHeartbeatRequest, type MemberInfo, type MemberSummary } from '../../protocol/messages.js'
import { ProtocolError } from '../../protocol/errors.js'

export interface MembershipDeps {
  node: Libp2p
  auth: AuthService
  /** Checks the certificates members relay in peer exchange (the agent's own TrustStore: its CA and revocation list). */
  trust: Pick<TrustStore, 'verify'>
  table: PeerTable
  self: () => MemberInfo
  bootstrap: Multiaddr[]
  timings: Timings
  log: Logger
  /**
   * Send heartbeats to every peer, not only to those with a higher peer ID. A host behind NAT does:
   * it alone can open a direct connection between itself and a member, and its heartbeats keep one
   * open, so members do not settle for the relayed connections they open to it.
   */
  alwaysSend?: boolean
}

/**
 * The answering side of a pair sends again itself once the other side's requests are this many
 * intervals late (timer jitter, a slow peer), so liveness never hangs on one direction alone.
 */
const QUIET_SLACK = 1.5

/**
 * Most members one heartbeat passes on or takes from a peer's exchange. A mesh of more agents than
 * this still converges (each round passes on those heard from most recently); the cap bounds what
 * one message can make us store, verify and dial.
 */
export const PEER_EXCHANGE_MAX_MEMBERS = 256

/**
 * New (never seen) peers taken from one sender per LEARN_WINDOW_MS, and relayed certificates it
 * makes us verify in that window (twice as many: a known peer's may be verified too). Joining a mesh
 * learns a few dozen peers a minute from each verified member, and every peer verified then tells of
 * more; a rogue member's made-up peer IDs cost us at most this many entries and dials per window.
 */
export const LEARN_PER_SENDER = 16
export const LEARN_WINDOW_MS = 10_000

/**
 * Most learned-but-unverified entries held at once, whoever sent them: the table (and the dials it
 * drives) stays bounded even with several senders. Unverified entries are forgotten once dead.
 */
export const MAX_UNVERIFIED_PEERS = 256

/** What one sender made us learn and verify in its current window. */
interface SenderQuota { since: number, learned: number, verified: number, warned: boolean }

export class MembershipService {
  private readonly quotas = new Map<string, SenderQuota>()
  /** Per sender: the unverified peers its last message listed (we ask it for their certificates). */
  private readonly offered = new Map<string, Set<string>>()
  /** Per sender: the certificates its last message asked us for. */
  private readonly wanted = new Map<string, Set<string>>()
  private timer: NodeJS.Timeout | undefined
  private readonly inFlight = new Set<string>()
  /** When each peer last sent us a heartbeat request. */
  private readonly lastRequest = new Map<string, number>()
  /** Our long-lived outbound heartbeat stream to each peer. */
  private readonly channels = new Map<string, { connection: Connection, js: JsonStream }>()
  private readonly lastAttempt = new Map<string, number>()
  private bootstrapping = false
  private lastBootstrap = 0
  private stopped = false
  private unsubscribe?: () => void

  constructor (private readonly deps: MembershipDeps) {}

  async start (): Promise<void> {
    this.stopped = false
    // A newer revocation list: revoked peers leave the table at once.
    this.unsubscribe = this.deps.auth.onRevocation(() => {
      for (const e of this.deps.table.entries()) if (this.deps.auth.isRevoked(e.peerId)) this.forget(e.peerId)
    })
    await this.deps.auth.handle(HEARTBEAT_PROTOCOL, ['agent'], async (js, peer) => { await this.answer(js, peer) })
    this.timer = setInterval(() => { this.round() }, this.deps.timings.heartbeatIntervalMs)
    this.round()
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.unsubscribe?.()
    clearInterval(this.timer)
    for (const { js } of this.channels.values()) js.abort(new ProtocolError('agent stopping'))
    this.channels.clear()
  }

  /** One heartbeat round: states from the clock, then a heartbeat to every peer due for one. */
  private round (): void {
    const { table, log, timings } = this.deps
    for (const c of table.tick()) log.info('peer state changed', { peer: c.peerId, name: c.name, from: c.from, to: c.to })
    for (const gone of table.expired(timings.forgetAfterMs)) {
      log.info('forgot peer', { peer: gone.peerId, name: gone.name, lastSeen: gone.lastSeen })
      this.forget(gone.peerId)
    }
    const now = Date.now()
    const entries = table.entries()
    const selfId = this.deps.self().peerId
    for (const entry of entries) {
      if (this.inFlight.has(entry.peerId)) continue
      // One heartbeat per pair and interval is enough: the peer with the lower ID sends, the other
      // answers and stays quiet while those requests keep coming (halves the idle cost of the mesh).
      if (this.deps.alwaysSend !== true && entry.peerId < selfId && now - (this.lastRequest.get(entry.peerId) ?? 0) < timings.heartbeatIntervalMs * QUIET_SLACK) continue
      if (entry.state === 'dead' && now - (this.lastAttempt.get(entry.peerId) ?? 0) < timings.redialDeadMs) continue
      this.lastAttempt.set(entry.peerId, now)
      void this.heartbeat(entry)
    }
    // Alone (just started, or cut off): go back to the bootstrap addresses, at the dead-peer redial pace.
    if (!entries.some(e => e.state === 'alive') && now - this.lastBootstrap >= timings.redialDeadMs) {
      this.lastBootstrap = now
      void this.bootstrap()
    }
  }

  /** Dials the bootstrap addresses (peer IDs optional: the certificate proves who answers). */
  private async bootstrap (): Promise<void> {
    if (this.bootstrapping || this.deps.bootstrap.length === 0) return
    this.bootstrapping = true
    try {
      await Promise.all(this.deps.bootstrap.map(async addr => {
        const signal = AbortSignal.timeout(this.deps.timings.heartbeatTimeoutMs)
        try {
          const connection = await this.deps.node.dial(addr, { signal })
          const peer = await this.deps.auth.ensure(connection, signal)
          // A known peer gets its heartbeats from round(); one exchange at a time per peer.
          if (peer.role !== 'agent' || this.deps.table.get(peer.peerId) !== undefined || this.inFlight.has(peer.peerId)) return
          this.inFlight.add(peer.peerId)
          try {
            await this.exchange(connection, peer, signal)
          } finally {
            this.inFlight.delete(peer.peerId)
          }
          this.deps.log.info('joined through bootstrap peer', { addr: addr.toString(), name: peer.name, peer: peer.peerId })
        } catch (err) {
          this.deps.log.debug('bootstrap dial failed', { addr: addr.toString(), error: (err as Error).message })
        }
      }))
    } finally {
      this.bootstrapping = false
    }
  }

  /** Never rejects: a failed heartbeat is a missed one. */
  private async heartbeat (entry: PeerEntry): Promise<void> {
    if (this.stopped) return
    let peerId: PeerId
    try {
      peerId = peerIdFromString(entry.peerId)
    } catch {
      this.deps.table.remove(entry.peerId) // cannot happen for checked messages; never dial garbage
      return
    }
    this.inFlight.add(entry.peerId)
    const signal = AbortSignal.timeout(this.deps.timings.heartbeatTimeoutMs)
    try {
      const { connection, peer } = await this.deps.auth.connect(entry.peerId, entry.addrs, signal)
      await this.exchange(connection, peer, signal)
    } catch (err) {
      this.deps.log.debug('heartbeat missed', { peer: entry.peerId, name: entry.name, error: (err as Error).message })
      // A connection that cannot carry heartbeats is stale (peer gone, or a partition): drop it so
      // the next round dials afresh instead of waiting on TCP retransmissions. But one missed
      // heartbeat on a connection busy with a transfer is just a full pipe: keep that connection
      // until the peer is suspect (idle connection) or dead (busy one).
      const silence = Date.now() - (entry.lastSeen ?? entry.since)
      for (const c of this.deps.node.getConnections(peerId)) {
        const busy = c.streams.some(st => st.protocol !== HEARTBEAT_PROTOCOL && st.status === 'open')
        if (silence >= (busy ? this.deps.timings.deadAfterMs : this.deps.timings.suspectAfterMs)) c.abort(new ProtocolError('heartbeats missed'))
      }
    } finally {
      this.inFlight.delete(entry.peerId)
    }
  }

  /**
   * Sends our heartbeat on an authenticated connection and records the reply. Each peer gets one
   * long-lived heartbeat stream: opening a stream per heartbeat (multistream-select, yamux frames,
   * a peer-store update) cost the idle agent several times more CPU than the heartbeat itself.
   */
  private async exchange (connection: Connection, peer: VerifiedPeer, signal: AbortSignal): Promise<void> {
    const started = performance.now()
    let channel = this.channels.get(peer.peerId)
    if (channel === undefined || channel.connection !== connection || !channel.js.isOpen) {
      channel?.js.abort(new ProtocolError('heartbeat stream replaced'))
      channel = { connection, js: new JsonStream(await connection.newStream(HEARTBEAT_PROTOCOL, { signal })) }
      this.channels.set(peer.peerId, channel)
    }
    const { js } = channel
    let reply
    try {
      const theirCrl = this.deps.table.get(peer.peerId)?.crlNumber ?? 0
      const rttMs = this.deps.table.get(peer.peerId)?.rttMs ?? undefined
      await js.write({ from: this.deps.self(), ...this.exchangeFor(peer.peerId), rttMs, ...this.crlFor(theirCrl) }, signal)
      reply = parseHeartbeatReply(await readResult(js, signal))
    } catch (err) {
      this.channels.delete(peer.peerId)
      js.abort(err as Error)
      throw err
    }
    if (reply.crl !== undefined) this.deps.auth.offerCrl(reply.crl)
    const rttMs = Math.round((performance.now() - started) * 10) / 10
    this.record(peer, reply.self, rttMs)
    this.learn(peer, reply.members, reply.wantCerts)
  }

  /** Serves a peer's heartbeat stream: a reply to every request, until the stream ends or goes quiet. */
  private async answer (js: JsonStream, peer: VerifiedPeer): Promise<void> {
    const { timings } = this.deps
    for (;;) {
      let raw: unknown
      try {
        raw = await js.read(AbortSignal.timeout(timings.deadAfterMs + timings.heartbeatTimeoutMs))
      } catch {
        break // the peer closed the stream, or went silent long enough to be dead
      }
      const req = parseHeartbeatRequest(raw)
      if (req.crl !== undefined) this.deps.auth.offerCrl(req.crl)
      this.lastRequest.set(peer.peerId, Date.now())
      this.record(peer, req.from, req.rttMs ?? null)
      this.learn(peer, req.members, req.wantCerts)
      const result = { self: this.deps.self(), ...this.exchangeFor(peer.peerId), ...this.crlFor(req.from.crlNumber) }
      await js.write({ ok: true, result }, AbortSignal.timeout(timings.heartbeatTimeoutMs))
    }
    js.abort(new ProtocolError('heartbeat stream ended'))
  }

  /** Revocation lists spread with heartbeats: a peer that reports an older one gets ours. */
  private crlFor (theirNumber: number): { crl?: SignedCrl } {
    const crl = this.deps.auth.crl
    return crl !== undefined && this.deps.auth.crlNumber > theirNumber ? { crl } : {}
  }

  /** Forgets what we keep per peer (its certificate was revoked). */
  forget (peerId: string): void {
    this.channels.get(peerId)?.js.abort(new ProtocolError('peer revoked'))
    this.channels.delete(peerId)
    this.lastRequest.delete(peerId)
    this.lastAttempt.delete(peerId)
    this.quotas.delete(peerId)
    this.offered.delete(peerId)
    this.wanted.delete(peerId)
    this.deps.table.remove(peerId)
  }

  /**
   * The certificate, not the message, says who the peer is. Checked again here because the same
   * message may have carried a revocation list that revokes its sender.
   */
  private record (peer: VerifiedPeer, info: MemberInfo, rttMs: number | null): void {
    if (this.deps.auth.isRevoked(peer.peerId)) throw new ProtocolError(`heartbeat from revoked peer ${peer.peerId}`)
    if (info.peerId !== peer.peerId) throw new ProtocolError(`heartbeat from ${peer.peerId} claims to be ${info.peerId}`)
    // A name belongs to one host: a newer certificate for it (re-issued bundle) replaces the old entry.
    for (const other of this.deps.table.entries()) {
      if (other.name === peer.name && other.peerId !== peer.peerId) {
        this.deps.log.info('peer replaced by a new identity of the same name', { name: peer.name, old: other.peerId, peer: peer.peerId })
        this.forget(other.peerId)
      }
    }
    const change = this.deps.table.heard({ ...info, name: peer.name }, rttMs, { pem: peer.certPem, notAfter: peer.notAfter.getTime() })
    if (change !== undefined) this.deps.log.info('peer state changed', { peer: change.peerId, name: change.name, from: change.from, to: change.to })
  }

  /**
   * The peer-exchange part of a message to `peerId`: the members we vouch for (with the
   * certificates it asked for) and the certificates we ask it for, of members it listed unverified.
   */
  private exchangeFor (peerId: string): { members: MemberSummary[], wantCerts?: string[] } {
    const { table } = this.deps
    const asked = this.wanted.get(peerId)
    const members = table.summaries(PEER_EXCHANGE_MAX_MEMBERS, id => asked?.has(id) === true)
    const offered = this.offered.get(peerId)
    if (offered === undefined) return { members }
    const want = table.unverified().map(e => e.peerId).filter(id => offered.has(id)).slice(0, MAX_WANTED_CERTS)
    return want.length === 0 ? { members } : { members, wantCerts: want }
  }

  /**
   * Takes the peers a verified member passed on, within the caps: PEER_EXCHANGE_MAX_MEMBERS per
   * message, LEARN_PER_SENDER new ones and twice as many certificate checks per sender and window,
   * MAX_UNVERIFIED_PEERS unverified in all. A member without a verified certificate is only dialled;
   * it counts once it answers, or once its certificate arrives and verifies here.
   */
  private learn (from: VerifiedPeer, members: MemberSummary[], wantCerts: string[] | undefined): void {
    const { table, log, auth } = this.deps
    const selfId = this.deps.self().peerId
    const now = Date.now()
    let quota = this.quotas.get(from.peerId)
    if (quota === undefined || now - quota.since >= LEARN_WINDOW_MS) {
      quota = { since: now, learned: 0, verified: 0, warned: false }
      this.quotas.set(from.peerId, quota)
    }
    this.wanted.set(from.peerId, new Set(wantCerts ?? []))
    const taken: LearnedMember[] = []
    let refused = 0
    for (const m of members.slice(0, PEER_EXCHANGE_MAX_MEMBERS)) {
      if (m.peerId === selfId || auth.isRevoked(m.peerId)) continue
      const verified = m.cert === undefined ? undefined : this.vouch(m.peerId, m.cert, quota, now)
      if (m.cert !== undefined && verified === undefined) refused++
      // A verified certificate names the member; otherwise the sender's word does, until it answers.
      taken.push({ peerId: m.peerId, name: verified?.name ?? m.name, addrs: m.addrs, ...(verified === undefined ? {} : { verified: verified.cert }) })
    }
    this.offered.set(from.peerId, new Set(taken.map(m => m.peerId)))
    // Known peers only gain addresses and certificates; verified newcomers are limited by the
    // sender's quota, unverified ones by the room left for unverified entries too.
    let room = MAX_UNVERIFIED_PEERS - table.unverified().length
    const fresh = taken.filter(m => table.get(m.peerId) === undefined).length
    const admissible = taken.filter(m => table.get(m.peerId) !== undefined || m.verified !== undefined || room-- > 0)
    const added = table.learn(admissible, Math.max(0, LEARN_PER_SENDER - quota.learned))
    quota.learned += added.length
    for (const entry of added) log.info('learned peer', { peer: entry.peerId, name: entry.name, addrs: entry.addrs, from: from.name, verified: entry.cert !== undefined })
    if (quota.warned) return // once per window: the log must not become the flood
    const details = { peer: from.peerId, name: from.name, offered: members.length, taken: added.length, badCerts: refused, perSender: LEARN_PER_SENDER, windowMs: LEARN_WINDOW_MS }
    if (members.length > PEER_EXCHANGE_MAX_MEMBERS || refused > 0) {
      quota.warned = true
      log.warn('peer exchange over its limits or with certificates that do not verify: entries ignored', details)
    } else if (fresh > added.length) {
      quota.warned = true
      log.info('peer exchange: more new peers than one sender may add per window; the rest on later rounds', details)
    }
  }

  /**
   * A relayed certificate of `peerId`, verified here: issued by the mesh CA to an agent with that
   * peer ID, in date and not revoked. The same certificate already held is not verified again.
   * Undefined when it fails or the sender's verification quota for this window is spent.
   */
  private vouch (peerId: string, pem: string, quota: SenderQuota, now: number): { cert: MemberCert, name: string } | undefined {
    const known = this.deps.table.get(peerId)
    if (known?.cert?.pem === pem && known.cert.notAfter > now) return { cert: known.cert, name: known.name }
    if (quota.verified >= 2 * LEARN_PER_SENDER) return undefined
    quota.verified++
    try {
      const p = this.deps.trust.verify(pem, peerId, new Date(now))
      if (p.role !== 'agent') return undefined
      return { cert: { pem, notAfter: p.notAfter.getTime() }, name: p.name }
    } catch (err) {
      this.deps.log.debug('relayed certificate refused', { member: peerId, error: (err as Error).message })
      return undefined
    }
  }
}
