/**
 * A replica holder's snapshots: for each protected container of another host, the newest complete
 * snapshot it was sent, under `<stateDir>/snapshots/`:
 *
 *   snapshots/<name>/manifest.json   owner, epoch, seq, image config, diff IDs, spec, volumes
 *   snapshots/<name>/layers/         a LayerStore: the container's changes as a layer tar, and each
 *                                    volume's archive, each named by its sha256 and verified on arrival
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
import { SnapshotOutdatedError, TransferError } from '../../protocol/errors.js'

const INCOMING = '.incoming'
const MANIFEST = 'manifest.json'

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

export class SnapshotStore {
  private readonly held = new Map<string, HeldSnapshot>()

  private constructor (readonly dir: string) {}

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
        store.held.set(manifest.name, { manifest, layers: await LayerStore.open(join(dir, entry, 'layers')) })
      } catch {
        await rm(join(dir, entry), { recursive: true, force: true }) // never completed: not a snapshot
      }
    }
    return store
  }

  get (name: string): HeldSnapshot | undefined { return this.held.get(name) }
  list (): SnapshotManifest[] { return [...this.held.values()].map(h => h.manifest) }

  /** SnapshotOutdatedError unless (epoch, seq) is newer than the snapshot held for `name`. */
  checkNewer (name: string, epoch: number, seq: number): void {
    const cur = this.held.get(name)?.manifest
    if (cur !== undefined && compareVersions({ epoch, seq }, cur) <= 0) {
      throw new SnapshotOutdatedError(`snapshot ${epoch}.${seq} of '${name}' is not newer than the held ${cur.epoch}.${cur.seq}`)
    }
  }

  /**
   * Receives one snapshot: the changes layer, then each volume archive, each pulled from `blob(size)`
   * in that order and verified; then swaps it in for the held one. Nothing changes on failure.
   */
  async receive (req: StoreRequest, ownerName: string, blob: (size: number) => AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<{ bytes: number }> {
    const name = dirName(req.spec.name)
    this.checkNewer(name, req.epoch, req.seq)
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
      this.checkNewer(name, req.epoch, req.seq)
      const target = join(this.dir, name)
      const old = join(this.dir, `.old-${randomBytes(6).toString('hex')}`)
      const had = this.held.has(name)
      if (had) await rename(target, old)
      await rename(staging, target)
      this.held.set(name, { manifest, layers: await LayerStore.open(join(target, 'layers')) })
      if (had) await rm(old, { recursive: true, force: true })
      return { bytes }
    } finally {
      await rm(staging, { recursive: true, force: true }).catch(() => {})
    }
  }

  /** Drops the held snapshot of `name` (its container was restored here, or is no longer protected). */
  async remove (name: string): Promise<void> {
    if (!this.held.delete(name)) return
    await rm(join(this.dir, dirName(name)), { recursive: true, force: true })
  }
}
