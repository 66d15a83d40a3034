/**
 * The Engine's streamed JSON answers (`POST /images/load`, and pull/push/build which we do not
 * use): one JSON object per line, read to the end. An HTTP 200 only means the engine started; an
 * `error` or `errorDetail` in any message is the real outcome (STYLE.md), so callers must read the
 * whole stream and look at every message.
 */

export interface JsonMessage {
  stream?: string
  status?: string
  error?: string
  errorDetail?: { message?: string, code?: number }
  [key: string]: unknown
}

/** Each JSON message of the stream, in order. A line that is not JSON throws a SyntaxError. */
export async function * readJsonMessages (source: AsyncIterable<Uint8Array | string>): AsyncGenerator<JsonMessage> {
  const decoder = new TextDecoder()
  let pending = ''
  for await (const chunk of source) {
    pending += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true })
    let nl: number
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl).trim()
      pending = pending.slice(nl + 1)
      if (line !== '') yield JSON.parse(line) as JsonMessage
    }
  }
  pending += decoder.decode()
  if (pending.trim() !== '') yield JSON.parse(pending.trim()) as JsonMessage
}

/** The message's error text, or undefined when it reports no error. */
export function messageError (m: JsonMessage): string | undefined {
  if (m.errorDetail !== undefined && m.errorDetail !== null) return m.errorDetail.message ?? m.error ?? 'unknown error'
  if (m.error !== undefined && m.error !== null && m.error !== '') return m.error
  return undefined
}
