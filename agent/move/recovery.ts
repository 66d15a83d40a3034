/**
 * Freeze recovery: finishes what a move or snapshot left undone when it was cut short — by this agent
 * dying, or by a step whose rollback could not be completed (see freeze-journal.ts). A frozen
 * container runs again, a moved one is removed, and then its destination hears `abort` or `commit`.
 *
 * At start, before any move or snapshot can see a container, every record's local half is done
 * (telling the destination waits for the mesh); then every settleIntervalMs the journal is read
 * again and the remote halves retried, until the destination answers or the transfer would have
 * expired there by itself (2 × moveIdleTimeoutMs). Records of containers whose lock is held belong
 * to the transfer running now and are left alone; recovery takes the lock of the one it works on.
 */
import type { AuthService } from '../net/auth-service.js'
import { connectTo } from '../net/dial.js'
import type { DockerHost } from '../docker/docker-host.js'
import type { PeerTable } from '../membership/peer-table.js'
import { TransferLink } from '../transfer/link.js'
import type { Timings } from '../timings.js'
import type { Logger } from '../log.js'
import type { FreezeJournal, FrozenRecord } from './freeze-journal.js'
import type { ContainerLocks } from './locks.js'
import { letGo } from './let-go.js'
import { resumeSource } from './live.js'
import { ContainerNotFoundError, UnknownMoveError } from '../../protocol/errors.js'

export interface RecoveryDeps {
  auth: AuthService
  docker: DockerHost
  table: Pick<PeerTable, 'get'>
  journal: FreezeJournal
  locks: ContainerLocks
  timings: Pick<Timings, 'settleIntervalMs' | 'moveIdleTimeoutMs' | 'transferControlTimeoutMs'>
  /** Wall clock in ms (default Date.now): how old a record is. */
  now?: () => number
  log: Logger
}

export class FreezeRecovery {
  private timer?: NodeJS.Timeout
  private settling?: Promise<void>
  private stopping = new AbortController()
  private readonly now: () => number

  constructor (private readonly deps: RecoveryDeps) {
    this.now = deps.now ?? Date.now
  }

  async start (): Promise<void> {
    this.stopping = new AbortController()
    const { unreadable } = await this.deps.journal.list()
    for (const u of unreadable) this.deps.log.error('unreadable freeze record left in place; check that container by hand', { path: u.path, error: u.error })
    await this.settle()
    this.timer = setInterval(() => { void this.settleNow() }, this.deps.timings.settleIntervalMs)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
    this.stopping.abort()
    await this.settling
  }

  /** Runs one pass over the journal now (or joins the one running); resolves when it ends. */
  async settleNow (): Promise<void> {
    this.settling ??= this.settle().finally(() => { this.settling = undefined })
    await this.settling
  }

  private async settle (): Promise<void> {
    let records: FrozenRecord[]
    try {
      records = (await this.deps.journal.list()).records
    } catch (err) {
      this.deps.log.error('cannot read the freeze journal', { error: (err as Error).message })
      return
    }
    for (const r of records) {
      if (this.stopping.signal.aborted) return
      // A transfer running now holds the lock and owns its record; while recovery works on a
      // container, it holds the lock itself, so no move or snapshot starts on it meanwhile.
      if (!this.deps.locks.take(r.containerId)) continue
      try {
        await this.settleOne(r)
      } catch (err) {
        this.deps.log.warn('container left by an interrupted transfer not settled yet; trying again', { container: r.name, moveId: r.moveId, stage: r.stage, error: (err as Error).message })
      } finally {
        this.deps.locks.release(r.containerId)
      }
    }
  }

  private async settleOne (r: FrozenRecord): Promise<void> {
    const { docker, journal, log, timings } = this.deps
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(timings.transferControlTimeoutMs)])
    if (r.stage === 'frozen') {
      try {
        if (r.checkpoint !== undefined) {
          await resumeSource(docker, r.containerId, r.checkpoint, log.child({ container: r.name, moveId: r.moveId }), signal, r.restartPolicy)
        } else {
          const state = (await docker.inspectContainer(r.containerId, signal)).state
          if (state.paused) await docker.unpause(r.containerId, signal)
        }
        log.warn(`${r.purpose} cut short while the container was frozen: it runs here again`, { container: r.name, moveId: r.moveId, to: r.to.name })
      } catch (err) {
        if (!(err instanceof ContainerNotFoundError)) throw err
        log.warn(`${r.purpose} cut short while the container was frozen, and it is gone here`, { container: r.name, moveId: r.moveId })
      }
      await journal.update(r, { stage: 'aborting' })
    }
    if (r.stage === 'committing') {
      await letGo(docker, r, log, signal)
      log.warn('move cut short after the destination ran the container: removed here', { container: r.name, moveId: r.moveId, to: r.to.name })
      await journal.update(r, { stage: 'committed' })
    }
    const op = r.stage === 'aborting' ? 'abort' : 'commit'
    if (this.now() - Date.parse(r.at) > 2 * timings.moveIdleTimeoutMs) {
      log.warn(`gave up telling ${r.to.name} to ${op}; it has ended the ${r.purpose} by itself`, { container: r.name, moveId: r.moveId })
      await journal.remove(r.moveId)
      return
    }
    const entry = this.deps.table.get(r.to.peerId)
    if (entry?.state !== 'alive') return
    const link = new TransferLink(await connectTo(this.deps.auth, entry.peerId, entry.addrs, signal))
    try {
      await link.call({ op, moveId: r.moveId }, [], signal)
    } catch (err) {
      // It ended the transfer itself (went idle, restarted) or already heard this.
      if (!(err instanceof UnknownMoveError)) throw err
    }
    await journal.remove(r.moveId)
    log.info(`${r.to.name} told to ${op} ${r.purpose} ${r.moveId}`, { container: r.name, moveId: r.moveId })
  }
}
