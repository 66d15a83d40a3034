/**
 * Every libp2p protocol id Go-To speaks, in one place. Bump the version when a message changes shape.
 */
export const AUTH_PROTOCOL = '/goto/auth/1.0.0'
export const HEARTBEAT_PROTOCOL = '/goto/heartbeat/1.0.0'
export const PEERS_PROTOCOL = '/goto/peers/1.0.0'
export const STATUS_PROTOCOL = '/goto/status/1.0.0'

/** Largest JSON message any Go-To protocol accepts; bigger frames abort the stream. */
export const MAX_MESSAGE_BYTES = 1024 * 1024

/** Operator → the container's agent: order a move, receive its events. */
export const MOVE_PROTOCOL = '/goto/move/1.0.0'
/** Any agent: which member runs this container? */
export const LOCATE_PROTOCOL = '/goto/locate/1.0.0'
/** Source agent → destination agent: prepare, layers, restore, abort, commit of one move. */
export const TRANSFER_PROTOCOL = '/goto/transfer/1.0.0'
/** Agent ↔ agent: takeover claims of a dead owner's protected containers; operator → agent: protect, unprotect. */
export const FAILOVER_PROTOCOL = '/goto/failover/1.0.0'
/**
 * Agent ↔ agent: a source asks a member near the destination which layers it holds (and grants the
 * destination of its signed move those layers); the destination fetches them (agent/transfer/holders.ts).
 */
export const HOLDER_PROTOCOL = '/goto/holder/1.0.0'
