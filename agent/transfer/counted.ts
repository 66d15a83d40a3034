/** Passes a byte stream through unchanged, telling `onBytes` the size of every chunk as it passes. */
export async function * counted (source: AsyncIterable<Uint8Array>, onBytes: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    onBytes(chunk.byteLength)
    yield chunk
  }
}
