/**
 * A new image config for "this image plus one more layer" — what `docker commit` would store, made
 * without it: the image's own config JSON is not available from the Engine API (inspect reports
 * its fields, not its bytes), so the move writes a fresh one from what inspect and history tell,
 * with the container's exported changes (changes.ts) as the extra layer. Its sha256 is the ID the
 * engine gives the image when it loads it (transfer/load.ts `loadVerified`).
 *
 *   const image = await docker.inspectImageConfig(container.spec.image, signal)
 *   const top = await docker.exportChanges(container.id, layerPath, signal)
 *   const config = buildLayeredConfig(image, top.diffId)   // bytes; configDigest(config) is the image ID
 *
 * What Engine 20.10 checks on load: `rootfs.diff_ids` must match the layers of the load manifest,
 * and `history` may not have more non-empty steps than there are layers. Everything else
 * (`config`, `architecture`, `os`, `created`) is taken as given.
 */
import type { ImageConfigInfo, ImageHistoryEntry } from './types.js'

const DIFF_ID = /^sha256:[0-9a-f]{64}$/

/** One row of `GET /images/{id}/history` (newest first there). */
export interface EngineHistoryRow {
  Created?: number
  CreatedBy?: string
  Comment?: string
  Size?: number
}

/**
 * The image config's history (oldest first) from the engine's history rows, which do not say which
 * steps made no layer: a row of size 0 is taken as such when that leaves exactly one non-empty row
 * per layer; otherwise, when there are as many rows as layers, every row is a layer; otherwise the
 * rows cannot be matched to the layers and one plain step per layer stands in for them.
 */
export function historyFromEngine (rows: readonly EngineHistoryRow[], layers: number, created: string): ImageHistoryEntry[] {
  const oldestFirst = [...rows].reverse()
  const step = (r: EngineHistoryRow, empty: boolean): ImageHistoryEntry => {
    const e: ImageHistoryEntry = {}
    if (typeof r.Created === 'number' && r.Created > 0) e.created = new Date(r.Created * 1000).toISOString()
    if (typeof r.CreatedBy === 'string' && r.CreatedBy !== '') e.created_by = r.CreatedBy
    if (typeof r.Comment === 'string' && r.Comment !== '') e.comment = r.Comment
    if (empty) e.empty_layer = true
    return e
  }
  if (oldestFirst.filter(r => (r.Size ?? 0) > 0).length === layers) return oldestFirst.map(r => step(r, (r.Size ?? 0) === 0))
  if (oldestFirst.length === layers) return oldestFirst.map(r => step(r, false))
  return Array.from({ length: layers }, () => ({ created }))
}

export interface LayeredConfigOptions {
  /** When the new image is made (default: now). */
  created?: Date
  /** The history step of the extra layer. */
  createdBy?: string
  comment?: string
}

/**
 * The config JSON (as bytes) of `image` with one more layer `extraDiffId` on top: the image's
 * architecture, os (and variant, os.version), its container config as inspect reports it, its
 * diff IDs plus the new one, its history plus one step. The same inputs give the same bytes.
 */
export function buildLayeredConfig (image: ImageConfigInfo, extraDiffId: string, opts: LayeredConfigOptions = {}): Uint8Array {
  if (!DIFF_ID.test(extraDiffId)) throw new TypeError(`not a layer diff ID: '${extraDiffId.slice(0, 80)}'`)
  const bad = image.diffIds.find(d => !DIFF_ID.test(d))
  if (bad !== undefined) throw new TypeError(`image ${image.id} has a bad diff ID '${bad.slice(0, 80)}'`)
  const created = (opts.created ?? new Date()).toISOString()
  const nonEmpty = image.history.filter(h => h.empty_layer !== true).length
  // A history that does not match the layers would make the engine refuse the load (too many
  // steps) or misattribute layers (too few): then one plain step per layer.
  const history: ImageHistoryEntry[] = nonEmpty === image.diffIds.length
    ? image.history.map(h => ({ ...h }))
    : image.diffIds.map(() => ({ created: image.created }))
  const top: ImageHistoryEntry = { created }
  if (opts.createdBy !== undefined) top.created_by = opts.createdBy
  if (opts.comment !== undefined) top.comment = opts.comment
  history.push(top)
  const config: Record<string, unknown> = { architecture: image.architecture }
  if (image.author !== '') config.author = image.author
  config.config = image.config
  config.created = created
  config.history = history
  config.os = image.os
  if (image.osVersion !== undefined && image.osVersion !== '') config['os.version'] = image.osVersion
  config.rootfs = { type: 'layers', diff_ids: [...image.diffIds, extraDiffId] }
  if (image.variant !== undefined && image.variant !== '') config.variant = image.variant
  return new TextEncoder().encode(JSON.stringify(config))
}
