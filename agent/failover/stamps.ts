/**
 * The labels a protected container carries when it leaves this host — by a move or in a snapshot:
 * still protected, owned one epoch later than here (so its new host adopts it past this one's
 * claim). Read from the failover state alone, so the move and the snapshotter get them without
 * depending on the failover service.
 */
import type { FailoverState } from './state.js'
import { EPOCH_LABEL, PROTECT_LABEL } from './labels.js'

export class OwnershipStamps {
  constructor (private readonly state: Pick<FailoverState, 'peek'>) {}

  travelLabels (container: string): Record<string, string> | undefined {
    const rec = this.state.peek(container)
    if (rec?.epoch === undefined) return undefined
    return { [PROTECT_LABEL]: 'true', [EPOCH_LABEL]: String(rec.epoch + 1) }
  }
}
