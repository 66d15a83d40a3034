/**
 * Writing a byte stream to a file with backpressure, hashing it as it passes: how a source keeps a
 * layer of unknown size, or a volume archive taken while its container is frozen, until it is sent.
 * The file appears under its name only when complete (written as `<path>.part`, then renamed).
 */
import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { rename, rm } from 'node:fs/promises'
import { once } from 'node:events'

/** Writes `source` to `path`; returns its sha256:<hex> digest and its size. */
export async function spoolToFile (source: AsyncIterable<Uint8Array>, path: string, signal: AbortSignal): Promise<{ digest: string, size: number }> {
  const hash = createHash('sha256')
  const out = createWriteStream(`${path}.part`, { mode: 0o600 })
  let size = 0
  try {
    for await (const chunk of source) {
      signal.throwIfAborted()
      hash.update(chunk)
      size += chunk.byteLength
      if (!out.write(chunk)) await once(out, 'drain', { signal })
    }
    out.end()
    await once(out, 'finish', { signal })
  } catch (err) {
    out.destroy()
    await rm(`${path}.part`, { force: true })
    throw err
  }
  await rename(`${path}.part`, path)
  return { digest: `sha256:${hash.digest('hex')}`, size }
}
