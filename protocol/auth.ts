/**
 * The auth handshake on /goto/auth/1.0.0. Noise has proved the remote owns its peer ID; this proves
 * the peer ID belongs to the mesh. The dialer sends `AuthHello` (its certificate and its newest
 * revocation list); the listener adopts a newer list, verifies the certificate against the mesh CA
 * and the Noise peer ID, and answers with its own hello or with the typed error. The dialer then
 * verifies the listener the same way. Both sides use one TrustStore (certs/verify.ts).
 */
import type { Connection, Stream } from '@libp2p/interface'
import type { TrustStore, VerifiedPeer, SignedCrl } from '../certs/index.js'
import { AUTH_PROTOCOL } from './ids.js'
import { JsonStream, readResult } from './wire.js'
import { parseAuthHello, type AuthHello } from './messages.js'
import { GotoError, PeerRejectedUsError, AgentUnreachableError, RevocationListInvalidError, toWireError } from './errors.js'

export interface AuthIdentity {
  certPem: string
  trust: TrustStore
  /** Called after a newer revocation list was adopted from a peer, e.g. to persist it. */
  onCrlAdopted?: (crl: SignedCrl) => void
}

function hello (id: AuthIdentity): AuthHello {
  const crl = id.trust.crl
  return crl === undefined ? { cert: id.certPem } : { cert: id.certPem, crl }
}

/**
 * Adopts a newer revocation list the peer carried. A list the mesh CA did not sign is ignored, not
 * fatal: the certificate check that follows decides whether the peer gets in.
 */
function adopt (id: AuthIdentity, h: AuthHello): void {
  if (h.crl === undefined) return
  try {
    if (id.trust.adoptCrl(h.crl)) id.onCrlAdopted?.(h.crl)
  } catch (err) {
    if (!(err instanceof RevocationListInvalidError)) throw err
  }
}

/** Dialer side: present our certificate, then verify theirs. */
export async function authenticateOutbound (connection: Connection, id: AuthIdentity, signal: AbortSignal): Promise<VerifiedPeer> {
  let stream: Stream
  try {
    stream = await connection.newStream(AUTH_PROTOCOL, { signal })
  } catch (err) {
    throw new AgentUnreachableError(`could not open the auth protocol: ${(err as Error).message}`, { cause: err })
  }
  const js = new JsonStream(stream)
  await js.write(hello(id), signal)
  let reply: AuthHello
  try {
    reply = parseAuthHello(await readResult(js, signal))
  } catch (err) {
    if (err instanceof GotoError && err.name.startsWith('Certificate')) {
      throw new PeerRejectedUsError(`our certificate was refused: ${err.message}`, { cause: err })
    }
    throw err
  }
  adopt(id, reply)
  const peer = id.trust.verify(reply.cert, connection.remotePeer.toString())
  await js.close(signal)
  return peer
}

/**
 * Listener side: verify the dialer, then present our certificate. Refusals are sent, then thrown.
 * `onVerified` runs before our reply goes out, so by the time the dialer can open its next stream
 * this side already counts the connection as authenticated.
 */
export async function authenticateInbound (stream: Stream, connection: Connection, id: AuthIdentity, signal: AbortSignal, onVerified?: (peer: VerifiedPeer) => void): Promise<VerifiedPeer> {
  const js = new JsonStream(stream)
  let peer: VerifiedPeer
  try {
    const theirs = parseAuthHello(await js.read(signal))
    adopt(id, theirs)
    peer = id.trust.verify(theirs.cert, connection.remotePeer.toString())
  } catch (err) {
    await js.write({ ok: false, error: toWireError(err) }, signal).catch(() => {})
    await js.close(signal)
    throw err
  }
  onVerified?.(peer)
  await js.write({ ok: true, result: hello(id) }, signal)
  await js.close(signal)
  return peer
}
