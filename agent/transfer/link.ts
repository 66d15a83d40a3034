/**
 * The sending end of one transfer (/goto/transfer/1.0.0) to one destination: each step a request on
 * its own stream over one authenticated connection, then the step's blobs (layers, volume archives)
 * with backpressure, then the destination's reply. Moves, snapshots and the recovery of interrupted
 * transfers all talk to a destination through this one class.
 *
 *   const link = new TransferLink(connection, metrics)
 *   const reply = await link.call({ op: 'layer', moveId, diffId, size }, [{ size, path }], signal, onBytes)
 */
import { createReadStream } from 'node:fs'
import type { Connection } from '@libp2p/interface'
import { counted } from './counted.js'
import { NO_METRICS, type Metrics } from '../metrics/sink.js'
import { TRANSFER_PROTOCOL } from '../../protocol/ids.js'
import { JsonStream, readResult, sendBlob } from '../../protocol/wire.js'
import type { TransferRequest } from '../../protocol/move-messages.js'

/** What follows a request on its stream: `size` bytes from a file at `path` or from `source`. */
export interface Blob { size: number, path?: string, source?: AsyncIterable<Uint8Array> }

export class TransferLink {
  constructor (private readonly connection: Connection, private readonly metrics: Pick<Metrics, 'bytesSent'> = NO_METRICS) {}

  /** The destination's peer ID (what a freeze record names). */
  get peerId (): string {
    return this.connection.remotePeer.toString()
  }

  /** One transfer step on its own stream: the request, then the blobs, then the reply's result. */
  async call (req: TransferRequest, blobs: Blob[], signal: AbortSignal, onBytes?: (n: number) => void): Promise<unknown> {
    const js = new JsonStream(await this.connection.newStream(TRANSFER_PROTOCOL, { signal }))
    try {
      await js.write(req, signal)
      for (const b of blobs) {
        const source = b.source ?? createReadStream(b.path ?? '')
        // Blob payload counts as sent once handed to the stream (docs/operations.md, metrics).
        await sendBlob(js, counted(source, n => { this.metrics.bytesSent(n); onBytes?.(n) }), b.size, signal)
      }
      const result = await readResult(js, signal)
      await js.close(signal)
      return result
    } catch (err) {
      js.abort(err as Error)
      throw err
    }
  }
}
