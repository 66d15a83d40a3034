/**
 * Small file helpers for CA and bundle directories: read a required file (BundleError naming it when
 * absent), write atomically (temp file + rename, so readers never see half a file), and refuse
 * private keys that group or others can read.
 */
import { randomBytes } from 'node:crypto'
import { chmod, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { BundleError } from '../protocol/errors.js'

function isErrno (err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code
}

export async function pathExists (path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return false
    throw err
  }
}

/** Reads `dir/file`; a missing file is a BundleError that names it and says what the directory is. */
export async function readRequired (dir: string, file: string, kind: 'CA' | 'bundle'): Promise<Buffer> {
  const path = join(dir, file)
  try {
    return await readFile(path)
  } catch (err) {
    if (isErrno(err, 'ENOENT')) {
      throw new BundleError(`${path} is missing: ${dir} is not a complete ${kind} directory`, { cause: err })
    }
    throw new BundleError(`cannot read ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/** Like readRequired, but a missing file is `undefined`. */
export async function readOptional (path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path)
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined
    throw new BundleError(`cannot read ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/** Writes via a temp file in the same directory and renames it over `path`. */
export async function writeFileAtomic (path: string, data: string | Uint8Array, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' })
    await chmod(tmp, mode) // the umask may have narrowed it; make it exactly `mode`
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
}

/** Refuses a private key file that group or others may read (anything beyond 0600/0400). */
export async function assertPrivateFile (path: string): Promise<void> {
  const st = await stat(path)
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0')
    throw new BundleError(`${path} has mode ${mode}, readable by group or others; run: chmod 600 ${path}`)
  }
}
