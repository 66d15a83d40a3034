/**
 * Every libp2p protocol id Go-To speaks, in one place. Bump the version when a message changes shape.
 */
export const AUTH_PROTOCOL = '/goto/auth/1.0.0'
export const HEARTBEAT_PROTOCOL = '/goto/heartbeat/1.0.0'
export const PEERS_PROTOCOL = '/goto/peers/1.0.0'
export const STATUS_PROTOCOL = '/goto/status/1.0.0'

/** Largest JSON message any Go-To protocol accepts; bigger frames abort the stream. */
export const MAX_MESSAGE_BYTES = 1024 * 1024
