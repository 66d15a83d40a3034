/**
 * The source's last act of a move: remove its copy of the container, with the named volumes that
 * went with it. A container already gone is fine (a retry after a crash finds it removed).
 */
import type { DockerHost } from '../docker/docker-host.js'
import type { Logger } from '../log.js'
import type { FrozenRecord } from './freeze-journal.js'
import { ContainerNotFoundError, VolumeNotFoundError } from '../../protocol/errors.js'

export async function letGo (docker: DockerHost, r: Pick<FrozenRecord, 'containerId' | 'volumes'>, log: Logger, signal: AbortSignal): Promise<void> {
  await docker.remove(r.containerId, { force: true, volumes: false }, signal).catch(err => { if (!(err instanceof ContainerNotFoundError)) throw err })
  for (const v of r.volumes) {
    await docker.removeVolume(v, signal).catch(err => {
      if (!(err instanceof VolumeNotFoundError)) log.warn('moved volume not removed here', { volume: v, error: (err as Error).message })
    })
  }
}
