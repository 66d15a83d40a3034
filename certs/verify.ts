/**
 * The trust store: decides whether a certificate presented by a peer was issued by the mesh CA, is
 * in date, names the peer ID that Noise authenticated, and is not revoked. It also checks roles for
 * calls only some roles may make, and adopts newer signed revocation lists as they spread.
 *
 * All verification uses node:crypto (OpenSSL), never node-forge: forge has had chain-verification
 * bugs. Usage:
 *
 *   const store = new TrustStore(caCertPem, crl)
 *   const peer = store.verify(certPem, connection.remotePeer.toString())
 *   store.requireRole(peer, ['operator'], 'move')
 */
import { X509Certificate, verify as verifySignature } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import {
  BundleError,
  CertificateExpiredError,
  CertificateMalformedError,
  CertificateNotLeafError,
  CertificateNotYetValidError,
  CertificatePeerMismatchError,
  CertificateRevokedError,
  CertificateUntrustedError,
  RevocationListInvalidError,
  RoleNotAllowedError
} from '../protocol/errors.js'
import { asSignedCrl, isRole, isValidPeerName, parseCrlPayload, PEER_URI_PREFIX } from './format.js'
import type { Role, SignedCrl } from './format.js'

export type { Role, SignedCrl } from './format.js'

/** What a verified certificate says about its holder. */
export interface VerifiedPeer {
  name: string
  role: Role
  peerId: string
  /** Lowercase hex. */
  serial: string
  notBefore: Date
  notAfter: Date
  /** The certificate itself (PEM), as verified: membership passes it on so others can count this peer. */
  certPem: string
}

/** The Go-To fields read from a parsed certificate, before any of them is trusted. */
interface CertFields {
  x: X509Certificate
  name: string
  ou: string
  sanPeerId: string
  /** Undefined when the key is not Ed25519. */
  keyPeerId: string | undefined
  keyType: string
  serial: string
  notBefore: Date
  notAfter: Date
}

export class TrustStore {
  readonly #ca: X509Certificate
  readonly #fingerprint: string
  #crl: SignedCrl | undefined
  #crlNumber = 0
  #revokedSerials = new Set<string>()
  #revokedPeers = new Set<string>()

  /**
   * @param caCertPem the mesh CA certificate (ca.pem); must be a CA, self-signed and in date.
   * @param crl a signed revocation list to adopt at once; an invalid one throws RevocationListInvalidError.
   */
  constructor (caCertPem: string, crl?: SignedCrl) {
    let ca: X509Certificate
    try {
      ca = new X509Certificate(caCertPem)
    } catch (err) {
      throw new BundleError('the mesh CA certificate cannot be parsed as PEM X.509', { cause: err })
    }
    if (!ca.ca) {
      throw new CertificateUntrustedError(`the mesh CA certificate (${ca.subject.replace(/\n/g, ', ')}) is not a CA certificate`)
    }
    if (!ca.checkIssued(ca) || !safeVerify(ca, ca)) {
      throw new CertificateUntrustedError('the mesh CA certificate is not self-signed')
    }
    checkCaInDate(ca, new Date())
    this.#ca = ca
    this.#fingerprint = ca.fingerprint256
    if (crl !== undefined) this.adoptCrl(crl)
  }

  /** SHA-256 fingerprint of the CA certificate (the `issuer` of its revocation lists). */
  get caFingerprint (): string {
    return this.#fingerprint
  }

  /** The newest revocation list adopted, exactly as signed (to store or pass on to peers). */
  get crl (): SignedCrl | undefined {
    return this.#crl
  }

  /** Number of the adopted revocation list; 0 when none was adopted. */
  get crlNumber (): number {
    return this.#crlNumber
  }

  isRevoked (peerId: string): boolean {
    return this.#revokedPeers.has(peerId)
  }

  /**
   * Verifies a peer's certificate (PEM) against this CA for the peer ID the transport authenticated.
   * Checks run in this order, each with its own error class: parse and Go-To fields (Malformed),
   * issued by this CA (Untrusted), not a CA (NotLeaf), validity (Expired / NotYetValid), peer ID in
   * the SAN and of the key (PeerMismatch), revocation (Revoked), role (Malformed).
   */
  verify (certPem: string, expectedPeerId: string, now: Date = new Date()): VerifiedPeer {
    const f = readFields(certPem)
    const who = `certificate of "${f.name}" (serial ${f.serial})`

    // Only certificates issued directly by the mesh CA are accepted: there are no intermediates, so a
    // certificate signed by anything else, including a leaf misused as a CA, fails here.
    checkCaInDate(this.#ca, now)
    if (!f.x.checkIssued(this.#ca)) {
      throw new CertificateUntrustedError(`${who} was not issued by the mesh CA (issuer: ${f.x.issuer.replace(/\n/g, ', ')})`)
    }
    if (!safeVerify(f.x, this.#ca)) {
      throw new CertificateUntrustedError(`${who}: the signature does not verify with the mesh CA key`)
    }
    if (f.x.ca) {
      throw new CertificateNotLeafError(`${who} is a CA certificate, not a peer certificate`)
    }
    if (now.getTime() < f.notBefore.getTime()) {
      throw new CertificateNotYetValidError(`${who} is not valid before ${f.notBefore.toISOString()}`)
    }
    if (now.getTime() > f.notAfter.getTime()) {
      throw new CertificateExpiredError(`${who} expired at ${f.notAfter.toISOString()}`)
    }
    if (f.sanPeerId !== expectedPeerId) {
      throw new CertificatePeerMismatchError(`${who} names peer ${f.sanPeerId}, but the connection is from ${expectedPeerId}`)
    }
    if (f.keyPeerId === undefined) {
      throw new CertificatePeerMismatchError(`${who} holds a ${f.keyType} key, not the Ed25519 key of peer ${expectedPeerId}`)
    }
    if (f.keyPeerId !== expectedPeerId) {
      throw new CertificatePeerMismatchError(`${who} holds the key of peer ${f.keyPeerId}, but the connection is from ${expectedPeerId}`)
    }
    if (this.#revokedSerials.has(f.serial) || this.#revokedPeers.has(f.sanPeerId)) {
      throw new CertificateRevokedError(`${who} for peer ${f.sanPeerId} is revoked (revocation list ${this.#crlNumber})`)
    }
    if (!isRole(f.ou)) {
      throw new CertificateMalformedError(`${who} has role "${f.ou}", expected agent or operator`)
    }
    return { name: f.name, role: f.ou, peerId: f.sanPeerId, serial: f.serial, notBefore: f.notBefore, notAfter: f.notAfter, certPem }
  }

  /** Throws RoleNotAllowedError unless the peer's role is one of `allowed`. */
  requireRole (peer: VerifiedPeer, allowed: readonly Role[], action: string): void {
    if (!allowed.includes(peer.role)) {
      throw new RoleNotAllowedError(`"${peer.name}" has role ${peer.role}; only ${allowed.join(' or ')} may ${action}`)
    }
  }

  /**
   * Adopts a signed revocation list if it is signed by this CA, names this CA as issuer, and is newer
   * than the current one. Returns false for a valid list that is not newer; throws
   * RevocationListInvalidError for anything not signed by this CA or not well formed.
   */
  adoptCrl (crl: unknown): boolean {
    const signed = asSignedCrl(crl)
    let ok: boolean
    try {
      ok = verifySignature('sha256', Buffer.from(signed.payload, 'utf8'), this.#ca.publicKey, Buffer.from(signed.signature, 'base64'))
    } catch (err) {
      throw new RevocationListInvalidError('revocation list signature cannot be checked', { cause: err })
    }
    if (!ok) throw new RevocationListInvalidError('revocation list is not signed by the mesh CA')
    const payload = parseCrlPayload(signed.payload)
    if (payload.issuer !== this.#fingerprint) {
      throw new RevocationListInvalidError(`revocation list names issuer ${payload.issuer}, not this CA (${this.#fingerprint})`)
    }
    if (payload.number <= this.#crlNumber) return false
    this.#crl = { payload: signed.payload, signature: signed.signature }
    this.#crlNumber = payload.number
    this.#revokedSerials = new Set(payload.revoked.map(r => r.serial))
    this.#revokedPeers = new Set(payload.revoked.map(r => r.peerId))
    return true
  }
}

function checkCaInDate (ca: X509Certificate, now: Date): void {
  const from = new Date(ca.validFrom)
  const to = new Date(ca.validTo)
  if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime())) {
    throw new BundleError('the mesh CA certificate has unreadable validity dates')
  }
  if (now.getTime() < from.getTime()) {
    throw new CertificateUntrustedError(`the mesh CA certificate is not valid before ${from.toISOString()}`)
  }
  if (now.getTime() > to.getTime()) {
    throw new CertificateUntrustedError(`the mesh CA certificate expired at ${to.toISOString()}`)
  }
}

/** `x.verify` that treats an exception (e.g. an unusable key) as a failed verification. */
function safeVerify (x: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return x.verify(issuer.publicKey)
  } catch {
    return false
  }
}

/** Parses the PEM and reads the Go-To fields; anything missing or unreadable is CertificateMalformedError. */
function readFields (certPem: string): CertFields {
  let x: X509Certificate
  try {
    x = new X509Certificate(certPem)
  } catch (err) {
    throw new CertificateMalformedError('certificate cannot be parsed as PEM X.509', { cause: err })
  }
  const serial = x.serialNumber.toLowerCase()

  // node prints the subject one attribute per line, with control characters escaped.
  const subject = new Map<string, string[]>()
  for (const line of x.subject.split('\n')) {
    const eq = line.indexOf('=')
    if (eq < 1) continue
    const key = line.slice(0, eq)
    subject.set(key, [...(subject.get(key) ?? []), line.slice(eq + 1)])
  }
  const cn = subject.get('CN') ?? []
  const ou = subject.get('OU') ?? []
  if (cn.length !== 1 || !isValidPeerName(cn[0])) {
    throw new CertificateMalformedError(`certificate (serial ${serial}) lacks a single valid CN (peer name)`)
  }
  if (ou.length !== 1) {
    throw new CertificateMalformedError(`certificate of "${cn[0]}" (serial ${serial}) lacks a single OU (role)`)
  }

  const uris = (x.subjectAltName ?? '').split(', ').filter(s => s.startsWith(`URI:${PEER_URI_PREFIX}`))
  const sanMatch = uris.length === 1 ? /^URI:urn:goto:peer:([1-9A-HJ-NP-Za-km-z]+)$/.exec(uris[0]) : null
  if (sanMatch === null) {
    throw new CertificateMalformedError(`certificate of "${cn[0]}" (serial ${serial}) lacks a single ${PEER_URI_PREFIX}<peerId> subject alternative name`)
  }

  // The peer ID of the certificate's own key; compared with the expected one in verify(). Our
  // certificates carry the peer's Ed25519 key; any other key cannot be that peer's.
  let publicKey: KeyObject
  try {
    publicKey = x.publicKey
  } catch (err) {
    throw new CertificateMalformedError(`certificate of "${cn[0]}" (serial ${serial}) has a public key node cannot read`, { cause: err })
  }
  const keyType = publicKey.asymmetricKeyType ?? 'unknown'
  let keyPeerId: string | undefined
  if (keyType === 'ed25519') {
    try {
      const jwk = publicKey.export({ format: 'jwk' })
      keyPeerId = peerIdFromPublicKey(publicKeyFromRaw(Buffer.from(jwk.x ?? '', 'base64url'))).toString()
    } catch (err) {
      throw new CertificateMalformedError(`certificate of "${cn[0]}" (serial ${serial}) has an unusable Ed25519 key`, { cause: err })
    }
  }

  const notBefore = new Date(x.validFrom)
  const notAfter = new Date(x.validTo)
  if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) {
    throw new CertificateMalformedError(`certificate of "${cn[0]}" (serial ${serial}) has unreadable validity dates`)
  }
  return {
    x, name: cn[0], ou: ou[0], sanPeerId: sanMatch[1], keyPeerId, keyType, serial, notBefore, notAfter
  }
}
