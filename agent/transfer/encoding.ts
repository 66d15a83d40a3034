/**
 * How a blob crosses the wire: as it is (`sendBlob`: its size announced, raw frames), or zstd
 * compressed, when the link's class says so and the destination said in prepare that it decodes it.
 * A compressed blob's size is not known before it is compressed, so it travels as raw frames ended
 * by an empty frame; the request still announces the uncompressed size, which the receiver holds
 * the decompressed bytes to (never more: LayerTooLargeError; never fewer: LayerTruncatedError) and
 * then verifies against the diff ID or digest as for any blob.
 *
 *   await sendEncoded(js, source, size, { encoding: 'zstd', wire: b => rateLimited(b, bps, signal) }, signal)
 *   for await (const chunk of receiveEncoded(js, size, req.encoding, tooLarge, signal)) ...
 */
import { LayerTruncatedError, ProtocolError } from '../../protocol/errors.js'
import { BLOB_FRAME_BYTES, receiveBlob, sendBlob, type JsonStream } from '../../protocol/wire.js'
import { zstdAvailable, zstdCompress, zstdDecompress } from './zstd.js'

export type Encoding = 'zstd'

/** What this host decodes (said in its prepare reply). */
export function decodableEncodings (): Encoding[] {
  return zstdAvailable() ? ['zstd'] : []
}

export interface SendShape {
  encoding?: Encoding
  /** A stage over the bytes as they go on the wire (a count, a rate cap). */
  wire?: (bytes: AsyncIterable<Uint8Array>) => AsyncIterable<Uint8Array>
}

export async function sendEncoded (js: JsonStream, source: AsyncIterable<Uint8Array>, size: number, shape: SendShape, signal: AbortSignal): Promise<void> {
  const wire = shape.wire ?? (b => b)
  if (shape.encoding === undefined) {
    await sendBlob(js, wire(source), size, signal)
    return
  }
  await sendFrames(js, wire(zstdCompress(exactly(source, size), signal)), signal)
}

export function receiveEncoded (js: JsonStream, size: number, encoding: Encoding | undefined, tooLarge: () => Error, signal: AbortSignal): AsyncIterable<Uint8Array> {
  if (encoding === undefined) return receiveBlob(js, size, tooLarge, signal)
  return upTo(zstdDecompress(receiveFrames(js, signal), signal), size, tooLarge)
}

/** The source, failing if it has more or fewer than `size` bytes (a sender never lies about a size). */
async function * exactly (source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Uint8Array> {
  let n = 0
  for await (const chunk of source) {
    n += chunk.byteLength
    if (n > size) throw new ProtocolError(`source has more than the announced ${size} bytes`)
    yield chunk
  }
  if (n !== size) throw new ProtocolError(`source ended after ${n} of the announced ${size} bytes`)
}

async function * upTo (source: AsyncIterable<Uint8Array>, size: number, tooLarge: () => Error): AsyncGenerator<Uint8Array> {
  let n = 0
  for await (const chunk of source) {
    n += chunk.byteLength
    if (n > size) throw tooLarge()
    yield chunk
  }
  if (n < size) throw new LayerTruncatedError(`a compressed blob decoded to ${n} of the announced ${size} bytes`)
}

/** Raw frames of at most BLOB_FRAME_BYTES (small chunks gathered), then an empty frame. */
async function sendFrames (js: JsonStream, source: AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<void> {
  let parts: Uint8Array[] = []
  let pending = 0
  for await (const chunk of source) {
    if (chunk.byteLength === 0) continue
    for (let off = 0; off < chunk.byteLength;) {
      const take = Math.min(chunk.byteLength - off, BLOB_FRAME_BYTES - pending)
      parts.push(off === 0 && take === chunk.byteLength ? chunk : chunk.subarray(off, off + take))
      pending += take
      off += take
      if (pending === BLOB_FRAME_BYTES) { await js.writeBytes(parts, signal); parts = []; pending = 0 }
    }
  }
  if (pending > 0) await js.writeBytes(parts, signal)
  await js.writeBytes(new Uint8Array(0), signal)
}

async function * receiveFrames (js: JsonStream, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  for (;;) {
    const frame = await js.readBytes(signal)
    if (frame.byteLength === 0) return
    if (frame.byteLength > BLOB_FRAME_BYTES) throw new ProtocolError(`a compressed frame of ${frame.byteLength} bytes exceeds ${BLOB_FRAME_BYTES}`)
    yield frame
  }
}
