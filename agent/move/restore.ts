/**
 * Bringing a container up from received state: load the image (thin — only the layers the engine
 * lacks, from a verified layer store), create its named volumes and the container with the same
 * spec, copy the volumes' data in, start it and wait until it runs. Shared by the destination of a
 * move (the state streams in from the source) and by a failover takeover (the state is a snapshot
 * this host holds). `made` records what was created, so a failure can be undone with `undoRestore`.
 *
 *   const made: Made = { volumes: [] }
 *   try { await restoreContainer(docker, { config, diffIds, spec, store, volumes }, made, signal, timings.restoreStartTimeoutMs) }
 *   catch (err) { await undoRestore(docker, made, log); throw err }
 */
import { posix } from 'node:path'
import type { DockerHost } from '../docker/docker-host.js'
import type { ContainerSpec } from '../docker/types.js'
import type { LayerStore } from '../transfer/layer-store.js'
import type { Logger } from '../log.js'
import { loadVerified } from '../transfer/load.js'
import { layersToSend } from '../transfer/plan.js'
import { RestoreFailedError } from '../../protocol/errors.js'

/** How often its state is read meanwhile. */
const START_POLL_MS = 100

export interface RestoreInput {
  /** The image config JSON (its sha256 is the image ID). */
  config: Uint8Array
  diffIds: string[]
  spec: ContainerSpec
  /** Holds every layer the engine lacks. */
  store: Pick<LayerStore, 'open' | 'has'>
  /** Each named volume's archive (a tar of the mount point's parent entry), read in this order. */
  volumes: Array<{ name: string, destination: string, data: () => AsyncIterable<Uint8Array> }>
}

/** What a restore created here. */
export interface Made { volumes: string[], containerId?: string, imageId?: string }

/**
 * Runs the restore; on failure `made` says what to undo. Resolves with the running container's ID
 * once the engine has seen it running (for up to `startTimeoutMs`: timings.restoreStartTimeoutMs).
 */
export async function restoreContainer (docker: DockerHost, input: RestoreInput, made: Made, signal: AbortSignal, startTimeoutMs: number): Promise<string> {
  const { present } = layersToSend(input.diffIds, await docker.imageChains(signal))
  made.imageId = await loadVerified(docker, { config: input.config, diffIds: input.diffIds, present, store: input.store }, signal)
  for (const m of input.spec.mounts) {
    // A volume made before (a move's volume rounds synced its data into it) is not made again.
    if (m.type === 'volume' && !made.volumes.includes(m.name)) {
      await docker.createVolume(m.name, m.driver, {}, signal)
      made.volumes.push(m.name)
    }
  }
  const spec = { ...input.spec, image: made.imageId }
  const containerId = await docker.create(spec, signal)
  made.containerId = containerId
  for (const v of input.volumes) await docker.putArchive(containerId, posix.dirname(v.destination), v.data(), signal)
  await docker.start(containerId, signal)
  const deadline = Date.now() + startTimeoutMs
  for (;;) {
    const state = (await docker.inspectContainer(containerId, signal)).state
    if (state.running) return containerId
    if (Date.now() > deadline || state.status === 'exited' || state.status === 'dead') {
      throw new RestoreFailedError(`container '${spec.name}' did not stay running here (state ${state.status})`)
    }
    await new Promise(resolve => setTimeout(resolve, START_POLL_MS))
  }
}

/** Removes what a failed restore made (container, volumes; the image unless something uses it). */
export async function undoRestore (docker: DockerHost, made: Made & { preloaded?: string }, log: Logger): Promise<void> {
  const signal = AbortSignal.timeout(60_000)
  if (made.containerId !== undefined) await docker.remove(made.containerId, { force: true, volumes: false }, signal).catch(err => { log.error('rollback: container not removed', { error: (err as Error).message }) })
  for (const v of made.volumes) await docker.removeVolume(v, signal).catch(err => { log.error('rollback: volume not removed', { volume: v, error: (err as Error).message }) })
  for (const image of [made.imageId, made.preloaded]) {
    if (image !== undefined) await docker.removeImage(image, { force: false }, signal).catch(() => { /* used by another container or image: keep */ })
  }
}
