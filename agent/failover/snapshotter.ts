/**
 * A failover snapshot of one protected container to one replica holder: the script of a move whose
 * end is `store` instead of `restore` (agent/move/session.ts drives both), and which lets the
 * container run on here. It takes the container's lock like a move, so a snapshot and a move never
 * touch the same container at once:
 *
 *   prepare   the holder checks architecture and disk, says which layers it has and which
 *             volumes it syncs by difference (local-driver volumes whose directory we read)
 *   pre-copy  the layers it lacks stream to it (and into its engine) while the container runs;
 *             then one round of each synced volume against the holder's current version
 *   freeze    pause; the changes as one layer; the final round of each synced volume (what
 *             changed since the pre-copy round); each other named volume's data spooled whole
 *   thaw      unpause: the container ran frozen only for the export, the final round and the spooling
 *   store     the holder makes the frozen state its current version (snapshot-store.ts) for a takeover
 * The changes layer goes whole each time: it holds what the container wrote outside its volumes
 * (logs, pid files: kilobytes for a container that keeps its data in volumes, measured in
 * docs/performance.md). The volumes' hash caches are kept here between snapshots, so a round
 * hashes only files whose inode changed since the last one.
 * Any failure: the holder drops what it has of this snapshot, the container runs on here. A
 * container with a setting a takeover could not restore is not snapshotted at all (unprotectable).
 */
import type { DockerHost } from '../docker/docker-host.js'
import type { ContainerInfo } from '../docker/types.js'
import type { ContainerLocks } from '../move/locks.js'
import { TransferSession, inspectSource, type SessionDeps } from '../move/session.js'
import { HashCache } from '../sync/index.js'
import type { TravelLabels } from '../move/source.js'
import { ContainerBusyError, ContainerNotRunningError, FieldRefusedError, HostAccessRefusedError, MoveInProgressError } from '../../protocol/errors.js'
import { describeRefusals } from '../../protocol/fidelity.js'

/**
 * Why a container cannot be protected, if it cannot: a takeover restores it from its snapshot on
 * another host with no operator's order, so it must carry every setting (none the fidelity table
 * refuses, protocol/fidelity.ts) and no host-level power (no order allows one there). Checked by
 * `goto protect` before anything changes, and by every snapshot, so that nothing is dropped silently.
 */
export function unprotectable (info: Pick<ContainerInfo, 'name'> & { fidelity?: ContainerInfo['fidelity'], spec?: Pick<ContainerInfo['spec'], 'networks'> }): FieldRefusedError | HostAccessRefusedError | undefined {
  // A move carries user-defined networks (agent/move/networks.ts); a snapshot's holder does not check
  // them at prepare nor journal the networks a takeover would make, so a takeover does not yet.
  const refused = [...info.fidelity?.refused ?? [], ...(info.spec?.networks ?? []).map(a => ({ field: `NetworkSettings.Networks.${a.network.name}`, why: 'a user-defined network: a takeover does not recreate networks yet (a move does)' }))]
  if (refused.length > 0) return new FieldRefusedError(`container '${info.name}' has settings a takeover could not restore: ${describeRefusals(refused)}`)
  const powers = info.fidelity?.hostPowers ?? []
  if (powers.length > 0) return new HostAccessRefusedError(`container '${info.name}' has host-level powers, which a takeover restores with no operator's order: ${powers.join(', ')}`)
  return undefined
}

export interface SnapshotterDeps {
  docker: DockerHost
  sessions: SessionDeps
  locks: ContainerLocks
  /** This host's peer ID: the owner a holder records. */
  selfId: string
  /** Labels the snapshot's spec carries (the owner's epoch stamps, as for a move). */
  labels?: TravelLabels
}

/** Containers whose volumes' hashes are kept: more than a host protects (failover/snapshot-store.ts MAX_HELD_PER_OWNER). */
const MAX_CACHED_CONTAINERS = 128

/** What one snapshot cost: all bytes sent, those of the synced volumes' rounds, and the freeze. */
export interface SnapshotCost { bytes: number, volumeBytes: number, changesBytes: number, freezeMs: number }

export class Snapshotter {
  /** Per container ID and volume: the hashes of its files as last read (inode, size, mtime, ctime). */
  private readonly caches = new Map<string, Map<string, HashCache>>()

  constructor (private readonly deps: SnapshotterDeps) {}

  private cacheOf (containerId: string): (volume: string) => HashCache {
    let byVolume = this.caches.get(containerId)
    if (byVolume === undefined) {
      // The oldest first: a container recreated (a new ID) or no longer protected is not asked again.
      if (this.caches.size >= MAX_CACHED_CONTAINERS) this.caches.delete(this.caches.keys().next().value as string)
      this.caches.set(containerId, byVolume = new Map())
    }
    const m = byVolume
    return volume => {
      let c = m.get(volume)
      if (c === undefined) m.set(volume, c = new HashCache())
      return c
    }
  }

  async snapshot (container: string, holder: string, meta: { epoch: number, seq: number }, signal: AbortSignal): Promise<SnapshotCost> {
    const { docker, locks } = this.deps
    const info = await inspectSource(this.deps.docker, container, this.deps.sessions.selfName, signal)
    if (!info.state.running || info.state.paused) throw new ContainerNotRunningError(`container '${info.name}' is ${info.state.status}; only a running container is snapshotted`)
    const refusal = unprotectable(info)
    if (refusal !== undefined) throw refusal
    if (!locks.take(info.id)) throw new MoveInProgressError(`container '${info.name}' is being moved`)
    const session = new TransferSession(this.deps.sessions, 'snapshot', info, { hashCache: this.cacheOf(info.id) })
    const log = this.deps.sessions.log.child({ container: info.name, holder, moveId: session.moveId })
    try {
      const extra = this.deps.labels?.travelLabels(info.name)
      const spec = { ...info.spec, mounts: info.spec.mounts.filter(m => m.type !== 'bind'), labels: { ...info.spec.labels, ...extra } }
      await session.connect(holder, signal)
      await session.prepare(spec, signal)
      await session.precopy(() => {}, signal)
      const synced = session.syncedVolumes.length > 0
      let volumeBytes = synced ? (await session.volumeRound(false, signal)).bytes : 0
      log.debug('snapshot pre-copied', { volumeBytes })
      // An exec half-started when the container freezes can hang the engine (exec and unpause both
      // wait on it): put the snapshot off while one runs. This shrinks the race to milliseconds.
      const execs = (await docker.inspectContainer(info.id, signal)).state.execs
      if (execs > 0) throw new ContainerBusyError(`container '${info.name}' has ${execs} exec(s) running; snapshot put off`)
      await session.freeze(`go-to snapshot ${meta.epoch}.${meta.seq}`, signal)
      if (synced) volumeBytes += (await session.volumeRound(true, signal)).bytes
      await session.spoolVolumes(signal)
      log.debug('snapshot frozen state read', { volumeBytes })
      const freezeMs = await session.thaw(signal)
      log.debug('snapshot thawed', { freezeMs })
      await session.store({ owner: this.deps.selfId, epoch: meta.epoch, seq: meta.seq }, signal)
      return { bytes: session.bytesSent, volumeBytes, changesBytes: session.changesBytes, freezeMs }
    } catch (err) {
      await session.abort()
      throw err
    } finally {
      locks.release(info.id)
      await session.close()
    }
  }
}
