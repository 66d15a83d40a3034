/**
 * Just enough of the tar format to write a `docker load` tarball on the fly: ustar headers for
 * regular files and directories, the padding after a file's bytes and the end-of-archive marker.
 * The bytes of a file are the caller's to stream between its header and its padding, so a layer of
 * any size passes without being held in memory. Sizes of 8 GiB and more use the base-256 size
 * field (a GNU extension that Go's archive/tar, and so Docker, reads).
 *
 *   yield tarHeader({ name: 'dir/', type: 'directory' })
 *   yield tarHeader({ name: 'dir/layer.tar', size })
 *   yield * layerBytes                                  // exactly `size` bytes
 *   yield tarPadding(size)
 *   yield TAR_END
 */
import { TransferError } from '../../protocol/errors.js'

export const TAR_BLOCK = 512
/** Two zero blocks end an archive. */
export const TAR_END: Uint8Array = new Uint8Array(2 * TAR_BLOCK)

const MAX_OCTAL_SIZE = 0o77777777777

export interface TarEntry {
  /** Path inside the archive, at most 100 bytes (no ustar prefix split needed for our names). */
  name: string
  type?: 'file' | 'directory'
  /** Bytes of a file (0 for a directory). */
  size?: number
  mode?: number
  /** Seconds since the epoch (default 0: the tarball's bytes depend only on its contents). */
  mtime?: number
}

/** The 512-byte ustar header of one entry. */
export function tarHeader (e: TarEntry): Uint8Array {
  const type = e.type ?? 'file'
  const size = type === 'directory' ? 0 : (e.size ?? 0)
  const name = Buffer.from(e.name, 'utf8')
  if (name.byteLength === 0 || name.byteLength > 100) throw new TransferError(`tar entry name '${e.name}' must be 1-100 bytes`)
  if (!Number.isSafeInteger(size) || size < 0) throw new TransferError(`tar entry '${e.name}': bad size ${size}`)
  const h = Buffer.alloc(TAR_BLOCK)
  name.copy(h, 0)
  octal(h, 100, 8, e.mode ?? (type === 'directory' ? 0o755 : 0o644))
  octal(h, 108, 8, 0) // uid
  octal(h, 116, 8, 0) // gid
  if (size <= MAX_OCTAL_SIZE) {
    octal(h, 124, 12, size)
  } else {
    // base-256: high bit of the first byte set, the number big-endian in the rest of the field
    h[124] = 0x80
    let n = BigInt(size)
    for (let i = 135; i > 124; i--) {
      h[i] = Number(n & 0xffn)
      n >>= 8n
    }
  }
  octal(h, 136, 12, e.mtime ?? 0)
  h.write(type === 'directory' ? '5' : '0', 156, 'latin1')
  h.write('ustar\u000000', 257, 'latin1')
  // The checksum is computed with its own field read as eight spaces.
  h.fill(0x20, 148, 156)
  let sum = 0
  for (const b of h) sum += b
  h.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 'latin1')
  return h
}

/** Zero bytes that bring a file of `size` bytes to a whole number of blocks. */
export function tarPadding (size: number): Uint8Array {
  const rest = size % TAR_BLOCK
  return new Uint8Array(rest === 0 ? 0 : TAR_BLOCK - rest)
}

/** A NUL-terminated octal number filling `len` bytes at `off`. */
function octal (h: Buffer, off: number, len: number, n: number): void {
  h.write(`${n.toString(8).padStart(len - 1, '0')}\u0000`, off, 'latin1')
}
