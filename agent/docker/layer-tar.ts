/**
 * Byte-level tar reading and writing for building a layer from the engine's archive streams
 * (`GET /containers/{id}/archive`): entries are read header by header while they arrive, and
 * written back with a new name and nothing else changed — mode, uid/gid, names of owners, mtime,
 * device numbers and every PAX record (xattrs such as `security.capability` are binary, so PAX
 * values are kept as bytes, never decoded) pass through exactly as the engine wrote them.
 *
 *   for await (const e of readTar(archive)) {
 *     yield * rewrittenHeader(e, { name: Buffer.from('srv/x/a') })
 *     yield * e.data()                      // or leave it: it is skipped when the next entry is read
 *     yield tarPadding(e.size)
 *   }
 *   yield TAR_END
 *
 * Names that do not fit the 100-byte name field go into the ustar prefix field when the header is
 * POSIX ustar, else into a PAX `path` record (the same for link names and `linkpath`). GNU long
 * name/link entries (`L`/`K`) of the source are read and replaced by PAX records. Sparse files and
 * other exotic entry types are refused (the engine does not write them). Format errors are
 * TarFormatError; the caller decides what they mean.
 */
import { GotoError } from '../../protocol/errors.js'

export const TAR_BLOCK = 512
/** Two zero blocks end an archive. */
export const TAR_END: Uint8Array = new Uint8Array(2 * TAR_BLOCK)
/** Largest PAX or GNU long-name payload we hold in memory (real ones are a few hundred bytes; xattrs a few KiB). */
export const MAX_META_BYTES = 1024 * 1024

const NAME = { off: 0, len: 100 }
const MODE = { off: 100, len: 8 }
const UID = { off: 108, len: 8 }
const GID = { off: 116, len: 8 }
const SIZE = { off: 124, len: 12 }
const MTIME = { off: 136, len: 12 }
const CHKSUM = { off: 148, len: 8 }
const TYPE = 156
const LINKNAME = { off: 157, len: 100 }
const MAGIC = { off: 257, len: 8 }
const PREFIX = { off: 345, len: 155 }
const MAX_OCTAL_11 = 0o77777777777

/** Entry types (the typeflag byte). */
export const TarType = {
  file: '0', link: '1', symlink: '2', char: '3', block: '4', directory: '5', fifo: '6', contiguous: '7'
} as const

/** A tar stream that is not a well-formed archive (or uses what this reader does not support). */
export class TarFormatError extends GotoError {}

/** One PAX record, `key=value`; the value is bytes (it may be binary). */
export interface PaxRecord { key: string, value: Buffer }

/** One entry of a tar stream, as read. */
export interface TarReadEntry {
  /** The entry's own 512-byte header (after any PAX or GNU long-name entries before it). */
  header: Buffer
  /** Typeflag character ('0' regular, '1' hard link, '2' symlink, '5' directory, ...; NUL read as '0'). */
  type: string
  /** The full name (PAX `path`, GNU long name, or ustar prefix + name), as bytes. */
  name: Buffer
  /** The full link name (hard link target or symlink target), as bytes. */
  linkname: Buffer
  /** Bytes of data that follow the header (without padding). */
  size: number
  /** PAX records that apply to this entry (global records first, then its own), raw. */
  pax: PaxRecord[]
  /** The data, streamed; read it before asking for the next entry, or it is skipped for you. */
  data: () => AsyncGenerator<Buffer>
}

/** Zero bytes that bring `size` bytes of data to a whole number of blocks. */
export function tarPadding (size: number): Uint8Array {
  const rest = size % TAR_BLOCK
  return new Uint8Array(rest === 0 ? 0 : TAR_BLOCK - rest)
}

/**
 * Reads exactly-sized pieces from a stream of chunks, holding at most one partly used chunk.
 * `bytes()` streams a run of bytes without gathering it.
 */
export class ByteReader {
  private readonly it: AsyncIterator<Uint8Array>
  private rest: Buffer = Buffer.alloc(0)
  private ended = false
  /** Bytes handed out so far. */
  position = 0

  constructor (source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]()
  }

  private async fill (): Promise<boolean> {
    while (this.rest.byteLength === 0) {
      if (this.ended) return false
      const r = await this.it.next()
      if (r.done === true) { this.ended = true; return false }
      this.rest = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength)
    }
    return true
  }

  /** Exactly `n` bytes; null when the stream ended before the first of them; TarFormatError when it ends midway. */
  async read (n: number): Promise<Buffer | null> {
    if (n === 0) return Buffer.alloc(0)
    if (!await this.fill()) return null
    if (this.rest.byteLength >= n) {
      const out = this.rest.subarray(0, n)
      this.rest = this.rest.subarray(n)
      this.position += n
      return out
    }
    const parts: Buffer[] = []
    let have = 0
    while (have < n) {
      if (!await this.fill()) throw new TarFormatError(`the archive ends inside a block (${have} of ${n} bytes at offset ${this.position})`)
      const take = this.rest.subarray(0, n - have)
      parts.push(take)
      have += take.byteLength
      this.rest = this.rest.subarray(take.byteLength)
      this.position += take.byteLength
    }
    return Buffer.concat(parts, n)
  }

  /** Streams the next `n` bytes as they arrive; TarFormatError when the stream ends first. */
  async * bytes (n: number): AsyncGenerator<Buffer> {
    let left = n
    while (left > 0) {
      if (!await this.fill()) throw new TarFormatError(`the archive ends inside an entry's data (${left} bytes missing at offset ${this.position})`)
      const take = this.rest.subarray(0, Math.min(left, this.rest.byteLength))
      this.rest = this.rest.subarray(take.byteLength)
      this.position += take.byteLength
      left -= take.byteLength
      yield take
    }
  }

  async skip (n: number): Promise<void> {
    for await (const _ of this.bytes(n)) { /* discard */ }
  }

  /** Tells the source to stop (e.g. an HTTP response to close). */
  async close (): Promise<void> {
    await this.it.return?.()
  }
}

/**
 * The entries of a tar stream, each with its data as a stream. Meta entries (PAX `x`/`g`, GNU
 * `L`/`K`) are folded into the entry they describe. Ends at the end-of-archive marker (or at the
 * end of the stream). Stopping early (break) tells the source to stop.
 */
export async function * readTar (source: AsyncIterable<Uint8Array>): AsyncGenerator<TarReadEntry> {
  const r = new ByteReader(source)
  let global: PaxRecord[] = []
  let pax: PaxRecord[] | undefined
  let longName: Buffer | undefined
  let longLink: Buffer | undefined
  try {
    for (;;) {
      const header = await r.read(TAR_BLOCK)
      // An archive must end with its marker: an engine whose tar process died midway still ends
      // the HTTP answer cleanly, and that must not read as a complete archive.
      if (header === null) throw new TarFormatError(`the archive ends at offset ${r.position} without its end-of-archive blocks`)
      if (header.every(b => b === 0)) return
      checkChecksum(header, r.position - TAR_BLOCK)
      const type = header[TYPE] === 0 ? '0' : String.fromCharCode(header[TYPE] as number)
      const size = parseNumber(header, SIZE, 'size')
      if (type === 'x' || type === 'g' || type === 'L' || type === 'K') {
        if (size > MAX_META_BYTES) throw new TarFormatError(`a '${type}' entry of ${size} bytes is larger than ${MAX_META_BYTES}`)
        const body = await r.read(size + tarPadding(size).byteLength)
        if (body === null) throw new TarFormatError(`the archive ends after a '${type}' header`)
        const data = body.subarray(0, size)
        if (type === 'x') pax = parsePax(data)
        else if (type === 'g') global = mergePax(global, parsePax(data))
        else if (type === 'L') longName = cString(data)
        else longLink = cString(data)
        continue
      }
      if (!'01234567'.includes(type)) throw new TarFormatError(`unsupported tar entry type '${type}'`)
      const records = mergePax(global, pax ?? [])
      const paxPath = records.find(p => p.key === 'path')?.value
      const paxLink = records.find(p => p.key === 'linkpath')?.value
      const paxSize = records.find(p => p.key === 'size')?.value
      const dataSize = paxSize !== undefined ? parseDecimal(paxSize) : size
      const name = paxPath ?? longName ?? ustarName(header)
      const linkname = paxLink ?? longLink ?? cString(field(header, LINKNAME))
      pax = undefined
      longName = undefined
      longLink = undefined
      // Hard links, symlinks, devices, fifos and directories have no data, whatever the size field says.
      const hasData = type === '0' || type === '7'
      const length = hasData ? dataSize : 0
      let consumed = false
      const start = r.position
      const entry: TarReadEntry = {
        header: Buffer.from(header),
        type,
        name,
        linkname,
        size: length,
        pax: records,
        data: async function * () {
          if (consumed) throw new TarFormatError('an entry\'s data can be read once')
          consumed = true
          yield * r.bytes(length)
        }
      }
      yield entry
      // Whatever the consumer left of the data (none, or some of it) is skipped.
      await r.skip(start + length - r.position)
      await r.skip(tarPadding(length).byteLength)
    }
  } finally {
    await r.close()
  }
}

export interface RewriteOptions {
  /** The entry's new name (a directory's name may end in '/'). */
  name: Buffer
  /** The new link name (default: as read). */
  linkname?: Buffer
  /** Write the header with size 0 (the data is left out). */
  empty?: boolean
}

/**
 * The header block(s) for `e` under a new name: its own header with the name (and link name) fields
 * rewritten and the checksum fixed, preceded by a PAX header when a name does not fit or the
 * entry had PAX records. The caller then writes the data (unless `empty`) and its padding.
 */
export function rewrittenHeader (e: TarReadEntry, opts: RewriteOptions): Buffer[] {
  const h = Buffer.from(e.header)
  const posix = isPosixUstar(h)
  const linkname = opts.linkname ?? e.linkname
  const records = e.pax.filter(p => p.key !== 'path' && p.key !== 'linkpath' && !(opts.empty === true && p.key === 'size'))
  writeName(h, opts.name, posix, records)
  h.fill(0, LINKNAME.off, LINKNAME.off + LINKNAME.len)
  if (linkname.byteLength <= LINKNAME.len) linkname.copy(h, LINKNAME.off)
  else {
    linkname.subarray(0, LINKNAME.len).copy(h, LINKNAME.off)
    records.push({ key: 'linkpath', value: linkname })
  }
  if (opts.empty === true) writeOctal(h, SIZE, 0)
  setChecksum(h)
  return records.length === 0 ? [h] : [...paxHeader(opts.name, records), h]
}

export interface NewEntry {
  name: string
  type: typeof TarType[keyof typeof TarType]
  /** Permissions, with or without the st_mode type bits (the engine's headers have them: 0o100644). */
  mode: number
  uid?: number
  gid?: number
  /** Seconds since the epoch. */
  mtime?: number
  size?: number
  linkname?: string
}

/** The header block(s) of a new entry (POSIX ustar; a PAX `path` record when the name needs one). */
export function newHeader (e: NewEntry): Buffer[] {
  const h = Buffer.alloc(TAR_BLOCK)
  writeOctal(h, MODE, e.mode & 0o7777777)
  writeOctal(h, UID, e.uid ?? 0)
  writeOctal(h, GID, e.gid ?? 0)
  writeOctal(h, SIZE, e.size ?? 0)
  writeOctal(h, MTIME, Math.max(0, Math.floor(e.mtime ?? 0)))
  h.write(e.type, TYPE, 'latin1')
  h.write('ustar\u000000', MAGIC.off, 'latin1')
  const records: PaxRecord[] = []
  const link = Buffer.from(e.linkname ?? '', 'utf8')
  if (link.byteLength <= LINKNAME.len) link.copy(h, LINKNAME.off)
  else records.push({ key: 'linkpath', value: link })
  const name = Buffer.from(e.name, 'utf8')
  writeName(h, name, true, records)
  setChecksum(h)
  return records.length === 0 ? [h] : [...paxHeader(name, records), h]
}

// --- fields -------------------------------------------------------------------------------------

function field (h: Buffer, f: { off: number, len: number }): Buffer {
  return h.subarray(f.off, f.off + f.len)
}

/** Bytes up to the first NUL. */
function cString (b: Buffer): Buffer {
  const end = b.indexOf(0)
  return Buffer.from(end === -1 ? b : b.subarray(0, end))
}

function isPosixUstar (h: Buffer): boolean {
  return field(h, MAGIC).subarray(0, 6).equals(Buffer.from('ustar\u0000', 'latin1'))
}

function ustarName (h: Buffer): Buffer {
  const name = cString(field(h, NAME))
  if (!isPosixUstar(h)) return name
  const prefix = cString(field(h, PREFIX))
  return prefix.byteLength === 0 ? name : Buffer.concat([prefix, Buffer.from('/'), name])
}

/**
 * A numeric field: octal text (NUL or space padded), or base-256 (GNU, first byte 0x80) for values
 * that do not fit. Negative base-256 numbers (0xff) are refused.
 */
export function parseNumber (h: Buffer, f: { off: number, len: number }, what: string): number {
  const b = field(h, f)
  if (((b[0] as number) & 0x80) !== 0) {
    if (b[0] === 0xff) throw new TarFormatError(`negative ${what} field`)
    let n = BigInt((b[0] as number) & 0x7f)
    for (let i = 1; i < b.byteLength; i++) n = (n << 8n) | BigInt(b[i] as number)
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new TarFormatError(`${what} field too large`)
    return Number(n)
  }
  const text = b.toString('latin1').replace(/\0.*$/s, '').trim()
  if (text === '') return 0
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`${what} field is not octal: '${text}'`)
  return parseInt(text, 8)
}

function parseDecimal (b: Buffer): number {
  const text = b.toString('latin1')
  if (!/^[0-9]+$/.test(text)) throw new TarFormatError(`PAX size is not a number: '${text.slice(0, 20)}'`)
  const n = Number(text)
  if (!Number.isSafeInteger(n)) throw new TarFormatError('PAX size too large')
  return n
}

function writeOctal (h: Buffer, f: { off: number, len: number }, n: number): void {
  h.fill(0, f.off, f.off + f.len)
  if (f.len === 12 && n > MAX_OCTAL_11) {
    // base-256, big-endian in the 11 bytes after the marker
    h[f.off] = 0x80
    let v = BigInt(n)
    for (let i = f.off + f.len - 1; i > f.off; i--) { h[i] = Number(v & 0xffn); v >>= 8n }
    return
  }
  h.write(`${n.toString(8).padStart(f.len - 1, '0')}\u0000`, f.off, 'latin1')
}

function checkChecksum (h: Buffer, offset: number): void {
  const stored = parseNumber(h, CHKSUM, 'checksum')
  let unsigned = 0
  let signed = 0
  for (let i = 0; i < TAR_BLOCK; i++) {
    const b = i >= CHKSUM.off && i < CHKSUM.off + CHKSUM.len ? 0x20 : h[i] as number
    unsigned += b
    signed += b > 127 ? b - 256 : b
  }
  if (stored !== unsigned && stored !== signed) throw new TarFormatError(`bad header checksum at offset ${offset}`)
}

function setChecksum (h: Buffer): void {
  h.fill(0x20, CHKSUM.off, CHKSUM.off + CHKSUM.len)
  let sum = 0
  for (const b of h) sum += b
  h.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, CHKSUM.off, 'latin1')
}

/**
 * Puts `name` into the header: the name field if it fits, else (POSIX ustar only) split at a '/'
 * into prefix and name, else a PAX `path` record (with the name field holding a truncated copy).
 */
function writeName (h: Buffer, name: Buffer, posix: boolean, records: PaxRecord[]): void {
  h.fill(0, NAME.off, NAME.off + NAME.len)
  if (posix) h.fill(0, PREFIX.off, PREFIX.off + PREFIX.len)
  if (name.byteLength <= NAME.len) { name.copy(h, NAME.off); return }
  if (posix) {
    const split = ustarSplit(name)
    if (split !== undefined) {
      split.prefix.copy(h, PREFIX.off)
      split.name.copy(h, NAME.off)
      return
    }
  }
  name.subarray(0, NAME.len).copy(h, NAME.off)
  records.push({ key: 'path', value: name })
}

/** Splits a long name at a '/' so the prefix fits 155 bytes and the rest 100 (non-empty). */
export function ustarSplit (name: Buffer): { prefix: Buffer, name: Buffer } | undefined {
  const trimmed = name[name.byteLength - 1] === 0x2f ? name.byteLength - 1 : name.byteLength
  for (let i = Math.min(PREFIX.len, trimmed - 1); i > 0; i--) {
    if (name[i] !== 0x2f) continue
    const rest = name.subarray(i + 1)
    if (rest.byteLength > NAME.len || rest.byteLength === 0) return undefined
    return { prefix: name.subarray(0, i), name: rest }
  }
  return undefined
}

// --- PAX ----------------------------------------------------------------------------------------

/** Records of a PAX payload: `<len> <key>=<value>\n`, values as bytes. */
export function parsePax (data: Buffer): PaxRecord[] {
  const out: PaxRecord[] = []
  let off = 0
  while (off < data.byteLength) {
    if (data[off] === 0) break // NUL padding some writers leave
    const space = data.indexOf(0x20, off)
    if (space === -1) throw new TarFormatError('PAX record without a length')
    const len = Number(data.subarray(off, space).toString('latin1'))
    if (!Number.isSafeInteger(len) || len <= space - off + 1 || off + len > data.byteLength) throw new TarFormatError('bad PAX record length')
    const record = data.subarray(space + 1, off + len)
    if (record[record.byteLength - 1] !== 0x0a) throw new TarFormatError('PAX record does not end in a newline')
    const eq = record.indexOf(0x3d)
    if (eq === -1) throw new TarFormatError('PAX record without \'=\'')
    out.push({ key: record.subarray(0, eq).toString('utf8'), value: Buffer.from(record.subarray(eq + 1, record.byteLength - 1)) })
    off += len
  }
  return out
}

/** `base` overridden by `over` (same key: the later wins); an empty value in `over` deletes the key. */
function mergePax (base: PaxRecord[], over: PaxRecord[]): PaxRecord[] {
  const m = new Map<string, Buffer>()
  for (const r of [...base, ...over]) {
    if (r.value.byteLength === 0) m.delete(r.key)
    else m.set(r.key, r.value)
  }
  return [...m].map(([key, value]) => ({ key, value }))
}

export function encodePax (records: PaxRecord[]): Buffer {
  const parts: Buffer[] = []
  for (const { key, value } of records) {
    const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')])
    // The length counts its own digits.
    let digits = 1
    while (String(body.byteLength + digits).length !== digits) digits++
    parts.push(Buffer.from(String(body.byteLength + digits), 'latin1'), body)
  }
  return Buffer.concat(parts)
}

/** A PAX extended header entry (header block, payload, padding) carrying `records` for `name`. */
function paxHeader (name: Buffer, records: PaxRecord[]): Buffer[] {
  const payload = encodePax(records)
  const base = name.toString('utf8').replace(/\/+$/, '').split('/').pop() ?? ''
  const h = Buffer.alloc(TAR_BLOCK)
  Buffer.from(`PaxHeaders.0/${base}`, 'utf8').subarray(0, NAME.len).copy(h, NAME.off)
  writeOctal(h, MODE, 0o644)
  writeOctal(h, UID, 0)
  writeOctal(h, GID, 0)
  writeOctal(h, SIZE, payload.byteLength)
  writeOctal(h, MTIME, 0)
  h.write('x', TYPE, 'latin1')
  h.write('ustar\u000000', MAGIC.off, 'latin1')
  setChecksum(h)
  return [h, payload, Buffer.from(tarPadding(payload.byteLength))]
}
