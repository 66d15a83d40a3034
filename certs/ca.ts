/**
 * The mesh CA: create it, issue agent and operator certificates with their libp2p identities, revoke
 * them, list them. Certificates are built with node-forge; everything is signed and checked with
 * node:crypto. Used by `goto ca ...` (certs/cli.ts) and by tests and the lab. node-forge is loaded
 * only to issue (initCa, issueCertificate): listing and revoking do not need it, and it is a large
 * part of the CLI's start-up time.
 *
 * A leaf certificate's public key is the peer's own libp2p Ed25519 key, so holding the certificate's
 * key and being the peer ID are the same thing. node-forge cannot encode Ed25519 keys, so the
 * certificate is built around a placeholder RSA key whose SubjectPublicKeyInfo is then swapped for
 * the Ed25519 one before the CA signs the TBSCertificate.
 *
 * A CA directory holds ca.key (0600), ca.pem, crl.json (the signed revocation list) and issued.json
 * (every certificate issued). Commands on one directory are not locked against each other: run one
 * at a time.
 */
import { X509Certificate, createPrivateKey, createPublicKey, randomBytes, sign } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { chmod, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { generateKeyPair, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type forge from 'node-forge'
import { BundleError, CertificateMalformedError, ConfigError } from '../protocol/errors.js'
import { assertPrivateFile, pathExists, readOptional, readRequired, writeFileAtomic } from './files.js'
import {
  BUNDLE_FILES, CA_FILES, MESH_ORGANIZATION, PEER_URI_PREFIX, asSignedCrl, isRole, parseCrlPayload, validatePeerName
} from './format.js'
import type { CrlPayload, RevokedEntry, Role, SignedCrl } from './format.js'
import { TrustStore } from './verify.js'

export type { Role, SignedCrl, RevokedEntry, CrlPayload } from './format.js'

export const DEFAULT_CA_NAME = 'Go-To mesh CA'
/** Ten years: the CA is rotated by hand, rarely. */
export const DEFAULT_CA_DAYS = 3650
/** One year: long enough not to be a chore, short enough that a lost bundle expires. */
export const DEFAULT_LEAF_DAYS = 365
/** RSA-2048: accepted everywhere, and generated natively by node in ~0.1-1 s. */
const CA_KEY_BITS = 2048
/**
 * notBefore is set this far in the past so a peer whose clock runs a little behind the CA host's
 * still accepts a certificate issued a moment ago.
 */
const CLOCK_SKEW_BACKDATE_MS = 5 * 60_000
const DAY_MS = 86_400_000

export interface InitCaOptions {
  /** Common name of the CA certificate (default 'Go-To mesh CA'). */
  name?: string
  /** Validity in days (default 3650). */
  days?: number
}

export interface CaInfo {
  dir: string
  name: string
  /** SHA-256 fingerprint of ca.pem, as node's X509Certificate.fingerprint256 prints it. */
  fingerprint: string
  notBefore: string
  notAfter: string
}

export interface IssueOptions {
  role: Role
  /** Peer name (CN): 1-63 chars of `[A-Za-z0-9][A-Za-z0-9._-]*`. */
  name: string
  /** Validity in days from now (default 365); ignored where notBefore/notAfter are given. */
  days?: number
  /** Bundle directory to create; must not exist or be empty. */
  out: string
  /** Overrides the start of validity (tests make not-yet-valid certificates with it). */
  notBefore?: Date
  /** Overrides the end of validity (tests make expired certificates with it). */
  notAfter?: Date
}

/** What bundle.json holds and issueCertificate returns. Times are ISO 8601. */
export interface IssuedInfo {
  name: string
  role: Role
  peerId: string
  /** Lowercase hex. */
  serial: string
  notBefore: string
  notAfter: string
}

/** An entry of issued.json. */
export interface IssuedRecord extends IssuedInfo {
  issuedAt: string
}

/** An issued certificate with its revocation status, as listIssued returns it. */
export interface IssuedCertificate extends IssuedRecord {
  revoked: boolean
  revokedAt?: string
}

export type RevokeSelector = { name: string, peerId?: undefined } | { peerId: string, name?: undefined }

export interface RevokeOptions {
  /** Bundle directories to copy the new crl.json into (e.g. bundles deployed from this host). */
  bundles?: string[]
}

export interface RevokeResult {
  /** Certificates newly revoked; empty when every match was already revoked. */
  revoked: RevokedEntry[]
  /** Number of the CA's revocation list after this call. */
  crlNumber: number
  /** Bundle directories whose crl.json was replaced. */
  bundles: string[]
}

interface IssuedFile {
  version: 1
  certificates: IssuedRecord[]
}

/** A loaded, self-consistent CA directory. */
interface LoadedCa {
  dir: string
  key: KeyObject
  certPem: string
  cert: X509Certificate
  fingerprint: string
  crl: SignedCrl
  crlPayload: CrlPayload
  issued: IssuedRecord[]
}

/** Creates a new CA in `dir`. Refuses (BundleError) if ca.key or ca.pem is already there. */
export async function initCa (dir: string, options: InitCaOptions = {}): Promise<CaInfo> {
  const name = options.name ?? DEFAULT_CA_NAME
  const days = options.days ?? DEFAULT_CA_DAYS
  if (name.length < 1 || name.length > 64 || /[\u0000-\u001f\u007f]/.test(name)) {
    throw new ConfigError('--name', 'the CA name must be 1-64 printable characters')
  }
  checkDays(days)
  for (const file of [CA_FILES.key, CA_FILES.cert]) {
    if (await pathExists(join(dir, file))) {
      throw new BundleError(`a CA already exists in ${dir} (${file} is there); refusing to replace it`)
    }
  }

  await mkdir(dir, { recursive: true, mode: 0o700 })
  await chmod(dir, 0o700)

  const forge = await loadForge()
  const keys = await generateRsaKeyPair(forge)
  const keyPem = forge.pki.privateKeyInfoToPem(forge.pki.wrapRsaPrivateKey(forge.pki.privateKeyToAsn1(keys.privateKey)))
  const key = createPrivateKey(keyPem)

  const now = Date.now()
  const cert = forge.pki.createCertificate()
  cert.serialNumber = randomSerial()
  cert.validity.notBefore = wholeSeconds(now - CLOCK_SKEW_BACKDATE_MS)
  cert.validity.notAfter = wholeSeconds(now + days * DAY_MS)
  const subject = [{ shortName: 'CN', value: name }, { shortName: 'O', value: MESH_ORGANIZATION }]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.publicKey = keys.publicKey
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: true }
  ])
  const certPem = signCertificate(forge, cert, key)
  const x = new X509Certificate(certPem)

  const crl = signCrl(key, { issuer: x.fingerprint256, number: 1, issuedAt: new Date(now).toISOString(), revoked: [] })
  const issued: IssuedFile = { version: 1, certificates: [] }

  // ca.key is created exclusively, so two concurrent inits cannot both succeed.
  try {
    await writeFile(join(dir, CA_FILES.key), keyPem, { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new BundleError(`a CA already exists in ${dir} (${CA_FILES.key} is there); refusing to replace it`, { cause: err })
    }
    throw err
  }
  await chmod(join(dir, CA_FILES.key), 0o600)
  await writeFileAtomic(join(dir, CA_FILES.cert), certPem, 0o644)
  await writeFileAtomic(join(dir, CA_FILES.crl), crlJson(crl), 0o644)
  await writeFileAtomic(join(dir, CA_FILES.issued), JSON.stringify(issued, null, 2) + '\n', 0o644)

  return {
    dir,
    name,
    fingerprint: x.fingerprint256,
    notBefore: cert.validity.notBefore.toISOString(),
    notAfter: cert.validity.notAfter.toISOString()
  }
}

/**
 * Generates a libp2p Ed25519 identity and a certificate for it, writes both (with the CA certificate
 * and the current revocation list) to a new bundle directory `out`, and records it in issued.json.
 */
export async function issueCertificate (dir: string, options: IssueOptions): Promise<IssuedInfo> {
  const { role, name, out } = options
  if (!isRole(role)) throw new ConfigError('--role', `"${String(role)}" is not a role: use agent or operator`)
  validatePeerName(name)
  const days = options.days ?? DEFAULT_LEAF_DAYS
  checkDays(days)
  await assertBundleDirFree(out)

  const ca = await loadCa(dir)
  const forge = await loadForge()
  const caForge = forge.pki.certificateFromPem(ca.certPem)

  const identity = await generateKeyPair('Ed25519')
  const peerId = peerIdFromPrivateKey(identity).toString()

  const now = Date.now()
  const notBefore = wholeSeconds(options.notBefore?.getTime() ?? now - CLOCK_SKEW_BACKDATE_MS)
  const notAfter = wholeSeconds(options.notAfter?.getTime() ?? now + days * DAY_MS)
  if (notAfter.getTime() <= notBefore.getTime()) {
    throw new ConfigError('--days', 'the certificate would end before it starts')
  }

  const cert = forge.pki.createCertificate()
  const serial = randomSerial()
  cert.serialNumber = serial
  cert.validity.notBefore = notBefore
  cert.validity.notAfter = notAfter
  cert.setSubject([
    { shortName: 'CN', value: name },
    { shortName: 'OU', value: role },
    { shortName: 'O', value: MESH_ORGANIZATION }
  ])
  cert.setIssuer(caForge.subject.attributes)
  // Placeholder so forge can build the TBSCertificate; its SPKI is replaced below. No
  // subjectKeyIdentifier: forge would derive it from this placeholder.
  cert.publicKey = caForge.publicKey
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, critical: true },
    { name: 'subjectAltName', altNames: [{ type: 6, value: `${PEER_URI_PREFIX}${peerId}` }] },
    { name: 'authorityKeyIdentifier', keyIdentifier: caForge.generateSubjectKeyIdentifier().getBytes() }
  ])
  const certPem = signCertificate(forge, cert, ca.key, ed25519Spki(forge, identity.publicKey.raw))

  const x = new X509Certificate(certPem)
  if (x.publicKey.asymmetricKeyType !== 'ed25519' || !x.verify(ca.cert.publicKey)) {
    throw new CertificateMalformedError('internal error: the issued certificate does not verify with the CA key')
  }

  const info: IssuedInfo = {
    name, role, peerId, serial, notBefore: notBefore.toISOString(), notAfter: notAfter.toISOString()
  }
  await writeBundle(out, {
    [BUNDLE_FILES.identity]: { data: privateKeyToProtobuf(identity), mode: 0o600 },
    [BUNDLE_FILES.cert]: { data: certPem, mode: 0o644 },
    [BUNDLE_FILES.ca]: { data: ca.certPem, mode: 0o644 },
    [BUNDLE_FILES.crl]: { data: crlJson(ca.crl), mode: 0o644 },
    [BUNDLE_FILES.info]: { data: JSON.stringify(info, null, 2) + '\n', mode: 0o644 }
  })

  try {
    await writeIssued(dir, [...ca.issued, { ...info, issuedAt: new Date(now).toISOString() }])
  } catch (err) {
    // An unrecorded certificate could not be revoked by name: take the bundle back.
    await rm(out, { recursive: true, force: true })
    throw new BundleError(`could not record the certificate in ${join(dir, CA_FILES.issued)}; removed ${out}`, { cause: err })
  }
  return info
}

/**
 * Revokes every unrevoked certificate issued to a name or peer ID: adds them to the revocation list,
 * bumps its number, re-signs it, and copies it into the given bundle directories. A name or peer ID
 * that was never issued is a ConfigError naming --name or --peer-id.
 */
export async function revoke (dir: string, selector: RevokeSelector, options: RevokeOptions = {}): Promise<RevokeResult> {
  const byName = selector.name !== undefined
  const value = selector.name ?? selector.peerId
  const option = byName ? '--name' : '--peer-id'
  if ((selector.name === undefined) === (selector.peerId === undefined) || value === undefined || value === '') {
    throw new ConfigError(option, 'give exactly one of a name or a peer ID to revoke')
  }

  const ca = await loadCa(dir)
  const matches = ca.issued.filter(r => byName ? r.name === value : r.peerId === value)
  if (matches.length === 0) {
    throw new ConfigError(option, `no certificate was issued to ${byName ? 'name' : 'peer ID'} ${value} by the CA in ${dir}`)
  }
  const bundles = options.bundles ?? []
  for (const bundle of bundles) await assertSameCa(bundle, ca)

  const already = new Set(ca.crlPayload.revoked.map(r => r.serial))
  const revokedAt = new Date().toISOString()
  const fresh: RevokedEntry[] = matches
    .filter(r => !already.has(r.serial))
    .map(r => ({ serial: r.serial, peerId: r.peerId, name: r.name, revokedAt }))

  let crl = ca.crl
  let crlNumber = ca.crlPayload.number
  if (fresh.length > 0) {
    crlNumber += 1
    crl = signCrl(ca.key, {
      issuer: ca.fingerprint, number: crlNumber, issuedAt: revokedAt, revoked: [...ca.crlPayload.revoked, ...fresh]
    })
    await writeFileAtomic(join(dir, CA_FILES.crl), crlJson(crl), 0o644)
  }
  for (const bundle of bundles) {
    await writeFileAtomic(join(bundle, BUNDLE_FILES.crl), crlJson(crl), 0o644)
  }
  return { revoked: fresh, crlNumber, bundles }
}

/** Every certificate in issued.json, oldest first, with its revocation status. */
export async function listIssued (dir: string): Promise<IssuedCertificate[]> {
  const ca = await loadCa(dir)
  const revoked = new Map(ca.crlPayload.revoked.map(r => [r.serial, r.revokedAt]))
  return ca.issued.map(r => {
    const revokedAt = revoked.get(r.serial)
    return revokedAt === undefined ? { ...r, revoked: false } : { ...r, revoked: true, revokedAt }
  })
}

/** Reads the CA's current signed revocation list (what bundles and agents should carry). */
export async function readCaCrl (dir: string): Promise<SignedCrl> {
  return (await loadCa(dir)).crl
}

// --- internals ---------------------------------------------------------------------------

type Forge = typeof forge

/** Parts of node-forge that @types/node-forge does not declare. */
type ForgeExtra = {
  util: { isNodejs?: unknown } // the node version string, or false
  options: { usePureJavaScript?: boolean }
  pki: { getTBSCertificate: (cert: forge.pki.Certificate) => forge.asn1.Asn1 }
}

async function loadForge (): Promise<Forge> {
  return (await import('node-forge')).default
}

function checkDays (days: number): void {
  if (!Number.isSafeInteger(days) || days < 1) {
    throw new ConfigError('--days', `${days} is not a positive whole number of days`)
  }
}

/** forge generates natively (node's crypto.generateKeyPair) when given a callback and no custom PRNG;
 * its pure-JavaScript fallback takes many seconds, so refuse to run where it would be chosen. */
async function generateRsaKeyPair (forge: Forge): Promise<forge.pki.rsa.KeyPair> {
  const forgeExtra = forge as unknown as ForgeExtra
  if (forgeExtra.util.isNodejs === false || forgeExtra.util.isNodejs === undefined || forgeExtra.options.usePureJavaScript === true) {
    throw new Error('node-forge would use its slow pure-JavaScript RSA key generation')
  }
  return await new Promise((resolve, reject) => {
    forge.pki.rsa.generateKeyPair({ bits: CA_KEY_BITS, e: 0x10001 }, (err, keys) => {
      if (err != null) reject(err)
      else resolve(keys)
    })
  })
}

/** 16 random bytes as positive, minimally encoded DER INTEGER content (lowercase hex). */
function randomSerial (): string {
  const bytes = randomBytes(16)
  bytes[0] = (bytes[0] & 0x7f) | 0x40
  return bytes.toString('hex')
}

/** ASN.1 times carry whole seconds; round here so bundle.json and the certificate agree. */
function wholeSeconds (ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000)
}

/** DER SubjectPublicKeyInfo of a raw 32-byte Ed25519 public key, as a forge ASN.1 node. */
function ed25519Spki (forge: Forge, raw: Uint8Array): forge.asn1.Asn1 {
  const der = createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') },
    format: 'jwk'
  }).export({ type: 'spki', format: 'der' })
  return forge.asn1.fromDer(der.toString('binary'))
}

/** Index of subjectPublicKeyInfo in TBSCertificate: version, serial, signature, issuer, validity, subject, SPKI. */
const TBS_SPKI_INDEX = 6

/**
 * Signs `cert` with the CA key (sha256WithRSAEncryption) using node:crypto and returns its PEM.
 * With `spki`, the TBSCertificate's subjectPublicKeyInfo is replaced by it before signing.
 */
function signCertificate (forge: Forge, cert: forge.pki.Certificate, caKey: KeyObject, spki?: forge.asn1.Asn1): string {
  const forgeExtra = forge as unknown as ForgeExtra
  const oid = forge.pki.oids.sha256WithRSAEncryption
  cert.siginfo.algorithmOid = oid
  cert.signatureOid = oid
  const tbs = forgeExtra.pki.getTBSCertificate(cert)
  if (spki !== undefined) {
    const fields = tbs.value as forge.asn1.Asn1[]
    fields[TBS_SPKI_INDEX] = spki
  }
  const tbsDer = Buffer.from(forge.asn1.toDer(tbs).getBytes(), 'binary')
  const signature = sign('sha256', tbsDer, caKey)
  // certificateToAsn1 uses the cached tbsCertificate as is, with signatureOid and signature.
  const c = cert as forge.pki.Certificate & { tbsCertificate: forge.asn1.Asn1, signature: string }
  c.tbsCertificate = tbs
  c.signature = signature.toString('binary')
  return forge.pki.certificateToPem(cert)
}

function signCrl (key: KeyObject, payload: CrlPayload): SignedCrl {
  const text = JSON.stringify(payload)
  return { payload: text, signature: sign('sha256', Buffer.from(text, 'utf8'), key).toString('base64') }
}

function crlJson (crl: SignedCrl): string {
  return JSON.stringify({ payload: crl.payload, signature: crl.signature }, null, 2) + '\n'
}

async function loadCa (dir: string): Promise<LoadedCa> {
  const certPem = (await readRequired(dir, CA_FILES.cert, 'CA')).toString('utf8')
  const keyPem = (await readRequired(dir, CA_FILES.key, 'CA')).toString('utf8')
  await assertPrivateFile(join(dir, CA_FILES.key))
  const crlText = (await readRequired(dir, CA_FILES.crl, 'CA')).toString('utf8')
  const issuedText = (await readRequired(dir, CA_FILES.issued, 'CA')).toString('utf8')

  let key: KeyObject
  try {
    key = createPrivateKey(keyPem)
  } catch (err) {
    throw new BundleError(`${join(dir, CA_FILES.key)} is not a usable private key`, { cause: err })
  }
  let crlValue: unknown
  try {
    crlValue = JSON.parse(crlText)
  } catch (err) {
    throw new BundleError(`${join(dir, CA_FILES.crl)} is not JSON`, { cause: err })
  }
  // The trust store checks ca.pem (CA, self-signed, in date) and the list's signature and issuer.
  const store = new TrustStore(certPem, asSignedCrl(crlValue))
  const cert = new X509Certificate(certPem)
  const keyDer = createPublicKey(key).export({ type: 'spki', format: 'der' })
  if (!keyDer.equals(cert.publicKey.export({ type: 'spki', format: 'der' }))) {
    throw new BundleError(`${join(dir, CA_FILES.key)} does not belong to ${join(dir, CA_FILES.cert)}`)
  }
  const crl = store.crl
  if (crl === undefined) throw new BundleError(`${join(dir, CA_FILES.crl)} holds no revocation list`)

  let issued: IssuedRecord[]
  try {
    const parsed = JSON.parse(issuedText) as Partial<IssuedFile>
    if (!Array.isArray(parsed.certificates)) throw new Error('no "certificates" array')
    issued = parsed.certificates
  } catch (err) {
    throw new BundleError(`${join(dir, CA_FILES.issued)} is not a certificate registry: ${(err as Error).message}`, { cause: err })
  }
  return { dir, key, certPem, cert, fingerprint: store.caFingerprint, crl, crlPayload: parseCrlPayload(crl.payload), issued }
}

async function writeIssued (dir: string, certificates: IssuedRecord[]): Promise<void> {
  const file: IssuedFile = { version: 1, certificates }
  await writeFileAtomic(join(dir, CA_FILES.issued), JSON.stringify(file, null, 2) + '\n', 0o644)
}

/** A bundle may be written to a path that does not exist or is an empty directory. */
async function assertBundleDirFree (out: string): Promise<void> {
  let entries: string[]
  try {
    entries = await readdir(out)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return
    if (code === 'ENOTDIR') throw new BundleError(`${out} exists and is not a directory; refusing to overwrite it`)
    throw err
  }
  if (entries.length > 0) {
    throw new BundleError(`${out} already exists and is not empty; refusing to overwrite a bundle (remove it or choose another --out)`)
  }
}

/**
 * Writes all files into a temp directory beside `out` and renames it into place, so a bundle is
 * either complete or absent. rename(2) fails if `out` became non-empty meanwhile.
 */
async function writeBundle (out: string, files: Record<string, { data: string | Uint8Array, mode: number }>): Promise<void> {
  const target = resolve(out)
  await mkdir(dirname(target), { recursive: true })
  const tmp = await mkdtemp(join(dirname(target), `.${basename(target)}.tmp-`))
  try {
    for (const [file, { data, mode }] of Object.entries(files)) {
      await writeFile(join(tmp, file), data, { mode, flag: 'wx' })
      await chmod(join(tmp, file), mode)
    }
    await chmod(tmp, 0o700)
    try {
      await rename(tmp, target)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR') {
        throw new BundleError(`${out} already exists and is not empty; refusing to overwrite a bundle`, { cause: err })
      }
      throw err
    }
  } catch (err) {
    await rm(tmp, { recursive: true, force: true })
    throw err
  }
}

/** Refuses to put this CA's revocation list into a bundle of another CA. */
async function assertSameCa (bundle: string, ca: LoadedCa): Promise<void> {
  const pem = await readOptional(join(bundle, BUNDLE_FILES.ca))
  if (pem === undefined) {
    throw new BundleError(`${join(bundle, BUNDLE_FILES.ca)} is missing: ${bundle} is not a bundle directory`)
  }
  let fingerprint: string
  try {
    fingerprint = new X509Certificate(pem).fingerprint256
  } catch (err) {
    throw new BundleError(`${join(bundle, BUNDLE_FILES.ca)} cannot be parsed`, { cause: err })
  }
  if (fingerprint !== ca.fingerprint) {
    throw new BundleError(`${bundle} belongs to another CA (${fingerprint}); not updating its revocation list`)
  }
}
