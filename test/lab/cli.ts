#!/usr/bin/env node
/**
 * The lab CLI: `npm run lab -- up 3`, `down`, `kill NAME`, `start NAME`, `partition NAME...`,
 * `heal`, `status`. Each call is its own process; they share the lab through <root>/lab.json.
 * This is the lab's composition root: the only place that reads argv.
 */
import { parseArgs } from 'node:util'
import { Lab, defaultHosts, type LabHost, type LabOptions } from './lab.js'
import { ENGINE_KINDS, isEngineKind, type EngineKind } from './engine.js'
import { LabAlreadyUpError, LabConfigError, LabError, LabNotRootError } from './errors.js'
import { GotoError } from '../../protocol/errors.js'

const USAGE = `Usage: npm run lab -- <command> [options]
       node dist/test/lab/cli.js <command> [options]

Simulated Docker hosts on this machine: one network namespace, dockerd and Go-To agent per host.

Commands:
  up [N]             build N hosts (default 3: vagrant-1, aws-1, azure-1; then vagrant-2, ...)
  down               remove the lab, and whatever a crashed run left behind
  kill NAME          the host dies: its agent, engine and containers are SIGKILLed
  start NAME         bring a killed host back (engine, then agent)
  partition NAME...  the named hosts on one side, all others on the other; heal undoes it
  heal               remove the partition
  status             show each host's namespace, engine and agent

Options:
  --no-agents        up: start engines only
  --nat K            up: put the last K hosts behind NAT (a masquerading router each, no inbound;
                     their agents run with --no-inbound and are reached through relays)
  --engines K,K,...  up: the engine kind of each host in order (default docker-20 for every host;
                     kinds: ${ENGINE_KINDS.join(', ')}; the newer ones need .ci/engines, podman
                     needs Debian's podman package)
  --root DIR         data root (default /var/lib/gotolab)
  --run-root DIR     exec roots and sockets (default /run/gotolab)
  --prefix NAME      names of namespaces, bridge and veths (default gotolab)
  --subnet CIDR      the bridge's subnet (default 10.213.0.0/24)
  --nat-subnet CIDR  the private subnet behind NAT routers (default 10.213.1.0/24)
  -h, --help         show this help

Needs root. Agents start only if dist/agent/main.js is built (npm run build).`

class UsageError extends GotoError {}

function table (rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map(r => r[i].length)))
  return rows.map(r => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n')
}

function hostTable (hosts: LabHost[], agents: boolean): string {
  return table([
    ['NAME', 'PROVIDER', 'ENGINE', 'IP', 'AGENT', 'DOCKER_HOST'],
    ...hosts.map(h => [h.name, h.provider, h.engine, h.nat === undefined ? h.ip : `${h.ip} (NAT ${h.nat.publicIp})`, agents && h.agentPid !== undefined ? h.agentAddr : '-', h.dockerHost])
  ])
}

async function main (argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'no-agents': { type: 'boolean', default: false },
      nat: { type: 'string' },
      engines: { type: 'string' },
      root: { type: 'string' },
      'run-root': { type: 'string' },
      prefix: { type: 'string' },
      subnet: { type: 'string' },
      'nat-subnet': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  const [command, ...rest] = positionals
  if (values.help || command === undefined || command === 'help') {
    console.log(USAGE)
    return command === undefined && !values.help ? 2 : 0
  }
  const options: LabOptions = {
    root: values.root,
    runRoot: values['run-root'],
    prefix: values.prefix,
    subnet: values.subnet,
    natSubnet: values['nat-subnet'],
    agents: !values['no-agents'],
    log: (line) => { console.log(`lab: ${line}`) }
  }
  if (process.getuid?.() !== 0) throw new LabNotRootError('the lab needs root (network namespaces, iptables, dockerd); run it with sudo')
  const lab = new Lab(options)
  const needNames = (min: number): void => {
    if (rest.length < min) throw new UsageError(`${command} needs ${min === 1 ? 'a host name' : 'host names'}; see --help`)
  }

  switch (command) {
    case 'up': {
      const n = rest[0] === undefined ? 3 : Number(rest[0])
      if (!Number.isInteger(n) || n < 1 || n > 200 || rest.length > 1) throw new UsageError(`up takes one number of hosts (1-200), got '${rest.join(' ')}'`)
      const natCount = values.nat === undefined ? 0 : Number(values.nat)
      if (!Number.isInteger(natCount) || natCount < 0 || natCount >= n) throw new UsageError(`--nat takes a number of hosts from 0 to ${n - 1} (the first host must be reachable), got '${values.nat ?? ''}'`)
      const kinds = (values.engines ?? '').split(',').filter(k => k !== '')
      if (kinds.length > n) throw new UsageError(`--engines names ${kinds.length} kinds for ${n} hosts`)
      const bad = kinds.find(k => !isEngineKind(k))
      if (bad !== undefined) throw new UsageError(`--engines: unknown kind '${bad}' (kinds: ${ENGINE_KINDS.join(', ')})`)
      console.log(`lab: up ${n} hosts under ${lab.config.root} (prefix ${lab.config.prefix})`)
      try {
        const hosts = await lab.up(defaultHosts(n).map((h, i) => ({ ...h, nat: i >= n - natCount, engine: kinds[i] as EngineKind | undefined })))
        console.log(hostTable(hosts, lab.config.agents))
        console.log(`operator: GOTO_BUNDLE=${lab.operatorBundle} GOTO_AGENT=${hosts[0].agentAddr}`)
      } catch (err) {
        if (!(err instanceof LabAlreadyUpError) && !(err instanceof LabConfigError)) {
          console.error('lab: up failed; what was made is left for inspection (logs under ' +
            `${lab.config.root}/<host>/); run \`npm run lab -- down\` to remove it`)
        }
        throw err
      }
      return 0
    }
    case 'down': {
      const r = await lab.down()
      if (r.namespaces.length > 0) console.log(`lab: removed namespaces ${r.namespaces.join(', ')}`)
      if (r.links.length > 0) console.log(`lab: removed links ${r.links.join(', ')}`)
      if (r.removed.length > 0) console.log(`lab: removed ${r.removed.join(', ')}`)
      return 0
    }
    case 'kill': {
      needNames(1)
      const l = await Lab.open(options)
      for (const n of rest) l.host(n) // all names known before anything dies
      for (const n of rest) await l.kill(n)
      return 0
    }
    case 'start': {
      needNames(1)
      const l = await Lab.open(options)
      for (const n of rest) l.host(n)
      for (const n of rest) await l.start(n)
      return 0
    }
    case 'partition':
      needNames(1)
      await (await Lab.open(options)).partition(...rest)
      return 0
    case 'heal':
      await (await Lab.open(options)).heal()
      return 0
    case 'status': {
      const l = await Lab.open(options)
      const rows = await l.status()
      console.log(table([
        ['NAME', 'PROVIDER', 'IP', 'NETNS', 'DOCKERD', 'ENGINE', 'AGENT', 'SIDE'],
        ...rows.map(r => [
          r.name, r.provider, r.ip, r.netns ? 'yes' : 'MISSING',
          r.dockerd + (r.dockerdPid !== undefined ? ` (${r.dockerdPid})` : ''),
          r.engine,
          r.agent + (r.agentPid !== undefined ? ` (${r.agentPid})` : ''),
          r.side ?? '-'
        ])
      ]))
      return 0
    }
    default:
      throw new UsageError(`unknown command '${command}'; see --help`)
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
}, (err: unknown) => {
  if (err instanceof UsageError || (err instanceof Error && err.name === 'TypeError' && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
    console.error(`lab: ${err.message}`)
    process.exitCode = 2
  } else if (err instanceof LabError || err instanceof GotoError) {
    console.error(`lab: ${err.name}: ${err.message}`)
    process.exitCode = 1
  } else {
    console.error('lab: unexpected error:', err)
    process.exitCode = 1
  }
})
