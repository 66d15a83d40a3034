/**
 * Names and shapes shared by the CA (issuing) and the trust store (verifying): roles, file names in
 * CA and bundle directories, the peer-ID URI in certificates, and the signed revocation list format.
 * Nothing here touches the disk or does cryptography.
 */
import { ConfigError, RevocationListInvalidError } from '../protocol/errors.js'

export type Role = 'agent' | 'operator'
export const ROLES: readonly Role[] = ['agent', 'operator']

export function isRole (value: unknown): value is Role {
  return value === 'agent' || value === 'operator'
}

/** Organization (O) of every certificate the mesh CA makes. */
export const MESH_ORGANIZATION = 'Go-To'

/** Subject alternative name URI carrying the libp2p peer ID: `urn:goto:peer:<peerId>`. */
export const PEER_URI_PREFIX = 'urn:goto:peer:'

/** Files in a CA directory. */
export const CA_FILES = {
  key: 'ca.key',
  cert: 'ca.pem',
  crl: 'crl.json',
  issued: 'issued.json'
} as const

/** Files in a bundle directory (what an agent or operator needs to join the mesh). */
export const BUNDLE_FILES = {
  identity: 'identity.key',
  cert: 'cert.pem',
  ca: 'ca.pem',
  crl: 'crl.json',
  info: 'bundle.json'
} as const

/** Peer names: a DNS label, so they can double as host names and appear in tables unquoted. */
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/

export function isValidPeerName (name: string): boolean {
  return NAME_PATTERN.test(name)
}

/** Throws ConfigError('--name') unless `name` is 1-63 chars of `[A-Za-z0-9][A-Za-z0-9._-]*`. */
export function validatePeerName (name: string): void {
  if (!isValidPeerName(name)) {
    throw new ConfigError('--name', `"${name}" is not a valid name: use 1-63 characters, letters, digits, '.', '_' or '-', starting with a letter or digit`)
  }
}

/** A revocation list as stored and sent: the payload string exactly as signed, and its signature. */
export interface SignedCrl {
  /** JSON text of a CrlPayload; the signature covers these exact UTF-8 bytes. */
  payload: string
  /** Base64 RSA-SHA256 (PKCS#1 v1.5) signature of `payload` by the CA key. */
  signature: string
}

export interface RevokedEntry {
  /** Certificate serial number, lowercase hex. */
  serial: string
  peerId: string
  name: string
  /** ISO 8601 time of revocation. */
  revokedAt: string
}

export interface CrlPayload {
  /** SHA-256 fingerprint of the CA certificate, as node's X509Certificate.fingerprint256 prints it. */
  issuer: string
  /** Grows by one with every revocation; a store adopts only lists newer than the one it has. */
  number: number
  issuedAt: string
  revoked: RevokedEntry[]
}

/** Checks the outer shape `{ payload, signature }`; says nothing about the signature itself. */
export function asSignedCrl (value: unknown): SignedCrl {
  if (typeof value !== 'object' || value === null) {
    throw new RevocationListInvalidError('revocation list is not a JSON object')
  }
  const { payload, signature } = value as Record<string, unknown>
  if (typeof payload !== 'string' || typeof signature !== 'string') {
    throw new RevocationListInvalidError('revocation list lacks a string "payload" and "signature"')
  }
  return { payload, signature }
}

/** Parses and checks the payload fields. Call only after the signature verified. */
export function parseCrlPayload (payload: string): CrlPayload {
  let value: unknown
  try {
    value = JSON.parse(payload)
  } catch (err) {
    throw new RevocationListInvalidError('revocation list payload is not JSON', { cause: err })
  }
  if (typeof value !== 'object' || value === null) {
    throw new RevocationListInvalidError('revocation list payload is not a JSON object')
  }
  const p = value as Record<string, unknown>
  if (typeof p.issuer !== 'string') throw new RevocationListInvalidError('revocation list has no issuer')
  if (typeof p.number !== 'number' || !Number.isSafeInteger(p.number) || p.number < 1) {
    throw new RevocationListInvalidError('revocation list number is not a positive integer')
  }
  if (typeof p.issuedAt !== 'string') throw new RevocationListInvalidError('revocation list has no issuedAt')
  if (!Array.isArray(p.revoked)) throw new RevocationListInvalidError('revocation list has no revoked array')
  const revoked: RevokedEntry[] = p.revoked.map((entry: unknown, i: number) => {
    const e = (typeof entry === 'object' && entry !== null ? entry : {}) as Record<string, unknown>
    if (typeof e.serial !== 'string' || typeof e.peerId !== 'string' ||
        typeof e.name !== 'string' || typeof e.revokedAt !== 'string') {
      throw new RevocationListInvalidError(`revocation list entry ${i} lacks serial, peerId, name or revokedAt`)
    }
    return { serial: e.serial.toLowerCase(), peerId: e.peerId, name: e.name, revokedAt: e.revokedAt }
  })
  return { issuer: p.issuer, number: p.number, issuedAt: p.issuedAt, revoked }
}
