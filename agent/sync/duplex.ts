/**
 * An in-process pair of ByteDuplex ends joined by two pipes with backpressure (a writer's sink pulls
 * its next chunk only after the reader took the previous one). For a sync between two trees of one
 * host and for tests; `tap` sees (and may replace) every chunk that crosses, in either direction.
 */
import type { Uint8ArrayList } from 'uint8arraylist'
import type { ByteDuplex } from './wire.js'

export type Direction = 'a→b' | 'b→a'

class Pipe {
  private pending: { chunk: Uint8Array, taken: () => void } | undefined
  private ended = false
  private wake: (() => void) | undefined

  constructor (private readonly tap: (chunk: Uint8Array) => Uint8Array) {}

  async sink (source: AsyncIterable<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of source) {
        await new Promise<void>(resolve => {
          this.pending = { chunk: this.tap(chunk), taken: resolve }
          this.wake?.()
        })
      }
    } finally {
      this.ended = true
      this.wake?.()
    }
  }

  async * source (): AsyncGenerator<Uint8Array> {
    while (true) {
      const p = this.pending
      if (p !== undefined) {
        this.pending = undefined
        p.taken()
        yield p.chunk
        continue
      }
      if (this.ended) return
      await new Promise<void>(resolve => { this.wake = resolve })
      this.wake = undefined
    }
  }
}

export function memoryDuplexPair (tap: (direction: Direction, chunk: Uint8Array) => Uint8Array = (_d, c) => c): [ByteDuplex, ByteDuplex] {
  const ab = new Pipe(c => tap('a→b', c))
  const ba = new Pipe(c => tap('b→a', c))
  const a: ByteDuplex = { source: ba.source() as AsyncIterable<Uint8Array | Uint8ArrayList>, sink: async s => { await ab.sink(s) } }
  const b: ByteDuplex = { source: ab.source() as AsyncIterable<Uint8Array | Uint8ArrayList>, sink: async s => { await ba.sink(s) } }
  return [a, b]
}
