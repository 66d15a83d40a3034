/**
 * What failover must remember across restarts, in `<stateDir>/failover.json`: per container name,
 * whether an operator protected or unprotected it, the epoch at which this host owns it (if it does),
 * its snapshot sequence and last snapshot, and whether it is fenced; per container name, the highest
 * takeover epoch this host granted and to whom. Written atomically (temp file, fsync, rename) before
 * the agent acts on a change, so a restarted agent never grants twice or forgets it was fenced.
 * An owned epoch above 1 is kept with its certificate (protocol/epoch-certs.ts), which the agent
 * shows in its heartbeats. Format 2 adds `version` and the certificates; a format-1 file (no
 * version) loads as it is, its epochs uncertified until the next claim.
 */
import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { EpochCertificate } from '../../protocol/epoch-certs.js'

export interface LastSnapshot {
  /** ISO time of the freeze. */
  at: string
  seq: number
  /** Names of the holders that stored it. */
  holders: string[]
  freezeMs: number
  bytes: number
}

export interface ContainerRecord {
  /** An operator's `goto protect` (true) or `goto unprotect` (false); unset: the goto.protect label decides. */
  protect?: boolean
  /** The ownership epoch this host runs it at; unset when this host does not own it. */
  epoch?: number
  /** The certificate of `epoch` (when won by a claim); unset for epoch 1 and for epochs from before format 2. */
  cert?: EpochCertificate
  /** Snapshots taken so far (never reset, so a holder always sees a newer one as newer). */
  seq: number
  /** Stopped because this host lost the majority; started again only after winning a claim. */
  fenced?: boolean
  lastSnapshot?: LastSnapshot
}

export interface Grant { epoch: number, claimant: string }

interface StateFile { version: number, containers: Record<string, ContainerRecord>, grants: Record<string, Grant> }

const FILE = 'failover.json'
const VERSION = 2

export class FailoverState {
  private writing: Promise<void> = Promise.resolve()

  private constructor (private readonly path: string, private readonly data: StateFile) {}

  static async open (stateDir: string): Promise<FailoverState> {
    const path = join(stateDir, FILE)
    let data: StateFile = { version: VERSION, containers: {}, grants: {} }
    try {
      // Format 1 had no version and no certificates: its records read as format 2 records without one.
      const raw = JSON.parse(await readFile(path, 'utf8')) as Partial<StateFile>
      data = { version: VERSION, containers: raw.containers ?? {}, grants: raw.grants ?? {} }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    return new FailoverState(path, data)
  }

  container (name: string): ContainerRecord {
    this.data.containers[name] ??= { seq: 0 }
    return this.data.containers[name]
  }

  peek (name: string): ContainerRecord | undefined { return this.data.containers[name] }
  names (): string[] { return Object.keys(this.data.containers) }
  /** Owns `name` at `epoch`, with its certificate (none for epoch 1 or an adopted label). */
  own (name: string, epoch: number, cert?: EpochCertificate): ContainerRecord {
    const r = this.container(name)
    r.epoch = epoch
    if (cert === undefined) delete r.cert
    else r.cert = cert
    return r
  }

  owned (): Array<{ name: string, record: ContainerRecord & { epoch: number } }> {
    return Object.entries(this.data.containers).flatMap(([name, record]) => record.epoch === undefined ? [] : [{ name, record: record as ContainerRecord & { epoch: number } }])
  }

  /** This host no longer owns `name` (moved away, unprotected, or someone owns it at a higher epoch). */
  release (name: string): void {
    const r = this.data.containers[name]
    if (r === undefined) return
    delete r.epoch
    delete r.cert
    delete r.fenced
  }

  grant (name: string): Grant | undefined { return this.data.grants[name] }
  setGrant (name: string, g: Grant): void { this.data.grants[name] = g }

  /** Persists the current state; concurrent calls are written one after another, the last one last. */
  async save (): Promise<void> {
    const text = JSON.stringify(this.data)
    const next = this.writing.then(async () => {
      const tmp = `${this.path}.tmp`
      await writeFile(tmp, text, { mode: 0o600, flush: true })
      await rename(tmp, this.path)
    })
    this.writing = next.catch(() => {})
    await next
  }
}
