#!/usr/bin/env node
/**
 * goto: the operator CLI and its composition root (the only place that reads argv and env).
 * `goto ca ...` manages the mesh CA (certs/cli.ts); `goto peers` and `goto status` ask one agent
 * over an authenticated libp2p connection (client.ts) and print a table or, with --json, JSON.
 */
import '../protocol/polyfill.js'
import { parseArgs } from 'node:util'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { readBundle } from '../certs/index.js'
import { runCaCommand } from '../certs/cli.js'
import { AgentClient } from './client.js'
import { formatPeers, formatStatus } from './format.js'
import { parseTcpMultiaddr } from '../protocol/multiaddr.js'
import { GOTO_VERSION } from '../protocol/version.js'
import { AgentUnreachableError, BundleError, ConfigError, GotoError } from '../protocol/errors.js'

const USAGE = `Usage: goto COMMAND [options]

Operator CLI of the Go-To mesh.

Commands:
  peers                 list the mesh as the agent sees it (name, state, address, engine, labels)
  status [NAME]         status of the agent (or of the member NAME): version, uptime, engine, containers
  ca ...                the mesh CA: init, issue, revoke, list (see 'goto ca --help')

Options for peers and status:
  --bundle DIR          operator bundle from 'goto ca issue --role operator' (env GOTO_BUNDLE)
  --agent MULTIADDR     agent to ask, e.g. /ip4/10.0.0.5/tcp/4001 (env GOTO_AGENT); /p2p/<id> optional
  --json                machine-readable output
  --timeout SECONDS     give up after this long (default 10)
  -h, --help            show this help
  --version             print the version

Exit status: 0 success, 1 failure (agent unreachable, certificate rejected, unknown peer), 2 usage.`

/** One day: longer than any command should take, and within what setTimeout can count. */
const MAX_TIMEOUT_S = 86_400

interface Io { stdout: (s: string) => void, stderr: (s: string) => void }

interface CommonOptions { bundleDir: string, agent: Multiaddr, json: boolean, timeoutMs: number }

function common (values: Record<string, unknown>, env: NodeJS.ProcessEnv): CommonOptions {
  const bundleDir = (values.bundle as string | undefined) ?? env.GOTO_BUNDLE
  if (bundleDir === undefined || bundleDir === '') throw new ConfigError('--bundle', 'required (or set GOTO_BUNDLE): the operator bundle from `goto ca issue --role operator`')
  const agentRaw = (values.agent as string | undefined) ?? env.GOTO_AGENT
  if (agentRaw === undefined || agentRaw === '') throw new ConfigError('--agent', 'required (or set GOTO_AGENT): the multiaddr of any agent, e.g. /ip4/10.0.0.5/tcp/4001')
  const timeoutRaw = (values.timeout as string | undefined) ?? '10'
  const timeoutS = Number(timeoutRaw)
  if (!Number.isFinite(timeoutS) || timeoutS <= 0 || timeoutS > MAX_TIMEOUT_S) throw new ConfigError('--timeout', `'${timeoutRaw}' is not a number of seconds between 0 and ${MAX_TIMEOUT_S}`)
  return { bundleDir, agent: parseTcpMultiaddr('--agent', agentRaw), json: values.json === true, timeoutMs: timeoutS * 1000 }
}

async function withClient<T> (opts: CommonOptions, fn: (client: AgentClient, signal: AbortSignal) => Promise<T>): Promise<T> {
  let bundle
  try {
    bundle = await readBundle(opts.bundleDir)
  } catch (err) {
    // Our own certificate's troubles (expired, wrong key, missing file) are not the agent's.
    throw new BundleError(`operator bundle ${(err as Error).message}`, { cause: err })
  }
  if (bundle.role !== 'operator') throw new ConfigError('--bundle', `${opts.bundleDir} holds an ${bundle.role} certificate; the CLI needs one issued with --role operator`)
  // A ref'd timer, unlike AbortSignal.timeout, also keeps the process alive while libp2p waits.
  const ac = new AbortController()
  const timer = setTimeout(() => { ac.abort(new AgentUnreachableError(`no answer from ${opts.agent.toString()} within ${opts.timeoutMs / 1000}s`)) }, opts.timeoutMs)
  try {
    const client = await AgentClient.connect(bundle, opts.agent, ac.signal)
    try {
      return await fn(client, ac.signal)
    } finally {
      await client.close()
    }
  } catch (err) {
    throw ac.signal.aborted ? ac.signal.reason : err
  } finally {
    clearTimeout(timer)
  }
}

async function run (argv: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const [command, ...rest] = argv
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') { io.stdout(USAGE + '\n'); return command === undefined ? 2 : 0 }
  if (command === '--version') { io.stdout(GOTO_VERSION + '\n'); return 0 }
  if (command === 'ca') return await runCaCommand(rest, io)
  if (command !== 'peers' && command !== 'status') {
    io.stderr(`goto: error: unknown command '${command}' (try 'goto --help')\n`)
    return 2
  }
  let parsed
  try {
    parsed = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: true,
      options: {
        bundle: { type: 'string' },
        agent: { type: 'string' },
        json: { type: 'boolean' },
        timeout: { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    })
  } catch (err) {
    io.stderr(`goto: error: ${(err as Error).message}\n`)
    return 2
  }
  if (parsed.values.help === true) { io.stdout(USAGE + '\n'); return 0 }
  const maxPositionals = command === 'status' ? 1 : 0
  if (parsed.positionals.length > maxPositionals) {
    io.stderr(`goto: error: unexpected argument '${parsed.positionals[maxPositionals]}' (try 'goto --help')\n`)
    return 2
  }
  const opts = common(parsed.values, env)
  if (command === 'peers') {
    const rows = await withClient(opts, async (c, signal) => await c.peers(signal))
    io.stdout((opts.json ? JSON.stringify(rows, null, 2) : formatPeers(rows)) + '\n')
  } else {
    const status = await withClient(opts, async (c, signal) => await c.status(parsed.positionals[0], signal))
    io.stdout((opts.json ? JSON.stringify(status, null, 2) : formatStatus(status)) + '\n')
  }
  return 0
}

async function main (): Promise<number> {
  const io: Io = { stdout: s => process.stdout.write(s), stderr: s => process.stderr.write(s) }
  try {
    return await run(process.argv.slice(2), process.env, io)
  } catch (err) {
    const e = err as Error
    if (err instanceof ConfigError) { io.stderr(`goto: error: ${e.message}\n`); return 2 }
    if (err instanceof GotoError) { io.stderr(`goto: error: ${e.message}\n`); return 1 }
    io.stderr(`goto: error: ${e.message}\n`)
    return 1
  }
}

const code = await main()
// libp2p may hold sockets a moment after stop(); the CLI is done, so leave now.
process.exit(code)
