/**
 * Makes an engine's archive of a container path (`GET /containers/{id}/archive?path=P`) rooted the
 * way Docker roots it: entries under the path's last component (`data`, `data/v.txt` for
 * P = /data). Podman does so for a running container, but for a *paused* one its entries are
 * rooted at `/` (`/`, `/v.txt`), so whatever extracts the archive in the parent directory
 * (a move's volume data, a container's changed files) would put the data in `/`. Measured on
 * Podman 4.3.1.
 *
 *   const tar = rerootArchive(await engineArchive(), '/data')   // yields `data/...` entries
 *
 * A stream whose first entry is an ordinary one not rooted at `/` (every Docker Engine's) passes
 * through byte for byte, unparsed; any other is parsed and written again with each name (and hard
 * link target) rooted at `/` moved under the path's last component. A tar that cannot be parsed is
 * an ArchiveFormatError; an error of the source passes on as itself. Stopping the result early
 * (a reader that breaks off, a destroyed stream) stops the source: an engine's answer must not be
 * left open (see rerootArchive).
 */
import { posix } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import tarStream from 'tar-stream'
import { ArchiveFormatError } from '../../protocol/errors.js'

/** One tar header block. */
const BLOCK = 512
/** Typeflags of ordinary entries ('0', NUL for old tars, and link, symlink, char, block, dir, fifo). */
const ORDINARY_TYPES = new Set(['0', '\0', '1', '2', '3', '4', '5', '6', '7'])

/** The archive of `path`, with entries rooted at `/` moved under `basename(path)`; see the module comment. */
export async function * rerootArchive (source: AsyncIterable<Uint8Array>, path: string): AsyncGenerator<Uint8Array> {
  const it = source[Symbol.asyncIterator]()
  try {
    const head: Buffer[] = []
    let have = 0
    while (have < BLOCK) {
      const r = await it.next()
      if (r.done === true) break
      const b = Buffer.from(r.value)
      head.push(b)
      have += b.length
    }
    const first = Buffer.concat(head)
    const rest = (async function * (): AsyncGenerator<Uint8Array> {
      yield first
      for (;;) {
        const r = await it.next()
        if (r.done === true) return
        yield r.value
      }
    })()
    if (!needsReroot(first)) {
      yield * rest
      return
    }
    yield * reroot(rest, posix.basename(path))
  } finally {
    // Read to the end, stopped early or failed: the source ends here too (`rest` reads `it` by
    // hand, so stopping it never reaches `it`). An engine's archive answer left open holds the
    // container's lock: Docker 20.10 releases it only when the archive was read to the end or
    // closed, and until then its unpause and inspect of that container wait.
    await it.return?.()
  }
}

/** False for a first header that is an ordinary entry whose name does not start with `/`. */
function needsReroot (first: Buffer): boolean {
  if (first.length < BLOCK) return false // empty or too short to hold an entry: nothing to move
  const type = first.toString('latin1', 156, 157)
  if (!ORDINARY_TYPES.has(type)) return true // a PAX or GNU long-name header: look at the real name
  const prefix = first.subarray(345, 500)
  const name = first.subarray(0, 100)
  const text = (b: Buffer): string => { const z = b.indexOf(0); return b.toString('utf8', 0, z < 0 ? b.length : z) }
  const full = text(prefix) !== '' && first.toString('latin1', 257, 262) === 'ustar' ? `${text(prefix)}/${text(name)}` : text(name)
  return full.startsWith('/')
}

/** `/` → base, `/x` → base/x; names not rooted at `/` stay. For base '' (path `/`): `./`, `x`. */
function rename (name: string, base: string): string {
  if (!name.startsWith('/')) return name
  const rel = name.replace(/^\/+/, '')
  if (base === '') return rel === '' ? './' : rel
  return rel === '' ? `${base}/` : `${base}/${rel}`
}

async function * reroot (source: AsyncIterable<Uint8Array>, base: string): AsyncGenerator<Uint8Array> {
  const extract = tarStream.extract()
  const pack = tarStream.pack()
  let sourceError: unknown
  const tracked = (async function * (): AsyncGenerator<Uint8Array> {
    try {
      yield * source
    } catch (err) {
      sourceError = err
      throw err
    }
  })()
  const failed = (err: unknown): Error => sourceError !== undefined
    ? sourceError as Error
    : new ArchiveFormatError(`the engine's archive is not a readable tar: ${(err as Error).message}`, { cause: err })
  const feeding = pipeline(Readable.from(tracked, { objectMode: false }), extract).catch(() => {})
  const writing = (async () => {
    for await (const entry of extract) {
      const h = entry.header
      const header = { ...h, name: rename(h.name, base), ...h.type === 'link' && h.linkname != null ? { linkname: rename(h.linkname, base) } : {} }
      await pipeline(entry, pack.entry(header))
    }
    pack.finalize()
  })().catch((err: unknown) => { pack.destroy(failed(err)) })
  try {
    try {
      for await (const chunk of pack) yield chunk as Uint8Array
    } catch (err) {
      // A broken entry destroys the pack with the parser's own error (tar-stream passes it on).
      throw err instanceof ArchiveFormatError ? err : failed(err)
    }
  } finally {
    extract.destroy()
    pack.destroy()
    // The feed ends with the extractor (its source stopped). The writer is not waited for: stopped
    // early, its copy of an entry into the destroyed pack never settles (tar-stream), and it has
    // nothing left to do (its errors are caught above).
    await feeding
    void writing
  }
}
