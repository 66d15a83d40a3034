/**
 * Which layers of an image a destination lacks. An engine holds a layer only as part of a chain
 * (its chain ID covers the layer and every layer under it), so the destination "has" the longest
 * prefix of the image's diff IDs that is also a prefix of some image it holds; every layer after
 * that prefix must be sent, even if the same diff ID sits in another chain at another depth.
 *
 *   const { present, missing } = layersToSend(image.diffIds, await docker.imageChains())
 *   // send `missing` (in order), then load with buildLoadTarball({ ..., present })
 */
import { createHash } from 'node:crypto'

export interface LayerPlan {
  /** How many layers, from the base, the destination already has as a chain. */
  present: number
  /** The diff IDs after that prefix, base first (may repeat a diff ID). */
  missing: string[]
}

/** The layers of `chain` (diff IDs, base first) that an engine holding `localChains` lacks. */
export function layersToSend (chain: readonly string[], localChains: Iterable<readonly string[]>): LayerPlan {
  let present = 0
  for (const local of localChains) {
    const limit = Math.min(chain.length, local.length)
    let i = 0
    while (i < limit && local[i] === chain[i]) i++
    if (i > present) present = i
    if (present === chain.length) break
  }
  return { present, missing: chain.slice(present) }
}

/**
 * The chain IDs of a list of diff IDs, as the engine computes them: the first is the first diff ID,
 * each next one is sha256 of "<previous chain ID> <diff ID>".
 */
export function chainIds (diffIds: readonly string[]): string[] {
  const out: string[] = []
  for (const d of diffIds) {
    const prev = out[out.length - 1]
    out.push(prev === undefined ? d : `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}`)
  }
  return out
}
