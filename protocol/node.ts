/**
 * Builds the libp2p node both the agent and the CLI use: TCP, Noise, yamux, nothing else. The
 * connection gater keeps us from dialling peers on the mesh's revocation list; the certificate check
 * itself happens on /goto/auth (see auth.ts).
 */
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import type { PrivateKey, PeerId } from '@libp2p/interface'

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
}

export const DEFAULT_INBOUND_CONNECTIONS_PER_SECOND = 20

/**
 * Largest yamux receive window per stream: 16 MiB keeps a 100 ms WAN path at ~160 MiB/s per stream,
 * and in the lab a 512 MiB layer pre-copied in 8 s instead of 13 s with 8 MiB.
 */
export const STREAM_WINDOW_BYTES = 16 * 1024 * 1024

/** Returns the node unstarted, so callers register their handlers before the first connection. */
export async function createMeshNode (opts: MeshNodeOptions): Promise<Libp2p> {
  const refuse = async (peerId: PeerId): Promise<boolean> => opts.isRefused(peerId)
  return await createLibp2p({
    start: false,
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen, announce: opts.announce ?? [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    // The window bounds what is in flight on a stream when its reader pauses (protocol/wire.ts);
    // the read buffer must hold at least that much, or a paused stream would be reset.
    streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: STREAM_WINDOW_BYTES, maxReadBufferLength: 2 * STREAM_WINDOW_BYTES } })],
    connectionGater: {
      // Go-To dials private and loopback addresses on purpose (a lab, a VPC): allow them.
      denyDialMultiaddr: async () => false,
      // We never dial a revoked peer. Inbound ones are let through to /goto/auth, which refuses them
      // with CertificateRevokedError: a revoked operator then reads why, not "cannot reach".
      denyOutboundEncryptedConnection: refuse
    },
    connectionManager: {
      inboundConnectionThreshold: opts.inboundConnectionsPerSecond ?? DEFAULT_INBOUND_CONNECTIONS_PER_SECOND
    },
    // Our heartbeats measure liveness and RTT; libp2p's monitor would ping a protocol we don't serve.
    connectionMonitor: { enabled: false }
  })
}
