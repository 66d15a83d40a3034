/**
 * Opening a protocol stream to a mesh member: reuse an open connection to its peer ID or dial one of
 * its addresses, pass the auth gate, open the stream. One place, so every part dials the same way.
 */
import type { Libp2p } from 'libp2p'
import type { Connection } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { AuthService } from './auth-service.js'
import { JsonStream } from '../../protocol/wire.js'
import { peerAddr } from '../../protocol/multiaddr.js'

/** An authenticated connection to `peerId`, reached at `addrs` if none is open. */
export async function connectTo (node: Libp2p, auth: AuthService, peerId: string, addrs: string[], signal: AbortSignal): Promise<Connection> {
  const id = peerIdFromString(peerId)
  const connection = node.getConnections(id).find(c => c.status === 'open') ?? await node.dial(addrs.map(a => peerAddr(a, peerId)), { signal })
  await auth.ensure(connection, signal)
  return connection
}

/** A new stream of `protocol` to `peerId` (see connectTo). */
export async function openStream (node: Libp2p, auth: AuthService, peerId: string, addrs: string[], protocol: string, signal: AbortSignal): Promise<JsonStream> {
  const connection = await connectTo(node, auth, peerId, addrs, signal)
  return new JsonStream(await connection.newStream(protocol, { signal }))
}
