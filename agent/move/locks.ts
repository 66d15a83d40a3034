/**
 * One transfer per container at a time: a move, a snapshot and the recovery of an interrupted one
 * each take the container's lock (by container ID) before they touch it, and only the one that took
 * it gives it back. Shared by the move, failover's snapshots and freeze recovery (built once in main).
 */
export class ContainerLocks {
  private readonly held = new Set<string>()

  /** Takes the lock of `containerId`; false when a transfer already holds it. */
  take (containerId: string): boolean {
    if (this.held.has(containerId)) return false
    this.held.add(containerId)
    return true
  }

  release (containerId: string): void {
    this.held.delete(containerId)
  }

  isHeld (containerId: string): boolean {
    return this.held.has(containerId)
  }
}
