/**
 * Fencing and stale copies: the rules that keep a protected container from running twice.
 *
 *   fence     with fewer than a majority of the known members (this host counted) heard within
 *             fenceAfterMs, stop every owned container (timings.ts shows why this ends before the
 *             majority may restore). With fewer than three members nothing is fenced: no majority
 *             survives a death there, so nobody takes over either.
 *   stale     a member alive now that owns one of our containers at a higher epoch, shown by a
 *             certificate this agent verified (certificates.ts): our copy is stopped and renamed
 *             `<name>.stale-e<epoch>-<time>`, and we no longer own it. A gossiped epoch without
 *             one changes nothing.
 *   unfence   back in the majority with a fenced container nobody took over: claim epoch+1 for
 *             ourselves (ClaimRound) and start it again.
 *
 * Time comes from the `now` the caller passes (the service's injected clock), so the rules are
 * unit-tested with a fake clock and a fake engine. Each call starts its engine work in the
 * background and returns a promise of it that the service does not wait for (tests do).
 */
import type { DockerHost } from '../docker/docker-host.js'
import type { PeerTable } from '../membership/peer-table.js'
import type { Timings } from '../timings.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics/sink.js'
import type { ContainerRecord, FailoverState } from './state.js'
import type { ClaimRound, MeshView } from './consensus.js'
import type { EpochCertificates } from './certificates.js'
import { failoverPossible, hasQuorum, isStale } from './placement.js'
import { ContainerNotFoundError } from '../../protocol/errors.js'

/**
 * How long stopping and renaming a stale copy, or starting an unfenced one, may take: a graceful
 * stop of fenceStopS fits well within it on a loaded engine.
 */
export const ENGINE_STEP_TIMEOUT_MS = 10_000
/** Above the graceful stop itself, the time a fencing stop may take to reach the engine and return. */
const FENCE_STOP_SLACK_MS = 10_000

export interface FencingDeps {
  docker: Pick<DockerHost, 'stop' | 'rename' | 'start'>
  table: Pick<PeerTable, 'entries' | 'verifiedMembers'>
  state: FailoverState
  claims: Pick<ClaimRound, 'claim' | 'nextEpoch'>
  /** Which gossiped epochs are shown by a verified certificate. */
  certs: Pick<EpochCertificates, 'shows'>
  selfId: string
  timings: Pick<Timings, 'fenceAfterMs' | 'fenceStopS'>
  now: () => number
  /** Containers with a snapshot, takeover, fence or unfence under way (shared with the other parts). */
  busy: Set<string>
  metrics: Pick<Metrics, 'snapshotForgotten'>
  log: Logger
}

/** What one fence call did: the containers it fenced now, and when their stops have settled. */
export interface Fenced { names: string[], settled: Promise<void> }

/** An alive peer's claim to a container: who, at which epoch. */
export interface AliveOwner { name: string, peerId: string, epoch: number }

/** The highest epoch an alive peer of `view` owns `name` at, as gossiped and shown (epoch 1 or certified). */
export function highestAliveOwner (name: string, view: Pick<MeshView, 'alive'>, certs: Pick<EpochCertificates, 'shows'>): AliveOwner | undefined {
  let best: AliveOwner | undefined
  for (const e of view.alive) {
    const o = e.failover?.owned.find(x => x.name === name)
    if (o === undefined || (best !== undefined && o.epoch <= best.epoch)) continue
    if (certs.shows(name, o.epoch, e.peerId, o.cert)) best = { name: e.name, peerId: e.peerId, epoch: o.epoch }
  }
  return best
}

/** Unshown epochs logged per (peer, container, epoch), so a repeating heartbeat logs once; past it, starts over. */
const MAX_IGNORED_LOGGED = 1024

export class Fencing {
  private startedAt = 0
  private readonly ignored = new Set<string>()

  constructor (private readonly deps: FencingDeps) {}

  /** Fencing counts from `now` (the agent's start): nobody is fenced before it could have heard a majority. */
  armAt (now: number): void {
    this.startedAt = now
  }

  /**
   * Marks every owned container fenced (persisted) and stops it, when this host has not heard a
   * majority within fenceAfterMs. The caller aborts the snapshots under way of the names returned.
   */
  fence (now: number): Fenced {
    const { table, timings, state, docker, log } = this.deps
    const none = { names: [], settled: Promise.resolve() }
    if (now - this.startedAt < timings.fenceAfterMs) return none
    const entries = table.entries()
    const heard = entries.filter(e => e.lastSeen !== null && now - e.lastSeen < timings.fenceAfterMs).length + 1
    // Verified members only: made-up peer IDs in a rogue's peer exchange must not take the majority away.
    const members = table.verifiedMembers()
    if (!failoverPossible(members) || hasQuorum(heard, members)) return none
    const names: string[] = []
    const stops: Array<Promise<void>> = []
    for (const { name, record } of state.owned()) {
      // Fencing waits for nothing: a snapshot under way is aborted by the caller (a takeover under
      // way stops the container itself once it sees the flag).
      if (record.fenced === true) continue
      record.fenced = true
      names.push(name)
      log.warn('fencing: no majority reachable, stopping protected container', { container: name, epoch: record.epoch, heard, members })
      stops.push((async () => {
        try {
          await state.save()
          await docker.stop(name, { timeoutS: timings.fenceStopS }, AbortSignal.timeout(timings.fenceStopS * 1000 + FENCE_STOP_SLACK_MS))
        } catch (err) {
          if (!(err instanceof ContainerNotFoundError)) log.error('fencing: could not stop container', { container: name, error: (err as Error).message })
        }
      })())
    }
    return { names, settled: Promise.all(stops).then(() => {}) }
  }

  /** Our copies that an alive member owns at a higher epoch: stopped, renamed, no longer ours. */
  async dropStale (view: Pick<MeshView, 'alive'>): Promise<void> {
    const { busy } = this.deps
    const work: Array<Promise<void>> = []
    for (const { name, record } of this.deps.state.owned()) {
      if (busy.has(name)) continue
      this.logUnshown(name, record.epoch, view)
      const theirs = highestAliveOwner(name, view, this.deps.certs)
      if (theirs === undefined || !isStale(record.epoch, theirs.epoch)) continue
      busy.add(name)
      work.push(this.retire(name, record, theirs).finally(() => { busy.delete(name) }))
    }
    await Promise.all(work)
  }

  /** Fenced containers nobody took over while we were cut off: reclaim them and start them again. */
  async unfence (view: Pick<MeshView, 'members' | 'alive'>): Promise<void> {
    const { busy } = this.deps
    const work: Array<Promise<void>> = []
    for (const { name, record } of this.deps.state.owned()) {
      if (record.fenced !== true || busy.has(name)) continue
      const theirs = highestAliveOwner(name, view, this.deps.certs)
      if (theirs !== undefined && theirs.epoch >= record.epoch) continue // dropStale's case
      busy.add(name)
      work.push(this.reclaim(name, record, view).finally(() => { busy.delete(name) }))
    }
    await Promise.all(work)
  }

  /** Logs (once each) the alive members gossiping a higher epoch of `name` than ours that no valid certificate shows. */
  private logUnshown (name: string, mine: number, view: Pick<MeshView, 'alive'>): void {
    for (const e of view.alive) {
      const o = e.failover?.owned.find(x => x.name === name)
      if (o === undefined || o.epoch <= mine || this.deps.certs.shows(name, o.epoch, e.peerId, o.cert)) continue
      const key = `${e.peerId} ${name} ${o.epoch}`
      if (this.ignored.has(key)) continue
      if (this.ignored.size >= MAX_IGNORED_LOGGED) this.ignored.clear()
      this.ignored.add(key)
      this.deps.log.warn('ignoring a higher epoch gossiped without a valid certificate', { container: name, epoch: mine, peer: e.name, peerEpoch: o.epoch, certified: o.cert !== undefined })
    }
  }

  /** Stops a local container of that name (if any) and renames it out of the way, keeping its data. */
  async setAside (name: string, epoch: number, signal: AbortSignal): Promise<void> {
    const { docker, timings, now } = this.deps
    try {
      await docker.stop(name, { timeoutS: timings.fenceStopS }, signal)
      await docker.rename(name, `${name}.stale-e${epoch}-${now().toString(36)}`, signal)
    } catch (err) {
      if (!(err instanceof ContainerNotFoundError)) throw err
    }
  }

  private async retire (name: string, record: ContainerRecord & { epoch: number }, theirs: AliveOwner): Promise<void> {
    const { state, metrics, log } = this.deps
    const mine = record.epoch
    try {
      await this.setAside(name, mine, AbortSignal.timeout(ENGINE_STEP_TIMEOUT_MS))
      state.release(name)
      metrics.snapshotForgotten(name)
      await state.save()
      log.warn('stale copy stopped: another member owns the container at a higher epoch', { container: name, epoch: mine, owner: theirs.name, ownerEpoch: theirs.epoch })
    } catch (err) {
      log.error('could not retire a stale copy', { container: name, error: (err as Error).message })
    }
  }

  private async reclaim (name: string, record: ContainerRecord & { epoch: number }, view: Pick<MeshView, 'members' | 'alive'>): Promise<void> {
    const { docker, state, claims, selfId, log } = this.deps
    try {
      const { epoch, cert } = await claims.claim(name, Math.max(record.epoch + 1, claims.nextEpoch(name)), { peerId: selfId, epoch: record.epoch }, view)
      state.own(name, epoch, cert)
      record.fenced = undefined
      await state.save()
      await docker.start(name, AbortSignal.timeout(ENGINE_STEP_TIMEOUT_MS))
      log.info('unfenced: majority reached again, nobody took over; container started', { container: name, epoch })
    } catch (err) {
      log.info('unfence not possible yet', { container: name, reason: (err as Error).name, error: (err as Error).message })
    }
  }
}
