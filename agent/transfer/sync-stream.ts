/**
 * A tree sync's byte stream (agent/sync's ByteDuplex) carried on a /goto/transfer step's stream,
 * between its JSON request and its reply envelope: each direction's bytes go as raw frames of at
 * most BLOB_FRAME_BYTES (with the JsonStream's backpressure), ended by one empty frame, so that the
 * envelope after it is read as JSON again. Used by both ends of a `volume` round:
 *
 *   const d = syncDuplex(js, signal, maxBytes, tooLarge)
 *   await syncDestination(dir, d, { signal })   // or syncSource(...)
 *   await d.ended                               // our half is written out: the envelope may follow
 */
import type { ByteDuplex } from '../sync/index.js'
import { BLOB_FRAME_BYTES, type JsonStream } from '../../protocol/wire.js'

export interface SyncDuplex extends ByteDuplex {
  /** Settles when the sink has written its end frame (or failed). */
  ended: Promise<void>
}

/**
 * `maxBytes`: the most this end takes from the other in all; past it the source fails with
 * `tooLarge()` (the caller's typed error) before the bytes are handed on.
 */
export function syncDuplex (js: JsonStream, signal: AbortSignal, maxBytes = Number.MAX_SAFE_INTEGER, tooLarge: () => Error = () => new RangeError('sync stream too large')): SyncDuplex {
  let endSink: () => void = () => {}
  const ended = new Promise<void>(resolve => { endSink = resolve })
  async function * source (): AsyncGenerator<Uint8Array> {
    let received = 0
    while (true) {
      const frame = await js.readBytes(signal)
      if (frame.byteLength === 0) return
      received += frame.byteLength
      if (received > maxBytes) throw tooLarge()
      yield frame
    }
  }
  const sink = async (chunks: AsyncIterable<Uint8Array>): Promise<void> => {
    try {
      for await (const bytes of chunks) {
        for (let off = 0; off < bytes.byteLength; off += BLOB_FRAME_BYTES) {
          await js.writeBytes(bytes.subarray(off, Math.min(bytes.byteLength, off + BLOB_FRAME_BYTES)), signal)
        }
      }
      await js.writeBytes(new Uint8Array(0), signal)
    } finally {
      endSink()
    }
  }
  return { source: source(), sink, ended }
}
