/**
 * The import arrows of protocol/: the wire schema depends on no agent or CLI code, and no protocol
 * module imports, directly or around a loop, one that imports it back. Read from the TypeScript
 * sources, since `import type` leaves nothing in the compiled files.
 */
import { expect } from 'chai'
import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

const PROTOCOL = fileURLToPath(new URL('../../../protocol/', import.meta.url))

/** Module name (e.g. 'wire') → the specifiers it imports or re-exports from. */
function imports (): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const file of readdirSync(PROTOCOL).filter(f => f.endsWith('.ts'))) {
    const text = readFileSync(join(PROTOCOL, file), 'utf8')
    const specs = [...text.matchAll(/^(?:import|export)\b[^'"]*?\bfrom\s+'([^']+)'|^import\s+'([^']+)'/gm)].map(m => m[1] ?? m[2])
    out.set(file.slice(0, -3), specs)
  }
  return out
}

describe('protocol/ imports', () => {
  it('takes nothing from agent/ or control/', () => {
    const offending = [...imports()].flatMap(([m, specs]) => specs.filter(s => /^\.\.\/(agent|control)\//.test(s)).map(s => `${m}: ${s}`))
    expect(offending).to.deep.equal([])
  })

  it('has no import cycle among its modules', () => {
    const graph = imports()
    const local = (m: string): string[] => (graph.get(m) ?? []).filter(s => s.startsWith('./')).map(s => s.slice(2).replace(/\.js$/, ''))
    expect(local('messages')).to.include('failover-messages') // the reader sees what the files import
    const cycles: string[] = []
    const visit = (m: string, path: string[]): void => {
      if (path.includes(m)) { cycles.push([...path.slice(path.indexOf(m)), m].join(' → ')); return }
      for (const n of local(m)) visit(n, [...path, m])
    }
    for (const m of graph.keys()) visit(m, [])
    expect(cycles).to.deep.equal([])
  })
})
