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
 */
import type { Libp2p } from 'libp2p'
import type { Connection, PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { VerifiedPeer, SignedCrl } from '../../certs/index.js'
import type { AuthService } from '../net/auth-service.js'
import type { PeerTable, PeerEntry } from './peer-table.js'
import type { Timings } from '../timings.js'
import type { Logger } from '../log.js'
import { HEARTBEAT_PROTOCOL } from '../../protocol/ids.js'
import { JsonStream, readResult } from '../../protocol/wire.js'
import { parseHeartbeatReply, parseHeartbeatRequest, type MemberInfo } from '../../protocol/messages.js'
import { ProtocolError } from '../../protocol/errors.js'

export interface MembershipDeps {
  node: Libp2p
  auth: AuthService
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

export class MembershipService {
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
      await js.write({ from: this.deps.self(), members: this.deps.table.summaries(), rttMs, ...this.crlFor(theirCrl) }, signal)
      reply = parseHeartbeatReply(await readResult(js, signal))
    } catch (err) {
      this.channels.delete(peer.peerId)
      js.abort(err as Error)
      throw err
    }
    if (reply.crl !== undefined) this.deps.auth.offerCrl(reply.crl)
    const rttMs = Math.round((performance.now() - started) * 10) / 10
    this.record(peer, reply.self, rttMs)
    this.learn(reply.members)
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
      this.learn(req.members)
      const result = { self: this.deps.self(), members: this.deps.table.summaries(), ...this.crlFor(req.from.crlNumber) }
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
    const change = this.deps.table.heard({ ...info, name: peer.name }, rttMs)
    if (change !== undefined) this.deps.log.info('peer state changed', { peer: change.peerId, name: change.name, from: change.from, to: change.to })
  }

  private learn (members: ReturnType<PeerTable['summaries']>): void {
    const fresh = members.filter(m => !this.deps.auth.isRevoked(m.peerId))
    for (const entry of this.deps.table.learn(fresh)) {
      this.deps.log.info('learned peer', { peer: entry.peerId, name: entry.name, addrs: entry.addrs })
    }
  }
}
