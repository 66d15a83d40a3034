/**
 * What the agent's parts tell the metrics: a small sink interface, so no part imports the
 * Prometheus client. main.ts hands every part either `NO_METRICS` (metrics off, the default: the
 * client library is then never loaded) or the Prometheus implementation (agent/metrics/prometheus.ts,
 * loaded with a dynamic import only when --metrics-listen is given).
 *
 * Peers by state are not pushed here: the Prometheus side reads the peer table when it is scraped.
 */

import type { LinkClass } from '../transfer/links.js'

/** How a move ordered here ended. */
export type MoveOutcome = 'succeeded' | 'failed'
/** How a move into this host ended: the source committed it, or it was rolled back here. */
export type IncomingMoveOutcome = 'committed' | 'rolled_back'

export interface Metrics {
  /**
   * Payload bytes of layer and volume blobs this agent handed to a transfer stream (move source).
   * Not counted: JSON control messages, heartbeats, and the Noise/yamux/TCP overhead.
   */
  bytesSent: (n: number) => void
  /**
   * Bytes of the same blobs as they went on the wire (after compression), over a link of class
   * `linkClass` priced `costPerGiB` (agent/transfer/links.ts): the link class's bytes and cost, and,
   * against bytesSent, the compression ratio.
   */
  wireBytes: (linkClass: LinkClass, n: number, costPerGiB: number) => void
  /**
   * Layer bytes this agent received from a holder (a member near it that had the layer) instead of
   * from a move's source: what the nearest-holder plan saved the expensive link.
   */
  layerBytesFromHolder: (n: number) => void
  /** Payload bytes of layer and volume blobs this agent read from a transfer stream (move destination). */
  bytesReceived: (n: number) => void
  /** A move ordered at this host (not a dry run) passed its first checks and began planning. */
  moveStarted: () => void
  /**
   * A started move ended. `seconds` is its whole duration; `downtimeSeconds` (successes only) the
   * time from pause here to running at the destination; `reason` (failures only) the error's name.
   */
  moveEnded: (outcome: MoveOutcome, e: { seconds: number, downtimeSeconds?: number, reason?: string }) => void
  /** A move into this host that sent it a layer (so not a dry run) ended here. */
  moveReceived: (outcome: IncomingMoveOutcome) => void
  /**
   * Failover calls this when it took a snapshot of a protected container (and at start for the
   * last one it remembers); the
   * exported age is measured from `takenAtMs` (epoch ms) at every scrape, so it grows between
   * snapshots as an operator's alert expects.
   */
  snapshotTaken: (container: string, takenAtMs: number) => void
  /** Failover calls this when a container is no longer protected here (its series disappears). */
  snapshotForgotten: (container: string) => void
}

const nothing = (): void => {}

/** Metrics off: every call does nothing. */
export const NO_METRICS: Metrics = {
  bytesSent: nothing,
  wireBytes: nothing,
  layerBytesFromHolder: nothing,
  bytesReceived: nothing,
  moveStarted: nothing,
  moveEnded: nothing,
  moveReceived: nothing,
  snapshotTaken: nothing,
  snapshotForgotten: nothing
}
