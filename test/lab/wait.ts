/**
 * Polling with a deadline: the lab never sleeps for a fixed time to let something get ready; it
 * asks the condition again every `intervalMs` until it holds or `timeoutMs` has passed.
 */
import { setTimeout as delay } from 'node:timers/promises'
import { LabTimeoutError } from './errors.js'

export interface WaitOptions {
  /** Give up (LabTimeoutError) after this long. */
  timeoutMs: number
  /** Ask the condition again after this long (default 100 ms). */
  intervalMs?: number
  /** What we wait for, for the error message ("engine of aws-1 to answer /_ping"). */
  what: string
  signal?: AbortSignal
}

/**
 * Calls `cond` until it returns a value other than `undefined`, `null` or `false`, and returns that
 * value. An error thrown by `cond` ends the wait at once (use it for "the process died"); a
 * condition that is merely not true yet returns a falsy value.
 */
export async function waitFor<T> (
  cond: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  opts: WaitOptions
): Promise<T> {
  const interval = opts.intervalMs ?? 100
  const deadline = Date.now() + opts.timeoutMs
  for (;;) {
    opts.signal?.throwIfAborted()
    const value = await cond()
    if (value !== undefined && value !== null && value !== false) return value
    const left = deadline - Date.now()
    if (left <= 0) throw new LabTimeoutError(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`)
    await delay(Math.min(interval, left), undefined, { signal: opts.signal })
  }
}
