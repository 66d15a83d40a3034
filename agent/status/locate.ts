/**
 * /goto/locate/1.0.0 (agents and operators): which member runs a container — this host first, then
 * every alive peer, asked for its status. The CLI uses it to send a move to the container's host.
 */
import type { AuthService } from '../net/auth-service.js'
import { openStream } from '../net/dial.js'
import type { DockerHost } from '../docker/docker-host.js'
import type { PeerTable } from '../membership/peer-table.js'
import type { Timings } from '../timings.js'
import { LOCATE_PROTOCOL, STATUS_PROTOCOL } from '../../protocol/ids.js'
import { readResult } from '../../protocol/wire.js'
import { parseAgentStatus, type MemberInfo } from '../../protocol/messages.js'
import { ContainerNotFoundError, UnknownContainerError, toWireError } from '../../protocol/errors.js'

export interface LocateDeps {
  auth: AuthService
  docker: DockerHost
  table: PeerTable
  self: () => MemberInfo
  timings: Pick<Timings, 'transferControlTimeoutMs'>
}

export interface Located { name: string, peerId: string, addrs: string[] }

export class LocateService {
  constructor (private readonly deps: LocateDeps) {}

  async start (): Promise<void> {
    await this.deps.auth.handle(LOCATE_PROTOCOL, ['agent', 'operator'], async js => {
      const signal = AbortSignal.timeout(this.deps.timings.transferControlTimeoutMs)
      const { container } = (await js.read(signal) ?? {}) as { container?: unknown } // `null` is valid JSON: answered below, not a TypeError
      let reply
      try {
        if (typeof container !== 'string') throw new UnknownContainerError('locate needs a container name')
        reply = { ok: true, result: await this.locate(container, signal) }
      } catch (err) {
        reply = { ok: false, error: toWireError(err) }
      }
      await js.write(reply, signal)
      await js.close(signal)
    })
  }

  async stop (): Promise<void> {}

  /** Which member runs `container`: this host first, then every alive peer (asked for its status). */
  async locate (container: string, signal: AbortSignal): Promise<Located> {
    const self = this.deps.self()
    try {
      await this.deps.docker.inspectContainer(container, signal)
      return { name: self.name, peerId: self.peerId, addrs: self.addrs }
    } catch (err) {
      if (!(err instanceof ContainerNotFoundError)) throw err
    }
    const alive = this.deps.table.entries().filter(e => e.state === 'alive')
    const found = await Promise.all(alive.map(async e => {
      try {
        const js = await openStream(this.deps.auth, e.peerId, e.addrs, STATUS_PROTOCOL, signal)
        await js.write({}, signal)
        const status = parseAgentStatus(await readResult(js, signal))
        await js.close(signal)
        return status.containers.some(c => c.name === container || c.id.startsWith(container)) ? e : undefined
      } catch {
        return undefined
      }
    }))
    const owner = found.find(e => e !== undefined)
    if (owner === undefined) throw new UnknownContainerError(`no container '${container}' on any alive member (${[self.name, ...alive.map(e => e.name)].join(', ')})`)
    return { name: owner.name, peerId: owner.peerId, addrs: owner.addrs }
  }
}
