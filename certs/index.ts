/**
 * The mesh CA library. Issuing side (the operator's CA host): initCa, issueCertificate, revoke,
 * listIssued. Verifying side (every agent and the operator CLI): readBundle to load one's own
 * identity, and TrustStore to check the certificates peers present. runCaCommand is `goto ca ...`.
 */
export {
  initCa, issueCertificate, revoke, listIssued, readCaCrl,
  DEFAULT_CA_NAME, DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS
} from './ca.js'
export type {
  InitCaOptions, CaInfo, IssueOptions, IssuedInfo, IssuedRecord, IssuedCertificate,
  RevokeSelector, RevokeOptions, RevokeResult
} from './ca.js'
export { TrustStore } from './verify.js'
export type { VerifiedPeer } from './verify.js'
export { readBundle, writeCrl } from './bundle.js'
export type { Bundle } from './bundle.js'
export { ROLES, isRole, BUNDLE_FILES, CA_FILES, PEER_URI_PREFIX } from './format.js'
export type { Role, SignedCrl, CrlPayload, RevokedEntry } from './format.js'
export { runCaCommand } from './cli.js'
export type { CommandOutput } from './cli.js'
