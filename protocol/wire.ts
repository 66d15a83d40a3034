/**
 * JSON messages over libp2p streams. This is the only module that touches the libp2p v3 stream API
 * for messages: every protocol sends length-prefixed JSON frames through `JsonStream`, bounded by
 * MAX_MESSAGE_BYTES, with an AbortSignal on every read and write.
 *
 * A request/response protocol is one stream: the caller writes one request, the handler writes one
 * `Envelope` back (`{ ok: true, result }` or `{ ok: false, error }`) and both close.
 */
import { lpStream } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { MAX_MESSAGE_BYTES } from './ids.js'
import { ProtocolError, fromWireError, type WireError } from './errors.js'

export type Envelope<T> = { ok: true, result: T } | { ok: false, error: WireError }

export class JsonStream {
  private readonly lp

  constructor (readonly stream: Stream) {
    this.lp = lpStream(stream, { maxDataLength: MAX_MESSAGE_BYTES })
  }

  async write (message: unknown, signal?: AbortSignal): Promise<void> {
    const bytes = new TextEncoder().encode(JSON.stringify(message))
    await this.lp.write(bytes, { signal })
  }

  async read (signal?: AbortSignal): Promise<unknown> {
    let frame
    try {
      frame = await this.lp.read({ signal })
    } catch (err) {
      if (signal?.aborted === true) throw err
      throw new ProtocolError(`stream ended before a message arrived: ${(err as Error).message}`, { cause: err })
    }
    try {
      return JSON.parse(new TextDecoder().decode(frame.subarray()))
    } catch (err) {
      throw new ProtocolError('message is not valid JSON', { cause: err })
    }
  }

  async close (signal?: AbortSignal): Promise<void> {
    try {
      await this.stream.close({ signal })
    } catch {
      this.stream.abort(new ProtocolError('close failed'))
    }
  }
}

/** Reads an `Envelope` and returns its result, or throws the typed error it carries. */
export async function readResult (js: JsonStream, signal?: AbortSignal): Promise<unknown> {
  const msg = await js.read(signal)
  if (typeof msg !== 'object' || msg === null || typeof (msg as { ok?: unknown }).ok !== 'boolean') {
    throw new ProtocolError('reply is not an envelope')
  }
  const env = msg as Envelope<unknown>
  if (env.ok) return env.result
  const error = env.error
  if (typeof error?.name !== 'string' || typeof error?.message !== 'string') throw new ProtocolError('reply carries a malformed error')
  throw fromWireError(error)
}
