#!/usr/bin/env node
/**
 * `npm run demo`: removes a stale lab, builds three simulated hosts (vagrant-1, aws-1, azure-1),
 * waits until the operator CLI sees three alive agents, prints `goto peers`, and always tears the
 * lab down again (also on Ctrl-C).
 */
import { Lab, type LabHost } from './lab.js'
import { waitFor } from './wait.js'
import { LabError } from './errors.js'
import { logTail } from './engine.js'

/** Agents of the test profile find each other in a few seconds; allow for a slow machine. */
const MESH_READY_TIMEOUT_MS = 60_000
const HOSTS = 3

interface PeerRow { name: string, state: string }

async function alivePeers (lab: Lab): Promise<PeerRow[]> {
  const r = await lab.cli(['peers', '--json'], { timeoutMs: 15_000 })
  if (r.code !== 0) return []
  try {
    const rows = JSON.parse(r.stdout) as PeerRow[]
    return Array.isArray(rows) ? rows.filter(p => p.state === 'alive') : []
  } catch {
    return []
  }
}

function safeHosts (lab: Lab): LabHost[] {
  try {
    return lab.hosts
  } catch {
    return []
  }
}

async function main (): Promise<void> {
  const lab = new Lab({ log: (line) => { console.log(`lab: ${line}`) } })
  // Ctrl-C aborts whatever step runs; the finally below then tears the lab down. A second Ctrl-C
  // exits at once (run `npm run lab -- down` afterwards).
  const abort = new AbortController()
  const onSignal = (): void => {
    if (abort.signal.aborted) process.exit(130)
    console.log('\ninterrupted: stopping, then tearing the lab down (Ctrl-C again to exit at once)')
    abort.abort()
    process.exitCode = 130
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  const { signal } = abort

  try {
    console.log('== removing anything a previous run left behind')
    await lab.down()
    console.log(`\n== starting ${HOSTS} simulated hosts`)
    const hosts = await lab.up(HOSTS, { signal })
    for (const h of hosts) console.log(`   ${h.name.padEnd(10)} ${h.ip.padEnd(12)} agent ${h.agentAddr}  engine ${h.dockerHost}`)
    if (hosts.some(h => h.agentPid === undefined)) throw new LabError(`no agents were started: build them first (npm run build)`)

    console.log('\n== waiting for the mesh: goto peers --json until every agent is alive')
    const t0 = Date.now()
    const alive = await waitFor(async () => {
      const rows = await alivePeers(lab)
      return rows.length >= HOSTS ? rows : undefined
    }, { timeoutMs: MESH_READY_TIMEOUT_MS, intervalMs: 500, what: `${HOSTS} alive agents in goto peers`, signal })
    console.log(`   ${alive.map(p => p.name).join(', ')} alive after ${Date.now() - t0} ms`)

    console.log(`\n== goto peers (operator CLI, asking ${hosts[0].name})`)
    const r = await lab.cli(['peers'])
    process.stdout.write(r.stdout)
    if (r.code !== 0) {
      process.stderr.write(r.stderr)
      throw new LabError(`goto peers exited with ${r.code ?? 'a timeout'}`)
    }
  } catch (err) {
    // The logs go with the lab: show the end of each agent's log while it is still there.
    if (!signal.aborted) for (const h of safeHosts(lab)) console.error(`\n-- last lines of ${h.agentLog}\n${await logTail(h.agentLog, 10)}`)
    throw err
  } finally {
    console.log('\n== tearing the lab down')
    await lab.down()
  }
}

main().then(() => {
  console.log('demo done')
}, (err: unknown) => {
  console.error(`demo failed: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`)
  process.exitCode = process.exitCode === 130 ? 130 : 1
})
