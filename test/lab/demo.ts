#!/usr/bin/env node
/**
 * `npm run demo`: removes a stale lab, builds three simulated hosts (vagrant-1, aws-1, azure-1),
 * waits until the operator CLI sees three alive agents, prints `goto peers`, moves a running web
 * server with a named volume from vagrant-1 to azure-1 with `goto move` (its progress bar on this
 * terminal), shows it serving from azure-1; then protects it (`goto protect`), waits for its first
 * snapshot, kills azure-1 and shows the container running again on a survivor with its data; and
 * always tears the lab down again (also on Ctrl-C).
 */
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Lab, type LabHost } from './lab.js'
import { waitFor } from './wait.js'
import { LabError } from './errors.js'
import { logTail } from './engine.js'
import type { AgentStatus } from '../../protocol/messages.js'

/** Agents of the test profile find each other in a few seconds; allow for a slow machine. */
const MESH_READY_TIMEOUT_MS = 60_000
const HOSTS = 3
const execFileP = promisify(execFile)

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

/** The lab's (test profile's) snapshot interval, for the narration. */
const DEMO_SNAPSHOT_S = 2
/** Big enough that the progress bar has something to show, small enough for a quick demo. */
const DEMO_LAYER_MIB = 64

async function run (cmd: string, args: string[], signal: AbortSignal): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { signal, maxBuffer: 8 * 1024 * 1024 })
  return stdout
}

async function dockerCli (h: LabHost, args: string[], signal: AbortSignal): Promise<string> {
  return await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], signal)
}

/** Runs the operator CLI on this terminal, so a person sees its progress bar. */
async function gotoInherit (lab: Lab, args: string[], signal: AbortSignal): Promise<number | null> {
  const p = spawn(process.execPath, [lab.controlMain, ...args], {
    stdio: 'inherit',
    signal,
    env: { ...process.env, GOTO_BUNDLE: lab.operatorBundle, GOTO_AGENT: lab.hosts[0].agentAddr }
  })
  return await new Promise(resolve => { p.on('exit', code => { resolve(code) }) })
}

/** A protected container's host dies; the container runs again on a survivor from its snapshot. */
async function failover (lab: Lab, hosts: LabHost[], owner: LabHost, signal: AbortSignal): Promise<void> {
  // Written before protection starts, so no exec races a snapshot's freeze (docs/operations.md).
  await dockerCli(owner, ['exec', 'web', 'sh', '-c', 'echo "hello again, after a failover" > /data/index.html'], signal)
  console.log(`\n== goto protect web (snapshots to a replica holder every ${DEMO_SNAPSHOT_S} s in the lab's timing profile)`)
  const p = await lab.cli(['protect', 'web'])
  process.stdout.write(p.stdout)
  if (p.code !== 0) throw new LabError(`goto protect exited with ${p.code ?? 'a timeout'}: ${p.stderr}`)
  const seen = await waitFor(async () => {
    const r = await lab.cli(['status', owner.name, '--json'])
    const row = r.code === 0 ? (JSON.parse(r.stdout) as AgentStatus).failover?.containers.find(c => c.name === 'web') : undefined
    return row !== undefined && row.holders.length > 0 ? row : undefined
  }, { timeoutMs: MESH_READY_TIMEOUT_MS, intervalMs: 250, what: 'a snapshot of web', signal })
  console.log(`   snapshot ${seen.snapshotSeq ?? 0} of web held by ${seen.holders.join(', ')}`)
  console.log(`\n== goto status ${owner.name}`)
  process.stdout.write((await lab.cli(['status', owner.name])).stdout)

  console.log(`\n== killing ${owner.name} (agent, engine, containers)`)
  const t0 = Date.now()
  await lab.kill(owner.name)
  const survivors = hosts.filter(h => h !== owner)
  const now = await waitFor(async () => {
    for (const h of survivors) {
      const r = await lab.cli(['status', h.name, '--json'], { agent: h.agentAddr })
      const s = r.code === 0 ? JSON.parse(r.stdout) as AgentStatus : undefined
      // Owned here (the takeover won) and running (the restore finished).
      if (s?.failover?.containers.some(c => c.name === 'web' && c.owner === h.name) === true && s.containers.some(c => c.name === 'web' && c.state === 'running')) return h
    }
    return undefined
  }, { timeoutMs: MESH_READY_TIMEOUT_MS, intervalMs: 250, what: 'web to run again on a survivor', signal })
  console.log(`   web runs again on ${now.name}, ${Date.now() - t0} ms after the kill`)
  console.log(`\n== goto status ${now.name}`)
  process.stdout.write((await lab.cli(['status', now.name], { agent: now.agentAddr })).stdout)
  const other = survivors.find(h => h !== now) as LabHost
  console.log(`\n== from ${other.name}'s network namespace: wget http://${now.ip}:8080/`)
  process.stdout.write(await run('ip', ['netns', 'exec', other.netns, 'wget', '-qO-', `http://${now.ip}:8080/`], signal))
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

    const [from, , to] = hosts
    console.log(`\n== a container on ${from.name}: an image with a ${DEMO_LAYER_MIB} MiB layer, a named volume, a file written after start`)
    await dockerCli(from, ['run', '--name', 'demo-build', 'gotolab/base:latest', 'sh', '-c', `mkdir -p /srv && head -c ${DEMO_LAYER_MIB}m /dev/urandom > /srv/blob`], signal)
    await dockerCli(from, ['commit', 'demo-build', 'demo/web:v1'], signal)
    await dockerCli(from, ['rm', 'demo-build'], signal)
    await dockerCli(from, ['run', '-d', '--name', 'web', '-p', '8080:8080', '-v', 'webdata:/data', '--restart', 'unless-stopped',
      'demo/web:v1', 'sh', '-c', '[ -f /data/index.html ] || echo "hello from the volume" > /data/index.html; httpd -f -p 8080 -h /data'], signal)
    await dockerCli(from, ['exec', 'web', 'sh', '-c', 'date > /srv/changed-after-start'], signal)

    console.log(`\n== goto move web --to ${to.name}`)
    const code = await gotoInherit(lab, ['move', 'web', '--to', to.name], signal)
    if (code !== 0) throw new LabError(`goto move exited with ${code ?? 'a signal'}`)

    console.log(`\n== goto status ${to.name}`)
    process.stdout.write((await lab.cli(['status', to.name])).stdout)
    console.log(`\n== from ${from.name}'s network namespace: wget http://${to.ip}:8080/`)
    process.stdout.write(await run('ip', ['netns', 'exec', from.netns, 'wget', '-qO-', `http://${to.ip}:8080/`], signal))

    await failover(lab, hosts, to, signal)
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
