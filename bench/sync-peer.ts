/**
 * The destination agent of bench/sync.ts, in a process of its own as on another host: connects to
 * the port it is given, runs syncDestination into the live tree it is given, and prints one JSON
 * line (the sync result, and the growth of its RSS over the run, sampled every RSS_SAMPLE_MS).
 *   node dist/bench/sync-peer.js PORT LIVE [xattrs]
 */
import { connect } from 'node:net'
import { once } from 'node:events'
import { HashCache, NO_XATTRS, attrTools, syncDestination } from '../agent/sync/index.js'
import { socketDuplex, RSS_SAMPLE_MS } from './sync-socket.js'

const [port, live, withXattrs] = process.argv.slice(2)
const xattrs = withXattrs === 'xattrs' ? await attrTools() : NO_XATTRS
const cache = new HashCache()
// Rounds on one connection each, started by a line on stdin ("go"), so the cache lives between them.
process.stdin.setEncoding('utf8')
for await (const line of process.stdin) {
  if (String(line).trim() !== 'go') break
  const socket = connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true })
  await once(socket, 'connect')
  const rss0 = process.memoryUsage.rss()
  let rssMax = rss0
  const sampler = setInterval(() => { rssMax = Math.max(rssMax, process.memoryUsage.rss()) }, RSS_SAMPLE_MS)
  try {
    const result = await syncDestination(live, socketDuplex(socket), { signal: AbortSignal.timeout(600_000), xattrs, hashCache: cache })
    rssMax = Math.max(rssMax, process.memoryUsage.rss())
    process.stdout.write(JSON.stringify({ result, rssGrowth: rssMax - rss0, bytesRead: socket.bytesRead }) + '\n')
  } finally {
    clearInterval(sampler)
    socket.destroy()
  }
}
