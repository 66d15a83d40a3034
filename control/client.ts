/**
 * The operator's connection to one agent: a short-lived libp2p peer that dials the agent, passes
 * /goto/auth with the operator certificate, checks the agent's certificate in turn, and then asks.
 * Errors come out typed: AgentUnreachableError, PeerRejectedUsError (our certificate was refused),
 * Certificate*Error (the agent's certificate is not one we trust), UnknownPeerError.
 */
import type { Libp2p } from 'libp2p'
import type { Connection } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { TrustStore, type VerifiedPeer } from '../certs/verify.js'
import type { Bundle } from '../certs/bundle.js'
import { createMeshNode } from '../protocol/node.js'
import { authenticateOutbound } from '../protocol/auth.js'
import { JsonStream, readResult } from '../protocol/wire.js'
import { PEERS_PROTOCOL, STATUS_PROTOCOL } from '../protocol/ids.js'
import { AgentUnreachableError, ProtocolError } from '../protocol/errors.js'
import type { AgentStatus, PeerRow } from '../protocol/messages.js'

export class AgentClient {
  private constructor (
    private readonly node: Libp2p,
    private readonly connection: Connection,
    readonly agent: VerifiedPeer
  ) {}

  static async connect (bundle: Bundle, addr: Multiaddr, signal: AbortSignal): Promise<AgentClient> {
    const trust = new TrustStore(bundle.caCertPem, bundle.crl)
    const node = await createMeshNode({ privateKey: bundle.privateKey, listen: [], isRefused: p => trust.isRevoked(p.toString()) })
    await node.start()
    try {
      let connection: Connection
      try {
        connection = await node.dial(addr, { signal })
      } catch (err) {
        const reason = signal.aborted ? 'timed out' : (err as Error).message
        throw new AgentUnreachableError(`cannot reach an agent at ${addr.toString()}: ${reason}`, { cause: err })
      }
      const agent = await authenticateOutbound(connection, { certPem: bundle.certPem, trust }, signal)
      if (agent.role !== 'agent') throw new ProtocolError(`${addr.toString()} is a ${agent.role}, not an agent`)
      return new AgentClient(node, connection, agent)
    } catch (err) {
      await node.stop()
      throw err
    }
  }

  private async request (protocol: string, body: unknown, signal: AbortSignal): Promise<unknown> {
    let js: JsonStream
    try {
      js = new JsonStream(await this.connection.newStream(protocol, { signal }))
    } catch (err) {
      throw new AgentUnreachableError(`agent ${this.agent.name} did not open ${protocol}: ${(err as Error).message}`, { cause: err })
    }
    await js.write(body, signal)
    const result = await readResult(js, signal)
    await js.close(signal)
    return result
  }

  async peers (signal: AbortSignal): Promise<PeerRow[]> {
    const rows = await this.request(PEERS_PROTOCOL, {}, signal)
    if (!Array.isArray(rows)) throw new ProtocolError('peers reply is not a list')
    return rows as PeerRow[]
  }

  async status (name: string | undefined, signal: AbortSignal): Promise<AgentStatus> {
    return await this.request(STATUS_PROTOCOL, name === undefined ? {} : { name }, signal) as AgentStatus
  }

  async close (): Promise<void> {
    await this.node.stop()
  }
}
