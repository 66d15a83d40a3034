/**
 * A rate cap on a byte stream: a token bucket that the sender's bytes pass through on their way to
 * the wire (after compression: the cap is on what the link carries). It holds at most the chunk it
 * is passing; when the bucket is empty it waits, and since the consumer is not given the next bytes
 * meanwhile, the wait is backpressure all the way back to the disk or the engine.
 *
 *   const wire = rateLimited(bytes, mbitToBytesPerSecond(40), signal)
 */
import { setTimeout as sleep } from 'node:timers/promises'

/** Time as the bucket sees it (a fake one in unit tests). */
export interface RateClock {
  now: () => number
  sleep: (ms: number, signal: AbortSignal) => Promise<void>
}

export const REAL_CLOCK: RateClock = {
  now: () => performance.now(),
  sleep: async (ms, signal) => { await sleep(ms, undefined, { signal }) }
}

/**
 * The bucket's size: the most bytes sent at once after an idle spell, and the largest piece a chunk
 * is cut into. 64 KiB keeps the rate even at a few Mbit/s (one piece is 13 ms at 40 Mbit/s) while
 * costing one timer per piece at most.
 */
export const RATE_BURST_BYTES = 64 * 1024

export function mbitToBytesPerSecond (mbit: number): number {
  return mbit * 1_000_000 / 8
}

export function bytesPerSecondToMbit (bytesPerSecond: number): number {
  return bytesPerSecond * 8 / 1_000_000
}

/**
 * The bucket as a schedule: `due` is when the bytes passed so far would have gone at the rate, never
 * further back than one burst before now (an idle spell earns one burst, no more). A timer that fires
 * late delays only that piece: the schedule is absolute, so the rate over the transfer holds.
 */
export async function * rateLimited (source: AsyncIterable<Uint8Array>, bytesPerSecond: number, signal: AbortSignal, clock: RateClock = REAL_CLOCK, burst = RATE_BURST_BYTES): AsyncGenerator<Uint8Array> {
  const burstMs = burst / bytesPerSecond * 1000
  let due = clock.now() - burstMs
  for await (const chunk of source) {
    for (let off = 0; off < chunk.byteLength;) {
      const piece = chunk.byteLength - off <= burst && off === 0 ? chunk : chunk.subarray(off, Math.min(chunk.byteLength, off + burst))
      const now = clock.now()
      due = Math.max(due, now - burstMs) + piece.byteLength / bytesPerSecond * 1000
      // The piece may go once the schedule is at most one burst ahead of now.
      const wait = due - burstMs - now
      if (wait > 0) await clock.sleep(wait, signal)
      off += piece.byteLength
      yield piece
    }
  }
}
