/**
 * Signed operator orders: the proof, travelling with a request, that an operator asked for a change
 * on another host. The CLI signs an order with the operator's identity key (the bundle's libp2p
 * Ed25519 key, which the operator certificate binds to its peer ID); whoever the change lands on
 * verifies it itself — the operator certificate (this CA, role operator, in date, not revoked), the
 * signature, the expiry, that it was not seen before, and that it names exactly this change.
 *
 *   const signed = await signOrder(bundle, moveOrderBody({ ... }))        // the CLI
 *   const body = verifier.verify(signed, 'move')                          // the destination
 *   if (body.to !== selfId) throw new OrderMismatchError(...)
 *
 * What is signed is `ORDER_DOMAIN` followed by the canonical JSON of the body (canonicalJson: keys
 * sorted, no white space), so no other message signed by the same key can pass for an order.
 * docs/protocols.md, "Operator orders", describes the fields.
 */
import { randomBytes, createHash } from 'node:crypto'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { TrustStore } from '../certs/verify.js'
import type { ContainerSpec } from './container.js'
import {
  HostPowerNotOrderedError, OrderExpiredError, OrderNotRecordedError, OrderReplayedError, OrderSignatureError, OrderSignerNotOperatorError, ProtocolError
} from './errors.js'
import { count, obj, str } from './parse.js'
import { hostPowersOf } from './fidelity.js'

/** Prefix of the signed bytes: a signature over anything else never verifies as an order. */
export const ORDER_DOMAIN = 'goto-order/1\n'

/**
 * How long an order the CLI signs is good for. It is checked once, when the change begins (a move's
 * prepare, a protect), right after the CLI signed it: a minute covers the round trips and a little
 * clock difference, and bounds how long a captured order could be replayed against a restarted agent.
 */
export const ORDER_TTL_MS = 60_000
/** Orders valid for longer are refused: the replay memory must outlive every order it accepted. */
export const MAX_ORDER_TTL_MS = 10 * 60_000
/** Clocks of the operator's machine and of a host may differ this much (issuedAt in the future). */
export const ORDER_CLOCK_SKEW_MS = 30_000
/** Orders remembered against replay (each until it expires); beyond this, new orders wait. */
export const MAX_REMEMBERED_ORDERS = 10_000

/** A bind mount the operator allows at the destination, exactly as the spec names it. */
export interface BindAllowance { source: string, destination: string, readOnly: boolean }

/** What every order says: who signed it, its ID, when it was made and until when it holds (ms since the epoch). */
interface OrderCommon {
  /** 16 hex digits; for a move, its move ID. */
  id: string
  /** The operator's peer ID (the key that signs). */
  operator: string
  issuedAt: number
  expiresAt: number
}

/** Move the container `container` (its name) from peer `from` to peer `to`, created from the spec whose digest is `specDigest`. */
export interface MoveOrderBody extends OrderCommon {
  kind: 'move'
  container: string
  from: string
  to: string
  specDigest: string
  /**
   * Host-level powers the operator allows the spec: each bind mount, exactly, and with
   * `hostAccess: true` (--allow-host-access) the fidelity table's host powers (added capabilities,
   * privileged, devices, host namespaces, security options, sysctls...). `hostAccess` is absent,
   * never false, in an order that does not allow them, so such orders are signed as before it existed.
   */
  allow: MoveAllowances
}

/** `live: true` (--live): the destination may take the container's processes with their memory (a CRIU checkpoint). */
export interface MoveAllowances { binds: BindAllowance[], hostAccess?: true, live?: true }

/** Protect (or unprotect) the container `container` on the agent `host` (a peer ID). */
export interface ProtectOrderBody extends OrderCommon {
  kind: 'protect' | 'unprotect'
  container: string
  host: string
}

export type OrderBody = MoveOrderBody | ProtectOrderBody

/** The body of an order of kind K. */
export type OrderOfKind<K extends OrderBody['kind']> = K extends 'move' ? MoveOrderBody : ProtectOrderBody

/** An order as it travels: its body, the operator's certificate (PEM) and the signature (base64). */
export interface SignedOrder { body: OrderBody, cert: string, signature: string }

// --- canonical encoding --------------------------------------------------------------------

/**
 * JSON with object keys sorted at every level and no white space; only strings, safe integers,
 * booleans, null, arrays and plain objects (anything else is a ProtocolError, never guessed at).
 */
export function canonicalJson (v: unknown): string {
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return JSON.stringify(v)
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new ProtocolError('canonical JSON holds integers only')
    return JSON.stringify(v)
  }
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`
  if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`
  }
  throw new ProtocolError(`canonical JSON cannot hold a ${typeof v}`)
}

/** sha256:<hex> of the spec's canonical JSON: what a move order names. */
export function specDigest (spec: ContainerSpec): string {
  return `sha256:${createHash('sha256').update(canonicalJson(spec)).digest('hex')}`
}

/** The bytes an order's signature covers. */
export function orderBytes (body: OrderBody): Uint8Array {
  return new TextEncoder().encode(ORDER_DOMAIN + canonicalJson(body))
}

/** A fresh order ID (16 hex digits, like a move ID). */
export function newOrderId (): string {
  return randomBytes(8).toString('hex')
}

/**
 * Refuses a spec with a host-level power the order does not allow: each bind mount must be listed in
 * `allow.binds`, exactly; any host power among the settings carried as is (protocol/fidelity.ts:
 * `HostConfig.CapAdd`, `Privileged`, `Devices`, `PidMode` host, ...) needs `allow.hostAccess`. The
 * wire parser (parseSpec) has already refused any setting the fidelity table does not carry.
 */
export function checkHostPowers (spec: ContainerSpec, allow: { binds: readonly BindAllowance[], hostAccess?: boolean }): void {
  const powers = hostPowersOf(spec.engine)
  if (powers.length > 0 && allow.hostAccess !== true) {
    throw new HostPowerNotOrderedError(`container '${spec.name}' asks for host-level power ${powers.join(', ')}, which no operator order allows here (--allow-host-access)`)
  }
  for (const m of spec.mounts) {
    if (m.type !== 'bind') continue
    if (!allow.binds.some(b => b.source === m.source && b.destination === m.destination && b.readOnly === m.readOnly)) {
      throw new HostPowerNotOrderedError(`container '${spec.name}' bind-mounts host path ${m.source} at ${m.destination}, which no operator order allows here`)
    }
  }
}

// --- signing (the CLI) -----------------------------------------------------------------------

/** The operator's side: its certificate and identity key (a Bundle is one). */
export interface OrderSigner { peerId: string, certPem: string, privateKey: PrivateKey }

/** Stamps `operator`, `issuedAt` and `expiresAt` on the body and signs it. */
export async function signOrder<B extends OrderBody> (signer: OrderSigner, body: Omit<B, 'operator' | 'issuedAt' | 'expiresAt'>, now = Date.now(), ttlMs = ORDER_TTL_MS): Promise<SignedOrder> {
  const full = { ...body, operator: signer.peerId, issuedAt: now, expiresAt: now + ttlMs } as unknown as OrderBody
  const signature = await signer.privateKey.sign(orderBytes(full))
  return { body: full, cert: signer.certPem, signature: Buffer.from(signature).toString('base64') }
}

// --- checks ------------------------------------------------------------------------------

const HEX16 = /^[0-9a-f]{16}$/
const DIGEST = /^sha256:[0-9a-f]{64}$/

/** Untrusted JSON to a SignedOrder (shape only: `OrderVerifier.verify` decides whether it holds). */
export function parseSignedOrder (v: unknown): SignedOrder {
  const o = obj(v, 'order')
  const b = obj(o.body, 'order body')
  const id = str(b.id, 'order id', 16)
  if (!HEX16.test(id)) throw new ProtocolError('order id must be 16 hex digits')
  const common = { id, operator: str(b.operator, 'order operator', 128), issuedAt: count(b.issuedAt, 'order issuedAt'), expiresAt: count(b.expiresAt, 'order expiresAt') }
  let body: OrderBody
  if (b.kind === 'move') {
    const allow = obj(b.allow, 'order allow')
    if (!Array.isArray(allow.binds) || allow.binds.length > 256) throw new ProtocolError('order allow.binds must be a list')
    // Present only as true: an order's body must parse back to exactly what was signed.
    if (allow.hostAccess !== undefined && allow.hostAccess !== true) throw new ProtocolError('order allow.hostAccess must be true or absent')
    if (allow.live !== undefined && allow.live !== true) throw new ProtocolError('order allow.live must be true or absent')
    const specDigest = str(b.specDigest, 'order specDigest', 80)
    if (!DIGEST.test(specDigest)) throw new ProtocolError('order specDigest must be sha256:<64 hex>')
    body = {
      kind: 'move',
      ...common,
      container: str(b.container, 'order container', 256),
      from: str(b.from, 'order from', 128),
      to: str(b.to, 'order to', 128),
      specDigest,
      allow: {
        binds: allow.binds.map((x, i) => {
          const bo = obj(x, `order allow.binds[${i}]`)
          if (typeof bo.readOnly !== 'boolean') throw new ProtocolError(`order allow.binds[${i}].readOnly must be a boolean`)
          return { source: str(bo.source, 'bind source'), destination: str(bo.destination, 'bind destination'), readOnly: bo.readOnly }
        }),
        ...allow.hostAccess === true ? { hostAccess: true as const } : {},
        ...allow.live === true ? { live: true as const } : {}
      }
    }
  } else if (b.kind === 'protect' || b.kind === 'unprotect') {
    body = { kind: b.kind, ...common, container: str(b.container, 'order container', 256), host: str(b.host, 'order host', 128) }
  } else {
    throw new ProtocolError(`unknown order kind '${String(b.kind)}'`)
  }
  return { body, cert: str(o.cert, 'order cert', 16384), signature: str(o.signature, 'order signature', 256) }
}

/** An order this host accepted, remembered until it expires. */
export interface SpentOrder { kind: 'move' | 'protect', id: string, expiresAt: number }

/**
 * Where a verifier writes down the orders it accepts, so that a restarted agent still refuses their
 * replay (agent/orders/spent-orders.ts keeps them on disk). `remember` resolves once it is durable.
 */
export interface SpentOrderMemory {
  remember: (order: SpentOrder) => Promise<void>
  forget: (order: SpentOrder) => Promise<void>
}

/**
 * Verifies orders for one host and remembers the IDs it accepted until they expire (replay). Built
 * with the agent's TrustStore, so a revocation list adopted from any peer applies at once; with a
 * SpentOrderMemory (and the orders it held, `spent`), the memory outlives a restart.
 */
export class OrderVerifier {
  /** `${kind}:${id}` → expiresAt. */
  private readonly seen = new Map<string, number>()

  constructor (
    private readonly trust: TrustStore,
    private readonly now: () => number = Date.now,
    private readonly memory?: SpentOrderMemory,
    spent: readonly SpentOrder[] = []
  ) {
    const at = now()
    for (const o of spent) if (o.expiresAt > at) this.seen.set(`${o.kind}:${o.id}`, o.expiresAt)
  }

  /**
   * The order's body, if it holds: the certificate is an operator's from this CA (in date, not
   * revoked: Certificate*Error), it signed the body (OrderSignatureError), the body is of `kind`
   * (OrderSignatureError: a protect order is not a move order), in date (OrderExpiredError) and not
   * seen before (OrderReplayedError). Does not check what the order names: the caller does.
   * The order is remembered only by `accept`, once the caller agrees with what it names.
   */
  async verify<K extends OrderBody['kind']> (order: SignedOrder, kinds: readonly K[]): Promise<OrderOfKind<K>> {
    const { body } = order
    const now = this.now()
    const peer = this.trust.verify(order.cert, body.operator, new Date(now))
    if (peer.role !== 'operator') throw new OrderSignerNotOperatorError(`the order is signed by ${peer.name}, a${peer.role === 'agent' ? 'n' : ''} ${peer.role}, not an operator`)
    let ok = false
    try {
      ok = await peerIdFromString(body.operator).publicKey?.verify(orderBytes(body), Buffer.from(order.signature, 'base64')) ?? false
    } catch {
      ok = false
    }
    if (!ok) throw new OrderSignatureError(`the signature of order ${body.id} does not verify with the key of ${peer.name}`)
    if (!(kinds as readonly string[]).includes(body.kind)) throw new OrderSignatureError(`order ${body.id} is a ${body.kind} order, not ${kinds.join(' or ')}`)
    if (body.expiresAt <= now) throw new OrderExpiredError(`order ${body.id} of ${peer.name} expired at ${new Date(body.expiresAt).toISOString()}`)
    if (body.issuedAt > now + ORDER_CLOCK_SKEW_MS || body.expiresAt - body.issuedAt > MAX_ORDER_TTL_MS) {
      throw new OrderExpiredError(`order ${body.id} of ${peer.name} is valid from ${new Date(body.issuedAt).toISOString()} to ${new Date(body.expiresAt).toISOString()}: not a short order made now`)
    }
    if (this.seen.has(key(body))) throw new OrderReplayedError(`order ${body.id} of ${peer.name} was already carried out here`)
    return body as OrderOfKind<K>
  }

  /**
   * Remembers a verified order until it expires — durably, when the verifier has a memory, before
   * this resolves; refuses it if it was taken meanwhile, if memory is full, or if it could not be
   * written down (OrderNotRecordedError: carrying it out would let a restart accept its replay).
   */
  async accept (body: OrderBody): Promise<void> {
    const now = this.now()
    const k = key(body)
    if (this.seen.has(k)) throw new OrderReplayedError(`order ${body.id} was already carried out here`)
    if (this.seen.size >= MAX_REMEMBERED_ORDERS) this.prune(now)
    if (this.seen.size >= MAX_REMEMBERED_ORDERS) throw new OrderReplayedError(`${MAX_REMEMBERED_ORDERS} orders are pending expiry here; try again in a minute`)
    this.seen.set(k, body.expiresAt) // taken now: a second accept of it while this one writes is a replay
    if (this.memory === undefined) return
    try {
      await this.memory.remember(spent(body))
    } catch (err) {
      this.seen.delete(k)
      throw new OrderNotRecordedError(`order ${body.id} could not be written down here: ${(err as Error).message}`, { cause: err })
    }
  }

  /** Forgets the orders past their expiry (in memory and in the durable memory). */
  prune (now = this.now()): void {
    for (const [k, until] of this.seen) {
      if (until > now) continue
      this.seen.delete(k)
      const [kind, id] = k.split(':') as ['move' | 'protect', string]
      this.memory?.forget({ kind, id, expiresAt: until }).catch(() => {}) // a leftover file is forgotten at the next start
    }
  }
}

function kindOf (body: OrderBody): SpentOrder['kind'] {
  return body.kind === 'move' ? 'move' : 'protect'
}

function spent (body: OrderBody): SpentOrder {
  return { kind: kindOf(body), id: body.id, expiresAt: body.expiresAt }
}

function key (body: OrderBody): string {
  return `${kindOf(body)}:${body.id}`
}
