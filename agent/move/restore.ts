/**
 * Bringing a container up from received state: load the image (thin — only the layers the engine
 * lacks, from a verified layer store), create its named volumes and the container with the same
 * spec (on its user-defined networks, made here when missing: networks.ts), copy the volumes'
 * data in, start it and wait until it runs. Shared by the destination of a
 * move (the state streams in from the source) and by a failover takeover (the state is a snapshot
 * this host holds). `made` records what was created, so a failure can be undone with `undoRestore`.
 * The loaded image gets the source's image reference (spec.imageRef) when that tag is free here or
 * names it already, and the container is created from that name, so `docker ps` shows it; a tag
 * that names another image here is never moved (the container is then created from the image ID).
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
import { loadBase, loadVerified } from '../transfer/load.js'
import { layersToSend } from '../transfer/plan.js'
import { ImageNotFoundError, RestoreFailedError } from '../../protocol/errors.js'
import { ensureNetworks, undoNetworks } from './networks.js'

/** How often its state is read meanwhile. */
const START_POLL_MS = 100

export interface RestoreInput {
  /** The image config JSON (its sha256 is the image ID). */
  config: Uint8Array
  diffIds: string[]
  spec: ContainerSpec
  /** Holds every layer the engine lacks (on the containerd store: every layer, for their sizes). */
  store: Pick<LayerStore, 'open' | 'has' | 'size'>
  /** Chains this agent loaded into the engine itself for this transfer (its preload): see load.ts loadBase. */
  ownLoads?: string[][]
  /** Each named volume's archive (a tar of the mount point's parent entry), read in this order. */
  volumes: Array<{ name: string, destination: string, data: () => AsyncIterable<Uint8Array> }>
  /** How the created container starts (default `docker.start`; a live move: from its checkpoint). */
  start?: (containerId: string, signal: AbortSignal) => Promise<void>
  /** Hears the name of each network before it is created here (a move's incoming journal records it). */
  onNetwork?: (name: string) => Promise<void>
  log?: Logger
}

/** What a restore created here. */
export interface Made {
  volumes: string[]
  /** User-defined networks created for the container (removed again unless another container is on them). */
  networks?: string[]
  containerId?: string
  imageId?: string
  /** A helper container that fills volumes of a container with a read-only root (removed once done). */
  helperId?: string
}

/**
 * Runs the restore; on failure `made` says what to undo. Resolves with the running container's ID
 * once the engine has seen it running (for up to `startTimeoutMs`: timings.restoreStartTimeoutMs).
 */
export async function restoreContainer (docker: DockerHost, input: RestoreInput, made: Made, signal: AbortSignal, startTimeoutMs: number): Promise<string> {
  const base = await loadBase(docker, signal, input.ownLoads)
  const { present } = layersToSend(input.diffIds, base.chains)
  made.imageId = await loadVerified(docker, { config: input.config, diffIds: input.diffIds, present, store: input.store, imageStore: base.imageStore }, signal)
  for (const m of input.spec.mounts) {
    // A volume made before (a move's volume rounds synced its data into it) is not made again.
    if (m.type === 'volume' && !made.volumes.includes(m.name)) {
      await docker.createVolume(m.name, m.driver, m.labels ?? {}, signal)
      made.volumes.push(m.name)
    }
  }
  const onNetworks = await ensureNetworks(docker, input.spec, made, signal, input.onNetwork, input.log)
  const ref = input.spec.imageRef
  const named = ref !== undefined && await tagIfFree(docker, made.imageId, ref, signal) !== 'taken'
  const spec = { ...onNetworks, image: named ? ref : made.imageId }
  const containerId = await docker.create(spec, signal)
  made.containerId = containerId
  await putVolumes(docker, spec, containerId, input.volumes, made, signal)
  await (input.start ?? (async (id, s) => { await docker.start(id, s) }))(containerId, signal)
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

/**
 * Copies the volumes' data in. Each archive holds the mount point's entry, so it is extracted into
 * the mount point's parent — which the engine refuses in a container with a read-only root
 * filesystem. Such a container's volumes are filled through a helper container (created, never
 * started) that mounts only those volumes, removed right after.
 */
async function putVolumes (docker: DockerHost, spec: ContainerSpec, containerId: string, volumes: RestoreInput['volumes'], made: Made, signal: AbortSignal): Promise<void> {
  if (volumes.length === 0) return
  let target = containerId
  if (spec.engine?.hostConfig.ReadonlyRootfs === true) {
    const helper: ContainerSpec = {
      name: `${spec.name}-goto-fill-${containerId.slice(0, 12)}`, image: spec.image, env: [], cmd: ['true'], entrypoint: null, workingDir: '', user: '', labels: {},
      hostname: '', exposedPorts: [], portBindings: {}, restartPolicy: { name: '', maximumRetryCount: 0 }, mounts: spec.mounts.filter(m => m.type === 'volume')
    }
    target = await docker.create(helper, signal)
    made.helperId = target
  }
  for (const v of volumes) await docker.putArchive(target, posix.dirname(v.destination), v.data(), signal)
  if (made.helperId !== undefined) {
    await docker.remove(made.helperId, { force: true, volumes: false }, signal)
    made.helperId = undefined
  }
}

/** What the tag `ref` names here: nothing ('free'), the image `imageId` ('same'), or another image ('taken'). */
export async function tagState (docker: DockerHost, ref: string, imageId: string | undefined, signal: AbortSignal): Promise<'free' | 'same' | 'taken'> {
  try {
    return (await docker.inspectImage(ref, signal)).id === imageId ? 'same' : 'taken'
  } catch (err) {
    if (err instanceof ImageNotFoundError) return 'free'
    throw err
  }
}

/** Tags image `imageId` as `ref` unless that tag names another image here; says which it was. */
async function tagIfFree (docker: DockerHost, imageId: string, ref: string, signal: AbortSignal): Promise<'free' | 'same' | 'taken'> {
  const state = await tagState(docker, ref, imageId, signal)
  if (state === 'free') await docker.tagImage(imageId, ref, signal)
  return state
}

/** Removes what a failed restore made (container, volumes, networks no other container is on; the image unless something uses it). */
export async function undoRestore (docker: DockerHost, made: Made & { preloaded?: string }, log: Logger): Promise<void> {
  const signal = AbortSignal.timeout(60_000)
  for (const id of [made.helperId, made.containerId]) {
    if (id !== undefined) await docker.remove(id, { force: true, volumes: false }, signal).catch(err => { log.error('rollback: container not removed', { error: (err as Error).message }) })
  }
  for (const v of made.volumes) await docker.removeVolume(v, signal).catch(err => { log.error('rollback: volume not removed', { volume: v, error: (err as Error).message }) })
  await undoNetworks(docker, made.networks ?? [], log, signal)
  for (const image of [made.imageId, made.preloaded]) {
    if (image !== undefined) await docker.removeImage(image, { force: false }, signal).catch(() => { /* used by another container or image: keep */ })
  }
}
