/**
 * The agent's view of the mesh: one entry per agent peer, keyed by peer ID. Pure data and time — no
 * I/O — so its state rules are unit-tested with a fake clock. The heartbeat service feeds it.
 *
 * A peer is `alive` while heard from within suspectAfterMs, `suspect` after that, `dead` after
 * deadAfterMs. A peer learned second-hand (peer exchange) and never heard from directly starts as
 * `suspect` with no lastSeen: it is listed but not vouched for.
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

  /** Adds peers learned second-hand; known peers only gain addresses they lacked. */
  learn (members: MemberSummary[]): PeerEntry[] {
    const added: PeerEntry[] = []
    for (const m of members) {
      if (m.peerId === this.selfPeerId) continue
      const known = this.peers.get(m.peerId)
      if (known !== undefined) {
        if (known.addrs.length === 0) known.addrs = [...m.addrs]
        continue
      }
      const entry: PeerEntry = {
        peerId: m.peerId, name: m.name, addrs: [...m.addrs], labels: {}, agentVersion: null, dockerVersion: null,
        containers: null, lastSeen: null, since: this.now(), rttMs: null, state: 'suspect', crlNumber: 0
      }
      this.peers.set(m.peerId, entry)
      added.push(entry)
    }
    return added
  }

  /** Records direct contact: a heartbeat reply (with RTT) or a heartbeat received from the peer. */
  heard (info: MemberInfo, rttMs: number | null): StateChange | undefined {
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
   * What we pass on in peer exchange: only peers we have heard from directly and not given up on,
   * so a stale or never-verified entry does not travel around the mesh forever.
   */
  summaries (): MemberSummary[] {
    return this.entries()
      .filter(p => p.lastSeen !== null && p.state !== 'dead' && p.addrs.length > 0)
      .map(p => ({ peerId: p.peerId, name: p.name, addrs: p.addrs }))
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
