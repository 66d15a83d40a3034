/**
 * Snapshot scheduling (agent/failover/snapshot-schedule.ts) with a fake clock and a fake
 * SnapshotTaker whose snapshots finish when the test says so.
 */
import { waitFor } from '../lab/wait.js'
import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RETRY_FRACTION, SnapshotSchedule, isDue, type SnapshotTaker } from '../../agent/failover/snapshot-schedule.js'
import { FailoverState } from '../../agent/failover/state.js'
import type { PeerEntry } from '../../agent/membership/peer-table.js'
import { PROFILES } from '../../agent/timings.js'
import { createRootLogger } from '../../agent/log.js'
import { TakeoverRefusedError } from '../../protocol/errors.js'

const INTERVAL = PROFILES.test.snapshotIntervalMs
const log = createRootLogger('error', {})

function entry (id: string): PeerEntry {
  return { peerId: id, name: `host-${id}`, addrs: [], labels: {}, agentVersion: null, dockerVersion: null, containers: null, lastSeen: 0, since: 0, rttMs: null, state: 'alive', crlNumber: 0 }
}

interface Call { container: string, holder: string, meta: { epoch: number, seq: number }, signal: AbortSignal, finish: (ok: boolean) => void }

/** Records each snapshot asked for; it ends when the test calls its finish(). */
class FakeTaker implements SnapshotTaker {
  readonly calls: Call[] = []

  async snapshot (container: string, holder: string, meta: { epoch: number, seq: number }, signal: AbortSignal): Promise<{ bytes: number, freezeMs: number }> {
    return await new Promise((resolve, reject) => {
      const finish = (ok: boolean): void => { ok ? resolve({ bytes: 100, freezeMs: 7 }) : reject(new Error('holder refused')) }
      signal.addEventListener('abort', () => { reject(signal.reason) }, { once: true })
      this.calls.push({ container, holder, meta, signal, finish })
    })
  }
}

describe('failover snapshot scheduling (fake clock, fake snapshotter)', () => {
  let dir: string
  let now: number
  let state: FailoverState
  let taker: FakeTaker
  let busy: Set<string>
  let taken: Array<[string, number]>
  let schedule: SnapshotSchedule
  const view = { alive: [entry('b'), entry('c')] }
  const running = (): boolean => true

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-schedule-'))
    now = 1_000_000_000
    state = await FailoverState.open(dir)
    taker = new FakeTaker()
    busy = new Set()
    taken = []
    schedule = new SnapshotSchedule({
      snapshotter: taker, state, replicas: 1, timings: PROFILES.test, now: () => now, busy, log,
      metrics: { snapshotTaken: (name, at) => { taken.push([name, at]) } }
    })
    state.container('web').epoch = 1
    state.container('db').epoch = 3
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('is due after a full interval since the last snapshot and the retry pause since the last try', () => {
    expect(isDue(0, 0, now, INTERVAL)).to.equal(true)
    expect(isDue(now - INTERVAL + 1, 0, now, INTERVAL)).to.equal(false)
    expect(isDue(now - INTERVAL, 0, now, INTERVAL)).to.equal(true)
    expect(isDue(0, now - INTERVAL * RETRY_FRACTION + 1, now, INTERVAL)).to.equal(false)
    expect(isDue(0, now - INTERVAL * RETRY_FRACTION, now, INTERVAL)).to.equal(true)
  })

  it('takes one snapshot at a time, records it, and takes the next due one after it', async () => {
    const first = schedule.next(view, running, now)
    expect(first).to.not.equal(undefined)
    await until(() => taker.calls.length === 1)
    expect(taker.calls[0]).to.deep.include({ container: 'web', meta: { epoch: 1, seq: 1 } })
    expect(['host-b', 'host-c']).to.include(taker.calls[0].holder)
    expect(busy.has('web')).to.equal(true)
    // db is due too, but web's snapshot is under way.
    expect(schedule.next(view, running, now + 10)).to.equal(undefined)
    expect(taker.calls).to.have.length(1)
    taker.calls[0].finish(true)
    await first
    expect(busy.size).to.equal(0)
    expect(state.peek('web')?.lastSnapshot).to.deep.equal({ at: new Date(now).toISOString(), seq: 1, holders: [taker.calls[0].holder], freezeMs: 7, bytes: 100 })
    expect((await FailoverState.open(dir)).peek('web')?.lastSnapshot?.seq, 'persisted').to.equal(1)
    expect(taken).to.deep.equal([['web', now]])

    const second = schedule.next(view, running, now + 10)
    await until(() => taker.calls.length === 2)
    expect(taker.calls[1]).to.deep.include({ container: 'db', meta: { epoch: 3, seq: 1 } })
    taker.calls[1].finish(true)
    await second
  })

  it('takes nothing that is not due: within the interval, fenced, not running, or with no peer alive', async () => {
    state.container('db').fenced = true
    const p = schedule.next(view, running, now)
    await until(() => taker.calls.length === 1)
    taker.calls[0].finish(true)
    await p
    expect(schedule.next(view, running, now + INTERVAL - 1), 'web within its interval, db fenced').to.equal(undefined)
    expect(schedule.next(view, () => false, now + INTERVAL), 'not running').to.equal(undefined)
    expect(schedule.next({ alive: [] }, running, now + INTERVAL), 'nobody to hold it').to.equal(undefined)
    busy.add('web')
    expect(schedule.next(view, running, now + INTERVAL), 'busy with something else').to.equal(undefined)
    busy.delete('web')
    const again = schedule.next(view, running, now + INTERVAL)
    expect(again).to.not.equal(undefined)
    await until(() => taker.calls.length === 2)
    expect(taker.calls[1]).to.deep.include({ container: 'web', meta: { epoch: 1, seq: 2 } })
    taker.calls[1].finish(true)
    await again
  })

  it('after a failed snapshot waits the retry pause, not the full interval', async () => {
    state.container('db').fenced = true
    const p = schedule.next(view, running, now)
    await until(() => taker.calls.length === 1)
    taker.calls[0].finish(false)
    await p
    expect(state.peek('web')?.lastSnapshot).to.equal(undefined)
    expect(taken).to.deep.equal([])
    const pause = INTERVAL * RETRY_FRACTION
    expect(schedule.next(view, running, now + pause - 1)).to.equal(undefined)
    const retry = schedule.next(view, running, now + pause)
    expect(retry).to.not.equal(undefined)
    await until(() => taker.calls.length === 2)
    expect(taker.calls[1].meta, 'a new sequence number: a holder never sees one twice').to.deep.equal({ epoch: 1, seq: 2 })
    taker.calls[1].finish(true)
    await retry
    expect(state.peek('web')?.lastSnapshot?.seq).to.equal(2)
  })

  it('sends to each of `replicas` holders and aborts a snapshot under way when told (fencing)', async () => {
    schedule = new SnapshotSchedule({ snapshotter: taker, state, replicas: 2, timings: PROFILES.test, now: () => now, busy, log, metrics: { snapshotTaken: () => {} } })
    state.container('db').fenced = true
    const p = schedule.next(view, running, now)
    await until(() => taker.calls.length === 1)
    taker.calls[0].finish(true)
    await until(() => taker.calls.length === 2)
    expect(new Set(taker.calls.map(c => c.holder))).to.deep.equal(new Set(['host-b', 'host-c']))
    schedule.abort('web', new TakeoverRefusedError('fenced'))
    expect(taker.calls[1].signal.aborted).to.equal(true)
    await p
    // The holder that stored it counts; the aborted one does not.
    expect(state.peek('web')?.lastSnapshot?.holders).to.deep.equal([taker.calls[0].holder])
  })

  it('does not record a snapshot of a container that changed owner meanwhile', async () => {
    state.container('db').fenced = true
    const p = schedule.next(view, running, now)
    await until(() => taker.calls.length === 1)
    state.container('web').epoch = 2 // taken over, or moved and back, while it streamed
    taker.calls[0].finish(true)
    await p
    expect(state.peek('web')?.lastSnapshot).to.equal(undefined)
    expect(taken).to.deep.equal([])
  })
})

/** Waits (up to 5 s: a state save fsyncs, on a loaded machine too) for a condition to hold. */
async function until (cond: () => boolean): Promise<void> {
  await waitFor(() => cond(), { timeoutMs: 5000, intervalMs: 5, what: 'the schedule to reach the expected state' })
}
