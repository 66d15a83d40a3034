/**
 * Opening a protocol stream to a mesh member: an authenticated connection from AuthService.connect
 * (an open direct one, else dialled at its addresses, a relayed one as the fallback), then the
 * stream. One place, so every part dials the same way.
 */
import type { Connection } from '@libp2p/interface'
import type { AuthService } from './auth-service.js'
import { JsonStream } from '../../protocol/wire.js'

/** An authenticated connection to `peerId`, reached at `addrs` if none is open (AuthService.connect). */
export async function connectTo (auth: AuthService, peerId: string, addrs: string[], signal: AbortSignal): Promise<Connection> {
  return (await auth.connect(peerId, addrs, signal)).connection
}

/** A new stream of `protocol` to `peerId` (see connectTo). */
export async function openStream (auth: AuthService, peerId: string, addrs: string[], protocol: string, signal: AbortSignal): Promise<JsonStream> {
  const connection = await connectTo(auth, peerId, addrs, signal)
  return new JsonStream(await connection.newStream(protocol, { signal }))
}
