/**
 * `goto drain NAME`: planned maintenance — every running container of the member NAME moves to the
 * other alive members, one move after another through the move pipeline (the same preflight,
 * pre-copy, short freeze and rollback as `goto move`), spread so that the members with the fewest
 * containers receive first.
 *
 *   const plan = planDrain('aws-1', await client.peers(signal), (await client.status('aws-1', signal)).containers)
 *   for (const a of plan.assignments) ... source.move({ container: a.container, to: a.to, ... })
 *
 * Containers that are not running (created, exited, paused) cannot be moved and are reported as
 * left behind. A failed move leaves that container running on NAME (the move rolls back) and the
 * drain goes on with the others; the exit status then says not everything moved.
 */
import type { ContainerRow, PeerRow } from '../protocol/messages.js'
import type { MoveEvent } from '../protocol/move-messages.js'
import { DestinationUnavailableError, UnknownPeerError } from '../protocol/errors.js'
import { printable } from './format.js'

export interface DrainAssignment { container: string, to: string }

export interface DrainPlan {
  host: string
  assignments: DrainAssignment[]
  /** Containers that stay, with why. */
  left: Array<{ container: string, state: string }>
}

/** What the drain reports as it goes (with --json, one per line, among the moves' own events). */
export type DrainEvent =
  | { event: 'drain-plan', plan: DrainPlan }
  | { event: 'drain-move', container: string, to: string, index: number, of: number }
  | { event: 'drained', host: string, dryRun: boolean, moved: DrainAssignment[], failed: Array<DrainAssignment & { error: string }>, left: DrainPlan['left'] }

/**
 * Which member each running container of `host` goes to: members other than `host` that are
 * alive agents, each next container to the one holding the fewest (its running count as its
 * peers row says, plus what this drain already gave it; ties by name). Containers in name order,
 * so the same mesh gives the same plan.
 *
 * Errors: UnknownPeerError (no member `host`), DestinationUnavailableError (`host` is not alive,
 * or no other alive agent to receive).
 */
export function planDrain (host: string, peers: readonly PeerRow[], containers: readonly ContainerRow[]): DrainPlan {
  const source = peers.find(p => p.name === host)
  if (source === undefined) throw new UnknownPeerError(`no member named '${host}' (known: ${peers.map(p => p.name).join(', ') || 'none'})`)
  if (source.state !== 'alive') throw new DestinationUnavailableError(`${host} is ${source.state}: a drain moves containers off a live host (a dead host's protected containers fail over by themselves)`)
  const load = new Map(peers
    .filter(p => p.name !== host && p.state === 'alive' && p.role === 'agent')
    .map(p => [p.name, p.containers ?? 0]))
  const running = containers.filter(c => c.state === 'running').sort((a, b) => a.name.localeCompare(b.name))
  if (running.length > 0 && load.size === 0) throw new DestinationUnavailableError(`no other alive member can take the containers of ${host}`)
  const assignments = running.map(c => {
    const [to] = [...load.entries()].sort(([an, al], [bn, bl]) => al - bl || an.localeCompare(bn))[0]
    load.set(to, (load.get(to) ?? 0) + 1)
    return { container: c.name, to }
  })
  const left = containers.filter(c => c.state !== 'running').map(c => ({ container: c.name, state: c.state }))
  return { host, assignments, left }
}

export type Output = (s: string) => void

/** Plain lines for a person; the moves in between are rendered by the MoveRenderer. What agents said is made printable. */
export function renderDrain (ev: DrainEvent, toOut: Output, toErr: Output): void {
  const out = (s: string): void => { toOut(printable(s) + '\n') }
  const err = (s: string): void => { toErr(printable(s) + '\n') }
  switch (ev.event) {
    case 'drain-plan': {
      const { host, assignments, left } = ev.plan
      out(`drain ${host}: ${assignments.length} running container(s) to move${assignments.length > 0 ? ': ' + assignments.map(a => `${a.container} → ${a.to}`).join(', ') : ''}`)
      for (const l of left) out(`  ${l.container} is ${l.state}: only running containers move; it stays on ${host}`)
      break
    }
    case 'drain-move':
      toOut('\n')
      out(`[${ev.index}/${ev.of}] ${ev.container} → ${ev.to}`)
      break
    case 'drained': {
      const line = ev.dryRun
        ? `dry run: nothing changed; ${ev.moved.length} container(s) would move, ${ev.failed.length} would be refused, ${ev.left.length} not running`
        : `drained ${ev.host}: ${ev.moved.length} moved, ${ev.failed.length} failed, ${ev.left.length} not running (left)`
      if (ev.failed.length > 0) {
        err(line)
        for (const f of ev.failed) err(`  ${f.container} (to ${f.to}) still runs on ${ev.host}: ${f.error}`)
      } else {
        out(line)
      }
      break
    }
  }
}

/** The error of a finished move, or undefined when it succeeded. */
export function moveError (last: MoveEvent | undefined): string | undefined {
  if (last === undefined) return 'the agent ended the move without a result'
  return last.event === 'failed' ? last.error.message : undefined
}
