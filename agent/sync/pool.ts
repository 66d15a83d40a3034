/**
 * Bounded concurrency for the many small file-system calls of a sync (open, write, close, chown,
 * chmod, utimes, link): each awaited in turn, a tree of thousands of small files was mostly
 * round trips to libuv's threads. A `TaskPool` runs at most `tasks` at once and holds at most
 * `bytes` of data its tasks were given (a task with more than that runs alone); `drain` waits for
 * all and throws the first failure. After a failure no new task starts.
 */
export class TaskPool {
  private running = 0
  private held = 0
  private failure: { error: unknown } | undefined
  private readonly waiting: Array<() => void> = []
  private readonly all = new Set<Promise<void>>()

  constructor (private readonly tasks: number, private readonly bytes = Infinity) {}

  private fits (bytes: number): boolean {
    return this.running === 0 || (this.running < this.tasks && this.held + bytes <= this.bytes)
  }

  /**
   * Waits for room (or the signal), then starts `task` without waiting for it. `done` is the task's
   * end, which never rejects (its failure is the pool's, thrown by the next `run` and by `drain`).
   */
  async run (task: () => Promise<void>, signal: AbortSignal, bytes = 0): Promise<{ done: Promise<void> }> {
    while (!this.fits(bytes)) {
      this.throwIfFailed()
      signal.throwIfAborted()
      await new Promise<void>(resolve => {
        const onAbort = (): void => { resolve() }
        signal.addEventListener('abort', onAbort, { once: true })
        this.waiting.push(() => { signal.removeEventListener('abort', onAbort); resolve() })
      })
    }
    this.throwIfFailed()
    signal.throwIfAborted()
    this.running++
    this.held += bytes
    const p = (async () => {
      try { await task() } catch (error) { this.failure ??= { error } } finally {
        this.running--
        this.held -= bytes
        for (const w of this.waiting.splice(0)) w()
      }
    })()
    this.all.add(p)
    void p.then(() => this.all.delete(p))
    return { done: p }
  }

  private throwIfFailed (): void {
    if (this.failure !== undefined) throw this.failure.error
  }

  /** Every task started has ended; throws the first failure. */
  async drain (): Promise<void> {
    while (this.all.size > 0) await Promise.all([...this.all])
    this.throwIfFailed()
  }

  /** Like drain, but never throws: for cleanup after another error. */
  async settle (): Promise<void> {
    while (this.all.size > 0) await Promise.all([...this.all])
  }
}
