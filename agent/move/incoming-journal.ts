/**
 * What the destination of a move must remember if it dies while it makes the container: one record
 * per move, `<stateDir>/incoming/<move ID>.json`, written before the engine is asked to make
 * anything for it, and moved on as the move goes:
 *
 *   loading     the moved image is being loaded (preload), or volumes synced in rounds (`volumes`
 *               lists those made here so far).
 *   restoring   the container and its volumes are being made and started.
 *               After a crash in either: remove what the move made (the source has not heard that
 *               the container runs here, so it runs it there again, and any `abort` finds nothing).
 *   restored    the container runs here, and the source was about to hear so.
 *               After a crash: keep it, and wait for the source's `commit` or `abort` as before
 *               (an idle move is rolled back after timings.moveIdleTimeoutMs, as any other).
 *
 * The record goes when the move is committed or rolled back here (DestinationService).
 */
import { Journal } from './journal.js'
import type { ContainerSpec } from '../docker/types.js'

export type IncomingStage = 'loading' | 'restoring' | 'restored'

export interface IncomingRecord {
  moveId: string
  /** The source agent. */
  from: { name: string, peerId: string }
  stage: IncomingStage
  /** The container's spec as the source sent it (its name and named volumes are what the move makes). */
  spec: ContainerSpec
  /** The image the preload loads (the source's image), once asked. */
  preloaded?: string
  /** The image the restore loads (that image plus the container's changes), once asked. */
  image?: string
  /** Layers staged for this move, dropped at commit. */
  wanted: string[]
  /** Volumes made here for volume rounds before the restore (removed, their data kept for a retry, after a crash). */
  volumes?: string[]
  /** User-defined networks the restore creates here (each recorded before it is made; removed after a crash unless a container is on it). */
  networks?: string[]
  /** ISO time the record was first written. */
  at: string
}

export type IncomingJournal = Journal<IncomingRecord>

const STAGES: readonly IncomingStage[] = ['loading', 'restoring', 'restored']
const IMAGE_ID = /^sha256:[0-9a-f]{64}$/

export async function openIncomingJournal (dir: string): Promise<IncomingJournal> {
  return await Journal.open<IncomingRecord>(dir, { key: r => r.moveId, keyPattern: /^[0-9a-f]{16}$/, parse: parseIncoming })
}

function parseIncoming (v: unknown, moveId: string): IncomingRecord {
  const r = v as Partial<IncomingRecord> | null
  const ok = r !== null && typeof r === 'object' &&
    r.moveId === moveId &&
    typeof r.from?.name === 'string' && typeof r.from?.peerId === 'string' &&
    STAGES.includes(r.stage as IncomingStage) &&
    typeof r.spec?.name === 'string' && Array.isArray(r.spec?.mounts) &&
    (r.preloaded === undefined || IMAGE_ID.test(r.preloaded)) &&
    (r.image === undefined || IMAGE_ID.test(r.image)) &&
    Array.isArray(r.wanted) && r.wanted.every(x => typeof x === 'string') &&
    (r.volumes === undefined || (Array.isArray(r.volumes) && r.volumes.every(x => typeof x === 'string'))) &&
    (r.networks === undefined || (Array.isArray(r.networks) && r.networks.every(x => typeof x === 'string'))) &&
    typeof r.at === 'string' && !Number.isNaN(Date.parse(r.at))
  if (!ok) throw new TypeError('not an incoming-move record')
  return r as IncomingRecord
}
