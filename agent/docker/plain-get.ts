/**
 * A streamed GET to the engine over HTTP/1.0, for the one large download: `docker save`.
 *
 *   const res = await plainGet(endpoint, `/images/${id}/get`, signal)   // throws on a non-2xx answer
 *   for await (const chunk of res.body) ...                              // the body, as the socket reads it
 *
 * Why not the modem: over HTTP/1.1 the engine sends a save as chunked encoding in 32 KiB pieces,
 * and Node's HTTP client hands each piece on by itself, the small ones between them too. Measured
 * on 512 MiB: 1.0-1.3 CPU-seconds to read it that way, 0.5-0.6 this way. An HTTP/1.0 request gets
 * the body plain, ended by the engine closing the connection, in the socket's own reads.
 *
 * A body ended by a close cannot tell a cut from its end. This is for bodies that carry their own
 * structure (a tar archive: its parser refuses one that stops short, and an image archive ends with
 * its manifest), never for a bare JSON answer.
 *
 * A non-2xx answer rejects with an error shaped like the modem's (`statusCode`, `json`), so the
 * caller maps both the same way; a socket that fails rejects (or ends the body) with its own error;
 * an aborted `signal` destroys the socket.
 */
import { connect, type Socket } from 'node:net'
import { GotoError } from '../../protocol/errors.js'
import { addAbortSignal } from 'node:stream'
import type { DockerEndpoint } from '../config.js'

/** A status line and headers longer than this are not an engine's. */
const MAX_HEAD_BYTES = 64 * 1024
/** Of an error answer, we read at most this much (the engine's JSON message). */
const MAX_ERROR_BODY_BYTES = 64 * 1024
const HEAD_END = Buffer.from('\r\n\r\n')

export interface PlainResponse {
  status: number
  /** The body's bytes; destroys the connection when the iteration ends, early or not. */
  body: AsyncIterable<Uint8Array>
}

/**
 * What a non-2xx answer rejects with: the fields the modem's errors carry. Internal to the driver:
 * agent/docker/host.ts turns it into a DockerEngineError (by `statusCode`, as a modem error).
 */
export class EngineStatusError extends GotoError {
  constructor (readonly statusCode: number, readonly json: { message?: unknown } | null, text: string, options?: { cause?: unknown }) {
    super(`(HTTP code ${statusCode}) unexpected - ${text}`, options) // the modem's wording
  }
}

export async function plainGet (endpoint: DockerEndpoint, path: string, signal?: AbortSignal): Promise<PlainResponse> {
  signal?.throwIfAborted()
  const host = endpoint.kind === 'unix' ? 'docker' : `${endpoint.host}:${endpoint.port}`
  const socket: Socket = endpoint.kind === 'unix' ? connect(endpoint.socketPath) : connect(endpoint.port, endpoint.host)
  if (signal !== undefined) addAbortSignal(signal, socket)
  socket.write(`GET ${path} HTTP/1.0\r\nHost: ${host}\r\nUser-Agent: go-to\r\n\r\n`)
  const it = socket[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  try {
    let head: Buffer = Buffer.alloc(0)
    let end = -1
    while (end < 0) {
      const r = await it.next()
      if (r.done === true) throw new Error(`the engine closed the connection before answering GET ${path}`)
      head = head.byteLength === 0 ? r.value : Buffer.concat([head, r.value])
      end = head.indexOf(HEAD_END)
      if (end < 0 && head.byteLength > MAX_HEAD_BYTES) throw new Error(`the engine's answer to GET ${path} has no end of headers in ${MAX_HEAD_BYTES} bytes`)
    }
    const statusLine = head.subarray(0, head.indexOf('\r\n')).toString('latin1')
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine)
    if (m === null) throw new Error(`the engine answered GET ${path} with '${statusLine.slice(0, 80)}', not HTTP`)
    const status = Number(m[1])
    const rest = head.subarray(end + HEAD_END.byteLength)
    if (status < 200 || status > 299) throw await statusError(status, rest, it)
    return { status, body: bodyOf(socket, rest, it) }
  } catch (err) {
    socket.destroy()
    throw err
  }
}

async function * bodyOf (socket: Socket, first: Buffer, it: AsyncIterator<Buffer>): AsyncGenerator<Uint8Array> {
  try {
    if (first.byteLength > 0) yield first
    for (;;) {
      const r = await it.next()
      if (r.done === true) return
      yield r.value
    }
  } finally {
    socket.destroy()
  }
}

async function statusError (status: number, first: Buffer, it: AsyncIterator<Buffer>): Promise<EngineStatusError> {
  const parts = [first]
  let n = first.byteLength
  while (n < MAX_ERROR_BODY_BYTES) {
    const r = await it.next().catch(() => ({ done: true as const, value: undefined }))
    if (r.done === true) break
    parts.push(r.value)
    n += r.value.byteLength
  }
  const text = Buffer.concat(parts).subarray(0, MAX_ERROR_BODY_BYTES).toString('utf8').trim()
  let json: { message?: unknown } | null = null
  try {
    const v: unknown = JSON.parse(text)
    if (typeof v === 'object' && v !== null) json = v as { message?: unknown }
  } catch { /* not JSON: the text is the message */ }
  return new EngineStatusError(status, json, typeof json?.message === 'string' ? json.message : text)
}
