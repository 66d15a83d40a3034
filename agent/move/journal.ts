/**
 * A directory of small JSON records, one file per key, each written whole before it counts (temp
 * file, fsync, rename): what an agent must find again after it died mid-move. The freeze journal
 * (source side, freeze-journal.ts) and the incoming journal (destination side, destination.ts) are
 * two of them.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

/** A record that cannot be read: named so the operator can look at it; left in place. */
export interface UnreadableRecord { path: string, error: string }

export interface JournalShape<T> {
  /** The file name (without `.json`) of a record; must match `keyPattern`. */
  key: (record: T) => string
  keyPattern: RegExp
  /** Checks a parsed file (whose key is `key`) and returns it as a record; throws if it is not one. */
  parse: (value: unknown, key: string) => T
}

export class Journal<T extends object> {
  private constructor (private readonly dir: string, private readonly shape: JournalShape<T>) {}

  static async open<T extends object> (dir: string, shape: JournalShape<T>): Promise<Journal<T>> {
    await mkdir(dir, { recursive: true, mode: 0o700 })
    return new Journal(dir, shape)
  }

  /** Writes (or replaces) a record; on disk before this resolves. */
  async put (record: T): Promise<void> {
    const path = this.path(this.shape.key(record))
    await writeFile(`${path}.tmp`, JSON.stringify(record), { mode: 0o600, flush: true })
    await rename(`${path}.tmp`, path)
  }

  /** Changes some fields of a record and writes it. */
  async update (record: T, changes: Partial<T>): Promise<void> {
    Object.assign(record, changes)
    await this.put(record)
  }

  /** The record of `key`, if there is one (throws if its file cannot be read as one). */
  async get (key: string): Promise<T | undefined> {
    let text: string
    try {
      text = await readFile(this.path(key), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    return this.shape.parse(JSON.parse(text), key)
  }

  async remove (key: string): Promise<void> {
    await rm(this.path(key), { force: true })
  }

  async list (): Promise<{ records: T[], unreadable: UnreadableRecord[] }> {
    const records: T[] = []
    const unreadable: UnreadableRecord[] = []
    for (const file of (await readdir(this.dir)).filter(f => f.endsWith('.json')).sort()) {
      const path = join(this.dir, file)
      try {
        records.push(this.shape.parse(JSON.parse(await readFile(path, 'utf8')), file.slice(0, -'.json'.length)))
      } catch (err) {
        unreadable.push({ path, error: (err as Error).message })
      }
    }
    return { records, unreadable }
  }

  private path (key: string): string {
    if (!this.shape.keyPattern.test(key)) throw new TypeError(`not a journal key: ${key}`)
    return join(this.dir, `${key}.json`)
  }
}
