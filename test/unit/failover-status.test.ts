import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FailoverService, type FailoverDeps } from '../../agent/failover/service.js'
import { FailoverState } from '../../agent/failover/state.js'
import { SnapshotStore } from '../../agent/failover/snapshot-store.js'
import { PeerTable } from '../../agent/membership/peer-table.js'
import { PROFILES } from '../../agent/timings.js'
import { createRootLogger } from '../../agent/log.js'
import type { MemberInfo } from '../../protocol/messages.js'

function member (peerId: string): MemberInfo {
  return { peerId, name: peerId, addrs: [], labels: {}, agentVersion: '0.1.0', dockerVersion: null, containers: 0, crlNumber: 0 }
}

describe('failover status: when is a failover safe', () => {
  let dir: string
  let now: number
  let table: PeerTable
  let service: FailoverService

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-failover-'))
    now = 1_000_000
    table = new PeerTable('self', PROFILES.test, () => now)
    const deps = {
      table,
      state: await FailoverState.open(dir),
      snapshots: await SnapshotStore.open(join(dir, 'snapshots')),
      selfId: 'self',
      selfName: 'self',
      timings: PROFILES.test,
      replicas: 1,
      trust: { crlNumber: 0, verify: () => { throw new Error('no certificates here') } },
      log: createRootLogger('error', {})
    } as unknown as FailoverDeps // status() needs no network, engine or identity
    service = new FailoverService(deps)
  })

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('says a mesh of fewer than three members cannot fail over, and why', () => {
    table.heard(member('b'), 1)
    const s = service.status()
    expect(s).to.deep.include({ safe: false, members: 2, reachable: 2, majority: 2 })
    expect(s.reason).to.contain('fewer than three').and.to.contain('by hand')
  })

  it('is safe with a majority of three or more reachable, not without', () => {
    table.heard(member('b'), 1)
    table.heard(member('c'), 1)
    expect(service.status()).to.deep.include({ safe: true, reason: null, members: 3, reachable: 3, majority: 2 })
    now += PROFILES.test.deadAfterMs
    table.heard(member('b'), 1)
    table.tick()
    expect(service.status()).to.deep.include({ safe: true, members: 3, reachable: 2 })
    now += PROFILES.test.deadAfterMs
    table.tick()
    const s = service.status()
    expect(s).to.deep.include({ safe: false, members: 3, reachable: 1 })
    expect(s.reason).to.contain('not a majority')
  })
})
