/**
 * Reading a bundle directory: what an agent or operator loads at start to take part in the mesh
 * (its libp2p identity, its certificate, the mesh CA certificate, the last revocation list it saw).
 * readBundle refuses a bundle whose key is readable by others, whose certificate is not for that key,
 * or whose certificate does not verify against the bundle's CA. writeCrl stores a newer list.
 */
import { join } from 'node:path'
import { privateKeyFromProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { BundleError, CertificatePeerMismatchError, GotoError, RevocationListInvalidError } from '../protocol/errors.js'
import { assertPrivateFile, readOptional, readRequired, writeFileAtomic } from './files.js'
import { BUNDLE_FILES, asSignedCrl } from './format.js'
import type { Role, SignedCrl } from './format.js'
import { TrustStore } from './verify.js'

export interface Bundle {
  dir: string
  name: string
  role: Role
  peerId: string
  /** The libp2p identity; its public key is the certificate's key. */
  privateKey: PrivateKey
  certPem: string
  caCertPem: string
  /** The revocation list stored in the bundle, if any (already checked against the CA). */
  crl: SignedCrl | undefined
}

/**
 * Loads and checks a bundle directory. Missing files are BundleErrors naming the file; a certificate
 * that fails verification throws its own class (expired, revoked, ...) with the file path prefixed.
 */
export async function readBundle (dir: string, now: Date = new Date()): Promise<Bundle> {
  const keyPath = join(dir, BUNDLE_FILES.identity)
  const keyBytes = await readRequired(dir, BUNDLE_FILES.identity, 'bundle')
  await assertPrivateFile(keyPath)
  const certPem = (await readRequired(dir, BUNDLE_FILES.cert, 'bundle')).toString('utf8')
  const caCertPem = (await readRequired(dir, BUNDLE_FILES.ca, 'bundle')).toString('utf8')
  const crl = await readCrlFile(join(dir, BUNDLE_FILES.crl))

  let privateKey: PrivateKey
  try {
    privateKey = privateKeyFromProtobuf(keyBytes)
  } catch (err) {
    throw new BundleError(`${keyPath} is not a libp2p private key`, { cause: err })
  }
  const peerId = peerIdFromPrivateKey(privateKey).toString()

  let store: TrustStore
  try {
    store = new TrustStore(caCertPem, crl)
  } catch (err) {
    if (err instanceof RevocationListInvalidError) {
      throw new BundleError(`${join(dir, BUNDLE_FILES.crl)}: ${err.message}`, { cause: err })
    }
    throw prefixed(err, join(dir, BUNDLE_FILES.ca))
  }
  try {
    const peer = store.verify(certPem, peerId, now)
    return { dir, name: peer.name, role: peer.role, peerId, privateKey, certPem, caCertPem, crl }
  } catch (err) {
    if (err instanceof CertificatePeerMismatchError) {
      throw new BundleError(`${join(dir, BUNDLE_FILES.cert)} is not the certificate of ${keyPath} (peer ${peerId}): ${err.message}`, { cause: err })
    }
    throw prefixed(err, join(dir, BUNDLE_FILES.cert))
  }
}

/** Replaces the bundle's crl.json (atomically). The caller checks the list first (TrustStore.adoptCrl). */
export async function writeCrl (bundleDir: string, crl: SignedCrl): Promise<void> {
  const text = JSON.stringify({ payload: crl.payload, signature: crl.signature }, null, 2) + '\n'
  await writeFileAtomic(join(bundleDir, BUNDLE_FILES.crl), text, 0o644)
}

async function readCrlFile (path: string): Promise<SignedCrl | undefined> {
  const bytes = await readOptional(path)
  if (bytes === undefined) return undefined
  try {
    return asSignedCrl(JSON.parse(bytes.toString('utf8')))
  } catch (err) {
    throw new BundleError(`${path} is not a signed revocation list`, { cause: err })
  }
}

/** The same error class, with the file it came from in front of the message. */
function prefixed (err: unknown, path: string): unknown {
  if (!(err instanceof GotoError)) return err
  const Ctor = err.constructor as new (message: string, options?: { cause?: unknown }) => GotoError
  return new Ctor(`${path}: ${err.message}`, { cause: err })
}
