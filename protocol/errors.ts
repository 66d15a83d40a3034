/**
 * Typed errors shared by the agent, the CLI and the CA. Callers branch on the class or on `name`
 * (which survives the wire: agents send `{ error: { name, message } }`), never on message text.
 */
export class GotoError extends Error {
  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

// --- certificates (certs/) ---------------------------------------------------------------
/** The certificate does not chain to the mesh CA (foreign CA, bad signature, not issued by it). */
export class CertificateUntrustedError extends GotoError {}
/** The certificate's validity window ended. */
export class CertificateExpiredError extends GotoError {}
/** The certificate's validity window has not started. */
export class CertificateNotYetValidError extends GotoError {}
/** A CA certificate was presented where a leaf is required. */
export class CertificateNotLeafError extends GotoError {}
/** The certificate names another peer ID than the one Noise authenticated. */
export class CertificatePeerMismatchError extends GotoError {}
/** The certificate is on the mesh's revocation list. */
export class CertificateRevokedError extends GotoError {}
/** The certificate cannot be parsed or lacks the Go-To fields (name, role, peer ID). */
export class CertificateMalformedError extends GotoError {}
/** A revocation list that is not signed by the mesh CA or cannot be parsed. */
export class RevocationListInvalidError extends GotoError {}
/** The certificate's role may not make this call (e.g. an agent ordering an operator action). */
export class RoleNotAllowedError extends GotoError {}
/** A CA directory or bundle directory is missing files or holds unusable ones. */
export class BundleError extends GotoError {}

// --- mesh and protocols -----------------------------------------------------------------
/** The connection did not complete the auth protocol, so no other protocol serves it. */
export class PeerNotAuthenticatedError extends GotoError {}
/** The remote refused our certificate. */
export class PeerRejectedUsError extends GotoError {}
/** The agent could not be reached or the connection dropped. */
export class AgentUnreachableError extends GotoError {}
/** No peer of that name is in the peer table. */
export class UnknownPeerError extends GotoError {}
/** A message was malformed, too large or of the wrong type. */
export class ProtocolError extends GotoError {}
/** Bad configuration: names the option at fault. */
export class ConfigError extends GotoError {
  constructor (readonly option: string, message: string) {
    super(`${option}: ${message}`)
  }
}

// --- docker ---------------------------------------------------------------------------
/** The Docker Engine could not be reached or answered with an error. */
export class DockerUnavailableError extends GotoError {}

/** Known error classes by name, so an error that crossed the wire is rebuilt as its own class. */
const KNOWN: Record<string, new (message: string) => GotoError> = {
  CertificateUntrustedError,
  CertificateExpiredError,
  CertificateNotYetValidError,
  CertificateNotLeafError,
  CertificatePeerMismatchError,
  CertificateRevokedError,
  CertificateMalformedError,
  RevocationListInvalidError,
  RoleNotAllowedError,
  BundleError,
  PeerNotAuthenticatedError,
  PeerRejectedUsError,
  AgentUnreachableError,
  UnknownPeerError,
  ProtocolError,
  DockerUnavailableError
}

export interface WireError { name: string, message: string }

export function toWireError (err: unknown): WireError {
  if (err instanceof Error) return { name: err.name, message: err.message }
  return { name: 'Error', message: String(err) }
}

export function fromWireError (wire: WireError): GotoError {
  const Ctor = KNOWN[wire.name]
  if (Ctor !== undefined) return new Ctor(wire.message)
  const err = new GotoError(wire.message)
  err.name = typeof wire.name === 'string' ? wire.name : 'GotoError'
  return err
}
