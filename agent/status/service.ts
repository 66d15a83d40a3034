/**
 * What the agent tells those who ask: /goto/peers/1.0.0 (the peer table, self first) and
 * /goto/status/1.0.0 (this host's status, or — with a name — another member's, fetched from it over
 * the mesh). Both serve agents and operators.
 */
import type { AuthService } from '../net/auth-service.js'
import { openStream } from '../net/dial.js'
import type { PeerTable } from '../membership/peer-table.js'
import type { DockerHost } from '../docker/docker-host.js'
import { describeEngine } from '../docker/engine-kind.js'
import { COMPOSE_PROJECT } from '../move/project.js'
import type { Logger } from '../log.js'
import type { Timings } from '../timings.js'
import { PEERS_PROTOCOL, STATUS_PROTOCOL } from '../../protocol/ids.js'
import { readResult } from '../../protocol/wire.js'
import { parseAgentStatus, parseStatusRequest, type AgentStatus, type FailoverStatus, type MemberInfo, type PeerRow } from '../../protocol/messages.js'
import { AgentUnreachableError, UnknownPeerError, toWireError } from '../../protocol/errors.js'

export interface StatusDeps {
  auth: AuthService
  table: PeerTable
  docker: DockerHost
  self: () => MemberInfo
  /** The failover section of this host's status. */
  failover: { status: () => FailoverStatus }
  startedAt: number
  timings: Timings
  /** Whether this host can take live moves (move/live.ts LiveCheck; default: not shown). */
  live?: { report: (signal: AbortSignal) => Promise<{ ok: boolean, criu?: string, missing: string[] }> }
  log: Logger
}

/** How long a status request may take, including a forwarded one and Docker's answer. */
const STATUS_TIMEOUT_MS = 10_000

export class StatusService {
  constructor (private readonly deps: StatusDeps) {}

  async start (): Promise<void> {
    await this.deps.auth.handle(PEERS_PROTOCOL, ['agent', 'operator'], async js => {
      await js.read(AbortSignal.timeout(STATUS_TIMEOUT_MS))
      const signal = AbortSignal.timeout(STATUS_TIMEOUT_MS)
      await js.write({ ok: true, result: this.peers() }, signal)
      await js.close(signal)
    })
    await this.deps.auth.handle(STATUS_PROTOCOL, ['agent', 'operator'], async (js, peer) => {
      const signal = AbortSignal.timeout(STATUS_TIMEOUT_MS)
      const req = parseStatusRequest(await js.read(signal))
      let reply
      try {
        reply = { ok: true, result: await this.status(req.name, signal) }
      } catch (err) {
        this.deps.log.info('status request failed', { from: peer.name, name: req.name, error: (err as Error).message })
        reply = { ok: false, error: toWireError(err) }
      }
      await js.write(reply, signal)
      await js.close(signal)
    })
  }

  async stop (): Promise<void> {}

  peers (): PeerRow[] {
    const self = this.deps.self()
    const row: PeerRow = {
      name: self.name,
      peerId: self.peerId,
      self: true,
      state: 'alive',
      role: 'agent',
      addrs: self.addrs,
      labels: self.labels,
      agentVersion: self.agentVersion,
      dockerVersion: self.dockerVersion,
      containers: self.containers,
      lastSeen: new Date().toISOString(),
      rttMs: 0
    }
    return [row, ...this.deps.table.rows().sort((a, b) => a.name.localeCompare(b.name))]
  }

  async status (name: string | undefined, signal: AbortSignal): Promise<AgentStatus> {
    const self = this.deps.self()
    if (name === undefined || name === self.name) return await this.own(signal)
    const entry = this.deps.table.byName(name)
    if (entry === undefined) throw new UnknownPeerError(`no peer named '${name}' in the mesh (known: ${[self.name, ...this.deps.table.entries().map(e => e.name)].join(', ')})`)
    try {
      const js = await openStream(this.deps.auth, entry.peerId, entry.addrs, STATUS_PROTOCOL, signal)
      await js.write({}, signal)
      const result = parseAgentStatus(await readResult(js, signal))
      await js.close(signal)
      return result
    } catch (err) {
      throw new AgentUnreachableError(`peer '${name}' (${entry.state}) did not answer: ${(err as Error).message}`, { cause: err })
    }
  }

  private async own (signal: AbortSignal): Promise<AgentStatus> {
    const self = this.deps.self()
    let docker: AgentStatus['docker']
    let containers: AgentStatus['containers'] = []
    try {
      const v = await this.deps.docker.version(signal)
      const kind = describeEngine(v, await this.deps.docker.info(signal))
      docker = { version: v.version, apiVersion: v.apiVersion, os: v.os, arch: v.arch, kind }
      containers = await this.deps.docker.listContainers(signal)
    } catch (err) {
      docker = { error: (err as Error).message }
    }
    const live = await this.deps.live?.report(signal).then(r => ({ ok: r.ok, ...r.criu === undefined ? {} : { criu: r.criu }, missing: r.missing }), () => undefined)
    return {
      name: self.name,
      peerId: self.peerId,
      version: self.agentVersion,
      uptimeS: Math.round((Date.now() - this.deps.startedAt) / 1000),
      labels: self.labels,
      docker,
      containers: containers.map(({ labels, ...c }) => labels?.[COMPOSE_PROJECT] === undefined ? c : { ...c, project: labels[COMPOSE_PROJECT] }),
      peers: this.deps.table.counts(),
      failover: this.deps.failover.status(),
      ...live === undefined ? {} : { live }
    }
  }
}
