/**
 * Builds the libp2p node both the agent and the CLI use: TCP, Noise, yamux and, when asked for,
 * circuit relay v2 (docs/protocols.md, "Relayed connections"). The connection gater keeps us from dialling peers
 * on the mesh's revocation list and lets only authenticated mesh members use our relay; the
 * certificate check itself happens on /goto/auth (see auth.ts).
 */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { PrivateKey, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'

export interface MeshNodeOptions {
  privateKey: PrivateKey
  /** Multiaddrs to listen on; empty for a client such as the CLI. */
  listen: string[]
  /** Multiaddrs to tell other peers; defaults to what libp2p derives from `listen`. */
  announce?: string[]
  /** True when this peer ID must not connect (revoked). */
  isRefused: (peerId: PeerId) => boolean
  /**
   * New inbound connections allowed per second from one IP. libp2p's default (5) resets a faster
   * redial loop; the CLI, run in a loop by scripts, and a mesh restarting at once both exceed it.
   */
  inboundConnectionsPerSecond?: number
  /** Circuit relay v2; absent: the node neither dials nor serves relayed connections. */
  relay?: RelayOptions
}

/**
 * Circuit relay for hosts that accept no inbound connections (docs/protocols.md, "Relayed
 * connections"). With it the node can dial `/p2p-circuit` addresses; `serve` also makes it a relay
 * for others, and `listen()` on the returned node's `relayListener` makes a reservation on a relay.
 */
export interface RelayOptions {
  /** Serve hops (reservations and relayed connections) for others: every reachable agent does. */
  serve: boolean
  /**
   * Resolves true once `peerId` has passed /goto/auth with one of `roles` on a connection to us,
   * false if it does not within the auth timeout. The gater asks it before every reservation and
   * relayed connection, so only mesh members use our relay.
   */
  isMember: (peerId: PeerId, roles: readonly MemberRole[]) => Promise<boolean>
}

export type MemberRole = 'agent' | 'operator'

/** Makes reservations on chosen relays (the `/p2p/<relay>/p2p-circuit` listen addresses). */
export interface RelayListener {
  listen: (relayCircuitAddr: Multiaddr) => Promise<void>
}

/**
 * Most reservations one relay holds: one per host behind NAT that uses it. The library's default
 * (15) would leave a larger mesh's NAT'd hosts unreachable through that relay; a reservation costs
 * the relay one table entry, refreshed about every two hours.
 */
export const RELAY_MAX_RESERVATIONS = 256

/**
 * Relayed connections between members carry moves (hundreds of MiB, minutes long), so the relay
 * applies no data or duration limit (the library's defaults are 128 KiB and 2 minutes, sized for
 * a public relay that only introduces peers). That is safe only because the gater lets nobody but
 * authenticated members reserve or connect; see docs/threat-model.md.
 */
const RELAY_LIMITS = { applyDefaultLimit: false, maxReservations: RELAY_MAX_RESERVATIONS }

/** The libp2p identify protocol, which the relay transport needs present (see below). */
const IDENTIFY_PROTOCOL = '/ipfs/id/1.0.0'

export const DEFAULT_INBOUND_CONNECTIONS_PER_SECOND = 20

/**
 * Largest yamux receive window per stream: 16 MiB keeps a 100 ms WAN path at ~160 MiB/s per stream,
 * and in the lab a 512 MiB layer pre-copied in 8 s instead of 13 s with 8 MiB.
 */
export const STREAM_WINDOW_BYTES = 16 * 1024 * 1024

/** Returns the node unstarted, so callers register their handlers before the first connection. */
export async function createMeshNode (opts: MeshNodeOptions): Promise<Libp2p<{ relayListener?: RelayListener }>> {
  const refuse = async (peerId: PeerId): Promise<boolean> => opts.isRefused(peerId)
  const relay = opts.relay === undefined ? undefined : await relayParts(opts.relay)
  const node = await createLibp2p({
    start: false,
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen, announce: opts.announce ?? [] },
    transports: [tcp(), ...relay?.transports ?? []],
    connectionEncrypters: [noise()],
    // The window bounds what is in flight on a stream when its reader pauses (protocol/wire.ts);
    // the read buffer must hold at least that much, or a paused stream would be reset.
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: STREAM_WINDOW_BYTES, maxReadBufferLength: 2 * STREAM_WINDOW_BYTES } })],
    connectionGater: {
      // Go-To dials private and loopback addresses on purpose (a lab, a VPC): allow them.
      denyDialMultiaddr: async () => false,
      // We never dial a revoked peer. Inbound ones are let through to /goto/auth, which refuses them
      // with CertificateRevokedError: a revoked operator then reads why, not "cannot reach".
      denyOutboundEncryptedConnection: refuse,
      ...relay?.gater
    },
    connectionManager: {
      inboundConnectionThreshold: opts.inboundConnectionsPerSecond ?? DEFAULT_INBOUND_CONNECTIONS_PER_SECOND
    },
    // Our heartbeats measure liveness and RTT; libp2p's monitor would ping a protocol we don't serve.
    connectionMonitor: { enabled: false },
    services: relay?.services ?? {}
  }) as Libp2p<{ relayListener?: RelayListener }>
  if (relay !== undefined) {
    // The relay transport declares identify as a dependency (for relay discovery, which we do not
    // use: members are found through our own peer exchange), so the service must exist. It would
    // tell anyone who connects our addresses and protocols before /goto/auth: do not serve it.
    node.addEventListener('start', () => { node.unhandle(IDENTIFY_PROTOCOL).catch(() => {}) }, { once: true })
  }
  return node
}

/**
 * The relay's parts, imported only when asked for: every agent uses them (reachable ones relay, NAT'd
 * ones dial and listen through relays), the CLI only to dial an agent behind NAT. They cost an idle
 * process about 7 MiB of RSS.
 */
async function relayParts (opts: RelayOptions): Promise<{ transports: any[], services: Record<string, any>, gater: object }> {
  const [{ circuitRelayTransport, circuitRelayServer }, { identify }] = await Promise.all([
    import('@libp2p/circuit-relay-v2'),
    import('@libp2p/identify')
  ])
  const services: Record<string, any> = {
    identify: identify({ runOnConnectionOpen: false }),
    // A service is the one sanctioned way to reach the transport manager, which makes reservations.
    relayListener: (components: { transportManager: { listen: (addrs: Multiaddr[]) => Promise<void> } }): RelayListener => ({
      listen: async addr => { await components.transportManager.listen([addr]) }
    })
  }
  if (opts.serve) services.relay = circuitRelayServer({ reservations: RELAY_LIMITS })
  return {
    transports: [circuitRelayTransport()],
    services,
    gater: {
      // As a relay: only agents may reserve (they are the ones that listen), and only members may
      // be connected through us, to an agent that holds a reservation (so passed auth too).
      denyInboundRelayReservation: async (source: PeerId) => !await opts.isMember(source, ['agent']),
      denyOutboundRelayedConnection: async (source: PeerId) => !await opts.isMember(source, ['agent', 'operator']),
      // As a NAT'd host: accept relayed connections only through a relay that is a mesh agent. The
      // remote itself then passes /goto/auth on the relayed connection like any other.
      denyInboundRelayedConnection: async (relay: PeerId) => !await opts.isMember(relay, ['agent'])
    }
  }
}
