/**
 * /goto/locate/1.0.0 (agents and operators): which member runs a container — this host first, then
 * every alive peer, asked for its status. The CLI uses it to send a move to the container's host.
 * Asked `{ project }` instead, it finds the one member that runs the compose project's containers
 * (their `com.docker.compose.project` label; a status reply names each row's project), and refuses
 * a project spread over several members, naming them.
 */
import type { AuthService } from '../net/auth-service.js'
import { openStream } from '../net/dial.js'
import type { DockerHost } from '../docker/docker-host.js'
import type { PeerTable } from '../membership/peer-table.js'
import type { Timings } from '../timings.js'
import { LOCATE_PROTOCOL, STATUS_PROTOCOL } from '../../protocol/ids.js'
import { readResult } from '../../protocol/wire.js'
import { COMPOSE_PROJECT } from '../move/project.js'
import { parseAgentStatus, type AgentStatus, type MemberInfo } from '../../protocol/messages.js'
import { ContainerNotFoundError, ProjectSpreadError, UnknownContainerError, UnknownProjectError, toWireError } from '../../protocol/errors.js'

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
      const { container, project } = (await js.read(signal) ?? {}) as { container?: unknown, project?: unknown } // `null` is valid JSON: answered below, not a TypeError
      let reply
      try {
        if (typeof project === 'string') reply = { ok: true, result: await this.locateProject(project, signal) }
        else if (typeof container !== 'string') throw new UnknownContainerError('locate needs a container name')
        else reply = { ok: true, result: await this.locate(container, signal) }
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
    const { alive, statuses } = await this.peerStatuses(signal)
    const owner = alive.find((e, i) => statuses[i]?.containers.some(c => c.name === container || c.id.startsWith(container)) === true)
    if (owner === undefined) throw new UnknownContainerError(`no container '${container}' on any alive member (${[self.name, ...alive.map(e => e.name)].join(', ')})`)
    return { name: owner.name, peerId: owner.peerId, addrs: owner.addrs }
  }

  /**
   * Which member runs compose project `project`: this host and every alive peer, each asked.
   * UnknownProjectError when none does; ProjectSpreadError (naming each member and how many of the
   * project's containers it runs) when more than one does. A member that does not answer is not counted.
   */
  async locateProject (project: string, signal: AbortSignal): Promise<Located> {
    const self = this.deps.self()
    const here = (await this.deps.docker.listContainers(signal)).filter(c => c.labels?.[COMPOSE_PROJECT] === project).length
    const { alive, statuses } = await this.peerStatuses(signal)
    const holders = [
      ...here > 0 ? [{ name: self.name, peerId: self.peerId, addrs: self.addrs, count: here }] : [],
      ...alive.flatMap((e, i) => {
        const count = statuses[i]?.containers.filter(c => c.project === project).length ?? 0
        return count > 0 ? [{ name: e.name, peerId: e.peerId, addrs: e.addrs, count }] : []
      })
    ]
    if (holders.length === 0) throw new UnknownProjectError(`no container of compose project '${project}' on any alive member (${[self.name, ...alive.map(e => e.name)].join(', ')})`)
    if (holders.length > 1) {
      throw new ProjectSpreadError(`compose project '${project}' runs on ${holders.length} members: ${holders.map(h => `${h.name} (${h.count} container(s))`).join(', ')}; a project moves from one host: move its containers to one of them first (goto move CONTAINER --to NAME)`)
    }
    const [{ count: _, ...owner }] = holders
    return owner
  }

  /** Every alive peer with its status (undefined for one that did not answer). */
  private async peerStatuses (signal: AbortSignal): Promise<{ alive: ReturnType<PeerTable['entries']>, statuses: Array<AgentStatus | undefined> }> {
    const alive = this.deps.table.entries().filter(e => e.state === 'alive')
    const statuses = await Promise.all(alive.map(async e => {
      try {
        const js = await openStream(this.deps.auth, e.peerId, e.addrs, STATUS_PROTOCOL, signal)
        await js.write({}, signal)
        const status = parseAgentStatus(await readResult(js, signal))
        await js.close(signal)
        return status
      } catch {
        return undefined
      }
    }))
    return { alive, statuses }
  }
}
