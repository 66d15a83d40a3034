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

export async function * rateLimited (source: AsyncIterable<Uint8Array>, bytesPerSecond: number, signal: AbortSignal, clock: RateClock = REAL_CLOCK, burst = RATE_BURST_BYTES): AsyncGenerator<Uint8Array> {
  let tokens = burst
  let last = clock.now()
  for await (const chunk of source) {
    for (let off = 0; off < chunk.byteLength;) {
      const piece = chunk.byteLength - off <= burst && off === 0 ? chunk : chunk.subarray(off, Math.min(chunk.byteLength, off + burst))
      const now = clock.now()
      tokens = Math.min(burst, tokens + (now - last) / 1000 * bytesPerSecond)
      last = now
      if (tokens < piece.byteLength) {
        await clock.sleep((piece.byteLength - tokens) / bytesPerSecond * 1000, signal)
        const woke = clock.now()
        tokens = Math.min(burst, tokens + (woke - last) / 1000 * bytesPerSecond)
        last = woke
      }
      tokens -= piece.byteLength
      off += piece.byteLength
      yield piece
    }
  }
}
