/**
 * Layers from the nearest holder: before a move sends a layer across a paid link, its source asks
 * the members in the destination's location (same provider and region) whether they hold it, and
 * the destination then fetches it from one of them over their free link instead.
 *
 *   holder side   HolderService (a part: /goto/holder/1.0.0, agents only)
 *     offer       a source presents the operator's signed order of its move, the spec and the
 *                 image's config; the holder checks the order (signature, operator, in date, its
 *                 source is the asking member), that the spec is the order's and that the config is
 *                 the spec's image, and answers which of the asked layers — layers of that config —
 *                 it holds (staging store or engine storage), granting them to the order's
 *                 destination, and to no one else, for HOLDER_GRANT_MS.
 *     fetch       a member asks for one layer of a move (or a part of it: offset, length); served
 *                 only under a grant naming that member and that layer. Nothing else is ever served: a valid certificate alone
 *                 fetches nothing (docs/threat-model.md).
 *   asking side   HolderClient: `find` (the source: whom to ask, and the answers) and `fetch` (the
 *                 destination: the layer's bytes, which it verifies against the diff ID as they
 *                 stream, like any layer). A layer of at least `partsMinBytes` that several members
 *                 hold is fetched in parts, one from each at once: the first part streams through,
 *                 the others are spooled to disk meanwhile and follow in order.
 *
 *   const near = await client.find({ to, order, spec, image, diffIds: toSend }, signal)      // source
 *   const bytes = await client.fetch([holder, ...alsoFrom], moveId, diffId, size, signal)       // destination
 *
 * A holder that refuses, fails or serves a wrong byte costs the move that layer's trip from the
 * source (session.ts falls back), never the move.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { VerifiedPeer } from '../../certs/verify.js'
import type { AuthService } from '../net/auth-service.js'
import { openStream } from '../net/dial.js'
import type { DockerHost } from '../docker/docker-host.js'
import type { ImageInfo } from '../docker/types.js'
import type { PeerEntry, PeerTable } from '../membership/peer-table.js'
import type { Logger } from '../log.js'
import type { LayerStore } from './layer-store.js'
import { LinkTable, locationOf, type LinkClass, type Location } from './links.js'
import { chainIds } from './plan.js'
import { spoolToFile } from './spool.js'
import { HOLDER_PROTOCOL } from '../../protocol/ids.js'
import { readResult, receiveBlob, sendBlob, type JsonStream } from '../../protocol/wire.js'
import { specDigest, type OrderVerifier, type SignedOrder } from '../../protocol/orders.js'
import {
  MAX_HOLDERS_PER_LAYER, parseHolderOfferReply, parseHolderRequest, type HolderFetchReply, type HolderFetchRequest, type HolderOfferReply, type HolderOfferRequest
} from '../../protocol/move-messages.js'
import type { ContainerSpec } from '../../protocol/container.js'
import { HolderRefusedError, LayerTooLargeError, OrderMismatchError, ProtocolError, SpecMismatchError, toWireError } from '../../protocol/errors.js'

/**
 * How long a holder keeps a grant after the offer: the destination fetches at the start of the
 * pre-copy, seconds after the offer, but one layer after another; half an hour covers a pre-copy of
 * many GiB at LAN speed, and bounds how long a destination that got the grant may still come back.
 */
export const HOLDER_GRANT_MS = 30 * 60_000
/** Grants a holder keeps at most (each a move ID, a peer ID and a few diff IDs); the oldest go first. */
export const MAX_HOLDER_GRANTS = 256
/**
 * How long a source waits for the answers to its offers (all asked at once): a slow or gone member
 * costs a move this much at most, and its layers then come from the source.
 */
export const HOLDER_OFFER_TIMEOUT_MS = 5_000
/**
 * Below this a layer comes whole from one holder even when several hold it: a part's stream and
 * its spooling to disk cost more than they save, and LAN links inside a location are fast.
 */
export const PARTS_MIN_BYTES = 64 * 1024 * 1024
/** How long a holder waits for a request after a stream opened. */
const HOLDER_REQUEST_TIMEOUT_MS = 10_000

/** A layer found at a member near the destination. */
export interface HeldBy {
  name: string
  peerId: string
  /** The layer's bytes, as the holder states them. */
  size: number
  /** The link from the holder to the destination (free, within one location, unless a rule says otherwise). */
  link: LinkClass
  costPerGiB: number
  /** Other members that hold it with the same size (they may serve parts of it at once). */
  others?: Array<{ name: string, peerId: string }>
}

/** What the source asks (session.ts): the move's signed order, its spec and image, the layers to find. */
export interface HolderQuery {
  to: PeerEntry
  order: SignedOrder
  spec: ContainerSpec
  image: ImageInfo
  diffIds: readonly string[]
}

/** The source's side of holders, as the transfer session sees it. */
export interface HolderLocator {
  /** diff ID → the member to fetch it from (none: the source sends it). Never rejects. */
  find: (q: HolderQuery, signal: AbortSignal) => Promise<Map<string, HeldBy>>
}

/** The destination's side of holders (destination.ts). */
export interface HolderFetcher {
  /**
   * The `size` bytes of layer `diffId` of move `moveId` from the members `holders` (peer IDs; in
   * parts from several when it is large), unverified: HolderRefusedError when one announces another
   * size, or any error of theirs, as the bytes are read.
   */
  fetch: (holders: readonly string[], moveId: string, diffId: string, size: number, signal: AbortSignal) => Promise<AsyncIterable<Uint8Array>>
}

/** A layer this host can serve: its size and a way to read it. */
interface LocalLayer { size: number, read: (signal: AbortSignal) => AsyncIterable<Uint8Array> }

/** Finds a layer by diff ID in the staging store, then in the engine's storage (by the chain ID of an image that has it). */
export async function localLayer (docker: DockerHost, store: LayerStore, diffId: string, signal: AbortSignal): Promise<LocalLayer | undefined> {
  const staged = await store.size(diffId)
  if (staged !== undefined) return { size: staged, read: () => readStored(store, diffId) }
  const files = await docker.layerFiles(signal)
  if (files === undefined) return undefined
  for (const chain of await docker.imageChains(signal)) {
    const i = chain.indexOf(diffId)
    if (i < 0) continue
    const file = await files.open(chainIds(chain.slice(0, i + 1))[i])
    if (file !== undefined) return { size: file.size, read: s => file.stream(s) }
  }
  return undefined
}

async function * readStored (store: LayerStore, diffId: string): AsyncGenerator<Uint8Array> {
  yield * (await store.open(diffId)).stream
}

interface Grant { to: string, diffIds: Set<string>, until: number }

export interface HolderServiceDeps {
  auth: AuthService
  docker: DockerHost
  store: LayerStore
  /** Verifies operators' orders (verify only: an offer never spends an order). */
  orders: Pick<OrderVerifier, 'verify'>
  now?: () => number
  log: Logger
}

export class HolderService {
  private readonly grants = new Map<string, Grant>()
  private readonly now: () => number
  private served = 0

  constructor (private readonly deps: HolderServiceDeps) {
    this.now = deps.now ?? Date.now
  }

  async start (): Promise<void> {
    await this.deps.auth.handle(HOLDER_PROTOCOL, ['agent'], async (js, peer) => { await this.serve(js, peer) })
  }

  async stop (): Promise<void> {
    this.grants.clear()
  }

  /** Layer bytes this host served to members near it. */
  get bytesServed (): number {
    return this.served
  }

  private async serve (js: JsonStream, peer: VerifiedPeer): Promise<void> {
    const ac = new AbortController()
    js.onClose(() => { ac.abort(new HolderRefusedError('the asking member closed the stream')) })
    let layer: LocalLayer | undefined
    let part = { offset: 0, length: 0 }
    let reply: unknown
    let req: HolderOfferRequest | HolderFetchRequest | undefined
    try {
      req = parseHolderRequest(await js.read(AbortSignal.timeout(HOLDER_REQUEST_TIMEOUT_MS)))
      if (req.op === 'offer') reply = await this.offer(req, peer, ac.signal)
      else {
        layer = await this.layerFor(req, peer, ac.signal)
        part = { offset: req.offset ?? 0, length: req.length ?? layer.size }
        if (part.offset + part.length > layer.size) throw new HolderRefusedError(`bytes ${part.offset}+${part.length} are past the end of ${req.diffId} (${layer.size} bytes)`)
        reply = { size: part.length } satisfies HolderFetchReply
      }
    } catch (err) {
      this.deps.log.warn('holder request refused', { op: req?.op, from: peer.name, error: (err as Error).message, reason: (err as Error).name })
      await js.write({ ok: false, error: toWireError(err) }).catch(() => {})
      await js.close().catch(() => {})
      return
    }
    try {
      await js.write({ ok: true, result: reply }, ac.signal)
      if (layer !== undefined && req?.op === 'fetch') {
        await sendBlob(js, slice(layer.read(ac.signal), part.offset, part.length), part.length, ac.signal)
        this.served += part.length
        this.deps.log.info('layer served to a member near it', { moveId: req.moveId, digest: req.diffId, to: peer.name, offset: part.offset, bytes: part.length })
      }
      await js.close(ac.signal)
    } catch (err) {
      js.abort(err as Error)
    }
  }

  /**
   * The layers of `req.diffIds` held here, granted to the destination of the order. Throws (typed)
   * when the order does not hold, is not the asking member's, or the spec or config are not its.
   */
  async offer (req: HolderOfferRequest, peer: VerifiedPeer, signal: AbortSignal): Promise<HolderOfferReply> {
    const body = await this.deps.orders.verify(req.order, ['move'])
    if (body.from !== peer.peerId) throw new OrderMismatchError(`the order names another source (${body.from}), not ${peer.name}`)
    if (specDigest(req.spec) !== body.specDigest) throw new SpecMismatchError(`the order names spec ${body.specDigest}, the offer sends ${specDigest(req.spec)}`)
    const config = Buffer.from(req.config, 'base64')
    const configDigest = `sha256:${createHash('sha256').update(config).digest('hex')}`
    if (configDigest !== req.spec.image) throw new SpecMismatchError(`the config sent is ${configDigest}, the spec's image is ${req.spec.image}`)
    const layers = rootfsOf(config)
    const held: HolderOfferReply['held'] = []
    for (const d of new Set(req.diffIds)) {
      if (!layers.includes(d)) throw new SpecMismatchError(`layer ${d} is not a layer of image ${req.spec.image}`)
      const local = await localLayer(this.deps.docker, this.deps.store, d, signal).catch(() => undefined)
      if (local === undefined) continue
      held.push({ diffId: d, size: local.size })
    }
    if (held.length > 0) {
      this.grants.delete(body.id)
      this.grants.set(body.id, { to: body.to, diffIds: new Set(held.map(h => h.diffId)), until: this.now() + HOLDER_GRANT_MS })
      while (this.grants.size > MAX_HOLDER_GRANTS) this.grants.delete(this.grants.keys().next().value as string)
    }
    this.deps.log.info('holder offer answered', { moveId: body.id, from: peer.name, asked: req.diffIds.length, held: held.length })
    return { held }
  }

  /** The layer a fetch asks for, if a grant names the asking member and it; HolderRefusedError otherwise. */
  async layerFor (req: HolderFetchRequest, peer: VerifiedPeer, signal: AbortSignal): Promise<LocalLayer> {
    const grant = this.grants.get(req.moveId)
    if (grant === undefined || grant.until <= this.now()) throw new HolderRefusedError(`no grant for move ${req.moveId} here`)
    if (grant.to !== peer.peerId) throw new HolderRefusedError(`move ${req.moveId} goes to another member, not ${peer.name}`)
    if (!grant.diffIds.has(req.diffId)) throw new HolderRefusedError(`layer ${req.diffId} was not granted for move ${req.moveId}`)
    const local = await localLayer(this.deps.docker, this.deps.store, req.diffId, signal)
    if (local === undefined) throw new HolderRefusedError(`layer ${req.diffId} is no longer here`)
    return local
  }
}

/** `length` bytes of `source` from `offset` on (the bytes before are read past). */
async function * slice (source: AsyncIterable<Uint8Array>, offset: number, length: number): AsyncGenerator<Uint8Array> {
  let at = 0
  const end = offset + length
  for await (const chunk of source) {
    const from = Math.max(offset - at, 0)
    const to = Math.min(end - at, chunk.byteLength)
    at += chunk.byteLength
    if (to > from) yield from === 0 && to === chunk.byteLength ? chunk : chunk.subarray(from, to)
    if (at >= end) return
  }
}

/** The diff IDs an image config names (`rootfs.diff_ids`); SpecMismatchError when it has none. */
function rootfsOf (config: Buffer): string[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(config.toString('utf8'))
  } catch {
    throw new SpecMismatchError('the image config sent is not JSON')
  }
  const ids = (parsed as { rootfs?: { diff_ids?: unknown } } | null)?.rootfs?.diff_ids
  if (!Array.isArray(ids) || !ids.every(d => typeof d === 'string')) throw new SpecMismatchError('the image config sent names no rootfs layers')
  return ids as string[]
}

export interface HolderClientDeps {
  auth: AuthService
  table: PeerTable
  docker: DockerHost
  /** This host's member name (never asked). */
  selfName: string
  /** The mesh's link table: the link from a holder to the destination (default: the table's defaults). */
  links?: LinkTable
  /**
   * The image's config exactly as its digest names it (default: from the engine's storage; an
   * engine not read that way asks no holders: `docker save` would write the whole image first).
   */
  imageConfig?: (imageId: string, signal: AbortSignal) => Promise<Uint8Array | undefined>
  /** Where the parts of a layer fetched from several holders wait for their turn (the staging store's incoming directory: emptied when the store opens). */
  spoolDir: string
  /** Layers of at least this many bytes come in parts from several holders (default PARTS_MIN_BYTES). */
  partsMinBytes?: number
  log: Logger
}

function sameLocation (a: Location, b: Location): boolean {
  return a.provider === b.provider && a.region === b.region
}

export class HolderClient implements HolderLocator, HolderFetcher {
  constructor (private readonly deps: HolderClientDeps) {}

  /** The alive members in the location of `to`, other than it and this host, by name. */
  near (to: PeerEntry): PeerEntry[] {
    const where = locationOf(to.labels)
    return this.deps.table.entries()
      .filter(e => e.state === 'alive' && e.peerId !== to.peerId && e.name !== this.deps.selfName && sameLocation(locationOf(e.labels), where))
      .sort((a, b) => a.name.localeCompare(b.name))
  }

  async find (q: HolderQuery, signal: AbortSignal): Promise<Map<string, HeldBy>> {
    const found = new Map<string, HeldBy>()
    const near = this.near(q.to)
    if (near.length === 0 || q.diffIds.length === 0) return found
    const config = await (this.deps.imageConfig ?? (async (id, s) => await (await this.deps.docker.layerFiles(s).catch(() => undefined))?.config(id)))(q.image.id, signal)
    if (config === undefined) {
      this.deps.log.info('no holders asked: the image config cannot be read from the engine\'s storage here', { image: q.image.id })
      return found
    }
    const req: HolderOfferRequest = { op: 'offer', order: q.order, spec: q.spec, config: Buffer.from(config).toString('base64'), diffIds: [...q.diffIds] }
    const within = AbortSignal.any([signal, AbortSignal.timeout(HOLDER_OFFER_TIMEOUT_MS)])
    const table = this.deps.links ?? new LinkTable()
    const answers = await Promise.all(near.map(async e => {
      try {
        const js = await openStream(this.deps.auth, e.peerId, e.addrs, HOLDER_PROTOCOL, within)
        try {
          await js.write(req, within)
          const reply = parseHolderOfferReply(await readResult(js, within), req.diffIds)
          await js.close(within).catch(() => {})
          return { e, held: reply.held }
        } catch (err) {
          js.abort(err as Error)
          throw err
        }
      } catch (err) {
        if (signal.aborted) throw signal.reason
        this.deps.log.info('member near the destination not asked for layers', { member: e.name, error: (err as Error).message, reason: (err as Error).name })
        return { e, held: [] }
      }
    }))
    for (const { e, held } of answers) {
      const link = table.between(locationOf(e.labels), locationOf(q.to.labels))
      for (const h of held) {
        const first = found.get(h.diffId)
        if (first === undefined) found.set(h.diffId, { name: e.name, peerId: e.peerId, size: h.size, link: link.class, costPerGiB: link.costPerGiB })
        else if (first.size === h.size && (first.others?.length ?? 0) < MAX_HOLDERS_PER_LAYER - 1) first.others = [...first.others ?? [], { name: e.name, peerId: e.peerId }]
      }
    }
    return found
  }

  async fetch (holders: readonly string[], moveId: string, diffId: string, size: number, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    if (holders.length === 0) throw new HolderRefusedError(`no holder named for ${diffId}`)
    const parts = size >= (this.deps.partsMinBytes ?? PARTS_MIN_BYTES) ? Math.min(holders.length, MAX_HOLDERS_PER_LAYER) : 1
    if (parts === 1) return await this.part(holders[0], moveId, diffId, undefined, size, signal)
    const partBytes = Math.ceil(size / parts)
    const ranges = holders.slice(0, parts).map((h, i) => ({ holder: h, offset: i * partBytes, length: Math.min(partBytes, size - i * partBytes) })).filter(r => r.length > 0)
    return this.inParts(ranges, moveId, diffId, signal)
  }

  /**
   * The parts in order: the first streams through; each other one is fetched at the same time into
   * a spool file, and read from there in its turn. Any part failing fails the whole (the caller's
   * verification would anyway); every spool file goes at the end, whatever happened.
   */
  private async * inParts (ranges: Array<{ holder: string, offset: number, length: number }>, moveId: string, diffId: string, signal: AbortSignal): AsyncGenerator<Uint8Array> {
    const ac = new AbortController()
    const s = AbortSignal.any([signal, ac.signal])
    const tag = randomBytes(6).toString('hex')
    const paths = ranges.map((_, i) => join(this.deps.spoolDir, `part-${tag}-${i}`))
    const spooled = ranges.slice(1).map(async (r, i) => {
      await spoolToFile(await this.part(r.holder, moveId, diffId, r, r.length, s), paths[i + 1], s)
      return paths[i + 1]
    })
    for (const p of spooled) p.catch(() => {})
    try {
      yield * await this.part(ranges[0].holder, moveId, diffId, ranges[0], ranges[0].length, s)
      for (const p of spooled) yield * createReadStream(await p)
    } finally {
      ac.abort(new HolderRefusedError(`the parts of ${diffId} are no longer needed`))
      await Promise.allSettled(spooled)
      await Promise.all(paths.map(async p => { await rm(p, { force: true }); await rm(`${p}.part`, { force: true }) }))
    }
  }

  /** One holder's bytes of the layer (a part when `range` is given), which must be `size` bytes. */
  private async part (holder: string, moveId: string, diffId: string, range: { offset: number, length: number } | undefined, size: number, signal: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const entry = this.deps.table.get(holder)
    if (entry === undefined || entry.state !== 'alive') throw new HolderRefusedError(`the holder ${holder} is not an alive member here`)
    const js = await openStream(this.deps.auth, entry.peerId, entry.addrs, HOLDER_PROTOCOL, signal)
    try {
      await js.write({ op: 'fetch', moveId, diffId, ...range === undefined ? {} : { offset: range.offset, length: range.length } } satisfies HolderFetchRequest, signal)
      const reply = await readResult(js, signal) as Partial<HolderFetchReply> | null
      if (typeof reply?.size !== 'number' || !Number.isSafeInteger(reply.size) || reply.size < 0) throw new ProtocolError('the holder\'s reply names no size')
      if (reply.size !== size) throw new HolderRefusedError(`the holder ${entry.name} announces ${reply.size} bytes of ${diffId}, ${size} were expected`)
    } catch (err) {
      js.abort(err as Error)
      throw err
    }
    return closing(js, receiveBlob(js, size, () => new LayerTooLargeError(`the holder ${entry.name} sent more of ${diffId} than the ${size} bytes it announced`), signal), signal)
  }
}

/** The blob's bytes, then the stream closed; aborted if the reader stops early or fails. */
async function * closing (js: JsonStream, bytes: AsyncIterable<Uint8Array>, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  let done = false
  try {
    yield * bytes
    done = true
  } finally {
    if (done) await js.close(signal).catch(() => {})
    else js.abort(new HolderRefusedError('the layer was not read to its end'))
  }
}
