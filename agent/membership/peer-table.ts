/**
 * The agent's view of the mesh: one entry per agent peer, keyed by peer ID. Pure data and time — no
 * I/O — so its state rules are unit-tested with a fake clock. The heartbeat service feeds it.
 *
 * A peer is `alive` while heard from within suspectAfterMs, `suspect` after that, `dead` after
 * deadAfterMs. A peer learned second-hand (peer exchange) and never heard from directly starts as
 * `suspect` with no lastSeen: it is listed but not vouched for.
 *
 * Only a verified member counts toward the mesh's size (`isVerifiedMember`): one heard from directly
 * (heartbeats run only on connections that passed /goto/auth) or one whose certificate a member
 * relayed and this agent verified itself. An address learned second-hand without a certificate is
 * dialled (that is how it gets verified) but a made-up peer ID in someone's peer exchange cannot
 * raise the count a majority is computed from.
 */
import type { MemberInfo, MemberSummary, PeerRow, PeerState } from '../../protocol/messages.js'
import type { Timings } from '../timings.js'

export interface PeerEntry {
  peerId: string
  name: string
  addrs: string[]
  labels: Record<string, string>
  agentVersion: string | null
  dockerVersion: string | null
  containers: number | null
  /** Epoch ms of the last direct contact, null if never. */
  lastSeen: number | null
  /** Epoch ms when the entry was made (the clock for peers never seen). */
  since: number
  rttMs: number | null
  state: PeerState
  crlNumber: number
  /** What it last said of the protected containers it owns and the snapshots it holds (kept once it dies). */
  failover?: MemberInfo['failover']
  /** Its certificate as this agent verified it (at the handshake, or relayed by a member), and its expiry. */
  cert?: MemberCert
}

/** A member's certificate (PEM) that this agent verified, and when it expires (epoch ms). */
export interface MemberCert { pem: string, notAfter: number }

/** A summary from peer exchange, with the certificate it carried if this agent verified one. */
export type LearnedMember = MemberSummary & { verified?: MemberCert }

/**
 * True for a member this agent can vouch for: heard from directly, or holding a certificate of the
 * mesh, verified here, that has not expired. Quorum and fencing count only these.
 */
export function isVerifiedMember (entry: Pick<PeerEntry, 'lastSeen' | 'cert'>, now: number): boolean {
  return entry.lastSeen !== null || (entry.cert !== undefined && entry.cert.notAfter > now)
}

export interface StateChange { peerId: string, name: string, from: PeerState, to: PeerState }

export class PeerTable {
  private readonly peers = new Map<string, PeerEntry>()

  constructor (
    private readonly selfPeerId: string,
    private readonly timings: Pick<Timings, 'suspectAfterMs' | 'deadAfterMs'>,
    private readonly now: () => number = Date.now
  ) {}

  get (peerId: string): PeerEntry | undefined { return this.peers.get(peerId) }
  entries (): PeerEntry[] { return [...this.peers.values()] }
  /** The entry of that name, preferring an alive one, then the one heard from most recently. */
  byName (name: string): PeerEntry | undefined {
    const rank = (p: PeerEntry): number => (p.state === 'alive' ? 2 : 0) + (p.lastSeen !== null ? 1 : 0)
    return this.entries()
      .filter(p => p.name === name)
      .sort((a, b) => rank(b) - rank(a) || (b.lastSeen ?? 0) - (a.lastSeen ?? 0))[0]
  }

  /**
   * Dead entries to forget: those never heard from directly (a second-hand rumour that did not pan
   * out) and those silent for longer than `forgetAfterMs`.
   */
  expired (forgetAfterMs: number): PeerEntry[] {
    const now = this.now()
    return this.entries().filter(p => p.state === 'dead' && (p.lastSeen === null || now - p.lastSeen > forgetAfterMs))
  }

  /**
   * Adds peers learned second-hand, at most `max` new ones (the caller's per-sender cap); known
   * peers only gain addresses they lacked, and a verified certificate if they had none.
   */
  learn (members: LearnedMember[], max = Infinity): PeerEntry[] {
    const added: PeerEntry[] = []
    for (const m of members) {
      if (m.peerId === this.selfPeerId) continue
      const known = this.peers.get(m.peerId)
      if (known !== undefined) {
        if (known.addrs.length === 0) known.addrs = [...m.addrs]
        if (m.verified !== undefined && (known.cert === undefined || known.cert.notAfter < m.verified.notAfter)) known.cert = m.verified
        continue
      }
      if (added.length >= max) continue
      const entry: PeerEntry = {
        peerId: m.peerId, name: m.name, addrs: [...m.addrs], labels: {}, agentVersion: null, dockerVersion: null,
        containers: null, lastSeen: null, since: this.now(), rttMs: null, state: 'suspect', crlNumber: 0,
        ...(m.verified === undefined ? {} : { cert: m.verified })
      }
      this.peers.set(m.peerId, entry)
      added.push(entry)
    }
    return added
  }

  /** Records direct contact: a heartbeat reply (with RTT) or a heartbeat received from the peer. */
  heard (info: MemberInfo, rttMs: number | null, cert?: MemberCert): StateChange | undefined {
    if (info.peerId === this.selfPeerId) return undefined
    let entry = this.peers.get(info.peerId)
    if (entry === undefined) {
      entry = { ...info, lastSeen: null, since: this.now(), rttMs: null, state: 'suspect' }
      this.peers.set(info.peerId, entry)
    }
    Object.assign(entry, {
      name: info.name,
      addrs: info.addrs.length > 0 ? info.addrs : entry.addrs,
      labels: info.labels,
      agentVersion: info.agentVersion,
      dockerVersion: info.dockerVersion,
      containers: info.containers,
      crlNumber: info.crlNumber,
      failover: info.failover,
      lastSeen: this.now()
    })
    if (cert !== undefined) entry.cert = cert
    if (rttMs !== null) entry.rttMs = rttMs
    return this.setState(entry, 'alive')
  }

  /** Re-derives every state from the clock; returns what changed. */
  tick (): StateChange[] {
    const changes: StateChange[] = []
    const now = this.now()
    for (const entry of this.peers.values()) {
      const silence = now - (entry.lastSeen ?? entry.since)
      const next: PeerState = entry.lastSeen !== null && silence < this.timings.suspectAfterMs
        ? 'alive'
        : silence < this.timings.deadAfterMs ? 'suspect' : 'dead'
      const change = this.setState(entry, next)
      if (change !== undefined) changes.push(change)
    }
    return changes
  }

  /**
   * What we pass on in peer exchange: only verified peers we have not given up on, so a stale or
   * never-verified entry does not travel around the mesh forever; at most `max` of them (those heard
   * from most recently first), each with its certificate when `withCert` asks for it.
   */
  summaries (max = Infinity, withCert: (peerId: string) => boolean = () => false): MemberSummary[] {
    const now = this.now()
    let passed = this.entries().filter(p => isVerifiedMember(p, now) && p.state !== 'dead' && p.addrs.length > 0)
    if (passed.length > max) passed = passed.sort((a, b) => (b.lastSeen ?? 0) - (a.lastSeen ?? 0)).slice(0, max)
    return passed.map(p => ({
      peerId: p.peerId, name: p.name, addrs: p.addrs,
      ...(p.cert !== undefined && withCert(p.peerId) ? { cert: p.cert.pem } : {})
    }))
  }

  /** Members this agent can vouch for (isVerifiedMember), itself included: what quorum is computed over. */
  verifiedMembers (): number {
    const now = this.now()
    return this.entries().filter(p => isVerifiedMember(p, now)).length + 1
  }

  /** Entries learned second-hand that this agent cannot vouch for (no contact, no verified certificate). */
  unverified (): PeerEntry[] {
    const now = this.now()
    return this.entries().filter(p => !isVerifiedMember(p, now))
  }

  /** Forgets a peer (e.g. its certificate was revoked). */
  remove (peerId: string): boolean {
    return this.peers.delete(peerId)
  }

  rows (): PeerRow[] {
    return this.entries().map(p => ({
      name: p.name,
      peerId: p.peerId,
      self: false,
      state: p.state,
      role: 'agent',
      addrs: p.addrs,
      labels: p.labels,
      agentVersion: p.agentVersion,
      dockerVersion: p.dockerVersion,
      containers: p.containers,
      lastSeen: p.lastSeen === null ? null : new Date(p.lastSeen).toISOString(),
      rttMs: p.rttMs
    }))
  }

  counts (): Record<PeerState, number> {
    const c: Record<PeerState, number> = { alive: 0, suspect: 0, dead: 0 }
    for (const p of this.peers.values()) c[p.state]++
    return c
  }

  private setState (entry: PeerEntry, to: PeerState): StateChange | undefined {
    if (entry.state === to) return undefined
    const change = { peerId: entry.peerId, name: entry.name, from: entry.state, to }
    entry.state = to
    return change
  }
}
