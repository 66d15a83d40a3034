/**
 * Move benchmarks (issue 3), each against a baseline measured in the same run on the same two lab
 * engines:
 *   1. first move of a container whose image is 512 MiB   vs  docker save | docker load
 *   2. re-move after a 1 MiB change                       vs  the same save | load
 *   3. downtime, 300 MiB image and a 1 MiB change          vs  a naive pause + commit + save|load + create + start
 *   4. peak agent RSS growth while a 1 GiB layer passes    (target: < 64 MiB)
 */
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { readFile } from 'node:fs/promises'
import { multiaddr } from '@multiformats/multiaddr'
import type { Lab, LabHost } from '../test/lab/index.js'
import { readBundle } from '../certs/index.js'
import { AgentClient } from '../control/client.js'
import type { MoveEvent } from '../protocol/move-messages.js'

const run = promisify(execFile)
const MiB = 1024 * 1024

async function docker (h: LabHost, ...args: string[]): Promise<string> {
  const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 64 * MiB })
  return stdout.trim()
}

/** An image from the lab's base with one layer of `mib` MiB of random bytes. */
async function bigImage (h: LabHost, tag: string, mib: number): Promise<void> {
  await docker(h, 'run', '--name', `${tag.replace(/\W/g, '-')}-build`, 'gotolab/base:latest', 'sh', '-c', `head -c ${mib}m /dev/urandom > /blob`)
  await docker(h, 'commit', `${tag.replace(/\W/g, '-')}-build`, tag)
  await docker(h, 'rm', `${tag.replace(/\W/g, '-')}-build`)
}

/** `docker save IMAGE | docker load` from one engine to another; returns milliseconds. */
async function saveLoad (from: LabHost, to: LabHost, image: string): Promise<number> {
  const start = performance.now()
  await new Promise<void>((resolve, reject) => {
    const save = spawn('/usr/bin/docker', ['-H', from.dockerHost, 'save', image], { stdio: ['ignore', 'pipe', 'inherit'] })
    const load = spawn('/usr/bin/docker', ['-H', to.dockerHost, 'load', '-q'], { stdio: ['pipe', 'ignore', 'inherit'] })
    save.stdout.pipe(load.stdin)
    load.on('exit', code => { code === 0 ? resolve() : reject(new Error(`docker load exited ${code}`)) })
    save.on('error', reject)
  })
  return performance.now() - start
}

async function rssMiB (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024
}

interface Timed { ms: number, done: Extract<MoveEvent, { event: 'done' }> }

async function move (lab: Lab, from: LabHost, container: string, to: string): Promise<Timed> {
  const bundle = await readBundle(lab.operatorBundle)
  const client = await AgentClient.connect(bundle, multiaddr(from.agentAddr), AbortSignal.timeout(10_000))
  try {
    const start = performance.now()
    let last: MoveEvent | undefined
    for await (const ev of client.move({ container, to, dryRun: false, allowBindMounts: false }, AbortSignal.timeout(600_000))) last = ev
    if (last?.event !== 'done') throw new Error(`move failed: ${JSON.stringify(last)}`)
    return { ms: performance.now() - start, done: last }
  } finally {
    await client.close()
  }
}

const fmt = (n: number, d = 2): string => n.toFixed(d)
const verdict = (ok: boolean): string => ok ? 'met' : 'MISSED'

export async function moveBench (lab: Lab, A: LabHost, B: LabHost): Promise<Record<string, unknown>> {
  const results: Record<string, unknown> = {}

  console.log('\n== move 1: first move of a container with a 512 MiB image, vs docker save | docker load')
  await bigImage(A, 'bench/big:512', 512)
  const size512 = Number(await docker(A, 'image', 'inspect', '--format', '{{.Size}}', 'bench/big:512'))
  const baseline = await saveLoad(A, B, 'bench/big:512')
  await docker(B, 'rmi', 'bench/big:512')
  await docker(A, 'run', '-d', '--name', 'm512', 'bench/big:512', 'sleep', '36000')
  const first = await move(lab, A, 'm512', B.name)
  results.firstMove = { imageBytes: size512, moveMs: first.ms, saveLoadMs: baseline, ratio: first.ms / baseline, target: 1.2, bytesSent: first.done.bytesSent }
  console.log(`   move ${fmt(first.ms / 1000)} s, save|load ${fmt(baseline / 1000)} s → ${fmt(first.ms / baseline)}x (target ≤ 1.2x: ${verdict(first.ms / baseline <= 1.2)})`)

  console.log('\n== move 2: re-move after a 1 MiB change (back to the first host)')
  await docker(B, 'exec', 'm512', 'sh', '-c', 'head -c 1m /dev/urandom > /change')
  const again = await move(lab, B, 'm512', A.name)
  const bytesShare = again.done.bytesSent / size512
  results.reMove = { moveMs: again.ms, bytesSent: again.done.bytesSent, imageBytes: size512, bytesShare, timeRatio: again.ms / baseline, targets: { bytesShare: 0.01, timeRatio: 0.1 } }
  console.log(`   ${fmt(again.done.bytesSent / MiB)} MiB sent = ${fmt(bytesShare * 100)} % of the image (target ≤ 1 %: ${verdict(bytesShare <= 0.01)}); ${fmt(again.ms / 1000)} s = ${fmt(again.ms / baseline)}x save|load (target ≤ 0.1x: ${verdict(again.ms / baseline <= 0.1)})`)
  await docker(A, 'rm', '-f', 'm512')

  console.log('\n== move 3: downtime with a 300 MiB image and a 1 MiB change, vs naive pause + commit + save|load + create + start')
  await bigImage(A, 'bench/big:300', 300)
  await docker(A, 'run', '-d', '--name', 'naive', 'bench/big:300', 'sleep', '36000')
  await docker(A, 'exec', 'naive', 'sh', '-c', 'head -c 1m /dev/urandom > /change')
  const t0 = performance.now()
  await docker(A, 'pause', 'naive')
  await docker(A, 'commit', 'naive', 'bench/naive:frozen')
  await saveLoad(A, B, 'bench/naive:frozen')
  await docker(B, 'create', '--name', 'naive', 'bench/naive:frozen', 'sleep', '36000')
  await docker(B, 'start', 'naive')
  const naiveMs = performance.now() - t0
  await docker(B, 'rm', '-f', 'naive')
  await docker(A, 'rm', '-f', 'naive')
  // The destination must not keep the 300 MiB layer from the naive run: our move starts without it.
  await docker(B, 'rmi', 'bench/naive:frozen')
  await docker(A, 'run', '-d', '--name', 'm300', 'bench/big:300', 'sleep', '36000')
  await docker(A, 'exec', 'm300', 'sh', '-c', 'head -c 1m /dev/urandom > /change')
  const m300 = await move(lab, A, 'm300', B.name)
  const down = m300.done.downtimeMs
  results.downtime = { downtimeMs: down, naiveMs, ratio: down / naiveMs, targets: { ms: 1000, ratio: 0.25 } }
  console.log(`   downtime ${down} ms, naive ${fmt(naiveMs, 0)} ms → ${fmt(down / naiveMs)}x (targets < 1000 ms: ${verdict(down < 1000)}, ≤ 0.25x: ${verdict(down / naiveMs <= 0.25)})`)
  await docker(B, 'rm', '-f', 'm300')

  console.log('\n== move 4: agent RSS while a 1 GiB layer passes')
  await bigImage(A, 'bench/big:1024', 1024)
  await docker(A, 'run', '-d', '--name', 'm1g', 'bench/big:1024', 'sleep', '36000')
  const pids = { source: A.agentPid as number, destination: B.agentPid as number }
  const base = { source: await rssMiB(pids.source), destination: await rssMiB(pids.destination) }
  const peak = { ...base }
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      peak.source = Math.max(peak.source, await rssMiB(pids.source))
      peak.destination = Math.max(peak.destination, await rssMiB(pids.destination))
      await new Promise(resolve => setTimeout(resolve, 50))
    }
  })()
  const m1g = await move(lab, A, 'm1g', B.name)
  sampling = false
  await sampler
  const growth = { source: peak.source - base.source, destination: peak.destination - base.destination }
  results.rss1GiB = { moveMs: m1g.ms, baseMiB: base, peakMiB: peak, growthMiB: growth, target: 64 }
  console.log(`   growth: source ${fmt(growth.source, 1)} MiB, destination ${fmt(growth.destination, 1)} MiB (target < 64 MiB: ${verdict(Math.max(growth.source, growth.destination) < 64)}); move took ${fmt(m1g.ms / 1000)} s`)
  await docker(B, 'rm', '-f', 'm1g')
  return results
}
