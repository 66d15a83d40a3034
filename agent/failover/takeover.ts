/**
 * Takeover: running the orphans of dead owners again here. A container is an orphan when its
 * highest-epoch owner (as gossiped and shown by a verified certificate, or the last word of a dead
 * member) is dead; among the alive members that hold its newest snapshot — one sent by that owner,
 * or by the owner its certificate took the container over from — `assignRestorers` (placement.ts)
 * picks one. If it is us, we claim epoch+1 from the majority (ClaimRound) and restore the snapshot
 * (move/restore.ts: its current version, volumes kept as trees archived as they are read), stamped with the new epoch; the claim's certificate is kept with the ownership. A restore that fails keeps the claim, fenced, so that nobody else
 * restores a second copy; an operator decides (docs/operations.md).
 */
import type { DockerHost } from '../docker/docker-host.js'
import type { PeerTable } from '../membership/peer-table.js'
import { restoreContainer, undoRestore, type Made } from '../move/restore.js'
import type { Timings } from '../timings.js'
import type { Logger } from '../log.js'
import type { FailoverState } from './state.js'
import type { SnapshotStore } from './snapshot-store.js'
import type { ClaimRound, MeshView, PreviousOwner } from './consensus.js'
import type { Fencing } from './fencing.js'
import type { EpochCertificates } from './certificates.js'
import { assignRestorers, compareVersions, type Orphan, type SnapshotVersion } from './placement.js'
import { EPOCH_LABEL, PROTECT_LABEL } from './labels.js'
import type { ContainerRow } from '../../protocol/messages.js'

/** A restore (every layer and volume loaded from the held snapshot) may take this long. */
export const RESTORE_TIMEOUT_MS = 10 * 60_000

export interface TakeoverDeps {
  docker: DockerHost
  table: Pick<PeerTable, 'entries'>
  state: FailoverState
  snapshots: SnapshotStore
  claims: Pick<ClaimRound, 'claim' | 'nextEpoch'>
  certs: Pick<EpochCertificates, 'shows'>
  fencing: Pick<Fencing, 'setAside'>
  selfId: string
  selfName: string
  timings: Pick<Timings, 'fenceStopS' | 'restoreStartTimeoutMs'>
  now: () => number
  /** Containers with a snapshot, takeover, fence or unfence under way (shared with the other parts). */
  busy: Set<string>
  /** Called once a container was restored here (the service rescans the engine). */
  onRestored: (name: string) => void
  log: Logger
}

/** An owner as gossiped; `from`: the owners whose snapshots may restore it (itself, and whom its certificate took over from). */
type Owner = PreviousOwner & { name: string, from: string[] }

export class Takeover {
  constructor (private readonly deps: TakeoverDeps) {}

  /**
   * Finds the orphans of dead owners and takes over those assigned to us; `local` is the engine's
   * containers of the last scan. Resolves when the takeovers started have ended (the service does
   * not wait).
   */
  async tick (view: Pick<MeshView, 'members' | 'alive'>, local: ReadonlyMap<string, ContainerRow>): Promise<void> {
    const { table, state, selfId, selfName, snapshots, busy, certs } = this.deps
    // The highest-epoch owner of every name, as last gossiped: shown epochs, and a dead member's
    // last word (a grant needs that member dead, so an alive member's unshown epoch is ignored).
    const owners = new Map<string, Owner & { dead: boolean }>()
    const shownAlive = new Set(state.owned().map(o => o.name))
    for (const e of table.entries()) {
      if (e.state === 'dead') continue
      for (const o of e.failover?.owned ?? []) if (certs.shows(o.name, o.epoch, e.peerId, o.cert)) shownAlive.add(o.name)
    }
    for (const e of table.entries()) {
      const dead = e.state === 'dead'
      for (const o of e.failover?.owned ?? []) {
        const cur = owners.get(o.name)
        if (cur !== undefined && o.epoch <= cur.epoch) continue
        const shown = certs.shows(o.name, o.epoch, e.peerId, o.cert)
        if (!shown && (!dead || shownAlive.has(o.name))) continue
        const from = shown && o.cert !== undefined ? [e.peerId, o.cert.previousOwner] : [e.peerId]
        owners.set(o.name, { peerId: e.peerId, name: e.name, epoch: o.epoch, dead, from })
      }
    }
    for (const { name, record } of state.owned()) {
      const cur = owners.get(name)
      if (cur === undefined || record.epoch >= cur.epoch) owners.set(name, { peerId: selfId, name: selfName, epoch: record.epoch, dead: false, from: [selfId] })
    }
    const orphans: Array<Orphan & { owner: Owner, newest: SnapshotVersion }> = []
    for (const [name, owner] of owners) {
      if (!owner.dead) continue
      // Who holds its newest snapshot from its owner's line, among the members alive now (us included).
      const held: Array<{ peerId: string, v: SnapshotVersion }> = []
      const mine = newestOf(snapshots.named(name).map(h => h.manifest).filter(m => owner.from.includes(m.owner)))
      if (mine !== undefined) held.push({ peerId: selfId, v: mine })
      for (const e of view.alive) {
        const h = newestOf(e.failover?.held.filter(x => x.name === name && owner.from.includes(x.owner)) ?? [])
        if (h !== undefined) held.push({ peerId: e.peerId, v: h })
      }
      if (held.length === 0) continue
      const newest = held.reduce((a, b) => compareVersions(a.v, b.v) >= 0 ? a : b).v
      orphans.push({ name, owner, newest, holders: held.filter(h => compareVersions(h.v, newest) === 0).map(h => h.peerId) })
    }
    if (orphans.length === 0) return
    const assigned = assignRestorers(orphans)
    const work: Array<Promise<void>> = []
    for (const o of orphans) {
      if (assigned.get(o.name) !== selfId || busy.has(o.name)) continue
      busy.add(o.name)
      const localEpoch = Number(local.get(o.name)?.labels?.[EPOCH_LABEL] ?? '0')
      work.push(this.takeOver(o.name, o.owner, view, localEpoch).finally(() => { busy.delete(o.name) }))
    }
    await Promise.all(work)
  }

  private async takeOver (name: string, previous: Owner, view: Pick<MeshView, 'members' | 'alive'>, localEpoch: number): Promise<void> {
    const { docker, state, snapshots, claims, fencing, now, log } = this.deps
    const newest = newestOf(snapshots.named(name).map(h => h.manifest).filter(m => previous.from.includes(m.owner)))
    const held = newest === undefined ? undefined : snapshots.get(name, newest.owner)
    if (held === undefined) return
    const m = held.manifest
    const started = now()
    const want = Math.max(previous.epoch + 1, claims.nextEpoch(name))
    let epoch: number
    let cert
    try {
      ({ epoch, cert } = await claims.claim(name, want, previous, view))
    } catch (err) {
      log.info('takeover not granted', { container: name, from: previous.name, epoch: want, reason: (err as Error).message })
      return
    }
    log.warn('taking over container of a dead host', { container: name, from: previous.name, epoch, snapshot: `${m.epoch}.${m.seq}`, takenAt: m.takenAt })
    const signal = AbortSignal.timeout(RESTORE_TIMEOUT_MS)
    const made: Made = { volumes: [] }
    try {
      // A stopped copy of the same name here (an old owner's) is kept, under another name.
      await fencing.setAside(name, localEpoch, signal)
      const spec = { ...m.spec, labels: { ...m.spec.labels, [PROTECT_LABEL]: 'true', [EPOCH_LABEL]: String(epoch) } }
      const volumes = snapshots.volumeData(held)
      const rec = state.own(name, epoch, cert)
      rec.fenced = undefined
      await state.save()
      await restoreContainer(docker, { config: Buffer.from(m.config, 'base64'), diffIds: m.diffIds, spec, store: held.layers, volumes }, made, signal, this.deps.timings.restoreStartTimeoutMs)
      // Lost the majority while restoring: fencing found nothing to stop yet, so stop it now.
      if (rec.fenced === true) await docker.stop(name, { timeoutS: this.deps.timings.fenceStopS }, signal)
      for (const h of snapshots.named(name)) await snapshots.remove(name, h.manifest.owner)
      log.warn('container restored from its snapshot', { container: name, from: previous.name, epoch, ms: now() - started, snapshot: `${m.epoch}.${m.seq}` })
      this.deps.onRestored(name)
    } catch (err) {
      log.error('takeover failed: restore did not complete', { container: name, epoch, error: (err as Error).message })
      await undoRestore(docker, made, log)
      // We won the claim and keep it, fenced, so that nobody else restores a second copy; an
      // operator decides (docs/operations.md).
      const rec = state.container(name)
      rec.fenced = true
      await state.save()
    }
  }
}

/** The newest of `vs` (epoch, then seq), if any. */
function newestOf<T extends SnapshotVersion> (vs: readonly T[]): T | undefined {
  return vs.reduce<T | undefined>((a, b) => a === undefined || compareVersions(b, a) > 0 ? b : a, undefined)
}
