/**
 * The Docker host driver: the implementation of `DockerHost` (docker-host.ts: everything the agent
 * needs of its local Docker Engine) over the Engine API with dockerode's HTTP modem
 * (`DockerodeHost`). The move, the transfer, failover and status use only this interface and the
 * shapes in types.ts; nothing above this directory sees dockerode or Engine JSON.
 *
 *   const docker = new DockerodeHost(config.docker)          // built once, in agent/main.ts
 *   const c = await docker.inspectContainer('web', signal)  // ContainerInfo with a full ContainerSpec
 *   const img = await docker.inspectImage(c.spec.image)      // diff IDs, os/arch, size
 *   for await (const e of docker.saveImage(img.id)) ...      // config, layer streams, manifest
 *   await docker.loadImage(tarStream)                        // reads the engine's answer to the end
 *   await docker.exportChanges(c.id, '/spool/top.tar')       // what the container changed, as a layer tar
 *   buildLayeredConfig(await docker.inspectImageConfig(c.spec.image), top.diffId)  // layered-config.ts
 *
 * Every request speaks the Engine API version negotiated with the engine (api-version.ts): asked
 * once on the unversioned `/version`, then the path's prefix (`/v1.41/...`); an engine that shares
 * no version with the agent fails every request with DockerApiVersionError. An engine that stops
 * answering is asked again when it is back (it may have been upgraded meanwhile).
 *
 * Errors are turned into typed errors here, by HTTP status, never by message text: 404 becomes
 * ContainerNotFoundError / ImageNotFoundError / VolumeNotFoundError (ContainerPathNotFoundError for
 * an absent path in the archive endpoints), 409 DockerConflictError, any other status
 * DockerEngineError with the engine's message, and no answer at all (no socket, refused, cut off)
 * DockerUnavailableError. An aborted `signal` throws its reason. Every method takes `signal` last.
 */
import { execFile } from 'node:child_process'
import { stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'
import type { IncomingMessage } from 'node:http'
import { Readable, addAbortSignal } from 'node:stream'
// dockerode's own transport, used directly: the agent needs only its requests, and dockerode's
// index also loads gRPC and protobuf for BuildKit sessions (~12 MiB of an idle agent's memory).
import DockerModem from 'docker-modem'
import {
  ContainerNotFoundError, ContainerPathNotFoundError, DockerConflictError, DockerEngineError, DockerLoadError,
  DockerUnavailableError, GotoError, ImageNotFoundError, NetworkNotFoundError, VolumeNotFoundError
} from '../../protocol/errors.js'
import { networkSpecOf, type EngineNetwork } from '../../protocol/fidelity.js'
import type { DockerEndpoint } from '../config.js'
import type { ContainerRow } from '../../protocol/messages.js'
import { containerInfoFromInspect, createBody, endpointConfig, networkCreateBody, userNetworksOf, type EngineContainer } from './spec.js'
import { readSavedImage } from './saved-image.js'
import { EngineStatusError, plainGet, type PlainResponse } from './plain-get.js'
import { LayerFiles } from './layer-files.js'
import { rerootArchive } from './archive-root.js'
import { fromPodmanInspect, toPodmanCreate } from './podman-inspect.js'
import { messageError, readJsonMessages } from './json-messages.js'
import { decodePathStat, exportContainerChanges, parseChanges } from './changes.js'
import { historyFromEngine, type EngineHistoryRow } from './layered-config.js'
import { imageStoreOf, productOf, type EngineProduct } from './engine-kind.js'
import { AGENT_API, negotiateApiVersion } from './api-version.js'
import { untilAborted } from '../abort.js'
import type {
  ContainerChange, ContainerInfo, ContainerSpec, ExportedChanges, ImageConfigInfo, ImageInfo, NetworkSpec, PathStat, RestartPolicy, SavedEntry
} from './types.js'

export { readSavedImage } from './saved-image.js'

import type { ByteSource, DockerHost, EngineInfo, EngineVersion, NetworkInfo } from './docker-host.js'

/** A syncfs of the data root taking longer than this is left to finish by itself. */
const FLUSH_TIMEOUT_MS = 30_000

/** The one `/version` ask that negotiates the API version: as long as any single engine call may wait. */
const VERSION_ASK_TIMEOUT_MS = 30_000

/** Statuses the modem passes as success; every other one becomes an error we map below. */
const OK_STATUSES = { 200: true, 201: true, 204: true, 304: true }

/** What a 404 of a request means. */
type NotFound = 'container' | 'image' | 'volume' | 'network' | 'none'

interface EngineRequest {
  /** For error messages: "inspect container 'web'". */
  what: string
  notFound: NotFound
  method: 'GET' | 'POST' | 'PUT' | 'DELETE' | 'HEAD'
  /** Path without query, e.g. /containers/web/json. */
  path: string
  query?: Record<string, string | number | boolean>
  body?: unknown
  /** Request body streamed from this (PUT archive, POST load). */
  file?: Readable
  /** Keep the response as a stream instead of parsing JSON. */
  stream?: boolean
  /** Ask on the path as it is, without the negotiated version's prefix (only `/version`). */
  unversioned?: boolean
}

/** What `GET /version` says, in the fields the driver reads. */
interface EngineVersionBody {
  Version: string
  ApiVersion: string
  MinAPIVersion?: string
  Os: string
  Arch: string
  Components?: unknown
}

export class DockerodeHost implements DockerHost {
  private readonly modem: DockerModem
  /** The engine's data root and storage driver as this host sees them, once asked (null: another host). */
  private storage: Promise<{ root: string, driver: string } | null> | undefined
  /** The engine's storage as files, once asked (null: not readable from here). */
  private files: LayerFiles | null | undefined
  private products: Promise<EngineProduct> | undefined
  /** The path prefix of the negotiated API version (`/v1.41`), once asked (a failed ask is not kept). */
  private apiPrefix: Promise<string> | undefined

  /** `layerFiles: false`: never read the engine's storage (layerFiles answers undefined). */
  constructor (readonly endpoint: DockerEndpoint, private readonly opts: { layerFiles?: boolean } = {}) {
    this.modem = endpoint.kind === 'unix'
      ? new DockerModem({ socketPath: endpoint.socketPath })
      : new DockerModem({ host: endpoint.host, port: endpoint.port, protocol: 'http' })
  }

  // --- engine ---------------------------------------------------------------------------------

  async version (signal?: AbortSignal): Promise<EngineVersion> {
    const v = await this.engineVersion(signal)
    return { version: v.Version, apiVersion: v.ApiVersion, os: v.Os, arch: v.Arch, product: productOf(v.Components) }
  }

  /** `GET /version` on the unversioned path, which every engine answers whatever versions it speaks. */
  private async engineVersion (signal?: AbortSignal): Promise<EngineVersionBody> {
    return await this.request<EngineVersionBody>({ what: 'version', notFound: 'none', method: 'GET', path: '/version', unversioned: true }, signal)
  }

  /**
   * The negotiated version's path prefix; see the module comment. One ask serves every caller, so
   * it runs on its own timeout, not on the signal of whichever caller came first (that caller
   * giving up must not fail the others); each caller waits on its own signal.
   */
  private async versionPrefix (signal?: AbortSignal): Promise<string> {
    const ask = this.apiPrefix ??= this.engineVersion(AbortSignal.timeout(VERSION_ASK_TIMEOUT_MS)).then(v =>
      `/v${negotiateApiVersion({ apiVersion: v.ApiVersion, minApiVersion: v.MinAPIVersion }, AGENT_API, `docker engine at ${this.endpoint.url}`)}`)
    ask.catch(() => { if (this.apiPrefix === ask) this.apiPrefix = undefined })
    return await untilAborted(ask, signal)
  }

  async info (signal?: AbortSignal): Promise<EngineInfo> {
    const i = await this.request<{
      Architecture?: string, OSType?: string, DockerRootDir?: string, Driver?: string, ServerVersion?: string,
      Name?: string, NCPU?: number, MemTotal?: number, DriverStatus?: unknown, BuildahVersion?: unknown, ExperimentalBuild?: boolean
    }>({ what: 'info', notFound: 'none', method: 'GET', path: '/info' }, signal)
    return {
      architecture: normalizeArch(i.Architecture ?? ''),
      os: i.OSType ?? '',
      dockerRootDir: i.DockerRootDir ?? '',
      storageDriver: i.Driver ?? '',
      imageStore: imageStoreOf(i.DriverStatus, i.BuildahVersion),
      serverVersion: i.ServerVersion ?? '',
      name: i.Name ?? '',
      cpus: i.NCPU ?? 0,
      memoryBytes: i.MemTotal ?? 0,
      experimental: i.ExperimentalBuild === true
    }
  }

  /**
   * The Engine API tells no free space (`system df` reports usage only), so this is a statfs of the
   * engine's DockerRootDir from `GET /info`: right when the agent runs on the engine's host (the
   * design), null for an engine reached over TCP on another host or a root we cannot see.
   */
  async freeDiskBytes (signal?: AbortSignal): Promise<number | null> {
    const local = await this.localStorage(signal)
    if (local === null || local.root === '') return null
    try {
      const s = await statfs(local.root)
      return Number(s.bavail) * Number(s.bsize)
    } catch {
      return null
    }
  }

  /**
   * `sync -f` (syncfs) on the engine's DockerRootDir, for an engine on this host. Why: after a large
   * load, the engine's next fsync (creating a container writes its config with one) waits until
   * the filesystem has written out every byte the load left in the page cache (measured: 0.35-0.6 s
   * after a 512 MiB load, against 10 ms otherwise). Flushed while the load still runs, that wait
   * overlaps the load instead of lengthening a move's downtime. Spawns coreutils' sync (Node has
   * no syncfs); false for an engine on another host, a root we cannot see, or no such command.
   */
  async flushDataRoot (signal?: AbortSignal): Promise<boolean> {
    const local = await this.localStorage(signal)
    if (local === null || local.root === '') return false
    return await new Promise<boolean>(resolve => {
      execFile('sync', ['-f', local.root], { signal, timeout: FLUSH_TIMEOUT_MS }, err => { resolve(err === null) })
    })
  }

  async layerFiles (signal?: AbortSignal): Promise<LayerFiles | undefined> {
    if (this.files === undefined) {
      const local = this.opts.layerFiles === false ? null : await this.localStorage(signal)
      this.files = local?.driver === 'overlay2' && local.root !== '' ? new LayerFiles(local.root) : null
    }
    return this.files ?? undefined
  }

  /**
   * The engine's data root and storage driver, for an engine on this host (null for one reached
   * over TCP on another host: its paths mean nothing here). Asked once: a preload flushes every
   * 250 ms, and `GET /info` is work for an engine busy loading. Were the engine restarted on another
   * root, a flush or a read of its layers would miss: a lost optimization (reads fall back to
   * `docker save`, and the receiver verifies every layer), nothing worse. A failed ask is not kept.
   */
  private async localStorage (signal?: AbortSignal): Promise<{ root: string, driver: string } | null> {
    if (this.endpoint.kind === 'tcp' && !['localhost', '127.0.0.1', '::1'].includes(this.endpoint.host)) return null
    this.storage ??= this.info(signal).then(i => ({ root: i.dockerRootDir, driver: i.storageDriver }))
    try {
      return await this.storage
    } catch (err) {
      this.storage = undefined
      throw err
    }
  }

  async listContainers (signal?: AbortSignal): Promise<ContainerRow[]> {
    const list = await this.request<Array<{ Id: string, Names?: string[], Image: string, State: string, Status: string, Labels?: Record<string, string> | null }>>(
      { what: 'list containers', notFound: 'none', method: 'GET', path: '/containers/json', query: { all: true } }, signal)
    return list.map(c => ({
      name: (c.Names?.[0] ?? c.Id.slice(0, 12)).replace(/^\//, ''),
      id: c.Id,
      image: c.Image,
      state: c.State,
      status: c.Status,
      labels: c.Labels ?? {}
    }))
  }

  // --- inspect --------------------------------------------------------------------------------

  async inspectContainer (nameOrId: string, signal?: AbortSignal): Promise<ContainerInfo> {
    const raw = await this.request<EngineContainer>({ what: `inspect container '${nameOrId}'`, notFound: 'container', method: 'GET', path: `/containers/${enc(nameOrId)}/json` }, signal)
    const c = await this.product(signal) === 'podman' ? fromPodmanInspect(raw, await this.imageEnv(String(raw.Image ?? ''), signal)) : raw
    // Each user-defined network's definition: what the fidelity table judges and the spec carries.
    const networks: Record<string, EngineNetwork> = {}
    for (const [name, id] of Object.entries(userNetworksOf(c))) {
      try {
        networks[name] = await this.request<EngineNetwork>({ what: `inspect network '${name}'`, notFound: 'network', method: 'GET', path: `/networks/${enc(id)}` }, signal)
      } catch (err) {
        // Removed since (the container is being torn down): judged as a network whose definition cannot be read.
        if (!(err instanceof NetworkNotFoundError)) throw err
      }
    }
    const info = containerInfoFromInspect(c, networks)
    // Each named volume's own labels (compose's project and volume names): the destination's volume gets them.
    for (const m of info.spec.mounts) {
      if (m.type !== 'volume') continue
      try {
        const v = await this.request<{ Labels?: Record<string, string> | null }>({ what: `inspect volume '${m.name}'`, notFound: 'volume', method: 'GET', path: `/volumes/${enc(m.name)}` }, signal)
        if (Object.keys(v.Labels ?? {}).length > 0) m.labels = { ...v.Labels }
      } catch (err) {
        // Removed since (the container is being torn down): a volume without labels.
        if (!(err instanceof VolumeNotFoundError)) throw err
      }
    }
    return info
  }

  /** The env an image gives its containers (empty for an image gone meanwhile). */
  private async imageEnv (ref: string, signal?: AbortSignal): Promise<string[]> {
    try {
      const i = await this.request<{ Config?: { Env?: string[] | null } | null }>({ what: `inspect image '${ref}'`, notFound: 'image', method: 'GET', path: `/images/${enc(ref)}/json` }, signal)
      return i.Config?.Env ?? []
    } catch (err) {
      if (err instanceof ImageNotFoundError) return []
      throw err
    }
  }

  /** Docker Engine or Podman, asked once (a failed ask is not kept). */
  private async product (signal?: AbortSignal): Promise<EngineProduct> {
    this.products ??= this.version(signal).then(v => v.product)
    try {
      return await this.products
    } catch (err) {
      this.products = undefined
      throw err
    }
  }

  async inspectImage (ref: string, signal?: AbortSignal): Promise<ImageInfo> {
    const i = await this.request<{ Id: string, RootFS?: { Layers?: string[] | null }, Os?: string, Architecture?: string, Size?: number, RepoTags?: string[] | null }>(
      { what: `inspect image '${ref}'`, notFound: 'image', method: 'GET', path: `/images/${enc(ref)}/json` }, signal)
    return {
      id: i.Id,
      diffIds: i.RootFS?.Layers ?? [],
      os: i.Os ?? '',
      architecture: normalizeArch(i.Architecture ?? ''),
      size: i.Size ?? 0,
      repoTags: i.RepoTags ?? []
    }
  }

  async imageChains (signal?: AbortSignal): Promise<string[][]> {
    // The list holds every tagged or dangling image; hidden intermediate images are prefixes of these.
    const list = await this.request<Array<{ Id: string }>>({ what: 'list images', notFound: 'none', method: 'GET', path: '/images/json' }, signal)
    const chains = new Map<string, string[]>()
    const infos = await Promise.all(list.map(async ({ Id }) => {
      try {
        return await this.inspectImage(Id, signal)
      } catch (err) {
        if (err instanceof ImageNotFoundError) return undefined // removed since the list
        throw err
      }
    }))
    for (const info of infos) if (info !== undefined) chains.set(info.diffIds.join(' '), info.diffIds)
    return [...chains.values()]
  }

  // --- lifecycle ------------------------------------------------------------------------------

  async pause (id: string, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `pause container '${id}'`, notFound: 'container', method: 'POST', path: `/containers/${enc(id)}/pause` }, signal)
  }

  async unpause (id: string, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `unpause container '${id}'`, notFound: 'container', method: 'POST', path: `/containers/${enc(id)}/unpause` }, signal)
  }

  async stop (id: string, opts: { timeoutS: number }, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `stop container '${id}'`, notFound: 'container', method: 'POST', path: `/containers/${enc(id)}/stop`, query: { t: opts.timeoutS } }, signal)
  }

  async start (id: string, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `start container '${id}'`, notFound: 'container', method: 'POST', path: `/containers/${enc(id)}/start` }, signal)
  }

  async checkpoint (id: string, name: string, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `checkpoint container '${id}'`, notFound: 'container', method: 'POST', path: `/containers/${enc(id)}/checkpoints`, body: { CheckpointID: name, Exit: true } }, signal)
  }

  async startFromCheckpoint (id: string, name: string, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `start container '${id}' from checkpoint '${name}'`, notFound: 'container', method: 'POST', path: `/containers/${enc(id)}/start`, query: { checkpoint: name } }, signal)
  }

  async setRestartPolicy (id: string, policy: RestartPolicy, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `update the restart policy of container '${id}'`, notFound: 'container', method: 'POST', path: `/containers/${enc(id)}/update`, body: { RestartPolicy: { Name: policy.name, MaximumRetryCount: policy.maximumRetryCount } } }, signal)
  }

  async removeCheckpoint (id: string, name: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.request({ what: `remove checkpoint '${name}' of container '${id}'`, notFound: 'container', method: 'DELETE', path: `/containers/${enc(id)}/checkpoints/${enc(name)}` }, signal)
    } catch (err) {
      if (!(err instanceof ContainerNotFoundError)) throw err
    }
  }

  async checkpointDirectory (id: string, name: string, signal?: AbortSignal): Promise<string | undefined> {
    const local = await this.localStorage(signal)
    if (local === null || local.root === '' || !/^[0-9a-f]{64}$/.test(id) || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name)) return undefined
    const containers = join(local.root, 'containers')
    if (!await stat(containers).then(st => st.isDirectory(), () => false)) return undefined
    return join(containers, id, 'checkpoints', name)
  }

  async remove (id: string, opts: { force: boolean, volumes: boolean }, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `remove container '${id}'`, notFound: 'container', method: 'DELETE', path: `/containers/${enc(id)}`, query: { force: opts.force, v: opts.volumes } }, signal)
  }

  async rename (id: string, name: string, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `rename container '${id}' to '${name}'`, notFound: 'container', method: 'POST', path: `/containers/${enc(id)}/rename`, query: { name } }, signal)
  }

  async removeImage (id: string, opts: { force?: boolean }, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `remove image '${id}'`, notFound: 'image', method: 'DELETE', path: `/images/${enc(id)}`, query: { force: opts.force === true } }, signal)
  }

  async tagImage (id: string, ref: string, signal?: AbortSignal): Promise<void> {
    const colon = ref.lastIndexOf(':')
    const slash = ref.lastIndexOf('/')
    const [repo, tag] = colon > slash ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest']
    await this.request({ what: `tag image '${id}' as ${ref}`, notFound: 'image', method: 'POST', path: `/images/${enc(id)}/tag`, query: { repo, tag } }, signal)
  }

  async create (spec: ContainerSpec, signal?: AbortSignal): Promise<string> {
    // The only thing create can miss is the image (404); a name in use is a 409.
    const name = spec.name.replace(/^\//, '')
    for (const a of spec.networks ?? []) await this.inspectNetwork(a.network.name, signal)
    const body = await this.product(signal) === 'podman' ? toPodmanCreate(createBody(spec)) : createBody(spec)
    const r = await this.request<{ Id: string }>({ what: `create container '${name}'`, notFound: 'image', method: 'POST', path: '/containers/create', query: { name }, body }, signal)
    // Engines before API 1.44 take one network at create: the others are connected before it starts.
    for (const a of spec.networks ?? []) {
      if (a.network.name === spec.primaryNetwork) continue
      await this.request({ what: `connect container '${name}' to network '${a.network.name}'`, notFound: 'network', method: 'POST', path: `/networks/${enc(a.network.name)}/connect`, body: { Container: r.Id, EndpointConfig: endpointConfig(a) } }, signal)
    }
    return r.Id
  }

  // --- networks -------------------------------------------------------------------------------

  async inspectNetwork (nameOrId: string, signal?: AbortSignal): Promise<NetworkInfo> {
    const n = await this.request<EngineNetwork & { Id: string, Name: string, Containers?: Record<string, unknown> | null }>(
      { what: `inspect network '${nameOrId}'`, notFound: 'network', method: 'GET', path: `/networks/${enc(nameOrId)}` }, signal)
    return { ...networkSpecOf(n.Name, n), id: n.Id, containers: Object.keys(n.Containers ?? {}).length }
  }

  async listNetworks (signal?: AbortSignal): Promise<NetworkInfo[]> {
    // The list leaves out Containers: each network is inspected for its count.
    const list = await this.request<Array<{ Id: string }>>({ what: 'list networks', notFound: 'none', method: 'GET', path: '/networks' }, signal)
    const out: NetworkInfo[] = []
    for (const { Id } of list) {
      try {
        out.push(await this.inspectNetwork(Id, signal))
      } catch (err) {
        if (!(err instanceof NetworkNotFoundError)) throw err // removed since the list
      }
    }
    return out
  }

  async createNetwork (net: NetworkSpec, signal?: AbortSignal): Promise<string> {
    const r = await this.request<{ Id: string }>({ what: `create network '${net.name}'`, notFound: 'none', method: 'POST', path: '/networks/create', body: networkCreateBody(net) }, signal)
    return r.Id
  }

  async removeNetwork (nameOrId: string, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `remove network '${nameOrId}'`, notFound: 'network', method: 'DELETE', path: `/networks/${enc(nameOrId)}` }, signal)
  }

  // --- volumes --------------------------------------------------------------------------------

  async createVolume (name: string, driver: string, labels: Record<string, string>, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `create volume '${name}'`, notFound: 'none', method: 'POST', path: '/volumes/create', body: { Name: name, Driver: driver, Labels: labels } }, signal)
  }

  async removeVolume (name: string, signal?: AbortSignal): Promise<void> {
    await this.request({ what: `remove volume '${name}'`, notFound: 'volume', method: 'DELETE', path: `/volumes/${enc(name)}` }, signal)
  }

  async volumeExists (name: string, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.request({ what: `inspect volume '${name}'`, notFound: 'volume', method: 'GET', path: `/volumes/${enc(name)}` }, signal)
      return true
    } catch (err) {
      if (err instanceof VolumeNotFoundError) return false
      throw err
    }
  }

  async readsVolumes (signal?: AbortSignal): Promise<boolean> {
    const local = await this.localStorage(signal)
    if (local === null || local.root === '') return false
    return await stat(join(local.root, 'volumes')).then(st => st.isDirectory(), () => false)
  }

  async volumeDirectory (name: string, signal?: AbortSignal): Promise<string | undefined> {
    const local = await this.localStorage(signal)
    if (local === null || local.root === '') return undefined
    const v = await this.request<{ Driver?: string, Mountpoint?: string, Options?: Record<string, string> | null }>(
      { what: `inspect volume '${name}'`, notFound: 'volume', method: 'GET', path: `/volumes/${enc(name)}` }, signal)
    if (v.Driver !== 'local' || Object.keys(v.Options ?? {}).length > 0 || typeof v.Mountpoint !== 'string') return undefined
    const root = join(local.root, 'volumes') + '/'
    if (!v.Mountpoint.startsWith(root)) return undefined
    return await stat(v.Mountpoint).then(st => st.isDirectory() ? v.Mountpoint : undefined, () => undefined)
  }

  // --- images as streams ----------------------------------------------------------------------

  async * saveImage (imageId: string, signal?: AbortSignal): AsyncGenerator<SavedEntry> {
    const what = `save image '${imageId}'`
    let res: PlainResponse
    try {
      // Not through the modem: a save is the one large download, read cheaper as HTTP/1.0 (plain-get.ts).
      res = await plainGet(this.endpoint, `${await this.versionPrefix(signal)}/images/${enc(imageId)}/get`, signal)
    } catch (err) {
      const mapped = this.mapError(what, 'image', err, signal)
      // Engine 20.10 answers 500 (not 404) for an unknown full image ID: ask the image itself.
      if (mapped instanceof DockerEngineError && !(mapped instanceof ImageNotFoundError)) await this.inspectImage(imageId, signal)
      throw mapped
    }
    // Ending this iteration early ends the body's, which closes the connection: the engine stops writing.
    yield * readSavedImage(this.bytes(res.body, what, signal))
  }

  async loadImage (tar: ByteSource, signal?: AbortSignal): Promise<string[]> {
    const what = 'load image'
    const file = toReadable(tar)
    let res: IncomingMessage
    try {
      res = await this.request<IncomingMessage>({ what, notFound: 'none', method: 'POST', path: '/images/load', query: { quiet: true }, file, stream: true }, signal)
    } catch (err) {
      file.destroy()
      if (err instanceof DockerEngineError && !(err instanceof DockerLoadError)) throw new DockerLoadError(err.message, { cause: err, status: err.status })
      throw err
    }
    const ids: string[] = []
    const refs: string[] = []
    try {
      for await (const m of readJsonMessages(this.body(res, what, signal))) {
        const error = messageError(m)
        if (error !== undefined) throw new DockerLoadError(`docker engine at ${this.endpoint.url}: ${what} failed: ${error}`)
        // The answer names what it loaded only in text: "Loaded image ID: sha256:..." for an
        // untagged image, "Loaded image: name:tag" for a tagged one.
        const text = m.stream ?? ''
        const id = /Loaded image ID: (sha256:[0-9a-f]{64})/.exec(text)
        const ref = /Loaded image: (\S+)/.exec(text)
        if (id?.[1] !== undefined) ids.push(id[1])
        else if (ref?.[1] !== undefined) refs.push(ref[1])
      }
    } catch (err) {
      if (err instanceof SyntaxError) throw new DockerLoadError(`docker engine at ${this.endpoint.url}: ${what}: unreadable answer: ${err.message}`, { cause: err })
      throw err
    } finally {
      file.destroy()
    }
    for (const ref of refs) ids.push((await this.inspectImage(ref, signal)).id)
    if (ids.length === 0) throw new DockerLoadError(`docker engine at ${this.endpoint.url}: ${what}: the engine reported no loaded image`)
    return [...new Set(ids)]
  }

  // --- files ----------------------------------------------------------------------------------

  async getArchive (id: string, path: string, signal?: AbortSignal): Promise<Readable> {
    const what = `read '${path}' of container '${id}'`
    try {
      const res = await this.request<IncomingMessage>({ what, notFound: 'container', method: 'GET', path: `/containers/${enc(id)}/archive`, query: { path }, stream: true }, signal)
      // Podman roots a paused container's archive at `/`; Docker's come through unparsed.
      return Readable.from(rerootArchive(this.body(res, what, signal), path), { objectMode: false })
    } catch (err) {
      throw await this.archiveNotFound(err, id, path, signal)
    }
  }

  async putArchive (id: string, path: string, tar: ByteSource, signal?: AbortSignal): Promise<void> {
    const what = `write '${path}' of container '${id}'`
    const file = toReadable(tar)
    try {
      await this.request({ what, notFound: 'container', method: 'PUT', path: `/containers/${enc(id)}/archive`, query: { path }, file }, signal)
    } catch (err) {
      throw await this.archiveNotFound(err, id, path, signal)
    } finally {
      file.destroy()
    }
  }

  async statPath (id: string, path: string, signal?: AbortSignal): Promise<PathStat> {
    const what = `stat '${path}' of container '${id}'`
    let res: IncomingMessage
    try {
      res = await this.request<IncomingMessage>({ what, notFound: 'container', method: 'HEAD', path: `/containers/${enc(id)}/archive`, query: { path }, stream: true }, signal)
    } catch (err) {
      throw await this.archiveNotFound(err, id, path, signal)
    }
    res.resume()
    const header = res.headers['x-docker-container-path-stat']
    if (typeof header !== 'string') throw new DockerEngineError(`docker engine at ${this.endpoint.url}: ${what}: the answer has no X-Docker-Container-Path-Stat header`)
    return decodePathStat(header)
  }

  // --- changes ----------------------------------------------------------------------------------

  async containerChanges (id: string, signal?: AbortSignal): Promise<ContainerChange[]> {
    const body = await this.request<unknown>({ what: `list changes of container '${id}'`, notFound: 'container', method: 'GET', path: `/containers/${enc(id)}/changes` }, signal)
    // docker-modem hands back raw bytes when it does not take the answer for JSON ("null\n" for a
    // container that changed nothing).
    return parseChanges(Buffer.isBuffer(body) ? JSON.parse(body.toString('utf8')) : body)
  }

  async exportChanges (id: string, out: string, signal?: AbortSignal): Promise<ExportedChanges> {
    return await exportContainerChanges(this, id, out, signal)
  }

  async inspectImageConfig (ref: string, signal?: AbortSignal): Promise<ImageConfigInfo> {
    const i = await this.request<{
      Id: string, Architecture?: string, Os?: string, Variant?: string, OsVersion?: string, Config?: Record<string, unknown> | null,
      RootFS?: { Layers?: string[] | null }, Created?: string, Author?: string
    }>({ what: `inspect image '${ref}'`, notFound: 'image', method: 'GET', path: `/images/${enc(ref)}/json` }, signal)
    const rows = await this.request<EngineHistoryRow[] | null>({ what: `history of image '${ref}'`, notFound: 'image', method: 'GET', path: `/images/${enc(i.Id)}/history` }, signal)
    const diffIds = i.RootFS?.Layers ?? []
    const created = i.Created ?? new Date(0).toISOString()
    const info: ImageConfigInfo = {
      id: i.Id,
      architecture: i.Architecture ?? '',
      os: i.Os ?? '',
      config: i.Config ?? {},
      diffIds,
      created,
      author: i.Author ?? '',
      history: historyFromEngine(rows ?? [], diffIds.length, created)
    }
    if (i.Variant !== undefined && i.Variant !== '') info.variant = i.Variant
    if (i.OsVersion !== undefined && i.OsVersion !== '') info.osVersion = i.OsVersion
    return info
  }

  /** A 404 of the archive endpoints is either the container or the path: ask which. */
  private async archiveNotFound (err: unknown, id: string, path: string, signal?: AbortSignal): Promise<unknown> {
    if (!(err instanceof ContainerNotFoundError)) return err
    try {
      await this.inspectContainer(id, signal)
    } catch (again) {
      return again
    }
    return new ContainerPathNotFoundError(`docker engine at ${this.endpoint.url}: container '${id}' has no '${path}'`, { cause: err, status: 404 })
  }

  // --- the HTTP boundary ----------------------------------------------------------------------

  private async request<T = unknown> (req: EngineRequest, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted()
    const path = req.unversioned === true ? req.path : `${await this.versionPrefix(signal)}${req.path}`
    const query = req.query === undefined ? undefined : Object.fromEntries(Object.entries(req.query).map(([k, v]) => [k, typeof v === 'boolean' ? (v ? '1' : '0') : String(v)]))
    const options: DockerModem.DialOptions = {
      path: query === undefined ? path : `${path}?`,
      method: req.method,
      statusCodes: OK_STATUSES,
      isStream: req.stream === true,
      // The modem sends `_body` as JSON (for POST) and `_query` as the query string.
      options: { _query: query ?? {}, _body: req.body ?? {} },
      abortSignal: signal
    }
    if (req.file !== undefined) {
      options.file = req.file
      options.headers = { 'Content-Type': 'application/x-tar' }
    }
    try {
      const result = await new Promise<unknown>((resolve, reject) => {
        this.modem.dial(options, (err, data) => { if (err !== null) reject(err); else resolve(data) })
      })
      if (req.stream === true && signal !== undefined) addAbortSignal(signal, result as IncomingMessage)
      return result as T
    } catch (err) {
      const mapped = this.mapError(req.what, req.notFound, err, signal)
      // No answer: the engine may come back as another version (an upgrade restarts it).
      if (mapped instanceof DockerUnavailableError) this.apiPrefix = undefined
      throw mapped
    }
  }

  /** A response body as bytes, with a failure midway turned into DockerUnavailableError. */
  private async * body (res: IncomingMessage, what: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    try {
      yield * this.bytes(res as AsyncIterable<Uint8Array>, what, signal)
    } finally {
      res.destroy()
    }
  }

  private async * bytes (source: AsyncIterable<Uint8Array>, what: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    try {
      for await (const chunk of source) yield chunk
    } catch (err) {
      throw this.mapError(`${what} (reading the answer)`, 'none', err, signal)
    }
  }

  private mapError (what: string, notFound: NotFound, err: unknown, signal?: AbortSignal): unknown {
    if (signal?.aborted === true) return signal.reason
    // A plain GET's status error is the engine's raw answer, mapped by its status below like the modem's.
    if (err instanceof GotoError && !(err instanceof EngineStatusError)) return err
    const e = err as Error & { statusCode?: unknown, json?: { message?: unknown } | null }
    const status = typeof e.statusCode === 'number' ? e.statusCode : undefined
    if (status === undefined) {
      return new DockerUnavailableError(`docker engine at ${this.endpoint.url}: ${what} failed: ${e.message}`, { cause: err })
    }
    const text = `docker engine at ${this.endpoint.url}: ${what} failed: ${engineMessage(e)}`
    const options = { cause: err, status }
    if (status === 404 && notFound === 'container') return new ContainerNotFoundError(text, options)
    if (status === 404 && notFound === 'image') return new ImageNotFoundError(text, options)
    if (status === 404 && notFound === 'volume') return new VolumeNotFoundError(text, options)
    if (status === 404 && notFound === 'network') return new NetworkNotFoundError(text, options)
    if (status === 409) return new DockerConflictError(text, options)
    return new DockerEngineError(text, options)
  }
}

/** The engine's own words from a modem error: its JSON `message`, else the text after the modem's prefix. */
function engineMessage (e: Error & { json?: { message?: unknown } | null }): string {
  if (typeof e.json?.message === 'string') return e.json.message.trim()
  return e.message.replace(/^\(HTTP code \d+\) [^-]*- /, '').trim()
}

/** Path segment: names, IDs and image references (with '/', ':' and '@') reach the engine intact. */
function enc (s: string): string {
  return encodeURIComponent(s)
}

function toReadable (source: ByteSource): Readable {
  return source instanceof Readable ? source : Readable.from(source, { objectMode: false })
}

const ARCHES: Record<string, string> = { x86_64: 'amd64', aarch64: 'arm64', armv7l: 'arm', armhf: 'arm', i386: '386', i686: '386' }

/** The engine reports uname's machine (x86_64); images and Go use GOARCH names (amd64). */
export function normalizeArch (arch: string): string {
  return ARCHES[arch] ?? arch
}
