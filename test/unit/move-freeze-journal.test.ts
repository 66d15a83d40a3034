/** The freeze journal: records survive a reopen, stages advance, unreadable files are named and left. */
import { expect } from 'chai'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FreezeJournal, type FrozenRecord } from '../../agent/move/freeze-journal.js'

const ID = 'a'.repeat(64)

function record (over: Partial<FrozenRecord> = {}): FrozenRecord {
  return {
    containerId: ID, name: 'web', purpose: 'move', moveId: '0123456789abcdef', to: { name: 'aws-1', peerId: '12D3KooWexample' },
    stage: 'frozen', volumes: ['webdata'], at: new Date().toISOString(), ...over
  }
}

describe('move: freeze journal', () => {
  let dir: string
  beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'goto-journal-')) })
  afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

  it('keeps a record across a reopen, advances its stage and removes it', async () => {
    const j = await FreezeJournal.open(dir)
    const r = record()
    await j.put(r)
    await j.advance(r, 'committing')
    const again = await FreezeJournal.open(dir)
    expect((await again.list()).records).to.deep.equal([{ ...r, stage: 'committing' }])
    await again.remove(ID)
    await again.remove(ID)
    expect(await again.list()).to.deep.equal({ records: [], unreadable: [] })
    expect(await readdir(dir)).to.deep.equal([])
  })

  it('names an unreadable or mismatched record and leaves it in place; ignores a half-written one', async () => {
    const j = await FreezeJournal.open(dir)
    await j.put(record())
    await writeFile(join(dir, `${'b'.repeat(64)}.json`), '{"containerId": "trunc')
    await writeFile(join(dir, `${'c'.repeat(64)}.json`), JSON.stringify(record()))
    await writeFile(join(dir, `${'d'.repeat(64)}.json.tmp`), '{')
    const { records, unreadable } = await j.list()
    expect(records.map(r => r.containerId)).to.deep.equal([ID])
    expect(unreadable.map(u => u.path)).to.deep.equal([join(dir, `${'b'.repeat(64)}.json`), join(dir, `${'c'.repeat(64)}.json`)])
    expect(await readdir(dir)).to.have.length(4)
  })

  it('refuses a container name or short ID as a record key', async () => {
    const j = await FreezeJournal.open(dir)
    for (const containerId of ['web', 'abc123', '../' + 'a'.repeat(61)]) {
      let err: unknown
      try { await j.put(record({ containerId })) } catch (e) { err = e }
      expect(err, containerId).to.be.instanceOf(TypeError)
    }
    expect(await readdir(dir)).to.deep.equal([])
  })
})
