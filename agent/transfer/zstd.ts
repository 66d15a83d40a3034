/**
 * zstd as a stream stage: bytes in, bytes out, through Debian's `zstd` binary as a child process.
 * Chosen by measurement (docs/performance.md): Node 20 has no zstd in node:zlib, the npm bindings
 * either compress whole buffers only or bring a native build; the binary streams, runs on its own
 * core beside the agent's event loop, and ships with the OS (`apt-get install zstd`).
 *
 *   for await (const chunk of zstdCompress(layerBytes, signal)) ...   // what goes on the wire
 *   for await (const chunk of zstdDecompress(wireBytes, signal)) ...  // the layer again
 *
 * Backpressure end to end: the source is written to the child's stdin with pipeline (it waits for
 * drain), and the child's stdout is read only as the consumer pulls, so a slow consumer stops the
 * child, which stops reading stdin. At most the pipes' buffers (a few 64 KiB) are in flight.
 * A stream zstd cannot decode (corrupt, cut, not zstd) fails with CompressedStreamError.
 */
import { spawn, spawnSync } from 'node:child_process'
import { pipeline } from 'node:stream/promises'
import { CompressedStreamError } from '../../protocol/errors.js'

/** The binary, found on PATH (Debian: /usr/bin/zstd from the `zstd` package). */
export const ZSTD_BINARY = 'zstd'

/**
 * Level 1: on a 256 MiB layer of mixed content (docs/performance.md) it gives 0.67 of the bytes
 * against 0.64 at level 3 for half the CPU time (~210 MiB/s per core against ~107), so it keeps
 * ahead of any link a cap or a WAN gives and costs the sending host least.
 */
export const DEFAULT_ZSTD_LEVEL = 1

/**
 * The decoder's memory bound: a sender could ask for a window of up to 2 GiB (`--long=31`), and the
 * destination's zstd would allocate it. Level 1-19 streams use windows of 512 KiB to 8 MiB, so 16
 * MiB refuses only a stream no Go-To sender makes (CompressedStreamError: "requires too much memory").
 */
export const ZSTD_DECODE_MEMORY = '16MB'

/** What stderr of a failed child is kept for the error message. */
const STDERR_KEEP_CHARS = 2048

let available: boolean | undefined

/** Whether this host can run zstd (checked once: a destination says so in prepare). */
export function zstdAvailable (): boolean {
  if (available === undefined) {
    const r = spawnSync(ZSTD_BINARY, ['--version'], { stdio: 'ignore', timeout: 5000 })
    available = r.status === 0
  }
  return available
}

export function zstdCompress (source: AsyncIterable<Uint8Array>, signal: AbortSignal, level = DEFAULT_ZSTD_LEVEL): AsyncGenerator<Uint8Array> {
  return throughZstd([`-${level}`, '-c', '-q'], source, signal)
}

export function zstdDecompress (source: AsyncIterable<Uint8Array>, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  return throughZstd(['-d', '-c', '-q', `--memory=${ZSTD_DECODE_MEMORY}`], source, signal)
}

async function * throughZstd (args: string[], source: AsyncIterable<Uint8Array>, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  signal.throwIfAborted()
  const child = spawn(ZSTD_BINARY, args, { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (d: string) => { if (stderr.length < STDERR_KEEP_CHARS) stderr += d })
  let spawnError: Error | undefined
  const exited = new Promise<number | null>(resolve => {
    child.once('error', err => { spawnError = err; resolve(null) })
    child.once('close', code => { resolve(code) })
  })
  let feedError: unknown
  // EPIPE on stdin: the child stopped reading (it failed; its exit status says why).
  const feed = pipeline(source, child.stdin, { signal }).catch(err => { feedError = err })
  const onAbort = (): void => { child.kill('SIGKILL') }
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    for await (const chunk of child.stdout) yield chunk as Uint8Array
    const code = await exited
    await feed
    signal.throwIfAborted()
    if (spawnError !== undefined) throw new CompressedStreamError(`cannot run ${ZSTD_BINARY}: ${spawnError.message}`, { cause: spawnError })
    const pipeBroken = (feedError as NodeJS.ErrnoException | undefined)?.code === 'EPIPE'
    if (feedError !== undefined && !pipeBroken) throw feedError
    if (code !== 0) throw new CompressedStreamError(`${ZSTD_BINARY} ${args[0]} failed (exit ${String(code)}): ${stderr.trim() || 'no message'}`)
    if (feedError !== undefined) throw new CompressedStreamError(`${ZSTD_BINARY} stopped reading its input`, { cause: feedError })
  } finally {
    signal.removeEventListener('abort', onAbort)
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
}
