/** The move journals: records survive a reopen, stages advance, unreadable files are named and left. */
import { expect } from 'chai'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openFreezeJournal, type FrozenRecord } from '../../agent/move/freeze-journal.js'
import { openIncomingJournal, type IncomingRecord } from '../../agent/move/incoming-journal.js'

const ID = 'a'.repeat(64)

function record (over: Partial<FrozenRecord> = {}): FrozenRecord {
  return {
    containerId: ID, name: 'web', purpose: 'move', moveId: '0123456789abcdef', to: { name: 'aws-1', peerId: '12D3KooWexample' },
    stage: 'frozen', volumes: ['webdata'], at: new Date().toISOString(), ...over
  }
}

describe('move: freeze and incoming journals', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'goto-journal-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('keeps a record across a reopen, advances its stage and removes it', async () => {
    const j = await openFreezeJournal(dir)
    const r = record()
    await j.put(r)
    await j.update(r, { stage: 'committing' })
    const again = await openFreezeJournal(dir)
    expect((await again.list()).records).to.deep.equal([{ ...r, stage: 'committing' }])
    await again.remove(r.moveId)
    await again.remove(r.moveId)
    expect(await again.list()).to.deep.equal({ records: [], unreadable: [] })
    expect(await readdir(dir)).to.deep.equal([])
  })

  it('names an unreadable or mismatched record and leaves it in place; ignores a half-written one', async () => {
    const j = await openFreezeJournal(dir)
    await j.put(record())
    await writeFile(join(dir, 'bbbbbbbbbbbbbbbb.json'), '{"moveId": "trunc')
    await writeFile(join(dir, 'cccccccccccccccc.json'), JSON.stringify(record()))
    await writeFile(join(dir, 'dddddddddddddddd.json.tmp'), '{')
    const { records, unreadable } = await j.list()
    expect(records.map(r => r.moveId)).to.deep.equal(['0123456789abcdef'])
    expect(unreadable.map(u => u.path)).to.deep.equal([join(dir, 'bbbbbbbbbbbbbbbb.json'), join(dir, 'cccccccccccccccc.json')])
    expect(await readdir(dir)).to.have.length(4)
  })

  it('refuses a record key that is not a move ID, and reads back one record by its key', async () => {
    const j = await openFreezeJournal(dir)
    for (const moveId of ['web', 'abc123', '../' + 'a'.repeat(13)]) {
      let err: unknown
      try { await j.put(record({ moveId })) } catch (e) { err = e }
      expect(err, moveId).to.be.instanceOf(TypeError)
    }
    expect(await j.get('0123456789abcdef')).to.equal(undefined)
    expect(await readdir(dir)).to.deep.equal([])
    const r = record()
    await j.put(r)
    expect(await j.get(r.moveId)).to.deep.equal(r)
  })

  it('an incoming-move record keeps the spec and images; one naming a bad image ID is unreadable', async () => {
    const j = await openIncomingJournal(dir)
    const r: IncomingRecord = {
      moveId: '0123456789abcdef', from: { name: 'aws-1', peerId: '12D3KooWexample' }, stage: 'loading', wanted: ['sha256:' + 'e'.repeat(64)],
      spec: { name: 'web', mounts: [{ type: 'volume', name: 'webdata', driver: 'local', destination: '/data' }] } as unknown as IncomingRecord['spec'],
      preloaded: 'sha256:' + 'f'.repeat(64), at: new Date().toISOString()
    }
    await j.put(r)
    await j.update(r, { stage: 'restoring', image: 'sha256:' + '0'.repeat(64) })
    expect((await (await openIncomingJournal(dir)).list()).records).to.deep.equal([r])
    await writeFile(join(dir, 'fedcba9876543210.json'), JSON.stringify({ ...r, moveId: 'fedcba9876543210', image: 'latest' }))
    expect((await j.list()).unreadable.map(u => u.path)).to.deep.equal([join(dir, 'fedcba9876543210.json')])
  })
})
