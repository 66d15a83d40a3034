/**
 * Epoch certificates: the proof that a member owns a protected container at an epoch above 1.
 * A grant is one member's signature (its libp2p Ed25519 identity key) over what it granted —
 * container, new epoch, claimant, previous owner, previous epoch — and over how many members it knew
 * then; the grantor's agent certificate (PEM, from the mesh CA) travels with the grant. A certificate
 * is the grants of one claim: valid when the grants come from distinct members holding valid,
 * non-revoked agent certificates, all sign the same claim, and number at least a majority of the
 * largest member count any of them stated (at least three: one member alone certifies nothing). Anybody with the CA certificate verifies it offline.
 *
 * Epoch 1 (a container adopted by the host that runs it when first protected) has no certificate;
 * an epoch above 1 without a valid certificate is "not shown" and must change nothing.
 *
 *   const bytes = grantBytes(claim, selfId, members)       // what a grantor signs
 *   verifyEpochCertificate(cert, trust)                     // or EpochCertificateInvalidError
 */
import { X509Certificate, createHash, verify as verifySignature } from 'node:crypto'
import { EpochCertificateInvalidError, ProtocolError } from './errors.js'
import { count, obj, str } from './parse.js'

/** What a grant grants: `claimant` owns `container` at `epoch`, after `previousOwner` at `previousEpoch`. */
export interface GrantClaim { container: string, epoch: number, claimant: string, previousOwner: string, previousEpoch: number }

/** One member's signed grant of a claim. */
export interface SignedGrant {
  /** The grantor's peer ID. */
  grantor: string
  /** The members the grantor knew when it granted, itself counted. */
  members: number
  /** Ed25519 signature over grantBytes(claim, grantor, members), base64. */
  sig: string
  /** The grantor's agent certificate, PEM. */
  cert: string
}

export interface EpochCertificate extends GrantClaim { grants: SignedGrant[] }

/** The most grants a certificate may carry (a mesh of 127 members needs 64): bounds a heartbeat. */
export const MAX_GRANTS = 64
/** The fewest members a mesh that fails over has (agent/failover/placement.ts failoverPossible). */
export const MIN_MEMBERS = 3
/** A certificate PEM of ours is well under 1 KiB; anything far larger is not one. */
const MAX_CERT_CHARS = 4096

/** What the CA trust store (certs/verify.ts TrustStore) is asked: whose valid certificate this is. */
export interface GrantorTrust {
  verify: (certPem: string, expectedPeerId: string, now?: Date) => { role: string, name: string }
}

/** The bytes a grantor signs: a tagged JSON array, one canonical form for every verifier. */
export function grantBytes (c: GrantClaim, grantor: string, members: number): Buffer {
  return Buffer.from(JSON.stringify(['goto-grant/1', c.container, c.epoch, c.claimant, c.previousOwner, c.previousEpoch, grantor, members]))
}

/** Votes that make a majority of `members`. */
function majorityOf (members: number): number {
  return Math.floor(members / 2) + 1
}

/** A short name of a certificate (its claim and its grantors), for caches and logs. */
export function certificateDigest (c: EpochCertificate): string {
  return createHash('sha256').update(JSON.stringify(c)).digest('hex').slice(0, 32)
}

/**
 * Throws EpochCertificateInvalidError unless `c` proves its claim: every grant signed by a distinct
 * member with a valid agent certificate of this CA (`trust`, revocation included), over this very
 * claim, and at least a majority of the largest member count a grantor stated.
 */
export function verifyEpochCertificate (c: EpochCertificate, trust: GrantorTrust, now: Date = new Date()): void {
  const what = `epoch ${c.epoch} certificate of '${c.container}' for ${c.claimant}`
  if (c.epoch < 2) throw new EpochCertificateInvalidError(`${what}: epoch 1 is never certified`)
  if (c.previousEpoch >= c.epoch) throw new EpochCertificateInvalidError(`${what}: previous epoch ${c.previousEpoch} is not below it`)
  const seen = new Set<string>()
  let members = 0
  for (const g of c.grants) {
    if (seen.has(g.grantor)) throw new EpochCertificateInvalidError(`${what}: two grants by ${g.grantor}`)
    seen.add(g.grantor)
    verifyGrant(c, g, trust, now)
    members = Math.max(members, g.members)
  }
  // Failover needs three members (a majority survives one death): a grantor stating fewer (one
  // member alone, signing for itself) certifies nothing.
  if (members < MIN_MEMBERS) throw new EpochCertificateInvalidError(`${what}: the grantors knew ${members} member(s), fewer than ${MIN_MEMBERS}`)
  if (c.grants.length < majorityOf(members)) {
    throw new EpochCertificateInvalidError(`${what}: ${c.grants.length} grant(s), fewer than a majority of the ${members} members the grantors knew`)
  }
}

/** Throws EpochCertificateInvalidError unless `g` is a valid agent's signature over `c`. */
export function verifyGrant (c: GrantClaim, g: SignedGrant, trust: GrantorTrust, now: Date = new Date()): void {
  const what = `grant of epoch ${c.epoch} of '${c.container}' to ${c.claimant}`
  let peer
  try {
    peer = trust.verify(g.cert, g.grantor, now)
  } catch (err) {
    throw new EpochCertificateInvalidError(`${what} by ${g.grantor}: ${(err as Error).message}`, { cause: err })
  }
  if (peer.role !== 'agent') throw new EpochCertificateInvalidError(`${what}: grantor "${peer.name}" is not an agent`)
  let ok = false
  try {
    ok = verifySignature(null, grantBytes(c, g.grantor, g.members), new X509Certificate(g.cert).publicKey, Buffer.from(g.sig, 'base64'))
  } catch {
    ok = false
  }
  if (!ok) throw new EpochCertificateInvalidError(`${what}: the grant of "${peer.name}" is not signed by its key over this claim`)
}

function grant (v: unknown, what: string): SignedGrant {
  const o = obj(v, what)
  const sig = str(o.sig, `${what}.sig`, 128)
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(sig)) throw new ProtocolError(`${what}.sig must be base64`)
  const members = count(o.members, `${what}.members`)
  if (members < 1) throw new ProtocolError(`${what}.members must be at least 1`)
  return { grantor: str(o.grantor, `${what}.grantor`, 256), members, sig, cert: str(o.cert, `${what}.cert`, MAX_CERT_CHARS) }
}

export function parseSignedGrant (v: unknown): SignedGrant {
  return grant(v, 'grant')
}

/** Shape only: the signatures are checked by verifyEpochCertificate. */
export function parseEpochCertificate (v: unknown, what = 'epoch certificate'): EpochCertificate {
  const o = obj(v, what)
  if (!Array.isArray(o.grants) || o.grants.length === 0 || o.grants.length > MAX_GRANTS) throw new ProtocolError(`${what}.grants must be a list of 1 to ${MAX_GRANTS}`)
  return {
    container: str(o.container, `${what}.container`, 256),
    epoch: count(o.epoch, `${what}.epoch`),
    claimant: str(o.claimant, `${what}.claimant`, 256),
    previousOwner: str(o.previousOwner, `${what}.previousOwner`, 256),
    previousEpoch: count(o.previousEpoch, `${what}.previousEpoch`),
    grants: o.grants.map((g, i) => grant(g, `${what}.grants[${i}]`))
  }
}
