/**
 * How a host that accepts no inbound connections (`--no-inbound`: a VM behind a laptop's NAT) stays
 * reachable: it holds circuit relay v2 reservations on up to MAX_RELAYS reachable members and
 * announces `<relay address>/p2p/<relay>/p2p-circuit` addresses through our peer exchange, so any
 * member (and the operator CLI) can dial it through one of them. The relays are ordinary agents
 * found in the peer table: alive, with a direct (not relayed) address. A reservation lost with its
 * relay's connection is replaced on the next check by another alive member.
 *
 * Noise runs end to end over the relayed stream and the connection then passes /goto/auth like any
 * other; the relay sees only ciphertext (test/integration/relay.test.ts checks that).
 */
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from 'libp2p'
import type { RelayListener } from '../../protocol/node.js'
import { circuitRelayOf } from '../../protocol/multiaddr.js'
import { GotoError } from '../../protocol/errors.js'
import type { PeerTable, PeerEntry } from '../membership/peer-table.js'
import type { Logger } from '../log.js'

/**
 * Reservations a NAT'd host keeps: enough that one or two relays going down leave it reachable
 * while the next check finds another; each is one more address in every heartbeat and exchange.
 */
export const MAX_RELAYS = 3

/**
 * A reservation that has not completed in this time counts as failed (the library times out its
 * own steps after 5 s each; this bounds a listen() that never settles).
 */
const RESERVE_TIMEOUT_MS = 15_000

export interface RelayReservationsDeps {
  node: Libp2p<{ relayListener?: RelayListener }>
  table: PeerTable
  /** How often to check the reservations (and retry a relay that refused), in ms. */
  checkMs: number
  log: Logger
}

export function isCircuit (addr: string): boolean {
  return addr.includes('/p2p-circuit')
}

export class RelayReservations {
  private timer: NodeJS.Timeout | undefined
  private readonly pending = new Set<string>()
  private readonly lastAttempt = new Map<string, number>()

  constructor (private readonly deps: RelayReservationsDeps) {}

  async start (): Promise<void> {
    if (this.deps.node.services.relayListener === undefined) throw new GotoError('the libp2p node was built without relay support')
    this.timer = setInterval(() => { this.check() }, this.deps.checkMs)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
  }

  /** Peer IDs of the relays we hold a reservation on (libp2p lists their circuit addresses as ours). */
  relays (): Set<string> {
    const held = new Set<string>()
    for (const ma of this.deps.node.getMultiaddrs()) {
      const relay = circuitRelayOf(ma)
      if (relay !== undefined) held.add(relay)
    }
    return held
  }

  /**
   * What we announce: every direct address of every relay we hold a reservation on, as
   * `<addr>/p2p/<relay>/p2p-circuit` (peers append `/p2p/<us>` when they dial).
   */
  circuitAddrs (): string[] {
    const out: string[] = []
    for (const relay of [...this.relays()].sort()) {
      const entry = this.deps.table.get(relay)
      for (const a of entry?.addrs ?? []) if (!isCircuit(a)) out.push(`${a}/p2p/${relay}/p2p-circuit`)
    }
    return out
  }

  /**
   * Reserves on alive reachable members until we hold MAX_RELAYS (or there are no more), one at a
   * time: the library's reservation store drops its queued reservation jobs (their listen() never
   * settles) whenever one completes and it needs no more *discovered* relays, which is always our
   * case, so concurrent reservations on chosen relays would hang.
   */
  private check (): void {
    if (this.pending.size > 0) return
    const held = this.relays()
    const now = Date.now()
    const candidates = this.deps.table.entries()
      .filter(e => e.state === 'alive' && !held.has(e.peerId) && !this.pending.has(e.peerId) && e.addrs.some(a => !isCircuit(a)))
      .filter(e => now - (this.lastAttempt.get(e.peerId) ?? 0) >= this.deps.checkMs)
      .sort((a, b) => (a.rttMs ?? Infinity) - (b.rttMs ?? Infinity))
    if (held.size < MAX_RELAYS && candidates.length > 0) void this.reserve(candidates[0])
  }

  private async reserve (entry: PeerEntry): Promise<void> {
    const direct = entry.addrs.find(a => !isCircuit(a))
    if (direct === undefined) return
    const addr: Multiaddr = multiaddr(`${direct}/p2p/${entry.peerId}/p2p-circuit`)
    this.pending.add(entry.peerId)
    this.lastAttempt.set(entry.peerId, Date.now())
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        this.deps.node.services.relayListener?.listen(addr),
        new Promise((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`no reservation within ${RESERVE_TIMEOUT_MS} ms`)) }, RESERVE_TIMEOUT_MS) })
      ])
      this.deps.log.info('relay reservation made', { relay: entry.name, peer: entry.peerId, addr: addr.toString() })
    } catch (err) {
      this.deps.log.warn('relay reservation failed', { relay: entry.name, peer: entry.peerId, error: (err as Error).message })
    } finally {
      clearTimeout(timer)
      this.pending.delete(entry.peerId)
    }
  }
}
