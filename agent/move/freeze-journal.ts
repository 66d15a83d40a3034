/**
 * What the source of a move or snapshot must remember if it dies while a container is frozen: one
 * record per move, `<stateDir>/frozen/<move ID>.json`, written before the container is paused and
 * moved on at each step that changes what a restart must do:
 *
 *   frozen      paused here; the destination (or holder) may have made part of a copy.
 *               After a crash: unpause here, then tell the destination to abort.
 *   committing  the destination runs the container; this host lets go of its copy.
 *               After a crash: remove the copy here (and its moved volumes), then tell the destination
 *               to commit, so it does not roll back the container it runs when the move goes idle.
 *   aborting    unpaused here; the destination still has to hear `abort`.
 *   committed   removed here; the destination still has to hear `commit`.
 *
 * A live move's record names its checkpoint (`checkpoint`): the container is then stopped, not
 * paused, and "runs here again" means restored from that checkpoint (live.ts resumeSource).
 *
 * The record goes once both ends agree. FreezeRecovery (recovery.ts) reads the journal when the
 * agent starts and retries the remote half until the destination answers or the move would have
 * expired there by itself.
 */
import { Journal } from './journal.js'
import type { RestartPolicy } from '../docker/types.js'

export type FrozenStage = 'frozen' | 'committing' | 'aborting' | 'committed'

export interface FrozenRecord {
  containerId: string
  name: string
  purpose: 'move' | 'snapshot'
  moveId: string
  /** The destination of a move, or the holder of a snapshot. */
  to: { name: string, peerId: string }
  stage: FrozenStage
  /** Named volumes that leave with a moved container (removed here once it runs there). */
  volumes: string[]
  /** ISO time the record was first written (when the container froze). */
  at: string
  /** (live move) The checkpoint the container stops with instead of a pause. */
  checkpoint?: string
  /** (live move) The restart policy it had, set to `no` for the checkpoint: given back when it runs here again. */
  restartPolicy?: RestartPolicy
}

export type FreezeJournal = Journal<FrozenRecord>

const STAGES: readonly FrozenStage[] = ['frozen', 'committing', 'aborting', 'committed']

export async function openFreezeJournal (dir: string): Promise<FreezeJournal> {
  return await Journal.open<FrozenRecord>(dir, { key: r => r.moveId, keyPattern: /^[0-9a-f]{16}$/, parse: parseFrozen })
}

function parseFrozen (v: unknown, moveId: string): FrozenRecord {
  const r = v as Partial<FrozenRecord> | null
  const ok = r !== null && typeof r === 'object' &&
    r.moveId === moveId &&
    typeof r.containerId === 'string' && /^[0-9a-f]{64}$/.test(r.containerId) &&
    typeof r.name === 'string' &&
    (r.purpose === 'move' || r.purpose === 'snapshot') &&
    typeof r.to?.name === 'string' && typeof r.to?.peerId === 'string' &&
    STAGES.includes(r.stage as FrozenStage) &&
    Array.isArray(r.volumes) && r.volumes.every(x => typeof x === 'string') &&
    typeof r.at === 'string' && !Number.isNaN(Date.parse(r.at)) &&
    (r.checkpoint === undefined || typeof r.checkpoint === 'string') &&
    (r.restartPolicy === undefined || (typeof r.restartPolicy?.name === 'string' && typeof r.restartPolicy?.maximumRetryCount === 'number'))
  if (!ok) throw new TypeError('not a frozen-container record')
  return r as FrozenRecord
}
