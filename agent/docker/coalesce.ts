/**
 * Gathers a byte stream's small chunks into larger ones. An engine streams `docker save` in chunks
 * of 32 KiB or less, and every chunk costs a turn of each stage it passes (the tar parser, the
 * layer stream, the transfer framing) on both agents: a megabyte costs the same copy as 32 small
 * pieces and a thirtieth of their turns.
 *
 *   for await (const chunk of coalesce(response, 1024 * 1024)) ...   // chunks of 1 MiB, the last shorter
 *
 * Each yielded chunk is fresh memory the consumer may keep. A source chunk at least `size` long
 * that arrives while nothing is gathered passes as it is, without a copy.
 */
export async function * coalesce (source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Uint8Array> {
  let buf: Buffer | undefined
  let used = 0
  for await (const chunk of source) {
    if (used === 0 && chunk.byteLength >= size) {
      yield chunk
      continue
    }
    let off = 0
    while (off < chunk.byteLength) {
      buf ??= Buffer.allocUnsafe(size)
      const n = Math.min(size - used, chunk.byteLength - off)
      buf.set(chunk.subarray(off, off + n), used)
      used += n
      off += n
      if (used === size) {
        yield buf
        buf = undefined
        used = 0
      }
    }
  }
  if (buf !== undefined && used > 0) yield buf.subarray(0, used)
}
