/**
 * A replica holder's snapshots: for each owner (a peer ID) and each protected container of it, the
 * newest complete version that owner sent, and what the next snapshot is compared against, under
 * `<stateDir>/snapshots/`:
 *
 *   snapshots/<owner>.<name>/CURRENT                 {"version":"v-<id>"}: the current version (the pointer)
 *   snapshots/<owner>.<name>/v-<id>/manifest.json    owner, epoch, seq, image config, diff IDs, spec, volumes, trees
 *   snapshots/<owner>.<name>/v-<id>/layers/          a LayerStore: the container's changes as a layer tar, and
 *                                                    each volume sent as an archive, each named by its sha256, verified
 *   snapshots/<owner>.<name>/v-<id>/volumes/<vol>/   each volume synced by difference: its tree as it was frozen
 *
 * Incremental versions. A volume the owner can read as a directory is synced as a tree (agent/sync)
 * into `.incoming/<id>/volumes/<vol>` with the current version's tree of that volume as the base:
 * unchanged files are hard-linked from it (no data copied, nothing of the old version written), and
 * within changed files only the blocks found nowhere in it travel; each block is verified against
 * the owner's hashes. The changes layer and the other volumes arrive whole (`receive`). The new
 * version becomes current only when every part is in and verified: the incoming directory is
 * renamed to `v-<id>`, the filesystem is synced, then CURRENT is replaced by an fsync'd rename and
 * the directory fsync'd; then the old version is removed. A crash at any point leaves CURRENT on a
 * whole version; `open` removes every other version and what was incoming. Disk use: one version,
 * plus the files that changed since (a changed file is built anew beside the old one: hard links
 * share whole files only), plus one version's worth during a snapshot that has no base.
 *
 * (Layouts before versions, `snapshots/<owner>.<name>/manifest.json` and `snapshots/<name>/`, are
 * read in place as the current version, by their manifest's owner; the next version replaces them.)
 * An owner's store never touches another owner's snapshot of the same name, so a member cannot
 * substitute its own for another's: a store of a name held here for another owner that still owns
 * it is refused (SnapshotOwnerMismatchError) unless an epoch certificate shows the store's owner
 * took it over — and then the other owners' older snapshots of that name are dropped. At most
 * MAX_HELD_PER_OWNER containers are held (or incoming) per owner. A version replaces the held one
 * only if it is newer (epoch, then seq). One store (one agent) per directory.
 *
 *   const snaps = await SnapshotStore.open(join(stateDir, 'snapshots'))
 *   const t = await snaps.volumeTree(owner, 'web', moveId, 'webdata')   // a `volume` round syncs into t.dir against t.base
 *   await snaps.receive(header, ownerName, nextBlob, signal)            // from a StoreRequest on /goto/transfer
 *   const held = snaps.get('web', owner)                                 // manifest; snaps.volumeData(held) for restoreContainer
 */
import { mkdir, open, readFile, readdir, rename, rm, stat, statfs, writeFile } from 'node:fs/promises'
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { join, posix } from 'node:path'
import { promisify } from 'node:util'
import { LayerStore } from '../transfer/layer-store.js'
import { HashCache } from '../sync/index.js'
import { compareVersions } from './placement.js'
import type { StoreRequest } from '../../protocol/move-messages.js'
import { SnapshotIncompleteError, SnapshotLimitError, SnapshotOutdatedError, SnapshotOwnerMismatchError, TransferError } from '../../protocol/errors.js'

const execFileP = promisify(execFile)

const INCOMING = '.incoming'
const MANIFEST = 'manifest.json'
const CURRENT = 'CURRENT'
const VERSION = /^v-[0-9a-f]{16}$/
const TRANSFER_ID = /^[0-9a-f]{16}$/
/** Containers held (or incoming) for one owner: a member protects far fewer; bounds what one member can make us keep. */
export const MAX_HELD_PER_OWNER = 64
/** Bytes of a failed `tar` run's messages kept for its error. */
const TAR_STDERR_BYTES = 4096

/** What the store asks the failover service (certificates.ts, the peer table) about ownership. */
export interface SnapshotOwnership {
  /** Whether a verified certificate shows `owner` owns container `name` at `epoch` (above 1). */
  shown: (name: string, owner: string, epoch: number) => boolean
  /** The live members (peer IDs) that gossip owning container `name` now. */
  owners: (name: string) => string[]
}

/** The key of a held snapshot: its owner, then its container. */
function key (owner: string, name: string): string {
  return `${owner}\0${name}`
}

/**
 * What a held snapshot says of itself (its manifest.json): what the owner's `store` request said
 * (owner = its peer ID, epoch, seq, takenAt, the image config as base64, diff IDs, spec, the changes
 * layer `top`, the volumes' archives in layers/ and the synced volumes' trees in volumes/), plus the
 * container's name and the owner's name.
 */
export type SnapshotManifest = Omit<StoreRequest, 'op' | 'moveId' | 'synced' | 'encoding'> & {
  name: string
  ownerName: string
  /** Volumes kept as trees in the version's volumes/ (absent: none, a version before trees). */
  trees?: Array<{ name: string, destination: string }>
}

export interface HeldSnapshot {
  manifest: SnapshotManifest
  layers: LayerStore
  /** The version's directory (its volumes/ holds the trees). */
  dir: string
}

/** A volume's data as restoreContainer takes it: a tar of the mount point's entry. */
export interface VolumeData { name: string, destination: string, data: () => AsyncIterable<Uint8Array> }

/** A container name as a directory name: Docker's own name rule, so it cannot climb out. */
function dirName (name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$/.test(name)) throw new TransferError(`'${name.slice(0, 80)}' is not a container name`)
  return name
}

/** A volume name as a directory name: Docker's volume name rule (no '/', no leading '.'). */
function volumeDir (name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$/.test(name)) throw new TransferError(`'${name.slice(0, 80)}' is not a volume name`)
  return name
}

/** An owner's peer ID in a directory name: base58 or base32 characters only. */
function ownerDir (owner: string, name: string): string {
  if (!/^[A-Za-z0-9]{1,128}$/.test(owner)) throw new TransferError(`'${owner.slice(0, 80)}' is not a peer ID`)
  return `${owner}.${dirName(name)}`
}

/** Writes `data` to `path` by a temp file, fsync and rename, then fsyncs the directory. */
async function replaceDurably (dir: string, file: string, data: string): Promise<void> {
  const tmp = join(dir, `.${file}.tmp`)
  await writeFile(tmp, data, { mode: 0o600, flush: true })
  await rename(tmp, join(dir, file))
  const d = await open(dir, 'r')
  try { await d.sync() } finally { await d.close() }
}

/** A held container's directory: its current version (by CURRENT, or a layout before versions, read in place). */
async function readHeld (dir: string): Promise<{ version: string, manifest: SnapshotManifest } | undefined> {
  let version = '.'
  try {
    const v = (JSON.parse(await readFile(join(dir, CURRENT), 'utf8')) as { version?: unknown }).version
    if (typeof v !== 'string' || !VERSION.test(v)) return undefined
    version = v
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return undefined
  }
  try {
    return { version, manifest: JSON.parse(await readFile(join(dir, version, MANIFEST), 'utf8')) as SnapshotManifest }
  } catch {
    return undefined
  }
}

interface Held extends HeldSnapshot { container: string, version: string }
interface Incoming { owner: string, name: string, dir: string, trees: Set<string> }

/**
 * The image layers a version keeps besides the container's changes: on a holder whose engine loads
 * no layer it already holds (the containerd image store, Podman), a takeover restores the image from
 * the version itself, so the destination hands over the layers it staged for the snapshot.
 */
export interface ImageLayers {
  store: Pick<LayerStore, 'has' | 'open'>
  diffIds: readonly string[]
}

export class SnapshotStore {
  private readonly held = new Map<string, Held>()
  /** Transfers assembling a version now, by transfer ID. */
  private readonly incoming = new Map<string, Incoming>()
  /** Per owner, container and volume: hashes of the held trees' files, kept between snapshots (by inode). */
  private readonly caches = new Map<string, HashCache>()
  private ownership: SnapshotOwnership = { shown: () => false, owners: () => [] }

  private constructor (readonly dir: string) {}

  /** How the store learns who owns a container (the failover service's table and certificates). */
  setOwnership (o: SnapshotOwnership): void {
    this.ownership = o
  }

  static async open (dir: string): Promise<SnapshotStore> {
    await mkdir(dir, { recursive: true, mode: 0o700 })
    await rm(join(dir, INCOMING), { recursive: true, force: true })
    await mkdir(join(dir, INCOMING), { mode: 0o700 })
    const store = new SnapshotStore(dir)
    for (const entry of await readdir(dir)) {
      if (entry.startsWith('.')) {
        if (entry !== INCOMING) await rm(join(dir, entry), { recursive: true, force: true }) // a replaced one a crash left
        continue
      }
      const held = await readHeld(join(dir, entry))
      if (held === undefined) {
        await rm(join(dir, entry), { recursive: true, force: true }) // never completed: not a snapshot
        continue
      }
      // Versions other than the current one: a crash before or after CURRENT moved.
      for (const n of await readdir(join(dir, entry))) {
        const other = held.version === '.' ? VERSION.test(n) : n !== CURRENT && n !== held.version
        if (other) await rm(join(dir, entry, n), { recursive: true, force: true })
      }
      const versionDir = join(dir, entry, held.version)
      const m = held.manifest
      store.held.set(key(m.owner, m.name), { manifest: m, container: entry, version: held.version, dir: versionDir, layers: await LayerStore.open(join(versionDir, 'layers')) })
    }
    return store
  }

  /** The snapshot of `name` held for `owner`. */
  get (name: string, owner: string): HeldSnapshot | undefined { return this.held.get(key(owner, name)) }
  /** Every held snapshot of `name`, of any owner. */
  named (name: string): HeldSnapshot[] { return [...this.held.values()].filter(h => h.manifest.name === name) }
  list (): SnapshotManifest[] { return [...this.held.values()].map(h => h.manifest) }

  /** SnapshotOutdatedError unless (epoch, seq) is newer than the snapshot of `name` held for `owner`. */
  checkNewer (name: string, owner: string, epoch: number, seq: number): void {
    const cur = this.held.get(key(owner, name))?.manifest
    if (cur !== undefined && compareVersions({ epoch, seq }, cur) <= 0) {
      throw new SnapshotOutdatedError(`snapshot ${epoch}.${seq} of '${name}' is not newer than the held ${cur.epoch}.${cur.seq}`)
    }
  }

  /**
   * SnapshotOwnerMismatchError if a snapshot of `name` is held here for another owner that still
   * owns it (a live member gossiping it), unless a verified certificate shows `owner` took it over
   * at `epoch`. (A store never replaces another owner's snapshot anyway: this refuses the attempt.)
   */
  private checkOwner (name: string, owner: string, epoch: number): void {
    const others = this.named(name).map(h => h.manifest.owner).filter(o => o !== owner)
    if (others.length === 0) return
    const live = new Set(this.ownership.owners(name))
    const holder = others.find(o => live.has(o))
    if (holder === undefined || (epoch > 1 && this.ownership.shown(name, owner, epoch))) return
    throw new SnapshotOwnerMismatchError(`a snapshot of '${name}' is held here for its owner ${holder}, and no epoch certificate shows ${owner} took it over at epoch ${epoch}`)
  }

  /** SnapshotLimitError if `owner` would hold (or assemble) more than MAX_HELD_PER_OWNER containers here. */
  private checkRoom (name: string, owner: string): void {
    if (this.held.has(key(owner, name))) return
    const names = new Set([...this.held.values()].filter(h => h.manifest.owner === owner).map(h => h.manifest.name))
    for (const i of this.incoming.values()) if (i.owner === owner) names.add(i.name)
    names.delete(name)
    if (names.size >= MAX_HELD_PER_OWNER) throw new SnapshotLimitError(`${owner} already has ${names.size} snapshots held here (at most ${MAX_HELD_PER_OWNER})`)
  }

  /** The incoming directory of transfer `moveId` for `owner`'s `name` (made on first use). */
  private async incomingOf (owner: string, name: string, moveId: string): Promise<Incoming> {
    if (!TRANSFER_ID.test(moveId)) throw new TransferError(`'${moveId.slice(0, 40)}' is not a transfer ID`)
    const cur = this.incoming.get(moveId)
    if (cur !== undefined) {
      if (cur.owner !== owner || cur.name !== name) throw new TransferError(`transfer ${moveId} assembles another snapshot`)
      return cur
    }
    ownerDir(owner, name)
    this.checkRoom(name, owner)
    // The owner takes one snapshot of a container at a time: an older assembly of it is dead.
    for (const [id, i] of this.incoming) if (i.owner === owner && i.name === name) await this.dropIncoming(id)
    const inc: Incoming = { owner, name, dir: join(this.dir, INCOMING, moveId), trees: new Set() }
    await mkdir(join(inc.dir, 'volumes'), { recursive: true, mode: 0o700 })
    this.incoming.set(moveId, inc)
    return inc
  }

  /**
   * Where a `volume` round of transfer `moveId` syncs `owner`'s volume `volume` of container
   * `name`: `dir`, in the version being assembled, against `base`, the current version's tree of
   * that volume (absent: none held, so everything travels), with the hashes kept of that tree.
   */
  async volumeTree (owner: string, name: string, moveId: string, volume: string): Promise<{ dir: string, base?: string, cache: HashCache }> {
    const vol = volumeDir(volume)
    const inc = await this.incomingOf(owner, dirName(name), moveId)
    const dir = join(inc.dir, 'volumes', vol)
    inc.trees.add(vol)
    const cacheKey = `${key(owner, name)}\0${vol}`
    let cache = this.caches.get(cacheKey)
    if (cache === undefined) this.caches.set(cacheKey, cache = new HashCache())
    // A later round of the same transfer syncs against its own previous round (the default base).
    if (await stat(dir).then(() => true, () => false)) return { dir, cache }
    const h = this.held.get(key(owner, name))
    const base = h?.manifest.trees?.some(t => t.name === vol) === true ? join(h.dir, 'volumes', vol) : undefined
    return { dir, cache, ...base === undefined ? {} : { base } }
  }

  /** Bytes free to unprivileged writers on the store's filesystem (what a volume round may add at most). */
  async freeBytes (): Promise<number | undefined> {
    return await statfs(this.dir).then(s => s.bavail * s.bsize, () => undefined)
  }

  /** Drops what transfer `moveId` assembled (it was rolled back or expired); the current version is untouched. */
  async dropIncoming (moveId: string): Promise<void> {
    const inc = this.incoming.get(moveId)
    if (inc === undefined) return
    this.incoming.delete(moveId)
    await rm(inc.dir, { recursive: true, force: true }).catch(() => {})
  }

  /**
   * Receives one snapshot: the changes layer, then each volume archive, each pulled from `blob(size)`
   * in that order and verified; the trees of `req.synced` must have been synced by this transfer
   * (volumeTree; the caller checks that each had its final round). Every volume of the spec must be
   * in exactly one of the two. Then the version becomes current for its owner. Nothing held changes on failure.
   */
  async receive (req: StoreRequest, ownerName: string, blob: (size: number) => AsyncIterable<Uint8Array>, signal: AbortSignal, image?: ImageLayers): Promise<{ bytes: number }> {
    const name = dirName(req.spec.name)
    const container = ownerDir(req.owner, name)
    this.checkNewer(name, req.owner, req.epoch, req.seq)
    this.checkOwner(name, req.owner, req.epoch)
    this.checkRoom(name, req.owner)
    const trees = req.synced ?? []
    checkParts(req)
    const inc = trees.length > 0 ? this.incoming.get(req.moveId) : await this.incomingOf(req.owner, name, req.moveId)
    if (inc === undefined || inc.owner !== req.owner || inc.name !== name) throw new SnapshotIncompleteError(`snapshot ${req.moveId} of '${name}' names synced volumes, and none were synced here`)
    try {
      for (const t of trees) {
        if (!inc.trees.has(volumeDir(t.name)) || !(await stat(join(inc.dir, 'volumes', t.name)).then(s => s.isDirectory(), () => false))) {
          throw new SnapshotIncompleteError(`volume ${t.name} of snapshot ${req.moveId} was not synced here`)
        }
      }
      const layers = await LayerStore.open(join(inc.dir, 'layers'))
      let bytes = (await layers.receive(req.top.diffId, req.top.size, blob(req.top.size), signal)).bytes
      for (const v of req.volumes) bytes += (await layers.receive(v.digest, v.size, blob(v.size), signal)).bytes
      // The image's own layers, for an engine that loads none it holds from elsewhere (copied from
      // this host's staging store and verified again; not counted as received).
      for (const d of image?.diffIds ?? []) {
        if (await layers.has(d) || !(await image?.store.has(d) ?? false)) continue
        const l = await (image as ImageLayers).store.open(d)
        await layers.receive(d, l.size, l.stream, signal)
      }
      const manifest: SnapshotManifest = {
        name, owner: req.owner, ownerName, epoch: req.epoch, seq: req.seq, takenAt: req.takenAt, config: req.config,
        diffIds: req.diffIds, spec: req.spec, top: req.top, volumes: req.volumes, ...trees.length === 0 ? {} : { trees }
      }
      await writeFile(join(inc.dir, MANIFEST), JSON.stringify(manifest), { mode: 0o600, flush: true })
      // Another snapshot of the same container may have completed while this one streamed.
      this.checkNewer(name, req.owner, req.epoch, req.seq)
      this.checkRoom(name, req.owner)
      await this.makeCurrent(inc, container, manifest, signal)
      // The owner took the container over from another: that one's older snapshots are history.
      if (req.epoch > 1 && this.ownership.shown(name, req.owner, req.epoch)) {
        for (const h of this.named(name)) if (h.manifest.owner !== req.owner && h.manifest.epoch < req.epoch) await this.remove(name, h.manifest.owner)
      }
      return { bytes }
    } finally {
      await this.dropIncoming(req.moveId)
    }
  }

  /**
   * The assembled version goes into the container's directory and, once on disk, CURRENT names it
   * (the one step that changes what a takeover restores); then the previous version goes.
   */
  private async makeCurrent (inc: Incoming, container: string, manifest: SnapshotManifest, signal: AbortSignal): Promise<void> {
    const k = key(manifest.owner, manifest.name)
    const prior = this.held.get(k)
    // A fresh name, never the current version's (a sender picks transfer IDs).
    const version = `v-${randomBytes(8).toString('hex')}`
    const cdir = join(this.dir, container)
    await mkdir(cdir, { recursive: true, mode: 0o700 })
    const vdir = join(cdir, version)
    await rename(inc.dir, vdir)
    // Every file of the version on disk before the pointer names it (a power cut keeps it whole).
    signal.throwIfAborted()
    await execFileP('sync', ['-f', vdir], { signal }).catch(() => {})
    await replaceDurably(cdir, CURRENT, JSON.stringify({ version }))
    this.held.set(k, { manifest, container, version, dir: vdir, layers: await LayerStore.open(join(vdir, 'layers')) })
    if (prior === undefined) return
    if (prior.container !== container) await rm(join(this.dir, prior.container), { recursive: true, force: true })
    else if (prior.version === '.') {
      for (const n of await readdir(cdir)) if (n !== CURRENT && n !== version) await rm(join(cdir, n), { recursive: true, force: true })
    } else await rm(join(cdir, prior.version), { recursive: true, force: true })
  }

  /** The volumes of a held snapshot as restoreContainer takes them: archives as stored, trees archived as they are read. */
  volumeData (held: HeldSnapshot): VolumeData[] {
    const archives = held.manifest.volumes.map(v => ({ name: v.name, destination: v.destination, data: () => storedBytes(held.layers, v.digest) }))
    const trees = (held.manifest.trees ?? []).map(t => ({ name: t.name, destination: t.destination, data: () => treeArchive(join(held.dir, 'volumes', volumeDir(t.name)), posix.basename(t.destination)) }))
    return [...archives, ...trees]
  }

  /** Drops the snapshot of `name` held for `owner` (its container was restored here, or is no longer protected). */
  async remove (name: string, owner: string): Promise<void> {
    const k = key(owner, name)
    const h = this.held.get(k)
    if (h === undefined) return
    this.held.delete(k)
    for (const c of [...this.caches.keys()]) if (c.startsWith(`${k}\0`)) this.caches.delete(c)
    await rm(join(this.dir, h.container), { recursive: true, force: true })
  }
}

/**
 * SnapshotIncompleteError unless every named volume of the spec arrives exactly once, as an
 * archive or as a tree, at its mount point, and nothing else does.
 */
function checkParts (req: StoreRequest): void {
  const want = req.spec.mounts.flatMap(m => m.type === 'volume' ? [`${m.name}:${m.destination}`] : []).sort()
  const got = [...req.volumes, ...req.synced ?? []].map(v => `${v.name}:${v.destination}`).sort()
  if (want.length !== got.length || want.some((w, i) => w !== got[i])) {
    throw new SnapshotIncompleteError(`snapshot ${req.moveId} sends volumes ${got.join(', ') || 'none'}; its spec has ${want.join(', ') || 'none'}`)
  }
}

/** The bytes of a stored blob, opened when first read. */
async function * storedBytes (store: LayerStore, digest: string): AsyncGenerator<Uint8Array> {
  const { stream } = await store.open(digest)
  yield * stream
}

/** `s` as the replacement of a GNU tar --transform expression (its delimiter ',', and '\' and '&' escaped). */
function transformLiteral (s: string): string {
  return s.replace(/[\\,&]/g, c => `\\${c}`)
}

/**
 * A tar of the tree `dir` with its root named `top` (the mount point's last component, as the
 * engine's archive of a container path has it): GNU tar as root, numeric owners, xattrs (so
 * `security.capability` travels), hard links as links. Fails with SnapshotIncompleteError if tar does.
 */
async function * treeArchive (dir: string, top: string): AsyncGenerator<Uint8Array> {
  const child = spawn('tar', [
    '--create', '--file=-', '--format=posix', '--numeric-owner', '--xattrs', '--xattrs-include=*',
    `--transform=s,^\\.,${transformLiteral(top)},S`, '--directory', dir, '.'
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = once(child, 'close') as Promise<[number | null, NodeJS.Signals | null]>
  exited.catch(() => {})
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { if (stderr.length < TAR_STDERR_BYTES) stderr += d.toString() })
  let done = false
  try {
    yield * child.stdout as AsyncIterable<Uint8Array>
    const [code, sig] = await exited
    done = true
    if (code !== 0) throw new SnapshotIncompleteError(`tar of the snapshot tree ${dir} failed (${sig ?? `exit ${String(code)}`}): ${stderr.trim().slice(0, 400)}`)
  } finally {
    if (!done) child.kill('SIGKILL')
  }
}
