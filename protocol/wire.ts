/**
 * JSON messages over libp2p streams. This is the only module that touches the libp2p v3 stream API
 * for messages: every protocol sends length-prefixed JSON frames through `JsonStream`, bounded by
 * MAX_MESSAGE_BYTES, with an AbortSignal on every read and write.
 *
 * A request/response protocol is one stream: the caller writes one request, the handler writes one
 * `Envelope` back (`{ ok: true, result }` or `{ ok: false, error }`) and both close.
 *
 * Bulk data (layers, volume archives) travels on the same framing: a JSON header that announces the
 * byte count, then raw frames of at most BLOB_FRAME_BYTES until that count is reached. `sendBlob`
 * honours backpressure (each frame waits for the stream to drain); `receiveBlob` yields the bytes as
 * they arrive and fails the moment a sender goes past what it announced.
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

  /** Writes one raw frame (bulk data); resolves when the stream accepted it. */
  async writeBytes (bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
    await this.lp.write(bytes, { signal })
  }

  /** Reads one raw frame. */
  async readBytes (signal?: AbortSignal): Promise<Uint8Array> {
    try {
      return (await this.lp.read({ signal })).subarray()
    } catch (err) {
      if (signal?.aborted === true) throw err
      throw new ProtocolError(`stream ended in the middle of data: ${(err as Error).message}`, { cause: err })
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

/** Largest raw frame of bulk data: big enough to be cheap per byte, far below MAX_MESSAGE_BYTES. */
export const BLOB_FRAME_BYTES = 256 * 1024

/**
 * Sends `source` as raw frames (after the caller announced its size in a JSON header). Returns the
 * byte count sent; throws ProtocolError if the source yields more or fewer bytes than announced, so a
 * sender never silently lies about a size.
 */
export async function sendBlob (js: JsonStream, source: AsyncIterable<Uint8Array>, size: number, signal?: AbortSignal): Promise<number> {
  let sent = 0
  for await (const chunk of source) {
    for (let off = 0; off < chunk.byteLength; off += BLOB_FRAME_BYTES) {
      const frame = chunk.subarray(off, Math.min(off + BLOB_FRAME_BYTES, chunk.byteLength))
      if (sent + frame.byteLength > size) throw new ProtocolError(`source has more than the announced ${size} bytes`)
      await js.writeBytes(frame, signal)
      sent += frame.byteLength
    }
  }
  if (sent !== size) throw new ProtocolError(`source ended after ${sent} of the announced ${size} bytes`)
  return sent
}

/**
 * Yields the raw frames of an announced `size`. A frame that goes past `size` is refused with
 * `tooLarge()` (the caller's typed error) before its bytes are yielded.
 */
export async function * receiveBlob (js: JsonStream, size: number, tooLarge: () => Error, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  let received = 0
  while (received < size) {
    const frame = await js.readBytes(signal)
    if (received + frame.byteLength > size) throw tooLarge()
    received += frame.byteLength
    yield frame
  }
}
