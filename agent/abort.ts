/**
 * Waiting on a promise under a caller's AbortSignal when the work behind it cannot take that
 * signal (it is shared with other callers, or the other side ignores it): the caller stops
 * waiting at once, the work goes on for whoever else waits.
 *
 *   await untilAborted(sharedAsk, signal)   // rejects with signal.reason when it aborts
 */

/** `p`, or a rejection with the signal's reason once `signal` aborts (none: just `p`). */
export async function untilAborted<T> (p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal === undefined) return await p
  signal.throwIfAborted()
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => {
      onAbort = () => { reject(signal.reason) }
      signal.addEventListener('abort', onAbort, { once: true })
    })])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}
