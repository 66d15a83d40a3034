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
import { AgentUnreachableError, GotoError, ProtocolError } from '../protocol/errors.js'
import { parseAgentStatus, parsePeerRows, type AgentStatus, type PeerRow } from '../protocol/messages.js'

export class AgentClient {
  private constructor (
    private readonly node: Libp2p,
    private readonly connection: Connection,
    readonly agent: VerifiedPeer
  ) {}

  static async connect (bundle: Bundle, addr: Multiaddr, signal: AbortSignal): Promise<AgentClient> {
    const trust = new TrustStore(bundle.caCertPem, bundle.crl)
    // No gater refusal here: the handshake verifies the agent anyway, and then says *why* it is refused.
    const node = await createMeshNode({ privateKey: bundle.privateKey, listen: [], isRefused: () => false })
    await node.start()
    try {
      let connection: Connection
      try {
        connection = await node.dial(addr, { signal })
      } catch (err) {
        const reason = signal.aborted ? 'timed out' : (err as Error).message
        throw new AgentUnreachableError(`cannot reach an agent at ${addr.toString()}: ${reason}`, { cause: err })
      }
      let agent: VerifiedPeer
      try {
        agent = await authenticateOutbound(connection, { certPem: bundle.certPem, trust }, signal)
      } catch (err) {
        if (!(err instanceof GotoError) || !err.name.startsWith('Certificate')) throw err
        // Same class, but say whose certificate it was: the agent's, not ours.
        const Ctor = err.constructor as new (m: string, o?: { cause?: unknown }) => GotoError
        throw new Ctor(`the agent at ${addr.toString()} presented a certificate we do not trust: ${err.message}`, { cause: err })
      }
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
    return parsePeerRows(await this.request(PEERS_PROTOCOL, {}, signal))
  }

  async status (name: string | undefined, signal: AbortSignal): Promise<AgentStatus> {
    return parseAgentStatus(await this.request(STATUS_PROTOCOL, name === undefined ? {} : { name }, signal))
  }

  async close (): Promise<void> {
    await this.node.stop()
  }
}
