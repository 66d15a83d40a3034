/**
 * A replica holder's snapshots: for each owner (a peer ID) and each protected container of it, the
 * newest complete snapshot that owner sent, under `<stateDir>/snapshots/`:
 *
 *   snapshots/<owner>.<name>/manifest.json   owner, epoch, seq, image config, diff IDs, spec, volumes
 *   snapshots/<owner>.<name>/layers/         a LayerStore: the container's changes as a layer tar, and
 *                                            each volume's archive, each named by its sha256 and verified
 *
 * (A directory of the old layout, `snapshots/<name>/`, is read by its manifest's owner, so it still
 * loads.) An owner's store never touches another owner's snapshot of the same name, so a member
 * cannot substitute its own for another's: a store of a name held here for another owner that
 * still owns it is refused (SnapshotOwnerMismatchError) unless an epoch certificate shows the
 * store's owner took it over — and then the other owners' older snapshots of that name are
 * dropped. At most MAX_HELD_PER_OWNER containers are held per owner.
 *
 * The image's other layers are loaded into the holder's engine when the snapshot is taken (the move's
 * pre-copy and preload), so a restore loads only the changes. A snapshot arrives into
 * `snapshots/.incoming/<id>/` and replaces the held one only once every byte has arrived and been
 * verified, and only if it is newer (epoch, then seq): a failed or outdated transfer leaves the held
 * snapshot as it was. One store (one agent) per directory; `open` drops what a crash left incoming.
 *
 *   const snaps = await SnapshotStore.open(join(stateDir, 'snapshots'))
 *   await snaps.receive(header, nextBlob, signal)         // from a StoreRequest on /goto/transfer
 *   const held = snaps.get('web')                          // manifest, and .layers for restoreContainer
 */
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { LayerStore } from '../transfer/layer-store.js'
import { compareVersions } from './placement.js'
import type { StoreRequest } from '../../protocol/move-messages.js'
import { SnapshotLimitError, SnapshotOutdatedError, SnapshotOwnerMismatchError, TransferError } from '../../protocol/errors.js'

const INCOMING = '.incoming'
const MANIFEST = 'manifest.json'
/** Containers held for one owner: a member protects far fewer; bounds what one member can make us keep. */
export const MAX_HELD_PER_OWNER = 64

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
 * layer `top` and the volumes' archives, both in layers/), plus the container's name and the
 * owner's name.
 */
export type SnapshotManifest = Omit<StoreRequest, 'op' | 'moveId'> & { name: string, ownerName: string }

export interface HeldSnapshot { manifest: SnapshotManifest, layers: LayerStore }

/** A container name as a directory name: Docker's own name rule, so it cannot climb out. */
function dirName (name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$/.test(name)) throw new TransferError(`'${name.slice(0, 80)}' is not a container name`)
  return name
}

/** An owner's peer ID in a directory name: base58 or base32 characters only. */
function ownerDir (owner: string, name: string): string {
  if (!/^[A-Za-z0-9]{1,128}$/.test(owner)) throw new TransferError(`'${owner.slice(0, 80)}' is not a peer ID`)
  return `${owner}.${dirName(name)}`
}

export class SnapshotStore {
  private readonly held = new Map<string, HeldSnapshot & { dir: string }>()
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
      try {
        const manifest = JSON.parse(await readFile(join(dir, entry, MANIFEST), 'utf8')) as SnapshotManifest
        store.held.set(key(manifest.owner, manifest.name), { manifest, dir: entry, layers: await LayerStore.open(join(dir, entry, 'layers')) })
      } catch {
        await rm(join(dir, entry), { recursive: true, force: true }) // never completed: not a snapshot
      }
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

  /** SnapshotLimitError if `owner` would hold more than MAX_HELD_PER_OWNER containers here. */
  private checkRoom (name: string, owner: string): void {
    if (this.held.has(key(owner, name))) return
    const n = [...this.held.values()].filter(h => h.manifest.owner === owner).length
    if (n >= MAX_HELD_PER_OWNER) throw new SnapshotLimitError(`${owner} already has ${n} snapshots held here (at most ${MAX_HELD_PER_OWNER})`)
  }

  /**
   * Receives one snapshot: the changes layer, then each volume archive, each pulled from `blob(size)`
   * in that order and verified; then swaps it in for the one held for its owner. Nothing changes on failure.
   */
  async receive (req: StoreRequest, ownerName: string, blob: (size: number) => AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<{ bytes: number }> {
    const name = dirName(req.spec.name)
    const dirOf = ownerDir(req.owner, name)
    this.checkNewer(name, req.owner, req.epoch, req.seq)
    this.checkOwner(name, req.owner, req.epoch)
    this.checkRoom(name, req.owner)
    const staging = join(this.dir, INCOMING, randomBytes(8).toString('hex'))
    try {
      const layers = await LayerStore.open(join(staging, 'layers'))
      let bytes = (await layers.receive(req.top.diffId, req.top.size, blob(req.top.size), signal)).bytes
      for (const v of req.volumes) bytes += (await layers.receive(v.digest, v.size, blob(v.size), signal)).bytes
      const manifest: SnapshotManifest = {
        name, owner: req.owner, ownerName, epoch: req.epoch, seq: req.seq, takenAt: req.takenAt, config: req.config,
        diffIds: req.diffIds, spec: req.spec, top: req.top, volumes: req.volumes
      }
      await writeFile(join(staging, MANIFEST), JSON.stringify(manifest), { mode: 0o600, flush: true })
      // Another snapshot of the same container may have completed while this one streamed.
      this.checkNewer(name, req.owner, req.epoch, req.seq)
      this.checkRoom(name, req.owner)
      const k = key(req.owner, name)
      const prior = this.held.get(k)
      const target = join(this.dir, dirOf)
      const old = join(this.dir, `.old-${randomBytes(6).toString('hex')}`)
      if (prior !== undefined) await rename(join(this.dir, prior.dir), old)
      await rename(staging, target)
      this.held.set(k, { manifest, dir: dirOf, layers: await LayerStore.open(join(target, 'layers')) })
      if (prior !== undefined) await rm(old, { recursive: true, force: true })
      // The owner took the container over from another: that one's older snapshots are history.
      if (req.epoch > 1 && this.ownership.shown(name, req.owner, req.epoch)) {
        for (const h of this.named(name)) if (h.manifest.owner !== req.owner && h.manifest.epoch < req.epoch) await this.remove(name, h.manifest.owner)
      }
      return { bytes }
    } finally {
      await rm(staging, { recursive: true, force: true }).catch(() => {})
    }
  }

  /** Drops the snapshot of `name` held for `owner` (its container was restored here, or is no longer protected). */
  async remove (name: string, owner: string): Promise<void> {
    const k = key(owner, name)
    const h = this.held.get(k)
    if (h === undefined) return
    this.held.delete(k)
    await rm(join(this.dir, h.dir), { recursive: true, force: true })
  }
}
