/**
 * Shape checks shared by every message module: untrusted JSON in, typed values or ProtocolError out.
 * The message modules (messages.ts, failover-messages.ts, move-messages.ts) build on these and do
 * not import each other's helpers.
 */
import { ProtocolError } from './errors.js'

export function obj (v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ProtocolError(`${what} must be an object`)
  return v as Record<string, unknown>
}

export function str (v: unknown, what: string, max = 4096): string {
  if (typeof v !== 'string' || v.length > max) throw new ProtocolError(`${what} must be a string of at most ${max} characters`)
  return v
}

/** A count, size, epoch or sequence number. */
export function count (v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new ProtocolError(`${what} must be a non-negative integer`)
  return v
}
