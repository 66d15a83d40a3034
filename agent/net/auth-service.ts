/**
 * The agent's gate. Every connection, inbound or outbound, must pass /goto/auth within
 * `authTimeoutMs` or it is closed. Other protocols register through `handle()`, which waits for the
 * connection's auth to finish and checks the peer's role before the handler sees a single byte; a
 * stream on a connection that never authenticates is aborted with PeerNotAuthenticatedError.
 *
 * Outbound connections authenticate as soon as they open (we start the handshake); inbound ones wait
 * for the dialer's hello. On an inbound connection, a stream of any other protocol that arrives
 * before the dialer passed auth is refused at once. When a newer revocation list arrives,
 * connections of newly revoked peers are closed at once, and every CERT_RECHECK_MS the open
 * connections' certificates are checked again: expired or revoked ones are closed.
 */
import type { Libp2p } from 'libp2p'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import type { Logger } from '../log.js'
import type { Role, VerifiedPeer, SignedCrl } from '../../certs/index.js'
import { peerIdFromString } from '@libp2p/peer-id'
import { AUTH_PROTOCOL } from '../../protocol/ids.js'
import { peerAddr } from '../../protocol/multiaddr.js'
import { authenticateInbound, authenticateOutbound, type AuthIdentity } from '../../protocol/auth.js'
import { JsonStream } from '../../protocol/wire.js'
import { CertificateExpiredError, CertificateRevokedError, PeerNotAuthenticatedError, RoleNotAllowedError, toWireError } from '../../protocol/errors.js'

interface Session {
  promise: Promise<VerifiedPeer>
  resolve: (p: VerifiedPeer) => void
  reject: (e: Error) => void
  started: boolean
  peer?: VerifiedPeer
}

export type GatedHandler = (js: JsonStream, peer: VerifiedPeer, connection: Connection) => Promise<void>

export interface AuthServiceDeps {
  node: Libp2p
  identity: AuthIdentity
  authTimeoutMs: number
  log: Logger
  /** Persist a newer revocation list adopted from a peer. */
  saveCrl: (crl: SignedCrl) => Promise<void>
  /** Told about every peer that passed auth. */
  onAuthenticated?: (peer: VerifiedPeer, connection: Connection) => void
  /** How often open connections' certificates are checked again (default CERT_RECHECK_MS). */
  certRecheckMs?: number
}

/**
 * How often the certificates of open connections are checked again for expiry and revocation. A
 * certificate that ends while its connection is open serves at most this much longer; the check
 * reads no file and sends nothing (a walk over the open connections).
 */
export const CERT_RECHECK_MS = 5_000

/**
 * After a direct dial to a member failed while a relayed connection to it was open, use the relayed
 * one for this long before trying direct again (a cut path would otherwise cost every heartbeat a
 * failed dial; this way it costs one missed heartbeat per period, fewer than make a peer suspect).
 */
const DIRECT_RETRY_MS = 30_000

/** Most concurrent inbound streams per connection for one request/response protocol. */
const MAX_INBOUND_STREAMS = 32

export class AuthService {
  private readonly sessions = new WeakMap<Connection, Session>()
  /** Connections a refused stream was already logged for at warn level. */
  private readonly warned = new WeakSet<Connection>()
  /** When a direct dial to a member last failed while a relayed connection was open. */
  private readonly directFailed = new Map<string, number>()
  private readonly protocols: string[] = []
  private readonly revocationListeners = new Set<() => void>()
  private readonly identity: AuthIdentity
  private recheckTimer: NodeJS.Timeout | undefined
  private readonly onOpen = (evt: CustomEvent<Connection>): void => { this.opened(evt.detail) }

  constructor (private readonly deps: AuthServiceDeps) {
    this.identity = {
      ...deps.identity,
      onCrlAdopted: crl => {
        deps.identity.onCrlAdopted?.(crl)
        this.crlAdopted(crl)
      }
    }
  }

  async start (): Promise<void> {
    await this.deps.node.handle(AUTH_PROTOCOL, async (stream, connection) => { await this.inbound(stream, connection) }, { maxInboundStreams: 2 })
    this.protocols.push(AUTH_PROTOCOL)
    this.deps.node.addEventListener('connection:open', this.onOpen)
    this.recheckTimer = setInterval(() => { this.recheck() }, this.deps.certRecheckMs ?? CERT_RECHECK_MS)
    this.recheckTimer.unref()
  }

  async stop (): Promise<void> {
    clearInterval(this.recheckTimer)
    this.deps.node.removeEventListener('connection:open', this.onOpen)
    for (const p of this.protocols.splice(0)) await this.deps.node.unhandle(p)
  }

  /**
   * Calls `listener` whenever a newer revocation list is adopted (e.g. membership drops revoked
   * peers from its table); returns the function that unsubscribes it.
   */
  onRevocation (listener: () => void): () => void {
    this.revocationListeners.add(listener)
    return () => { this.revocationListeners.delete(listener) }
  }

  /** The verified peer behind a connection, once it has authenticated. */
  peerOf (connection: Connection): VerifiedPeer | undefined {
    return this.sessions.get(connection)?.peer
  }

  /** The newest revocation list we hold, and its number. */
  get crl (): SignedCrl | undefined { return this.deps.identity.trust.crl }
  get crlNumber (): number { return this.deps.identity.trust.crlNumber }

  /**
   * Offers a revocation list a peer passed on. Adopted only if the mesh CA signed it and it is newer;
   * an invalid one is logged and ignored (the peer's other messages stay usable).
   */
  offerCrl (crl: SignedCrl): void {
    try {
      if (this.deps.identity.trust.adoptCrl(crl)) this.identity.onCrlAdopted?.(crl)
    } catch (err) {
      this.deps.log.warn('ignored invalid revocation list from a peer', { error: (err as Error).message })
    }
  }

  isRevoked (peerId: string): boolean {
    return this.deps.identity.trust.isRevoked(peerId)
  }

  /** Waits until the connection has authenticated (starting the handshake on outbound ones). */
  async ensure (connection: Connection, signal: AbortSignal): Promise<VerifiedPeer> {
    const s = this.session(connection)
    if (connection.direction === 'outbound' && !s.started) this.startOutbound(connection, s)
    return await new Promise<VerifiedPeer>((resolve, reject) => {
      const onAbort = (): void => { reject(signal.reason) }
      if (signal.aborted) { onAbort(); return }
      signal.addEventListener('abort', onAbort, { once: true })
      s.promise.then(resolve, reject).finally(() => { signal.removeEventListener('abort', onAbort) })
    })
  }

  /**
   * True once some connection of `peerId` has passed auth with one of `roles`; false if none does
   * within `authTimeoutMs` (or the peer is revoked). The relay's gate: a reservation or hop request
   * may arrive while the same connection's handshake is still running, so it waits for it.
   */
  async isMember (peerId: PeerId, roles: readonly Role[]): Promise<boolean> {
    const id = peerId.toString()
    if (this.isRevoked(id)) return false
    const signal = AbortSignal.timeout(this.deps.authTimeoutMs)
    const connections = this.deps.node.getConnections(peerId).filter(c => c.status === 'open')
    try {
      const peer = await Promise.any(connections.map(async c => await this.ensure(c, signal)))
      return roles.includes(peer.role) && peer.peerId === id
    } catch {
      return false
    }
  }

  /**
   * An authenticated connection to the member `peerId`: an open direct one if there is one, else one
   * dialled at its announced `addrs` — libp2p returns an open relayed connection unless an address
   * would give a direct one, which it then dials (so a host behind NAT opens its own direct
   * connections to members instead of riding the relayed ones they opened to it). Where a direct
   * dial fails while a relayed connection is open (a cut or filtered path), the relayed one serves
   * if time is left, and direct is not tried again for DIRECT_RETRY_MS.
   */
  async connect (peerId: string, addrs: string[], signal: AbortSignal): Promise<{ connection: Connection, peer: VerifiedPeer }> {
    const open = this.deps.node.getConnections(peerIdFromString(peerId)).filter(c => c.status === 'open')
    const relayed = open.find(c => !c.direct)
    let connection = open.find(c => c.direct) ?? (Date.now() - (this.directFailed.get(peerId) ?? 0) < DIRECT_RETRY_MS ? relayed : undefined)
    if (connection === undefined) {
      try {
        connection = await this.deps.node.dial(addrs.map(a => peerAddr(a, peerId)), { signal })
      } catch (err) {
        if (relayed === undefined || relayed.status !== 'open') throw err
        this.directFailed.set(peerId, Date.now())
        connection = relayed
      }
    }
    return { connection, peer: await this.ensure(connection, signal) }
  }

  /** Registers a protocol that serves only authenticated peers of the given roles. */
  async handle (protocol: string, roles: readonly Role[], handler: GatedHandler): Promise<void> {
    await this.deps.node.handle(protocol, async (stream, connection) => {
      const js = new JsonStream(stream)
      // Half the auth timeout: a refusal must reach the peer before its connection is closed.
      const signal = AbortSignal.timeout(this.deps.authTimeoutMs / 2)
      let peer: VerifiedPeer
      try {
        peer = await this.ensure(connection, this.preAuthRefused(connection) ?? signal)
        this.deps.identity.trust.requireRole(peer, roles, protocol)
      } catch (err) {
        const refusal = err instanceof RoleNotAllowedError
          ? err
          : new PeerNotAuthenticatedError(`${protocol} requires a connection that passed ${AUTH_PROTOCOL}`)
        const name = this.peerOf(connection)?.name
        // One warning per connection: a stranger opening stream after stream must not flood the log.
        const level = this.warned.has(connection) ? 'debug' : 'warn'
        this.warned.add(connection)
        this.deps.log[level]('refused stream', { protocol, peer: connection.remotePeer.toString(), ...name === undefined ? {} : { name }, reason: refusal.name })
        await js.write({ ok: false, error: toWireError(refusal) }, AbortSignal.timeout(1000)).catch(() => {})
        await js.close(AbortSignal.timeout(1000))
        return
      }
      try {
        await handler(js, peer, connection)
      } catch (err) {
        // A request the handler could not take (malformed, refused before its own reply) gets a
        // typed error, as any other refusal; only a stream that cannot carry one is reset.
        this.deps.log.warn('handler failed', { protocol, peer: peer.name, error: (err as Error).message, reason: (err as Error).name })
        if (!js.isOpen) { stream.abort(err as Error); return }
        await js.write({ ok: false, error: toWireError(err) }, AbortSignal.timeout(1000))
          .then(async () => { await js.close(AbortSignal.timeout(1000)) }, () => { js.abort(err as Error) })
          .catch(() => { js.abort(err as Error) })
      }
    }, { maxInboundStreams: MAX_INBOUND_STREAMS })
    this.protocols.push(protocol)
  }

  /**
   * An already aborted signal for a stream that arrives on an inbound connection before its dialer
   * passed /goto/auth: refused at once, not held until the auth timeout (a peer without a
   * certificate could otherwise hold every protocol's stream limit on each connection). Nothing
   * honest does it: the listener counts the dialer authenticated before its reply goes out
   * (protocol/auth.ts). On outbound connections our own handshake may still be reading the reply
   * when the listener's first stream arrives, so those streams wait for it.
   */
  private preAuthRefused (connection: Connection): AbortSignal | undefined {
    if (connection.direction !== 'inbound' || this.sessions.get(connection)?.peer !== undefined) return undefined
    return AbortSignal.abort(new PeerNotAuthenticatedError('stream opened before /goto/auth completed'))
  }

  /**
   * Closes open connections whose peer's certificate has expired or been revoked since its
   * handshake (validity is otherwise checked only then). Runs every certRecheckMs.
   */
  recheck (now = Date.now()): void {
    for (const connection of this.deps.node.getConnections()) {
      const peer = this.peerOf(connection)
      if (peer === undefined) continue
      const reason = peer.notAfter.getTime() <= now
        ? new CertificateExpiredError(`certificate of ${peer.name} expired at ${peer.notAfter.toISOString()}`)
        : this.isRevoked(peer.peerId) ? new CertificateRevokedError(`certificate of ${peer.name} revoked`) : undefined
      if (reason === undefined) continue
      this.deps.log.warn('closing connection of a peer whose certificate is no longer valid', { peer: peer.peerId, name: peer.name, reason: reason.name })
      connection.abort(reason)
    }
  }

  private session (connection: Connection): Session {
    let s = this.sessions.get(connection)
    if (s === undefined) {
      let resolve!: Session['resolve']
      let reject!: Session['reject']
      const promise = new Promise<VerifiedPeer>((res, rej) => { resolve = res; reject = rej })
      promise.catch(() => {}) // observed through ensure(); never an unhandled rejection
      s = { promise, resolve, reject, started: false }
      this.sessions.set(connection, s)
    }
    return s
  }

  private opened (connection: Connection): void {
    const s = this.session(connection)
    const timer = setTimeout(() => {
      if (s.peer !== undefined) return
      const err = new PeerNotAuthenticatedError(`no auth within ${this.deps.authTimeoutMs} ms`)
      this.deps.log.warn('closing unauthenticated connection', { peer: connection.remotePeer.toString(), addr: connection.remoteAddr.toString() })
      s.reject(err)
      connection.abort(err)
    }, this.deps.authTimeoutMs)
    timer.unref()
    s.promise.then(() => { clearTimeout(timer) }, () => { clearTimeout(timer) })
    if (connection.direction === 'outbound' && !s.started) this.startOutbound(connection, s)
  }

  private startOutbound (connection: Connection, s: Session): void {
    s.started = true
    authenticateOutbound(connection, this.identity, AbortSignal.timeout(this.deps.authTimeoutMs))
      .then(peer => { this.accepted(connection, s, peer) }, err => { this.refused(connection, s, err) })
      .catch(err => { this.deps.log.error('auth bookkeeping failed', { error: (err as Error).message }) })
  }

  private async inbound (stream: Stream, connection: Connection): Promise<void> {
    const s = this.session(connection)
    if (s.started) { stream.abort(new PeerNotAuthenticatedError('auth already attempted on this connection')); return }
    s.started = true
    try {
      await authenticateInbound(stream, connection, this.identity, AbortSignal.timeout(this.deps.authTimeoutMs), peer => { this.accepted(connection, s, peer) })
    } catch (err) {
      if (s.peer === undefined) this.refused(connection, s, err)
    }
  }

  private accepted (connection: Connection, s: Session, peer: VerifiedPeer): void {
    s.peer = peer
    s.resolve(peer)
    this.deps.log.debug('peer authenticated', { peer: peer.peerId, name: peer.name, role: peer.role, direction: connection.direction })
    this.deps.onAuthenticated?.(peer, connection)
  }

  private refused (connection: Connection, s: Session, err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err))
    this.deps.log.warn('peer refused', { peer: connection.remotePeer.toString(), addr: connection.remoteAddr.toString(), reason: e.name, detail: e.message })
    s.reject(e)
    connection.abort(e)
  }

  private crlAdopted (crl: SignedCrl): void {
    this.deps.log.info('adopted newer revocation list', { number: this.deps.identity.trust.crlNumber })
    this.deps.saveCrl(crl).catch(err => { this.deps.log.error('could not persist revocation list', { error: (err as Error).message }) })
    for (const listener of this.revocationListeners) listener()
    for (const connection of this.deps.node.getConnections()) {
      const peerId = connection.remotePeer.toString()
      if (this.deps.identity.trust.isRevoked(peerId)) {
        const name = this.peerOf(connection)?.name
        this.deps.log.warn('closing connection of revoked peer', { peer: peerId, ...name === undefined ? {} : { name }, reason: 'CertificateRevokedError' })
        connection.abort(new CertificateRevokedError(`certificate of ${name ?? peerId} revoked`))
      }
    }
  }
}
