/**
 * What the agent needs of its local Docker Engine, as one small interface. The dockerode
 * implementation is `DockerodeHost` (host.ts); test/fixtures/memory-docker-host.ts is an in-memory
 * one, and test/conformance/docker-host.ts is the one suite both must pass, so the fake cannot
 * drift from a real engine. The move, the transfer, failover and status see only this interface
 * and the shapes in types.ts.
 *
 * Errors are typed (protocol/errors.ts): ContainerNotFoundError / ImageNotFoundError /
 * VolumeNotFoundError for what does not exist (ContainerPathNotFoundError for an absent path in the
 * archive methods), DockerConflictError for a state or name conflict (pause of a container that is
 * not running, a name in use, removing a running container without force), DockerLoadError for a
 * refused load, DockerEngineError for any other refusal, DockerUnavailableError for no answer at
 * all. An aborted `signal` throws its reason. Every method takes `signal` last.
 */
import type { Readable } from 'node:stream'
import type { ContainerRow } from '../../protocol/messages.js'
import type { LayerFiles } from './layer-files.js'
import type { EngineProduct, ImageStore } from './engine-kind.js'
import type {
  ContainerChange, ContainerInfo, ContainerSpec, ExportedChanges, ImageConfigInfo, ImageInfo, PathStat, RestartPolicy, SavedEntry
} from './types.js'

export interface EngineVersion {
  version: string
  apiVersion: string
  os: string
  arch: string
  /** Docker Engine or Podman (engine-kind.ts). */
  product: EngineProduct
}

export interface EngineInfo {
  /** GOARCH style: amd64, arm64, arm, 386, ... (the engine says x86_64, aarch64). */
  architecture: string
  /** 'linux' or 'windows' (the engine's OSType; an image's `os` uses the same words). */
  os: string
  /** Where the engine keeps images and volumes (its data root). */
  dockerRootDir: string
  storageDriver: string
  /** The containerd image store or the graph driver's (engine-kind.ts): it decides how a load is shaped. */
  imageStore: ImageStore
  serverVersion: string
  /** The engine host's name. */
  name: string
  cpus: number
  memoryBytes: number
  /** `dockerd --experimental`: the engine takes checkpoints (`checkpoint`), which live moves need. */
  experimental: boolean
}

/** A byte stream to send to the engine: a Readable or any async iterable of bytes. */
export type ByteSource = AsyncIterable<Uint8Array> | Readable

export interface DockerHost {
  version (signal?: AbortSignal): Promise<EngineVersion>
  info (signal?: AbortSignal): Promise<EngineInfo>
  /** Free bytes on the filesystem of the engine's data root, or null when it cannot be learned. */
  freeDiskBytes (signal?: AbortSignal): Promise<number | null>
  /**
   * Has the filesystem of the engine's data root write out what it holds unwritten (syncfs);
   * false when that cannot be done from here (an engine on another host). See the implementation.
   */
  flushDataRoot (signal?: AbortSignal): Promise<boolean>
  /**
   * The engine's layers and image configs read from its own storage (layer-files.ts), for an
   * overlay2 engine on this host; undefined otherwise (then `saveImage` is the way).
   */
  layerFiles (signal?: AbortSignal): Promise<LayerFiles | undefined>
  listContainers (signal?: AbortSignal): Promise<ContainerRow[]>

  inspectContainer (nameOrId: string, signal?: AbortSignal): Promise<ContainerInfo>
  inspectImage (ref: string, signal?: AbortSignal): Promise<ImageInfo>
  /** The diff-ID chain (base first) of every local image, without duplicates. */
  imageChains (signal?: AbortSignal): Promise<string[][]>

  pause (id: string, signal?: AbortSignal): Promise<void>
  unpause (id: string, signal?: AbortSignal): Promise<void>
  /** SIGTERM, then SIGKILL after `timeoutS`. A stopped container is not an error. */
  stop (id: string, opts: { timeoutS: number }, signal?: AbortSignal): Promise<void>
  /** A running container is not an error. */
  start (id: string, signal?: AbortSignal): Promise<void>

  /**
   * A CRIU checkpoint of the running container's processes (memory, open files, the process tree)
   * named `name`, after which the container is stopped (`docker checkpoint create`, not left
   * running). Needs an experimental engine with CRIU on its PATH (DockerEngineError otherwise).
   */
  checkpoint (id: string, name: string, signal?: AbortSignal): Promise<void>
  /** Starts a stopped (or created, never started) container from its checkpoint `name` (`docker start --checkpoint`). */
  startFromCheckpoint (id: string, name: string, signal?: AbortSignal): Promise<void>
  /**
   * Sets the container's restart policy (`docker update --restart`), running or not. A live move
   * sets `no` before its checkpoint: the engine restarts a checkpointed container of policy
   * `always` (measured on 20.10: RestartCount 1 right after `checkpoint create`), which would run
   * a fresh copy here while the destination restores the real one.
   */
  setRestartPolicy (id: string, policy: RestartPolicy, signal?: AbortSignal): Promise<void>
  /** Removes checkpoint `name` of the container; one already gone is not an error. */
  removeCheckpoint (id: string, name: string, signal?: AbortSignal): Promise<void>
  /**
   * Where the engine keeps checkpoint `name` of container `id` (`<data root>/containers/<id>/
   * checkpoints/<name>`, which may not exist yet), for an engine on this host whose data root is a
   * directory here; undefined otherwise (then no live move can read or place one).
   */
  checkpointDirectory (id: string, name: string, signal?: AbortSignal): Promise<string | undefined>
  remove (id: string, opts: { force: boolean, volumes: boolean }, signal?: AbortSignal): Promise<void>
  /** Gives the container another name (DockerConflictError when the name is taken). */
  rename (id: string, name: string, signal?: AbortSignal): Promise<void>
  removeImage (id: string, opts: { force?: boolean }, signal?: AbortSignal): Promise<void>
  /** Points the tag `ref` (repo:tag) at image `id`, taking it from any image it named (the caller checks first). */
  tagImage (id: string, ref: string, signal?: AbortSignal): Promise<void>
  /** Creates (does not start) a container with exactly `spec`; returns its ID. */
  create (spec: ContainerSpec, signal?: AbortSignal): Promise<string>

  /** Creates a volume; the engine reuses an existing volume of that name and driver. */
  createVolume (name: string, driver: string, labels: Record<string, string>, signal?: AbortSignal): Promise<void>
  removeVolume (name: string, signal?: AbortSignal): Promise<void>
  volumeExists (name: string, signal?: AbortSignal): Promise<boolean>
  /**
   * Whether this agent can read and write the engine's local-driver volumes directly (the engine
   * runs on this host and its data root's `volumes` directory is one here): what a move's volume
   * rounds need at either end. False for an engine on another host.
   */
  readsVolumes (signal?: AbortSignal): Promise<boolean>
  /**
   * The directory holding a volume's data (its Mountpoint) when it is a plain local-driver volume
   * (no mount options: not an NFS or device mount) of an engine on this host, and that directory
   * is one here; undefined otherwise. VolumeNotFoundError when there is no such volume.
   */
  volumeDirectory (name: string, signal?: AbortSignal): Promise<string | undefined>

  /**
   * Streams `docker save` of one image: the config, each layer as a stream (read or leave it before
   * asking for the next entry), then the manifest. The request starts at the first `next()`.
   */
  saveImage (imageId: string, signal?: AbortSignal): AsyncIterable<SavedEntry>
  /** `docker load` from a stream (piped, with backpressure); returns the IDs of the loaded images. */
  loadImage (tar: ByteSource, signal?: AbortSignal): Promise<string[]>
  /** A tar stream of `path` in the container (running or not). */
  getArchive (id: string, path: string, signal?: AbortSignal): Promise<Readable>
  /** Extracts a tar stream into directory `path` of the container (also a created, never started one, and into volume mount points). */
  putArchive (id: string, path: string, tar: ByteSource, signal?: AbortSignal): Promise<void>
  /** What `path` in the container is (HEAD of the archive endpoint: cheap); ContainerPathNotFoundError when absent. */
  statPath (id: string, path: string, signal?: AbortSignal): Promise<PathStat>

  /** The paths the container added, modified or deleted relative to its image (mounts excluded), as the engine lists them. */
  containerChanges (id: string, signal?: AbortSignal): Promise<ContainerChange[]>
  /**
   * Writes to the file `out` a layer tar of everything the container changed relative to its
   * image (whiteouts for deleted paths), built from the Engine API only (changes.ts); returns its
   * size and diff ID. The container should be paused or stopped, so that it holds still.
   */
  exportChanges (id: string, out: string, signal?: AbortSignal): Promise<ExportedChanges>
  /** What it takes to write a config for the image plus one more layer (layered-config.ts `buildLayeredConfig`). */
  inspectImageConfig (ref: string, signal?: AbortSignal): Promise<ImageConfigInfo>
}
