/**
 * The sending end of one transfer (/goto/transfer/1.0.0) to one destination: each step a request on
 * its own stream over one authenticated connection, then the step's blobs (layers, volume archives)
 * with backpressure, then the destination's reply. Moves, snapshots and the recovery of interrupted
 * transfers all talk to a destination through this one class.
 *
 *   const link = new TransferLink(connection, metrics)
 *   const reply = await link.call({ op: 'layer', moveId, diffId, size }, [{ size, path }], signal, onBytes)
 *   const { result, offset } = await link.layer({ op: 'layer', moveId, diffId, size }, off => bytesFrom(off), signal, onBytes)
 *   const stats = await link.sync({ op: 'volume', moveId, name, round, final }, d => syncSource(dir, d, { signal }), signal)
 *
 * `shape()` sets how blobs cross this link (agent/transfer/links.ts): zstd and a rate cap on the
 * bytes as they go on the wire; `wireBytes` counts those bytes, `onBytes` the blob's own.
 */
import { createReadStream } from 'node:fs'
import type { Connection } from '@libp2p/interface'
import { counted } from './counted.js'
import { sendEncoded, type Encoding } from './encoding.js'
import { mbitToBytesPerSecond, rateLimited } from './rate.js'
import type { LinkClass } from './links.js'
import { NO_METRICS, type Metrics } from '../metrics/sink.js'
import { TRANSFER_PROTOCOL } from '../../protocol/ids.js'
import { JsonStream, readResult } from '../../protocol/wire.js'
import { parseResumePoint, type LayerHeader, type TransferRequest, type VolumeRoundRequest } from '../../protocol/move-messages.js'
import { ProtocolError, fromWireError } from '../../protocol/errors.js'
import { syncDuplex, type SyncDuplex } from './sync-stream.js'

/** What follows a request on its stream: `size` bytes from a file at `path` or from `source`. */
export interface Blob { size: number, path?: string, source?: AsyncIterable<Uint8Array> }

/**
 * How blobs cross a link: compressed or not, and under a rate cap (Mbit/s) or not; the link's class
 * and price name the wire bytes in the metrics (default: a free link).
 */
export interface LinkShape {
  encoding?: Encoding
  rateMbit?: number
  linkClass?: LinkClass
  costPerGiB?: number
  /** The destination continues partial layers (its prepare said so): named layers go with `resume`. */
  resumes?: boolean
}

export class TransferLink {
  private linkShape: LinkShape = {}
  private wire = 0

  constructor (private readonly connection: Connection, private readonly metrics: Pick<Metrics, 'bytesSent' | 'wireBytes'> = NO_METRICS) {}

  /** The destination's peer ID (what a freeze record names). */
  get peerId (): string {
    return this.connection.remotePeer.toString()
  }

  /** Sets how the blobs of later calls cross (after prepare: the link's class and what the destination decodes). */
  shape (shape: LinkShape): void {
    this.linkShape = shape
  }

  /** Blob bytes this link handed to the wire (after compression). */
  get wireBytes (): number {
    return this.wire
  }

  /** Counts bytes handed to the wire (here and in the metrics, by link class). */
  private onWire (n: number): void {
    this.wire += n
    this.metrics.wireBytes(this.linkShape.linkClass ?? 'free', n, this.linkShape.costPerGiB ?? 0)
  }

  /** `bytes` under the link's rate cap, if it has one. */
  private capped (bytes: AsyncIterable<Uint8Array>, signal: AbortSignal): AsyncIterable<Uint8Array> {
    const { rateMbit } = this.linkShape
    return rateMbit === undefined ? bytes : rateLimited(bytes, mbitToBytesPerSecond(rateMbit), signal)
  }

  /** One transfer step on its own stream: the request, then the blobs, then the reply's result. */
  async call (req: TransferRequest, blobs: Blob[], signal: AbortSignal, onBytes?: (n: number) => void): Promise<unknown> {
    const js = new JsonStream(await this.connection.newStream(TRANSFER_PROTOCOL, { signal }))
    try {
      const { encoding } = this.linkShape
      await js.write(blobs.length > 0 && encoding !== undefined ? { ...req, encoding } : req, signal)
      for (const b of blobs) await this.sendOn(js, b, signal, onBytes)
      const result = await readResult(js, signal)
      await js.close(signal)
      return result
    } catch (err) {
      js.abort(err as Error)
      throw err
    }
  }

  /**
   * One layer: `from(offset)` must yield exactly the layer's bytes after `offset`. A named layer to a
   * destination that resumes goes with `resume` (callResuming), any other whole (from 0).
   * Returns the reply's result and the offset the layer was sent from.
   */
  async layer (req: LayerHeader, from: (offset: number) => AsyncIterable<Uint8Array>, signal: AbortSignal, onBytes?: (n: number) => void): Promise<{ result: unknown, offset: number }> {
    if (this.linkShape.resumes !== true || req.diffId === null) return { result: await this.call(req, [{ size: req.size, source: from(0) }], signal, onBytes), offset: 0 }
    return await this.callResuming(req, from, signal, onBytes)
  }

  /**
   * One named layer the destination may hold part of (LayerHeader `resume`): the request, the
   * destination's ResumePoint, then the layer from that offset on, then the reply.
   */
  private async callResuming (req: LayerHeader, from: (offset: number) => AsyncIterable<Uint8Array>, signal: AbortSignal, onBytes?: (n: number) => void): Promise<{ result: unknown, offset: number }> {
    const js = new JsonStream(await this.connection.newStream(TRANSFER_PROTOCOL, { signal }))
    try {
      const { encoding } = this.linkShape
      await js.write({ ...req, resume: true, ...encoding === undefined ? {} : { encoding } } satisfies LayerHeader, signal)
      const first = await js.read(signal) as { ok?: unknown } | null
      if (first !== null && typeof first === 'object' && first.ok === false) throw fromEnvelope(first)
      const { offset } = parseResumePoint(first, req.size)
      await this.sendOn(js, { size: req.size - offset, source: from(offset) }, signal, onBytes)
      const result = await readResult(js, signal)
      await js.close(signal)
      return { result, offset }
    } catch (err) {
      js.abort(err as Error)
      throw err
    }
  }

  /** One blob on a step's stream, encoded as the link says; the rate cap and `wireBytes` see what goes on the wire (compressed where the link compresses). */
  private async sendOn (js: JsonStream, b: Blob, signal: AbortSignal, onBytes?: (n: number) => void): Promise<void> {
    const wire = (bytes: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> => counted(this.capped(bytes, signal), n => { this.onWire(n) })
    const source = b.source ?? createReadStream(b.path ?? '')
    // Blob payload (uncompressed) counts as sent once handed to the stream (docs/operations.md, metrics).
    await sendEncoded(js, counted(source, n => { this.metrics.bytesSent(n); onBytes?.(n) }), b.size, { encoding: this.linkShape.encoding, wire }, signal)
  }

  /**
   * One step that carries a tree sync (`volume`): the request, the destination's `{ ready }` (or
   * its refusal, thrown as its typed error), then `run` drives the sync over the stream, then the
   * reply's result. Bytes of the sync we send count as sent.
   */
  async sync<T> (req: VolumeRoundRequest, run: (duplex: SyncDuplex) => Promise<T>, signal: AbortSignal): Promise<T> {
    const js = new JsonStream(await this.connection.newStream(TRANSFER_PROTOCOL, { signal }))
    try {
      await js.write(req, signal)
      const first = await js.read(signal) as { ok?: unknown, ready?: unknown } | null
      if (first !== null && typeof first === 'object' && first.ok === false) throw fromEnvelope(first)
      if (first === null || typeof first !== 'object' || first.ready !== true) throw new ProtocolError('the destination did not answer a volume round with ready')
      const duplex = syncDuplex(js, signal)
      const sink = duplex.sink
      // The link's rate cap holds for a volume round's bytes too (zstd does not: the sync has its own framing).
      duplex.sink = async s => { await sink(counted(this.capped(s, signal), n => { this.onWire(n); this.metrics.bytesSent(n) })) }
      const result = await run(duplex)
      await readResult(js, signal)
      await js.close(signal)
      return result
    } catch (err) {
      js.abort(err as Error)
      throw err
    }
  }
}

function fromEnvelope (env: { ok?: unknown }): Error {
  const e = (env as { error?: { name?: unknown, message?: unknown } }).error
  if (typeof e?.name !== 'string' || typeof e?.message !== 'string') return new ProtocolError('reply carries a malformed error')
  return fromWireError({ name: e.name, message: e.message })
}
