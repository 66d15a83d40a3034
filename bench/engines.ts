/**
 * Engine kinds (issue 17), in their own lab of three hosts (Docker 20.10, 26 with overlay2, 28 with
 * the containerd image store): the first move of a container on a 200 MiB image from the 26 host to
 * the 20.10 host (the baseline) and to the containerd-store host, end to end and its downtime, as
 * the ratio containerd-store / 20.10 in the same run. Needs the engines .ci/engines fetched.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Lab, waitFor, type LabHost } from '../test/lab/index.js'
import { moveJson } from '../test/fixtures/move-cli.js'
import type { PeerRow } from '../protocol/messages.js'

const run = promisify(execFile)
const IMAGE_MIB = 200

async function docker (h: LabHost, ...args: string[]): Promise<string> {
  const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
  return stdout.trim()
}

export async function enginesBench (prefix: string, subnet: string): Promise<Record<string, unknown>> {
  const lab = new Lab({ prefix, subnet, agentProfile: 'default', log: line => { console.log(`lab: ${line}`) } })
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { void lab.down().finally(() => process.exit(130)) })
  try {
    await lab.down()
    const [d20, d26, d28c] = await lab.up([
      { name: 'd20', provider: 'vagrant' },
      { name: 'd26', provider: 'aws', engine: 'docker-26' },
      { name: 'd28c', provider: 'azure', engine: 'docker-28-containerd' }
    ])
    const hosts = [d20, d26, d28c]
    for (const h of hosts) {
      await waitFor(async () => {
        const r = await lab.cli(['peers', '--json'], { agent: h.agentAddr })
        return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).filter(p => p.state === 'alive').length === hosts.length
      }, { timeoutMs: 120_000, intervalMs: 250, what: `every host alive at ${h.name}` })
    }
    console.log(`\n== engines: first move of a ${IMAGE_MIB} MiB image from docker 26 (overlay2) to 20.10 and to 28 with the containerd store`)
    await docker(d26, 'run', '--name', 'bigbuild', 'gotolab/base:latest', 'sh', '-c', `head -c ${IMAGE_MIB}m /dev/urandom > /big.bin`)
    await docker(d26, 'commit', 'bigbuild', 'big:v1')
    await docker(d26, 'rm', 'bigbuild')
    const out: Record<string, { ms: number, downtimeMs: number, bytesSent: number }> = {}
    for (const [to, name] of [[d20, 'big20'], [d28c, 'big28c']] as const) {
      await docker(d26, 'run', '-d', '--name', name, 'big:v1', 'sleep', '100000')
      const t0 = Date.now()
      const r = await moveJson(name, to.name, { controlMain: lab.controlMain, bundle: lab.operatorBundle, agent: d26.agentAddr })
      const last = r.events.at(-1)
      if (last?.event !== 'done') throw new Error(`move to ${to.name} failed: ${JSON.stringify(last)} ${r.stderr}`)
      out[to.name] = { ms: Date.now() - t0, downtimeMs: last.downtimeMs, bytesSent: last.bytesSent }
      console.log(`   26 → ${to.name}: ${out[to.name].ms} ms end to end, downtime ${last.downtimeMs} ms, ${last.bytesSent} bytes sent`)
    }
    const ratio = out.d28c.ms / out.d20.ms
    console.log(`   ratio containerd store / 20.10: ${ratio.toFixed(2)}x end to end, ${(out.d28c.downtimeMs / out.d20.downtimeMs).toFixed(2)}x downtime`)
    return { imageMiB: IMAGE_MIB, moves: out, ratio }
  } finally {
    await lab.down()
  }
}
