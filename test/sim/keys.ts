/**
 * Identities for the membership simulation: real peer IDs (Ed25519, so every message passes the
 * real checkers) with stand-ins for signatures and certificates that cost what the real ones cost
 * on the wire (an 88-character signature, a ~1.2 KB PEM) but next to nothing in CPU: a signature is
 * an HMAC under a secret only its member's SimKeys entry holds, a certificate an HMAC under the
 * simulated CA's secret. A test that forges a record or a certificate gets it refused like the real
 * checks would.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { SwimCert, SwimCrypto } from '../../agent/membership/swim/node.js'

/** A year: simulated certificates do not expire during a run. */
const CERT_LIFETIME_MS = 365 * 24 * 3600_000
/** The size of a real agent certificate's PEM (an Ed25519 leaf with Go-To's extensions). */
const PEM_BODY_CHARS = 1100

export class SimKeys {
  private readonly secrets = new Map<string, Buffer>()
  private readonly ca = randomBytes(32)
  private readonly pems = new Map<string, string>()
  private readonly certs = new Map<string, SwimCert>()
  private constructor (readonly ids: string[]) {}

  static async create (n: number): Promise<SimKeys> {
    const ids = await Promise.all(Array.from({ length: n }, async () => peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()))
    const keys = new SimKeys(ids)
    for (const id of ids) keys.secrets.set(id, randomBytes(32))
    return keys
  }

  /** Signing as `id` (its own secret) and checking anyone's signatures and certificates. */
  crypto (id: string): SwimCrypto {
    const secret = this.secrets.get(id)
    if (secret === undefined) throw new Error(`no key for ${id}`)
    return {
      sign: bytes => createHmac('sha512', secret).update(bytes).digest('base64'),
      verify: (peerId, bytes, sig) => {
        const s = this.secrets.get(peerId)
        return s !== undefined && createHmac('sha512', s).update(bytes).digest('base64') === sig
      },
      verifyCert: (peerId, pem, now) => pem === this.certPem(peerId) ? { pem, notAfter: now + CERT_LIFETIME_MS } : undefined
    }
  }

  /** The simulated CA's certificate for `id`. */
  certPem (id: string): string {
    const cached = this.pems.get(id)
    if (cached !== undefined) return cached
    const mac = createHmac('sha256', this.ca).update(id).digest('base64')
    const body = (mac + id).repeat(Math.ceil(PEM_BODY_CHARS / (mac.length + id.length))).slice(0, PEM_BODY_CHARS)
    const pem = `-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n`
    this.pems.set(id, pem)
    return pem
  }

  /** The certificate a handshake with `id` gives (as /goto/auth does). */
  cert (id: string): SwimCert {
    let c = this.certs.get(id)
    if (c === undefined) { c = { pem: this.certPem(id), notAfter: CERT_LIFETIME_MS }; this.certs.set(id, c) }
    return c
  }
}

/** A seeded PRNG (mulberry32): a run is reproducible from its seed. */
export function seeded (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
