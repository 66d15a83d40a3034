/**
 * The operator's connection to one agent: a short-lived libp2p peer that dials the agent, passes
 * /goto/auth with the operator certificate, checks the agent's certificate in turn, and then asks.
 * Whatever changes a host is signed with the operator's key on the way (protocol/orders.ts): a
 * move's `order` event is answered with the signed move order, a protect carries its own order.
 * Errors come out typed: AgentUnreachableError, PeerRejectedUsError (our certificate was refused),
 * Certificate*Error (the agent's certificate is not one we trust), UnknownPeerError.
 */
import type { Libp2p } from 'libp2p'
import type { Connection } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { TrustStore, type VerifiedPeer } from '../certs/verify.js'
import type { Bundle } from '../certs/bundle.js'
import { createMeshNode } from '../protocol/node.js'
import { circuitRelayAddr } from '../protocol/multiaddr.js'
import { authenticateOutbound } from '../protocol/auth.js'
import { JsonStream, readResult } from '../protocol/wire.js'
import { FAILOVER_PROTOCOL, LOCATE_PROTOCOL, MOVE_PROTOCOL, PEERS_PROTOCOL, STATUS_PROTOCOL } from '../protocol/ids.js'
import { parseProtectReply, type ProtectReply } from '../protocol/failover-messages.js'
import { parseOrderRequest, type MoveEvent, type MoveOrder } from '../protocol/move-messages.js'
import { newOrderId, signOrder, type OrderSigner, type ProtectOrderBody } from '../protocol/orders.js'
import { signMoveOrder } from './move.js'
import { AgentUnreachableError, GotoError, ProtocolError, fromWireError } from '../protocol/errors.js'
import { parseAgentStatus, parsePeerRows, type AgentStatus, type PeerRow } from '../protocol/messages.js'

export class AgentClient {
  private constructor (
    private readonly node: Libp2p,
    private readonly connection: Connection,
    readonly agent: VerifiedPeer,
    /** The operator's certificate and key, which sign its orders. */
    private readonly signer: OrderSigner
  ) {}

  /**
   * Dials the agent at `addr` and authenticates both ways. A circuit address (an agent behind NAT,
   * `<relay>/p2p-circuit/p2p/<agent>`) is dialled through its relay, which relays only for mesh
   * members: we pass /goto/auth with the relay first, then with the agent itself over the relayed
   * connection (Noise runs end to end; the relay sees ciphertext).
   */
  static async connect (bundle: Bundle, addr: Multiaddr, signal: AbortSignal): Promise<AgentClient> {
    const trust = new TrustStore(bundle.caCertPem, bundle.crl)
    const relayAddr = circuitRelayAddr(addr)
    // No gater refusal here: the handshake verifies the agent anyway, and then says *why* it is refused.
    // The relay modules load only for a relayed dial (this node never listens, so relays no one).
    const node = await createMeshNode({
      privateKey: bundle.privateKey,
      listen: [],
      isRefused: () => false,
      relay: relayAddr === undefined ? undefined : { serve: false, isMember: async () => false }
    })
    await node.start()
    try {
      if (relayAddr !== undefined) await dialAgent(node, relayAddr, bundle, trust, signal)
      const { connection, agent } = await dialAgent(node, addr, bundle, trust, signal)
      return new AgentClient(node, connection, agent, bundle)
    } catch (err) {
      await node.stop()
      throw err
    }
  }

  private async open (protocol: string, signal: AbortSignal): Promise<JsonStream> {
    try {
      return new JsonStream(await this.connection.newStream(protocol, { signal }))
    } catch (err) {
      throw new AgentUnreachableError(`agent ${this.agent.name} did not open ${protocol}: ${(err as Error).message}`, { cause: err })
    }
  }

  private async request (protocol: string, body: unknown, signal: AbortSignal): Promise<unknown> {
    const js = await this.open(protocol, signal)
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

  /**
   * Which member runs `container` (or, `{ project }`, compose project NAME: ProjectSpreadError when
   * it runs on several), asked of this agent.
   */
  async locate (what: string | { project: string }, signal: AbortSignal): Promise<{ name: string, peerId: string, addrs: string[] }> {
    const r = await this.request(LOCATE_PROTOCOL, typeof what === 'string' ? { container: what } : what, signal) as { name?: unknown, peerId?: unknown, addrs?: unknown }
    if (typeof r?.name !== 'string' || typeof r.peerId !== 'string' || !Array.isArray(r.addrs) || !r.addrs.every(a => typeof a === 'string')) {
      throw new ProtocolError('locate reply is malformed')
    }
    return { name: r.name, peerId: r.peerId, addrs: r.addrs as string[] }
  }

  /** Protects (or unprotects) a container this agent runs. */
  async protect (op: 'protect' | 'unprotect', container: string, signal: AbortSignal): Promise<ProtectReply> {
    const order = await signOrder<ProtectOrderBody>(this.signer, { kind: op, id: newOrderId(), container, host: this.agent.peerId })
    return parseProtectReply(await this.request(FAILOVER_PROTOCOL, { op, container, order }, signal))
  }

  /** Orders a move of a container this agent runs; yields its events up to `done` or `failed`. */
  async * move (order: MoveOrder, signal: AbortSignal): AsyncGenerator<MoveEvent> {
    const js = await this.open(MOVE_PROTOCOL, signal)
    await js.write(order, signal)
    for (;;) {
      const msg = await js.read(signal)
      if (typeof msg === 'object' && msg !== null && (msg as { ok?: unknown }).ok === false) {
        // The gate refused the stream (e.g. an agent certificate ordering a move).
        await readResultOf(msg)
      }
      const ev = msg as MoveEvent
      if (typeof ev?.event !== 'string') throw new ProtocolError('move event is malformed')
      if (ev.event === 'order') {
        // The source asks us to sign what it will send: we check it is what we asked for, and sign
        // the digest of the spec we were shown, computed here.
        const request = parseOrderRequest(ev.request)
        try {
          await js.write({ order: await signMoveOrder(this.signer, request, order, this.agent.peerId) }, signal)
        } catch (err) {
          js.abort(err as Error)
          throw err
        }
        yield { event: 'order', request }
        continue
      }
      yield ev
      if (ev.event === 'done' || ev.event === 'failed') break
    }
    await js.close(signal).catch(() => {})
  }

  async close (): Promise<void> {
    await this.node.stop()
  }
}

/** Dials `addr`, passes /goto/auth and checks that the peer is an agent. */
async function dialAgent (node: Libp2p, addr: Multiaddr, bundle: Bundle, trust: TrustStore, signal: AbortSignal): Promise<{ connection: Connection, agent: VerifiedPeer }> {
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
  return { connection, agent }
}

/** Throws the typed error an envelope carries. */
async function readResultOf (envelope: unknown): Promise<never> {
  const e = (envelope as { error?: { name?: unknown, message?: unknown } }).error
  throw fromWireError({ name: String(e?.name ?? 'ProtocolError'), message: String(e?.message ?? 'refused') })
}
