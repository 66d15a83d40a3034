#!/usr/bin/env node
/**
 * `npm run bench`: measures the mesh in a three-host lab, each figure next to a baseline taken in the
 * same run on the same machine, and writes everything to bench-results.json.
 *
 * - Idle agents: RSS and CPU of each of the three agents (default timing profile, two peers each) over
 *   30 s; baseline: an idle bare Node.js process. Targets for the worst agent: RSS < 100 MiB, CPU < 1 %.
 * - Moves (bench/move.ts): first move, re-move, downtime and memory, each against a baseline.
 * - Volumes (bench/volumes.ts, its own two-host lab): move downtime with a 16 MiB and a 512 MiB named
 *   volume and 1 MiB written during the move, ratio 512/16, with volume rounds and with the spool path.
 * - Failover (bench/failover.ts, its own lab with the lan profile once the first is down): failover
 *   time over five kills, and the freeze time and bytes of a snapshot of a container changing 1 MiB.
 * - Links (bench/links.ts, its own five-host lab in three clouds, a 100 Mbit/s tbf between them): the
 *   first move of a ~350 MiB `docker import`ed image vs `docker save | docker load` over a TCP pipe
 *   on the same link (target ≤ 0.5x), the same image from a holder in the destination's cloud vs an
 *   unshaped LAN move (targets: no image bytes on the shaped link, ≤ 1.2x), zstd against none; and
 *   `links-resume`: a cut at 50 % of a 128 MiB layer and its retry (target: ≤ 1 % sent twice).
 *   GOTO_BENCH_LINKS_PREFIX and GOTO_BENCH_LINKS_SUBNET give these labs their own prefix and subnet.
 * - CLI round trip: `goto status --json` as a process (spawn, connect, Noise, auth, ask) and `goto ca
 *   list` (no network), both with the bundled CLI that `goto` runs, and status with the unbundled
 *   dist/control/main.js — medians of runs; baseline: `node -e 0`, the cost of starting Node alone,
 *   measured interleaved in the same runs. Targets: status ≤ 3x, ca list ≤ 2x. In-process: connect +
 *   auth + status with the client library; baseline: a plain TCP connect to the same agent.
 * - Engines (bench/engines.ts, its own three-host lab: Docker 20.10, 26, 28 with the containerd
 *   store): the first move of a 200 MiB image into the containerd store vs into 20.10.
 * - Live moves (bench/live.ts, its own two-host lab with CRIU): downtime of a live move with 16 and
 *   512 MiB resident against an ordinary move of the same container; checkpoint size and times.
 * - Tree sync (bench/sync.ts, no lab): first full copy of a ~2 GiB tree vs `tar c | tar x`, an
 *   incremental round after a 1 MiB change, and RSS growth.
 * - Membership simulation (bench/membership-sim.ts, no lab): the scalable membership protocol at
 *   1,000 simulated nodes, bytes/s per node and the time until a death is known everywhere, against
 *   today's full-table heartbeats at 100 nodes. Targets: ≤ 2 KiB/s per node, ≤ 3 × lan deadAfterMs.
 *
 * `GOTO_BENCH_ONLY=move` (a comma list of idle, cli, move, failover, sync, volumes, engines, live, membership-sim, links, links-resume) runs only those sections; the
 * results file then holds only them. GOTO_BENCH_PREFIX and GOTO_BENCH_SUBNET give the labs another
 * prefix and subnet (default gotolabb, 10.213.60.0/24).
 */
import '../protocol/polyfill.js'
import { spawn } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { cpus, release, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { Lab, waitFor } from '../test/lab/index.js'
import { readBundle } from '../certs/index.js'
import { AgentClient } from '../control/client.js'
import { moveBench } from './move.js'
import { failoverBench } from './failover.js'
import { syncBench } from './sync.js'
import { volumesBench } from './volumes.js'
import { enginesBench } from './engines.js'
import { liveBench } from './live.js'
import { membershipSimBench } from './membership-sim.js'
import { linksBench, linksResumeBench } from './links.js'

const IDLE_SECONDS = 30
/** Start-up (module loading, JIT warm-up, the first exchanges) is not idle: let it pass first. */
const SETTLE_SECONDS = 10
const CLI_RUNS = 15
/** Targets for the CLI's start-up, as multiples of `node -e 0` (issue 10: answer like docker's CLI). */
const TARGET_STATUS_RATIO = 3
const TARGET_CA_LIST_RATIO = 2
/** What `goto` runs once built (package.json "bin"): the esbuild bundle of control/main.ts. */
const GOTO_BIN = 'dist/bin/goto.js'
const INPROC_RUNS = 30
/** The agent accepts 20 new connections per second from one IP (protocol/node.ts); stay well under. */
const RUN_SPACING_MS = 250
const TARGET_RSS_MIB = 100
const TARGET_CPU_PERCENT = 1
const CLK_TCK = 100

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

async function cpuTicks (pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11]) + Number(fields[12]) // utime + stime (fields 14 and 15 of the whole line)
}

async function rssMiB (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN)
  return kb / 1024
}

/** RSS (median of samples, MiB) and CPU (% of one core) of a process over `seconds`. */
async function idle (pid: number, seconds: number): Promise<{ rssMiB: number, rssMaxMiB: number, cpuPercent: number }> {
  const samples: number[] = []
  const t0 = await cpuTicks(pid)
  const start = performance.now()
  for (let i = 0; i < seconds; i++) {
    samples.push(await rssMiB(pid))
    await new Promise(resolve => setTimeout(resolve, 1000))
  }
  const elapsedS = (performance.now() - start) / 1000
  const ticks = (await cpuTicks(pid)) - t0
  return { rssMiB: median(samples), rssMaxMiB: Math.max(...samples), cpuPercent: ticks / CLK_TCK / elapsedS * 100 }
}

async function timeProcess (cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const start = performance.now()
  await new Promise<void>((resolve, reject) => {
    const p = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    p.stderr.on('data', d => { err += String(d) })
    p.on('error', reject)
    p.on('exit', code => { code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`)) })
  })
  return performance.now() - start
}

async function tcpConnectMs (host: string, port: number): Promise<number> {
  const start = performance.now()
  await new Promise<void>((resolve, reject) => {
    const s = connect({ host, port }, () => { s.destroy(); resolve() })
    s.on('error', reject)
  })
  return performance.now() - start
}

const fmt = (n: number, d = 1): string => n.toFixed(d)

/** `GOTO_BENCH_ONLY=move,cli`: run only those sections (idle, cli, move, failover, sync, volumes, engines, live, membership-sim, links, links-resume); all by default. */
const ONLY = new Set((process.env.GOTO_BENCH_ONLY ?? '').split(',').map(s => s.trim()).filter(s => s !== ''))
const runs = (section: string): boolean => ONLY.size === 0 || ONLY.has(section)

async function main (): Promise<void> {
  // Its own prefix and subnet: the bench never touches a lab a developer keeps up.
  const prefix = process.env.GOTO_BENCH_PREFIX ?? 'gotolabb'
  const subnet = process.env.GOTO_BENCH_SUBNET ?? '10.213.60.0/24'
  const results: Record<string, unknown> = { date: new Date().toISOString(), machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, kernel: release() } }
  // No lab: both halves in this process over loopback, before the labs load the machine.
  if (runs('sync')) results.sync = await syncBench()
  if (runs('idle') || runs('cli') || runs('move')) await meshBench(prefix, subnet, results)
  // A lab of its own, on the same prefix once the first is down: other agents, the lan profile.
  if (runs('failover')) results.failover = await failoverBench(prefix, subnet)
  // Two hosts of its own (agents restarted with --volume-spool-only midway), the default profile.
  if (runs('volumes')) results.volumes = await volumesBench(prefix, subnet)
  if (runs('engines')) results.engines = await enginesBench(prefix, subnet)
  if (runs('live')) results.live = await liveBench(prefix, subnet)
  if (runs('membership-sim')) results.membershipSim = await membershipSimBench()
  if (runs('links')) results.links = await linksBench(process.env.GOTO_BENCH_LINKS_PREFIX ?? prefix, process.env.GOTO_BENCH_LINKS_SUBNET ?? subnet)
  if (runs('links-resume')) results.linksResume = await linksResumeBench(process.env.GOTO_BENCH_LINKS_PREFIX ?? prefix, process.env.GOTO_BENCH_LINKS_SUBNET ?? subnet)
  await writeFile('bench-results.json', JSON.stringify(results, null, 2) + '\n')
  console.log('\nwrote bench-results.json')
}

/** Idle cost, CLI round trips and moves, in a three-host lab with the default profile. */
async function meshBench (prefix: string, subnet: string, results: Record<string, unknown>): Promise<void> {
  const lab = new Lab({ prefix, subnet, agentProfile: 'default', log: line => { console.log(`lab: ${line}`) } })
  // Interrupted: tear the lab down before leaving (the finally below never runs on a signal).
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { void lab.down().finally(() => process.exit(130)) })
  try {
    await lab.down()
    const hosts = await lab.up(3)
    const [measured] = hosts
    await waitFor(async () => {
      const r = await lab.cli(['peers', '--json'])
      return r.code === 0 && (JSON.parse(r.stdout) as Array<{ state: string }>).filter(p => p.state === 'alive').length === 3
    }, { timeoutMs: 60_000, intervalMs: 500, what: 'three alive agents' })
    if (hosts.some(h => h.agentPid === undefined)) throw new Error('an agent did not start')

    if (runs('idle')) {
      console.log(`\n== idle: every agent (each with two peers) and a bare node process, ${IDLE_SECONDS} s after ${SETTLE_SECONDS} s to settle`)
      const bare = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
      try {
        await new Promise(resolve => setTimeout(resolve, SETTLE_SECONDS * 1000))
        const [baseline, ...agents] = await Promise.all([
          idle(bare.pid as number, IDLE_SECONDS),
          ...hosts.map(async h => await idle(h.agentPid as number, IDLE_SECONDS))
        ])
        // The target applies to the steady state (median of the samples); the peaks between V8's
        // young-generation collections are reported next to it.
        const worstRss = Math.max(...agents.map(a => a.rssMiB))
        const worstPeak = Math.max(...agents.map(a => a.rssMaxMiB))
        const worstCpu = Math.max(...agents.map(a => a.cpuPercent))
        results.idle = {
          seconds: IDLE_SECONDS,
          settleSeconds: SETTLE_SECONDS,
          agents: Object.fromEntries(hosts.map((h, i) => [h.name, agents[i]])),
          bareNode: baseline,
          worstRssMiB: worstRss,
          worstPeakRssMiB: worstPeak,
          worstCpuPercent: worstCpu,
          rssRatio: worstRss / baseline.rssMiB
        }
        hosts.forEach((h, i) => { console.log(`   ${h.name.padEnd(10)} RSS ${fmt(agents[i].rssMiB)} MiB (max ${fmt(agents[i].rssMaxMiB)}), CPU ${fmt(agents[i].cpuPercent, 2)} %`) })
        console.log(`   bare node  RSS ${fmt(baseline.rssMiB)} MiB, CPU ${fmt(baseline.cpuPercent, 2)} %   → worst agent/bare RSS ${fmt(worstRss / baseline.rssMiB, 2)}x`)
        console.log(`   targets (worst agent): RSS (median) < ${TARGET_RSS_MIB} MiB ${worstRss < TARGET_RSS_MIB ? 'met' : 'MISSED'} (peak ${fmt(worstPeak)} MiB), CPU < ${TARGET_CPU_PERCENT} % ${worstCpu < TARGET_CPU_PERCENT ? 'met' : 'MISSED'}`)
      } finally {
        bare.kill('SIGKILL')
      }
    }
    if (runs('cli')) {
      console.log(`\n== CLI as a process, ${CLI_RUNS} runs each, interleaved with node -e 0: goto status --json and goto ca list (the bundled ${GOTO_BIN}), goto status --json unbundled (dist/control/main.js)`)
      const env = { ...process.env, GOTO_BUNDLE: lab.operatorBundle, GOTO_AGENT: measured.agentAddr }
      const bin = join(dirname(lab.controlMain), '..', 'bin', 'goto.js')
      const node: number[] = []
      const status: number[] = []
      const caList: number[] = []
      const unbundled: number[] = []
      for (let i = 0; i < CLI_RUNS; i++) {
        // Each status opens a new connection: pace the runs under the agent's per-IP inbound threshold.
        node.push(await timeProcess(process.execPath, ['-e', '0'], env))
        status.push(await timeProcess(process.execPath, [bin, 'status', '--json'], env))
        caList.push(await timeProcess(process.execPath, [bin, 'ca', 'list', '--dir', lab.caDir], env))
        unbundled.push(await timeProcess(process.execPath, [lab.controlMain, 'status', '--json'], env))
      }
      const nodeMs = median(node)
      const ratio = (xs: number[]): number => median(xs) / nodeMs
      results.cli = {
        runs: CLI_RUNS,
        nodeStartMedianMs: nodeMs,
        statusMedianMs: median(status),
        statusMaxMs: Math.max(...status),
        ratio: ratio(status),
        caListMedianMs: median(caList),
        caListRatio: ratio(caList),
        unbundledStatusMedianMs: median(unbundled),
        unbundledRatio: ratio(unbundled)
      }
      console.log(`   node -e 0 median ${fmt(nodeMs)} ms`)
      console.log(`   goto status median ${fmt(median(status))} ms (max ${fmt(Math.max(...status))}) → ${fmt(ratio(status), 2)}x, target ≤ ${TARGET_STATUS_RATIO}x ${ratio(status) <= TARGET_STATUS_RATIO ? 'met' : 'MISSED'}`)
      console.log(`   goto ca list median ${fmt(median(caList))} ms → ${fmt(ratio(caList), 2)}x, target ≤ ${TARGET_CA_LIST_RATIO}x ${ratio(caList) <= TARGET_CA_LIST_RATIO ? 'met' : 'MISSED'}`)
      console.log(`   goto status unbundled (dist/control/main.js) median ${fmt(median(unbundled))} ms → ${fmt(ratio(unbundled), 2)}x`)

      console.log(`\n== in process: connect + Noise + auth + status, ${INPROC_RUNS} runs, vs a plain TCP connect`)
      const bundle = await readBundle(lab.operatorBundle)
      const inproc: number[] = []
      const tcp: number[] = []
      for (let i = 0; i < INPROC_RUNS; i++) {
        // Two new connections per run; pace the runs under the agent's per-IP inbound threshold.
        const paced = new Promise(resolve => setTimeout(resolve, RUN_SPACING_MS))
        tcp.push(await tcpConnectMs(measured.ip, 4001))
        const start = performance.now()
        const client = await AgentClient.connect(bundle, multiaddr(measured.agentAddr), AbortSignal.timeout(10_000))
        await client.status(undefined, AbortSignal.timeout(10_000))
        inproc.push(performance.now() - start)
        await client.close()
        await paced
      }
      results.inProcess = { runs: INPROC_RUNS, statusMedianMs: median(inproc), tcpConnectMedianMs: median(tcp), ratio: median(inproc) / median(tcp) }
      console.log(`   connect+auth+status median ${fmt(median(inproc))} ms, TCP connect median ${fmt(median(tcp), 2)} ms → ${fmt(median(inproc) / median(tcp), 1)}x`)
    }
    if (runs('move') && process.env.GOTO_BENCH_SKIP_MOVE === undefined) results.move = await moveBench(lab, hosts[0], hosts[1])
  } finally {
    await lab.down()
  }
}

await main()
