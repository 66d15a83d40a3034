/** A TCP socket as the sync's it-pipe duplex, for the bench's two processes (bench/sync.ts, bench/sync-peer.ts). */
import { once } from 'node:events'
import type { Socket } from 'node:net'
import type { Uint8ArrayList } from 'uint8arraylist'
import type { ByteDuplex } from '../agent/sync/index.js'

/** RSS sampling period during a sync, in both processes. */
export const RSS_SAMPLE_MS = 50

/** The sink ends the write side once its data is handed to the kernel. */
export function socketDuplex (socket: Socket): ByteDuplex {
  return {
    source: socket as AsyncIterable<Uint8Array | Uint8ArrayList>,
    sink: async source => {
      for await (const chunk of source) {
        if (!socket.write(chunk)) await once(socket, 'drain')
      }
      await new Promise<void>(resolve => { socket.end(resolve) })
    }
  }
}
