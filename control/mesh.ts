/**
 * The commands that ask the mesh: peers, status, move, drain, protect and unprotect. Each checks its
 * own arguments, then reaches one agent over an authenticated libp2p connection (client.ts) and
 * prints a table or, with --json, JSON. control/main.ts loads this module (and with it libp2p) only
 * for these commands, and hands in argv, the environment and the output.
 */
import { parseArgs } from 'node:util'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { readBundle, type Bundle } from '../certs/bundle.js'
import { MoveRenderer } from './move.js'
import { moveError, planDrain, renderDrain, type DrainAssignment, type DrainEvent } from './drain.js'
import type { MoveEvent, MoveOrder } from '../protocol/move-messages.js'
import type { PeerRow } from '../protocol/messages.js'
import { AgentClient } from './client.js'
import { formatPeers, formatStatus, jsonText, printable } from './format.js'
import { circuitRelayOf, parseAgentMultiaddr, peerAddr } from '../protocol/multiaddr.js'
import { AgentUnreachableError, BundleError, ConfigError, GotoError, ProtocolError } from '../protocol/errors.js'
import { USAGE } from './usage.js'
import { parseRate } from './rate-arg.js'

export type MeshCommand = 'peers' | 'status' | 'move' | 'drain' | 'protect' | 'unprotect'

export interface Io { stdout: (s: string) => void, stderr: (s: string) => void }

/** One day: longer than any command should take, and within what setTimeout can count. */
const MAX_TIMEOUT_S = 86_400

interface CommonOptions { bundleDir: string, agent: Multiaddr, json: boolean, timeoutMs: number }

function common (values: Record<string, unknown>, env: NodeJS.ProcessEnv): CommonOptions {
  const bundleDir = (values.bundle as string | undefined) ?? env.GOTO_BUNDLE
  if (bundleDir === undefined || bundleDir === '') throw new ConfigError('--bundle', 'required (or set GOTO_BUNDLE): the operator bundle from `goto ca issue --role operator`')
  const agentRaw = (values.agent as string | undefined) ?? env.GOTO_AGENT
  if (agentRaw === undefined || agentRaw === '') throw new ConfigError('--agent', 'required (or set GOTO_AGENT): the multiaddr of any agent, e.g. /ip4/10.0.0.5/tcp/4001')
  const timeoutRaw = (values.timeout as string | undefined) ?? '10'
  const timeoutS = Number(timeoutRaw)
  if (!Number.isFinite(timeoutS) || timeoutS <= 0 || timeoutS > MAX_TIMEOUT_S) throw new ConfigError('--timeout', `'${timeoutRaw}' is not a number of seconds between 0 and ${MAX_TIMEOUT_S}`)
  return { bundleDir, agent: parseAgentMultiaddr('--agent', agentRaw), json: values.json === true, timeoutMs: timeoutS * 1000 }
}

interface Session {
  client: AgentClient
  bundle: Bundle
  signal: AbortSignal
  /** Ends the --timeout for what follows (a move runs as long as it needs; Ctrl-C stops it). */
  disarm: () => void
}

async function withClient<T> (opts: CommonOptions, fn: (s: Session) => Promise<T>): Promise<T> {
  let bundle: Bundle
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
  const keepAlive = setInterval(() => {}, 60_000)
  const onSigint = (): void => { ac.abort(new GotoError('interrupted')) }
  process.once('SIGINT', onSigint)
  try {
    const client = await AgentClient.connect(bundle, opts.agent, ac.signal)
    try {
      return await fn({ client, bundle, signal: ac.signal, disarm: () => { clearTimeout(timer) } })
    } finally {
      await client.close()
    }
  } catch (err) {
    throw ac.signal.aborted ? ac.signal.reason : err
  } finally {
    clearTimeout(timer)
    clearInterval(keepAlive)
    process.removeListener('SIGINT', onSigint)
  }
}

/**
 * goto move (and --project): locate the agent that runs the container (the project: the one member
 * that runs its containers, refused when they run on several), order the move there, render its events.
 */
async function move (opts: CommonOptions, order: MoveOrder, io: Io): Promise<number> {
  return await withClient(opts, async ({ client, bundle, signal, disarm }) => {
    const where = await client.locate(order.project === true ? { project: order.container } : order.container, signal)
    const source = where.peerId === client.agent.peerId ? client : await AgentClient.connect(bundle, addressOf(where, client.agent.peerId), signal)
    disarm()
    try {
      const last = await followMove(source, order, opts, io, signal)
      if (last === undefined) throw new ProtocolError('the agent ended the move without a result')
      return last.event === 'done' ? 0 : 1
    } finally {
      if (source !== client) await source.close()
    }
  })
}

/** Orders one move of the agent `source` and renders (or, with --json, prints) its events; returns the last. */
async function followMove (source: AgentClient, order: MoveOrder, opts: CommonOptions, io: Io, signal: AbortSignal): Promise<MoveEvent | undefined> {
  const renderer = new MoveRenderer(io.stdout, io.stderr, process.stdout.isTTY === true && !opts.json, order.dryRun)
  let last: MoveEvent | undefined
  for await (const ev of source.move(order, signal)) {
    last = ev
    if (opts.json) io.stdout(jsonText(ev) + '\n')
    else renderer.render(ev)
  }
  return last
}

/**
 * Where to dial a member we were told about (`asked`: the agent we are connected to). An agent
 * behind NAT has only relayed addresses: go through the agent we asked when it is one of its relays,
 * so no other agent needs to be reachable from here.
 */
function addressOf (member: { name: string, peerId: string, addrs: string[] }, asked: string): Multiaddr {
  const addrs = member.addrs.map(a => multiaddr(a))
  const addr = addrs.find(a => circuitRelayOf(a) === asked) ?? addrs[0]
  if (addr === undefined) throw new AgentUnreachableError(`${member.name} announces no address to reach it at`)
  return peerAddr(addr.toString(), member.peerId)
}

/** goto drain: move every running container of `host` to the other members, one after another (a compose project's together). */
async function drain (opts: CommonOptions, host: string, flags: Pick<MoveOrder, 'dryRun' | 'allowBindMounts' | 'allowHostAccess' | 'maxRate'>, io: Io): Promise<number> {
  return await withClient(opts, async ({ client, bundle, signal, disarm }) => {
    const emit = (ev: DrainEvent): void => { if (opts.json) io.stdout(jsonText(ev) + '\n'); else renderDrain(ev, io.stdout, io.stderr) }
    const [peers, status] = await Promise.all([client.peers(signal), client.status(host, signal)])
    const plan = planDrain(host, peers, status.containers)
    emit({ event: 'drain-plan', plan })
    const member = peers.find(p => p.name === host)
    const source = member === undefined || member.self ? client : await AgentClient.connect(bundle, addressOf(member, client.agent.peerId), signal)
    disarm()
    const moved: DrainAssignment[] = []
    const failed: Array<DrainAssignment & { error: string }> = []
    try {
      for (const [i, a] of plan.assignments.entries()) {
        const project = 'project' in a ? { project: true as const } : {}
        emit({ event: 'drain-move', container: a.container, to: a.to, index: i + 1, of: plan.assignments.length, ...project })
        const error = moveError(await followMove(source, { container: a.container, to: a.to, ...flags, ...project }, opts, io, signal))
        if (error === undefined) moved.push(a)
        else failed.push({ ...a, error })
      }
    } finally {
      if (source !== client) await source.close()
    }
    emit({ event: 'drained', host, dryRun: flags.dryRun, moved, failed, left: plan.left })
    return failed.length > 0 ? 1 : 0
  })
}

/**
 * How long `goto peers` waits for one member's status (whether it takes live moves): a status asks
 * that member's engine and CRIU (`criu check`, 0.3 s, kept 10 min); a member slower than this is
 * shown without it rather than holding the table back.
 */
const PEER_LIVE_ASK_MS = 10_000

/** The peers, each alive agent with whether it takes live moves (its status, asked of all at once). */
async function withLive (client: AgentClient, rows: PeerRow[], signal: AbortSignal): Promise<PeerRow[]> {
  return await Promise.all(rows.map(async r => {
    if (r.state !== 'alive' || r.role !== 'agent') return r
    const s = await client.status(r.name, AbortSignal.any([signal, AbortSignal.timeout(PEER_LIVE_ASK_MS)])).catch(() => undefined)
    return s?.live === undefined ? r : { ...r, live: s.live }
  }))
}

/** Runs `goto COMMAND args...` for a mesh command; returns the exit status or throws a GotoError. */
export async function runMeshCommand (command: MeshCommand, rest: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  // --live takes no value but one: --live=auto (parseArgs has no optional values).
  const liveAuto = rest.includes('--live=auto')
  const wrongLive = rest.find(a => a.startsWith('--live=') && a !== '--live=auto')
  if (wrongLive !== undefined) { io.stderr(`goto: error: ${wrongLive}: --live takes no value but 'auto' (try 'goto --help')\n`); return 2 }
  let parsed
  try {
    parsed = parseArgs({
      args: rest.map(a => a === '--live=auto' ? '--live' : a),
      strict: true,
      allowPositionals: true,
      options: {
        bundle: { type: 'string' },
        agent: { type: 'string' },
        json: { type: 'boolean' },
        timeout: { type: 'string' },
        to: { type: 'string' },
        'dry-run': { type: 'boolean' },
        'allow-bind-mounts': { type: 'boolean' },
        'allow-host-access': { type: 'boolean' },
        'max-rate': { type: 'string' },
        live: { type: 'boolean' },
        project: { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    })
  } catch (err) {
    io.stderr(`goto: error: ${(err as Error).message}\n`)
    return 2
  }
  if (parsed.values.help === true) { io.stdout(USAGE + '\n'); return 0 }
  const maxPositionals = command === 'peers' ? 0 : 1
  for (const opt of ['to', 'project', 'dry-run', 'allow-bind-mounts', 'allow-host-access', 'max-rate', 'live'] as const) {
    const allowed = opt === 'to' || opt === 'project' || opt === 'live' ? ['move'] : ['move', 'drain']
    if (parsed.values[opt] !== undefined && !allowed.includes(command)) { io.stderr(`goto: error: --${opt} belongs to 'goto ${allowed.join("' and 'goto ")}' (try 'goto --help')\n`); return 2 }
  }
  if (parsed.positionals.length > maxPositionals) {
    io.stderr(`goto: error: unexpected argument '${parsed.positionals[maxPositionals]}' (try 'goto --help')\n`)
    return 2
  }
  // What the command itself lacks is said before what the connection lacks.
  const project = parsed.values.project as string | undefined
  if (command === 'move' && project !== undefined && (project === '' || parsed.positionals[0] !== undefined)) throw new ConfigError('--project', "'goto move --project PROJECT --to NAME' names a project, and no container")
  if (command === 'move' && project !== undefined && parsed.values.live === true) throw new ConfigError('--live', 'a project moves with a pause, not live: move its containers one by one with --live')
  if (command === 'move' && project === undefined && parsed.positionals[0] === undefined) throw new ConfigError('CONTAINER', "missing: 'goto move CONTAINER --to NAME'")
  if (command === 'move' && (parsed.values.to === undefined || parsed.values.to === '')) throw new ConfigError('--to', "required: the name of the destination member (see 'goto peers')")
  if (command === 'drain' && parsed.positionals[0] === undefined) throw new ConfigError('NAME', "missing: 'goto drain NAME' (the member to empty; see 'goto peers')")
  if ((command === 'protect' || command === 'unprotect') && parsed.positionals[0] === undefined) throw new ConfigError('CONTAINER', `missing: 'goto ${command} CONTAINER'`)
  const maxRate = parsed.values['max-rate'] === undefined ? {} : { maxRate: parseRate(parsed.values['max-rate']) }
  const opts = common(parsed.values, env)
  const flags = { dryRun: parsed.values['dry-run'] === true, allowBindMounts: parsed.values['allow-bind-mounts'] === true, allowHostAccess: parsed.values['allow-host-access'] === true, ...maxRate }
  if (command === 'move' && project !== undefined) {
    return await move(opts, { container: project, project: true, to: parsed.values.to as string, ...flags }, io)
  }
  if (command === 'move') {
    return await move(opts, { container: parsed.positionals[0], to: parsed.values.to as string, ...flags, ...parsed.values.live === true ? { live: liveAuto ? 'auto' as const : true } : {} }, io)
  }
  if (command === 'drain') {
    return await drain(opts, parsed.positionals[0], flags, io)
  }
  if (command === 'protect' || command === 'unprotect') {
    const container = parsed.positionals[0]
    const { reply, host } = await withClient(opts, async ({ client, bundle, signal }) => {
      const where = await client.locate(container, signal)
      if (where.peerId === client.agent.peerId) return { reply: await client.protect(command, container, signal), host: where.name }
      const owner = await AgentClient.connect(bundle, addressOf(where, client.agent.peerId), signal)
      try {
        return { reply: await owner.protect(command, container, signal), host: where.name }
      } finally {
        await owner.close()
      }
    })
    io.stdout((opts.json ? jsonText({ ...reply, host }, 2) : printable(`${reply.container} on ${host}: ${reply.protected ? `protected${reply.epoch > 0 ? ` (epoch ${reply.epoch})` : ''}` : 'not protected'}`)) + '\n')
    return 0
  }
  if (command === 'peers') {
    const rows = await withClient(opts, async ({ client, signal }) => await withLive(client, await client.peers(signal), signal))
    io.stdout((opts.json ? jsonText(rows, 2) : formatPeers(rows)) + '\n')
  } else {
    const status = await withClient(opts, async ({ client, signal }) => await client.status(parsed.positionals[0], signal))
    io.stdout((opts.json ? jsonText(status, 2) : formatStatus(status)) + '\n')
  }
  return 0
}

