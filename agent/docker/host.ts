/**
 * What the agent needs of a Docker Engine, as a small interface, and its dockerode implementation.
 * Engine errors become DockerUnavailableError at this boundary; nothing above it sees dockerode.
 */
import Docker from 'dockerode'
import { DockerUnavailableError } from '../../protocol/errors.js'
import type { DockerEndpoint } from '../config.js'
import type { ContainerRow } from '../../protocol/messages.js'

export interface EngineVersion { version: string, apiVersion: string, os: string, arch: string }

export interface DockerHost {
  version (signal?: AbortSignal): Promise<EngineVersion>
  listContainers (signal?: AbortSignal): Promise<ContainerRow[]>
}

export class DockerodeHost implements DockerHost {
  private readonly docker: Docker

  constructor (readonly endpoint: DockerEndpoint) {
    this.docker = endpoint.kind === 'unix'
      ? new Docker({ socketPath: endpoint.socketPath })
      : new Docker({ host: endpoint.host, port: endpoint.port, protocol: 'http' })
  }

  private wrap (what: string, err: unknown): DockerUnavailableError {
    return new DockerUnavailableError(`docker engine at ${this.endpoint.url}: ${what} failed: ${(err as Error).message}`, { cause: err })
  }

  async version (signal?: AbortSignal): Promise<EngineVersion> {
    try {
      // dockerode's types lack the options overload; the call itself accepts { abortSignal }
      const v = await (this.docker.version as (o: object) => Promise<Docker.DockerVersion>).call(this.docker, { abortSignal: signal })
      return { version: v.Version, apiVersion: v.ApiVersion, os: v.Os, arch: v.Arch }
    } catch (err) {
      throw this.wrap('version', err)
    }
  }

  async listContainers (signal?: AbortSignal): Promise<ContainerRow[]> {
    try {
      const list = await this.docker.listContainers({ all: true, abortSignal: signal })
      return list.map(c => ({
        name: (c.Names[0] ?? c.Id.slice(0, 12)).replace(/^\//, ''),
        id: c.Id,
        image: c.Image,
        state: c.State,
        status: c.Status
      }))
    } catch (err) {
      throw this.wrap('list containers', err)
    }
  }
}
