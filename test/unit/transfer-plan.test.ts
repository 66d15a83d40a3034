import { expect } from 'chai'
import { createHash } from 'node:crypto'
import { chainIds, layersToSend } from '../../agent/transfer/plan.js'

const A = 'sha256:' + 'a'.repeat(64)
const B = 'sha256:' + 'b'.repeat(64)
const C = 'sha256:' + 'c'.repeat(64)
const D = 'sha256:' + 'd'.repeat(64)

describe('transfer plan: layersToSend', () => {
  it('sends everything to an engine with no images', () => {
    expect(layersToSend([A, B, C], [])).to.deep.equal({ present: 0, missing: [A, B, C] })
  })

  it('sends nothing for an image with no layers', () => {
    expect(layersToSend([], [[A, B]])).to.deep.equal({ present: 0, missing: [] })
  })

  it('sends nothing when the engine holds the same chain', () => {
    expect(layersToSend([A, B, C], [[A, B, C]])).to.deep.equal({ present: 3, missing: [] })
  })

  it('counts a longer local chain that starts with the whole image as present', () => {
    expect(layersToSend([A, B], [[A, B, C, D]])).to.deep.equal({ present: 2, missing: [] })
  })

  it('takes the longest prefix held by any local chain', () => {
    const local = [[A], [A, B, D], [C, A, B, C], [A, D]]
    expect(layersToSend([A, B, C], local)).to.deep.equal({ present: 2, missing: [C] })
  })

  it('sends a layer held only at another depth, and everything after the first difference', () => {
    // C is local, but under other layers: its chain ID differs, so the engine cannot reuse it
    expect(layersToSend([A, B, C], [[C], [B, C], [D, B, C]])).to.deep.equal({ present: 0, missing: [A, B, C] })
    // B and C are local at the same depth, but above another base
    expect(layersToSend([A, B, C], [[D, B, C]])).to.deep.equal({ present: 0, missing: [A, B, C] })
    // the same base, then a difference: C after it is missing even though [A, D, C] has a C at depth 2
    expect(layersToSend([A, B, C], [[A, D, C]])).to.deep.equal({ present: 1, missing: [B, C] })
  })

  it('keeps a repeated diff ID in the missing list once per position', () => {
    expect(layersToSend([A, B, B, C], [[A, B]])).to.deep.equal({ present: 2, missing: [B, C] })
    expect(layersToSend([A, B, B], [[A, B, C]])).to.deep.equal({ present: 2, missing: [B] })
  })

  it('accepts any iterable of local chains and does not change its inputs', () => {
    const chain = [A, B]
    const local = new Set([[A]])
    expect(layersToSend(chain, local)).to.deep.equal({ present: 1, missing: [B] })
    expect(chain).to.deep.equal([A, B])
  })
})

describe('transfer plan: chainIds', () => {
  it('computes chain IDs as the engine does', () => {
    const sha = (s: string): string => 'sha256:' + createHash('sha256').update(s).digest('hex')
    const ab = sha(`${A} ${B}`)
    expect(chainIds([])).to.deep.equal([])
    expect(chainIds([A])).to.deep.equal([A])
    expect(chainIds([A, B, C])).to.deep.equal([A, ab, sha(`${ab} ${C}`)])
    // a repeated diff ID gets a different chain ID at each depth
    const ids = chainIds([A, B, B])
    expect(new Set(ids).size).to.equal(3)
  })
})
