/**
 * Keeps a recent reading of the engine's version, kind (`describeEngine`: product, version, image
 * store) and container count for heartbeats, so a heartbeat never waits on Docker. Refreshes every `dockerRefreshMs`; an engine that stops answering reads as
 * null (the peer table then shows no version) and is logged once per outage. A refresh still under
 * way when the next is due is not joined by another: an engine that goes on serving requests its
 * client gave up on (Podman's `/version` and `/info`, measured taking 46-146 s on a loaded machine)
 * collects a backlog of them, each making the next slower, and overlapping refreshes grew it twice
 * as fast. (It still grows by one abandoned ask per timed-out refresh.)
 */
import type { DockerHost, EngineVersion } from './docker-host.js'
import type { Logger } from '../log.js'
import { describeEngine } from './engine-kind.js'

export class DockerMonitor {
  version: EngineVersion | null = null
  /** `docker 28.5.2 containerd-store`, `podman 4.3.1`: what peers show of this engine. */
  kind: string | null = null
  containers: number | null = null
  private timer: NodeJS.Timeout | undefined
  private failing = false
  private refreshing = false

  constructor (private readonly docker: DockerHost, private readonly refreshMs: number, private readonly log: Logger) {}

  async start (): Promise<void> {
    await this.refresh()
    this.timer = setInterval(() => { void this.refresh() }, this.refreshMs)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.timer)
  }

  private async refresh (): Promise<void> {
    if (this.refreshing) return
    this.refreshing = true
    const signal = AbortSignal.timeout(this.refreshMs * 2)
    try {
      this.version ??= await this.docker.version(signal)
      this.kind ??= describeEngine(this.version, await this.docker.info(signal))
      this.containers = (await this.docker.listContainers(signal)).length
      if (this.failing) this.log.info('docker engine answers again')
      this.failing = false
    } catch (err) {
      if (!this.failing) this.log.warn('docker engine not answering', { error: (err as Error).message })
      this.failing = true
      this.version = null
      this.kind = null
      this.containers = null
    } finally {
      this.refreshing = false
    }
  }
}
