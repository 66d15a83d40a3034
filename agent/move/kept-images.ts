/**
 * Images being loaded back into this engine after a move out of here ended (so that moving the
 * container back later sends only what changed since). A destination asks `settled()` before it
 * says which layers it has, so that a move straight back does not resend what is still loading.
 */
import type { Logger } from '../log.js'

export class KeptImages {
  private readonly loading = new Set<Promise<void>>()

  async start (): Promise<void> {}

  /** Waits for the images being kept now. */
  async stop (): Promise<void> {
    await this.settled()
  }

  /** Tracks `work` until it ends; a failure is logged, never left unhandled. */
  track (work: Promise<void>, log: Logger): void {
    const tracked = work.catch(err => { log.warn('could not keep the moved image here', { error: (err as Error).message }) })
    this.loading.add(tracked)
    void tracked.finally(() => { this.loading.delete(tracked) })
  }

  /** Resolves once every image being kept now is in the engine (or has failed to load). */
  async settled (): Promise<void> {
    await Promise.all([...this.loading])
  }
}
