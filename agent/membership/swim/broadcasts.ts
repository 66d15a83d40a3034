/**
 * The queue of deltas waiting to be piggybacked (memberlist's TransmitLimitedQueue): one delta per
 * member (a newer one about the same member replaces the older), the least-sent first, each sent at
 * most retransmitLimit(N) times and then dropped.
 */
import type { Delta } from '../../../protocol/swim-messages.js'

interface Queued { delta: Delta, bytes: number, sent: number, order: number }

export class BroadcastQueue {
  private readonly items = new Map<string, Queued>()
  private order = 0

  get size (): number { return this.items.size }

  clear (): void { this.items.clear() }

  /** Queues `delta` about member `id`, replacing what was queued about it. */
  push (id: string, delta: Delta): void {
    this.items.set(id, { delta, bytes: JSON.stringify(delta).length + 1, sent: 0, order: this.order++ })
  }

  /** The deltas for one message: least-sent (then newest) first, within `maxBytes`; counts them sent. */
  take (maxBytes: number, limit: number, maxCount: number): Delta[] {
    if (this.items.size === 0) return []
    const sorted = [...this.items.entries()].sort((a, b) => a[1].sent - b[1].sent || b[1].order - a[1].order)
    const out: Delta[] = []
    let bytes = 0
    for (const [id, q] of sorted) {
      if (out.length >= maxCount) break
      if (bytes + q.bytes > maxBytes) continue
      bytes += q.bytes
      out.push(q.delta)
      if (++q.sent >= limit) this.items.delete(id)
    }
    return out
  }
}
