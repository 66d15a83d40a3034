/**
 * When a move's volume rounds stop and the freeze begins. Round 1 sends each synced volume whole
 * while the container runs; each later round sends what changed since the previous one; the move
 * freezes after a round whose difference is small enough (volumeFreezeBytes), or that did not
 * shrink enough against the previous one (volumeShrinkRatio: the writer keeps pace with the link),
 * or after volumeRoundsMax rounds. The final round, inside the freeze, then carries only the last
 * difference. `treeBytes` is what a dry run reports for a volume directory.
 *
 *   const rounds: RoundTally[] = []
 *   do rounds.push(await session.volumeRound(false, signal)) while (nextAfterRound(rounds, timings) === 'again')
 */
import { lstat, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Timings } from '../timings.js'

/** What one round sent, all synced volumes together. */
export interface RoundTally {
  /** Counts from 1; the final round (inside the freeze) comes after the last of these. */
  round: number
  /** Bytes of blocks that travelled (the difference since the previous round). */
  bytes: number
  /** Regular files built anew at the destination. */
  files: number
}

export type RoundTimings = Pick<Timings, 'volumeFreezeBytes' | 'volumeShrinkRatio' | 'volumeRoundsMax'>

export function nextAfterRound (rounds: readonly RoundTally[], t: RoundTimings): 'again' | 'freeze' {
  const last = rounds.at(-1)
  if (last === undefined) return 'again'
  if (last.bytes <= t.volumeFreezeBytes) return 'freeze'
  if (rounds.length >= t.volumeRoundsMax) return 'freeze'
  const prev = rounds.at(-2)
  if (prev !== undefined && last.bytes > prev.bytes * t.volumeShrinkRatio) return 'freeze'
  return 'again'
}

/** Bytes of data under `dir` as the disk holds them (regular files' allocated blocks: holes do not travel). */
export async function treeBytes (dir: string, signal: AbortSignal): Promise<number> {
  let total = 0
  const pending = [dir]
  while (pending.length > 0) {
    signal.throwIfAborted()
    const d = pending.pop() as string
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) pending.push(p)
      else if (e.isFile()) {
        const st = await lstat(p)
        total += Math.min(st.blocks * 512, st.size)
      }
    }
  }
  return total
}
