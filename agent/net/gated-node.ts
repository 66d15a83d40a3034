/**
 * The agent's libp2p node and its auth gate, built together. They need each other: the gate
 * listens on the node, and the node's circuit relay (fixed when the node is made) asks the gate
 * whether a peer is a member before it reserves for or relays it. This is the one place that knows
 * both halves, so the composition root gets both ready-made and holds no late-bound reference.
 */
import type { Libp2p } from 'libp2p'
import { createMeshNode, type MeshNodeOptions, type RelayListener } from '../../protocol/node.js'
import { AuthService, type AuthServiceDeps } from './auth-service.js'

export interface GatedNodeOptions {
  node: Omit<MeshNodeOptions, 'relay'> & {
    /** Relay for members behind NAT (every reachable agent does); false: only dial through relays. */
    relayServe: boolean
  }
  auth: Omit<AuthServiceDeps, 'node'>
}

export async function createGatedNode (opts: GatedNodeOptions): Promise<{ node: Libp2p<{ relayListener?: RelayListener }>, auth: AuthService }> {
  const { relayServe, ...nodeOptions } = opts.node
  const gate: { auth?: AuthService } = {}
  const node = await createMeshNode({
    ...nodeOptions,
    // The relay runs only once the node starts, after the gate below exists.
    relay: { serve: relayServe, isMember: async (peerId, roles) => await gate.auth?.isMember(peerId, roles) ?? false }
  })
  gate.auth = new AuthService({ ...opts.auth, node })
  return { node, auth: gate.auth }
}
