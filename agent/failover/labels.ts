/**
 * The container labels failover reads and writes: `goto.protect=true` protects a container (unless
 * an operator's `goto protect`/`goto unprotect` says otherwise), and `goto.epoch` stamps the
 * ownership epoch a container was restored or moved at, so the host that adopts it knows it.
 */
export const PROTECT_LABEL = 'goto.protect'
export const EPOCH_LABEL = 'goto.epoch'
