/**
 * What kind of engine the agent drives, from what the engine says of itself: its product (Docker
 * Engine or Podman: Podman's `/version` lists a "Podman Engine" component), its version, and its
 * image store — the classic graph driver store (overlay2 and its layer store under
 * `<data-root>/image/<driver>`) or the containerd image store (`features.containerd-snapshotter`;
 * `/info` then says `Driver: overlayfs` with `DriverStatus` `[["driver-type",
 * "io.containerd.snapshotter.v1"]]`). The store decides how a load must be shaped and how a loaded
 * image is known (agent/transfer/load.ts): the containerd store takes no thin tarball and names
 * an image by its manifest digest, not its config digest. Podman keeps images in its own
 * containers/storage (`/info` has a `BuildahVersion`, which no Docker Engine sends): its load
 * takes no thin tarball either (`docker-archive: Some layer tarfiles are missing in the tarball`)
 * but names the image by its config digest, as a graph driver does.
 *
 *   describeEngine(await docker.version(), await docker.info())   // 'docker 28.5.2 containerd-store'
 */

/**
 * Where an engine keeps images: its graph driver's layer store, containerd's content store and
 * snapshotter, or Podman's containers/storage.
 */
export type ImageStore = 'graphdriver' | 'containerd' | 'containers-storage'
export type EngineProduct = 'docker' | 'podman'

/** The DriverStatus entry by which a containerd-store engine names its snapshotter. */
const SNAPSHOTTER_DRIVER_TYPE = 'io.containerd.snapshotter.v1'

/** The image store an engine's `/info` describes (`buildahVersion`: its BuildahVersion, which only Podman sends). */
export function imageStoreOf (driverStatus: unknown, buildahVersion?: unknown): ImageStore {
  if (typeof buildahVersion === 'string') return 'containers-storage'
  if (!Array.isArray(driverStatus)) return 'graphdriver'
  const containerd = driverStatus.some(e => Array.isArray(e) && e[0] === 'driver-type' && e[1] === SNAPSHOTTER_DRIVER_TYPE)
  return containerd ? 'containerd' : 'graphdriver'
}

/** The product an engine's `/version` `Components` names. */
export function productOf (components: unknown): EngineProduct {
  if (!Array.isArray(components)) return 'docker'
  const podman = components.some(c => typeof c === 'object' && c !== null && typeof (c as { Name?: unknown }).Name === 'string' &&
    /^podman/i.test((c as { Name: string }).Name))
  return podman ? 'podman' : 'docker'
}

/**
 * One line for operators: product, version and store — `docker 20.10.24+dfsg1 overlay2`,
 * `docker 28.5.2+dfsg4 containerd-store`, `podman 4.3.1` (Podman has one store of its own).
 * At most 64 characters (what the member info carries).
 */
export function describeEngine (v: { product: EngineProduct, version: string }, i: { imageStore: ImageStore, storageDriver: string }): string {
  const store = v.product === 'podman' ? '' : i.imageStore === 'containerd' ? ' containerd-store' : i.storageDriver === '' ? '' : ` ${i.storageDriver}`
  const line = `${v.product} ${v.version}${store}`
  return line.length <= 64 ? line : line.slice(0, 64)
}
