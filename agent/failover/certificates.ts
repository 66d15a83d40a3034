/**
 * The epoch certificates this agent has verified (protocol/epoch-certs.ts), so that every rule
 * where an epoch matters — the stale-copy rule, takeovers, grants, snapshot stores — asks one place
 * whether a gossiped epoch is shown. Verification (two X.509 checks and a signature per grant) runs
 * once per certificate: results are cached by digest, and the cache is dropped when the revocation
 * list changes. The highest verified certificate per container is kept, so a claim can show members
 * that missed it which epoch to go past.
 *
 *   const certs = new EpochCertificates(trust, log)
 *   certs.shows('web', 3, ownerPeerId, entry.cert)   // epoch 1: true; above 1: only with a valid certificate
 */
import type { Logger } from '../log.js'
import { certificateDigest, verifyEpochCertificate, type EpochCertificate, type GrantorTrust } from '../../protocol/epoch-certs.js'

/** Verified certificates remembered (and names with a highest one); past it the cache starts over. */
const MAX_CACHED = 4096

export type CertificateTrust = GrantorTrust & { readonly crlNumber: number }

export class EpochCertificates {
  private readonly verdicts = new Map<string, boolean>()
  private readonly best = new Map<string, EpochCertificate>()
  private crlNumber: number

  constructor (readonly trust: CertificateTrust, private readonly log: Logger) {
    this.crlNumber = trust.crlNumber
  }

  /** Whether `cert` is a valid certificate (logged once when not). */
  valid (cert: EpochCertificate): boolean {
    if (this.trust.crlNumber !== this.crlNumber) {
      this.crlNumber = this.trust.crlNumber
      this.verdicts.clear()
      this.best.clear()
    }
    const key = certificateDigest(cert)
    const known = this.verdicts.get(key)
    if (known !== undefined) return known
    let ok = true
    try {
      verifyEpochCertificate(cert, this.trust)
    } catch (err) {
      ok = false
      this.log.warn('epoch certificate refused', { container: cert.container, epoch: cert.epoch, claimant: cert.claimant, reason: (err as Error).name, error: (err as Error).message })
    }
    if (this.verdicts.size >= MAX_CACHED) this.verdicts.clear()
    this.verdicts.set(key, ok)
    if (ok) {
      const cur = this.best.get(cert.container)
      if (cur === undefined || cert.epoch > cur.epoch) {
        if (this.best.size >= MAX_CACHED) this.best.clear()
        this.best.set(cert.container, cert)
      }
    }
    return ok
  }

  /**
   * Whether `owner` is shown to own `name` at `epoch`: epoch 1 needs no certificate (a host's own
   * adoption, which outranks nobody); an epoch above 1 needs a valid certificate of exactly that.
   */
  shows (name: string, epoch: number, owner: string, cert: EpochCertificate | undefined): boolean {
    if (epoch <= 1) return true
    if (cert === undefined || cert.container !== name || cert.epoch !== epoch || cert.claimant !== owner) return false
    return this.valid(cert)
  }

  /** The highest verified certificate of `name` seen so far. */
  highest (name: string): EpochCertificate | undefined {
    return this.best.get(name)
  }
}
