#!/usr/bin/env node
/**
 * `node dist/test/sim/main.js [sizes] [profile]`: runs the membership simulation (test/sim) and
 * prints its figures for both designs, e.g. `node dist/test/sim/main.js 100,300,1000 lan`. Today's
 * design runs only at the sizes it survives (≤ 300: a heartbeat lists at most 1,024 members, and
 * its cost grows with N²). `--json` prints the figures as JSON.
 */
import '../../protocol/polyfill.js'
import { fullTableFigures, swimFigures } from './scenarios.js'
import type { ProfileName } from '../../agent/timings.js'

const args = process.argv.slice(2).filter(a => a !== '--json')
const json = process.argv.includes('--json')
const sizes = (args[0] ?? '100,300,1000').split(',').map(Number)
const profile = (args[1] ?? 'lan') as ProfileName
const TODAY_MAX = 300

const out: unknown[] = []
for (const n of sizes) {
  const s = await swimFigures(n, profile)
  out.push(s)
  if (!json) console.log(JSON.stringify(s))
  if (n <= TODAY_MAX) {
    const f = fullTableFigures(n, profile)
    out.push(f)
    if (!json) console.log(JSON.stringify(f))
  }
}
if (json) console.log(JSON.stringify(out, null, 2))
