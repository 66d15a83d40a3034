/**
 * What the source of a move or snapshot must remember if it dies while a container is frozen: one
 * file per container, `<stateDir>/frozen/<container ID>.json`, written (fsynced, renamed into place)
 * before the container is paused and moved on at each step that changes what a restart must do:
 *
 *   frozen      paused here; the destination (or holder) may have made part of a copy.
 *               After a crash: unpause here, then tell the destination to abort.
 *   committing  the destination runs the container; this host lets go of its copy.
 *               After a crash: remove the copy here (and its moved volumes), then tell the destination
 *               to commit, so it does not roll back the container it runs when the move goes idle.
 *   aborting    unpaused here; the destination still has to hear `abort`.
 *   committed   removed here; the destination still has to hear `commit`.
 *
 * The file goes once both ends agree. MoveService reads the journal when it starts and retries the
 * remote half until the destination answers or the move would have expired there by itself.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

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
}

/** A record that cannot be read: named so the operator can look at it; left in place. */
export interface UnreadableRecord { path: string, error: string }

const CONTAINER_ID = /^[0-9a-f]{64}$/

export class FreezeJournal {
  private constructor (private readonly dir: string) {}

  static async open (dir: string): Promise<FreezeJournal> {
    await mkdir(dir, { recursive: true, mode: 0o700 })
    return new FreezeJournal(dir)
  }

  /** Writes (or replaces) the record of its container; on disk before this resolves. */
  async put (record: FrozenRecord): Promise<void> {
    const path = this.path(record.containerId)
    await writeFile(`${path}.tmp`, JSON.stringify(record), { mode: 0o600, flush: true })
    await rename(`${path}.tmp`, path)
  }

  /** Moves a record to its next stage. */
  async advance (record: FrozenRecord, stage: FrozenStage): Promise<void> {
    record.stage = stage
    await this.put(record)
  }

  async remove (containerId: string): Promise<void> {
    await rm(this.path(containerId), { force: true })
  }

  async list (): Promise<{ records: FrozenRecord[], unreadable: UnreadableRecord[] }> {
    const records: FrozenRecord[] = []
    const unreadable: UnreadableRecord[] = []
    for (const file of (await readdir(this.dir)).filter(f => f.endsWith('.json')).sort()) {
      const path = join(this.dir, file)
      try {
        records.push(parseRecord(JSON.parse(await readFile(path, 'utf8')), file.slice(0, -'.json'.length)))
      } catch (err) {
        unreadable.push({ path, error: (err as Error).message })
      }
    }
    return { records, unreadable }
  }

  private path (containerId: string): string {
    if (!CONTAINER_ID.test(containerId)) throw new TypeError(`not a full container ID: ${containerId}`)
    return join(this.dir, `${containerId}.json`)
  }
}

const STAGES: readonly FrozenStage[] = ['frozen', 'committing', 'aborting', 'committed']

function parseRecord (v: unknown, id: string): FrozenRecord {
  const r = v as Partial<FrozenRecord> | null
  const ok = r !== null && typeof r === 'object' &&
    r.containerId === id &&
    typeof r.name === 'string' &&
    (r.purpose === 'move' || r.purpose === 'snapshot') &&
    typeof r.moveId === 'string' &&
    typeof r.to?.name === 'string' && typeof r.to?.peerId === 'string' &&
    STAGES.includes(r.stage as FrozenStage) &&
    Array.isArray(r.volumes) && r.volumes.every(x => typeof x === 'string') &&
    typeof r.at === 'string' && !Number.isNaN(Date.parse(r.at))
  if (!ok) throw new TypeError('not a frozen-container record')
  return r as FrozenRecord
}
