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
 *
 * The libp2p stream stays inside: callers see its life through `isOpen`, `onClose` and `abort`, so
 * no other module depends on the libp2p stream API.
 */
import type { Stream } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { MAX_MESSAGE_BYTES } from './ids.js'
import { ProtocolError, fromWireError, type WireError } from './errors.js'

export type Envelope<T> = { ok: true, result: T } | { ok: false, error: WireError }

/**
 * Receive-side flow control. libp2p's yamux grants the sender more window as soon as data arrives,
 * not when it is consumed, so a reader slower than the network (a layer going to disk) must pause
 * the stream itself: above HIGH_WATER buffered bytes we pause (yamux then stops granting window and
 * the sender's `send()` waits for drain), below LOW_WATER we resume. protocol/node.ts keeps the yamux
 * window below the per-stream read buffer limit, so what is in flight at a pause always fits.
 */
export const HIGH_WATER = 8 * 1024 * 1024
const LOW_WATER = 4 * 1024 * 1024

/** Length-prefixed frames (unsigned varint length, then the bytes) over one libp2p stream. */
export class JsonStream {
  private readonly buffer = new Uint8ArrayList()
  private ended = false
  private failure: Error | undefined
  private wake: (() => void) | undefined
  /** Both ends closed, or the stream was reset or aborted: it carries nothing more either way. */
  private closed: boolean
  private readonly closeListeners = new Set<(error: Error | undefined) => void>()

  constructor (private readonly stream: Stream) {
    this.closed = stream.status === 'closed' || stream.status === 'aborted' || stream.status === 'reset'
    stream.addEventListener('message', evt => {
      this.buffer.append(evt.data)
      // Pause after this dispatch, not inside it: libp2p's resume() dispatches buffered data and only
      // then tells yamux to grant window again, which would undo a pause made here.
      if (this.buffer.byteLength > HIGH_WATER) queueMicrotask(() => { this.maybePause() })
      this.notify()
    })
    stream.addEventListener('remoteCloseWrite', () => { this.ended = true; this.notify() })
    stream.addEventListener('close', evt => {
      this.ended = true
      this.closed = true
      if (evt.error !== undefined) this.failure = evt.error
      this.notify()
      const listeners = [...this.closeListeners]
      this.closeListeners.clear()
      for (const cb of listeners) cb(evt.error)
    })
  }

  /** Whether the stream is open both ways (not closing, closed, reset or aborted). */
  get isOpen (): boolean {
    return this.stream.status === 'open'
  }

  /**
   * Calls `cb` once when the stream has closed: both ends closed, the remote reset it, or it was
   * aborted (`error` then says why). A stream already closed calls `cb` at once. Returns a function
   * that takes `cb` back (a caller done with the stream before it closes).
   */
  onClose (cb: (error: Error | undefined) => void): () => void {
    if (this.closed) {
      cb(this.failure)
      return () => {}
    }
    this.closeListeners.add(cb)
    return () => { this.closeListeners.delete(cb) }
  }

  /**
   * Ends the stream at once both ways, dropping what is unsent or unread; the remote sees a reset.
   * Pending reads and writes here fail with a ProtocolError that carries `err`.
   */
  abort (err: Error): void {
    this.stream.abort(err)
  }

  private maybePause (): void {
    if (this.buffer.byteLength > HIGH_WATER && this.stream.readStatus === 'readable') this.stream.pause()
  }

  private notify (): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  async write (message: unknown, signal?: AbortSignal): Promise<void> {
    await this.writeBytes(new TextEncoder().encode(JSON.stringify(message)), signal)
  }

  async read (signal?: AbortSignal): Promise<unknown> {
    const frame = await this.readFrame(signal)
    try {
      return JSON.parse(new TextDecoder().decode(frame))
    } catch (err) {
      throw new ProtocolError('message is not valid JSON', { cause: err })
    }
  }

  /**
   * Writes one frame (its bytes in one piece or several, sent as they are: no copy); resolves when
   * the stream accepted it (waits for drain when its buffer is full).
   */
  async writeBytes (bytes: Uint8Array | Uint8Array[], signal?: AbortSignal): Promise<void> {
    const parts = Array.isArray(bytes) ? bytes : [bytes]
    const length = parts.reduce((n, p) => n + p.byteLength, 0)
    if (length > MAX_MESSAGE_BYTES) throw new ProtocolError(`frame of ${length} bytes exceeds ${MAX_MESSAGE_BYTES}`)
    const frame = new Uint8ArrayList(encodeVarint(length), ...parts)
    if (!this.stream.send(frame)) await this.drained(signal)
  }

  /**
   * Waits until the stream handed all it holds to the muxer and the muxer takes more. Not
   * `stream.onDrain()`: @libp2p/utils 7.x (AbstractMessageStream) keeps the promise of the first
   * wait and hands it back, already resolved, to every later call, so after the first drain it never
   * waits again and a bulk sender piles its whole blob into the stream's write buffer (measured:
   * 346 MiB queued while sending 1 GiB to a 200 MB/s reader). We watch the events instead: 'drain'
   * (window update or the connection drained), 'idle' (the queue emptied), 'close'.
   */
  private async drained (signal?: AbortSignal): Promise<void> {
    const s = this.stream
    while ((s.writableNeedsDrain || s.writeBufferLength > 0) && s.writeStatus === 'writable') {
      await new Promise<void>((resolve, reject) => {
        if (signal?.aborted === true) { reject(signal.reason); return }
        const cleanup = (): void => {
          s.removeEventListener('drain', done)
          s.removeEventListener('idle', done)
          s.removeEventListener('close', done)
          signal?.removeEventListener('abort', onAbort)
        }
        const done = (): void => { cleanup(); resolve() }
        const onAbort = (): void => { cleanup(); reject(signal?.reason) }
        s.addEventListener('drain', done)
        s.addEventListener('idle', done)
        s.addEventListener('close', done)
        signal?.addEventListener('abort', onAbort, { once: true })
      })
      // libp2p sends what it queued in a microtask after 'drain': let it run before looking again.
      await Promise.resolve()
    }
    if (this.failure !== undefined) throw new ProtocolError(`stream failed: ${this.failure.message}`, { cause: this.failure })
  }

  /** Reads one raw frame (bulk data). */
  async readBytes (signal?: AbortSignal): Promise<Uint8Array> {
    return await this.readFrame(signal)
  }

  private async readFrame (signal?: AbortSignal): Promise<Uint8Array> {
    for (;;) {
      const header = decodeVarint(this.buffer)
      if (header !== undefined) {
        if (header.value > MAX_MESSAGE_BYTES) {
          const err = new ProtocolError(`frame of ${header.value} bytes exceeds ${MAX_MESSAGE_BYTES}`)
          this.stream.abort(err)
          throw err
        }
        if (this.buffer.byteLength >= header.bytes + header.value) {
          const frame = this.buffer.subarray(header.bytes, header.bytes + header.value)
          this.buffer.consume(header.bytes + header.value)
          if (this.stream.readStatus === 'paused' && this.buffer.byteLength < LOW_WATER) this.stream.resume()
          return frame
        }
      }
      if (this.failure !== undefined) throw new ProtocolError(`stream failed: ${this.failure.message}`, { cause: this.failure })
      if (this.ended) throw new ProtocolError(this.buffer.byteLength === 0 ? 'stream ended before a message arrived' : 'stream ended in the middle of a message')
      await new Promise<void>((resolve, reject) => {
        if (signal?.aborted === true) { reject(signal.reason); return }
        const onAbort = (): void => { this.wake = undefined; reject(signal?.reason) }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.wake = () => { signal?.removeEventListener('abort', onAbort); resolve() }
      })
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

function encodeVarint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return Uint8Array.from(out)
}

/** The varint at the start of `buf`, or undefined while it is incomplete. */
function decodeVarint (buf: Uint8ArrayList): { value: number, bytes: number } | undefined {
  let value = 0
  let scale = 1
  for (let i = 0; i < Math.min(buf.byteLength, 8); i++) {
    const b = buf.get(i)
    value += (b & 0x7f) * scale
    if ((b & 0x80) === 0) return { value, bytes: i + 1 }
    scale *= 0x80
  }
  if (buf.byteLength >= 8) throw new ProtocolError('frame length prefix is too long')
  return undefined
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

/**
 * Largest raw frame of bulk data: big enough to be cheap per byte (every frame costs a header, a
 * send, an event and a turn of every stage at the receiver), far below MAX_MESSAGE_BYTES.
 */
export const BLOB_FRAME_BYTES = 512 * 1024

/**
 * Sends `source` as raw frames (after the caller announced its size in a JSON header). Small chunks
 * (a socket's reads are often a few KiB) are gathered into frames of about BLOB_FRAME_BYTES, without
 * copying them. Returns the byte count sent; throws ProtocolError if the source yields more or fewer
 * bytes than announced, so a sender never silently lies about a size.
 */
export async function sendBlob (js: JsonStream, source: AsyncIterable<Uint8Array>, size: number, signal?: AbortSignal): Promise<number> {
  let sent = 0
  let parts: Uint8Array[] = []
  let pending = 0
  const flush = async (): Promise<void> => {
    if (pending === 0) return
    if (sent + pending > size) throw new ProtocolError(`source has more than the announced ${size} bytes`)
    const frame = parts
    parts = []
    sent += pending
    pending = 0
    await js.writeBytes(frame, signal)
  }
  for await (const chunk of source) {
    for (let off = 0; off < chunk.byteLength;) {
      const take = Math.min(chunk.byteLength - off, BLOB_FRAME_BYTES - pending)
      parts.push(off === 0 && take === chunk.byteLength ? chunk : chunk.subarray(off, off + take))
      pending += take
      off += take
      if (pending === BLOB_FRAME_BYTES) await flush()
    }
  }
  await flush()
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
