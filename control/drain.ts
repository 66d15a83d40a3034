/**
 * `goto drain NAME`: planned maintenance — every running container of the member NAME moves to the
 * other alive members, one move after another through the move pipeline (the same preflight,
 * pre-copy, short freeze and rollback as `goto move`), spread so that the members with the fewest
 * containers receive first. The containers of one compose project (`com.docker.compose.project`,
 * the `project` of a status row) go together: one `goto move --project` transaction to one member,
 * counted there as that many containers.
 *
 *   const plan = planDrain('aws-1', await client.peers(signal), (await client.status('aws-1', signal)).containers)
 *   for (const a of plan.assignments) ... source.move({ container: a.container, to: a.to, ... })
 *
 * Containers that are not running (created, exited, paused) cannot be moved and are reported as
 * left behind (a project with one of them fails as a whole: its move refuses a stopped member). A
 * failed move leaves that container (a project: all its containers) running on NAME (the move rolls
 * back) and the drain goes on with the others; the exit status then says not everything moved.
 */
import type { ContainerRow, PeerRow } from '../protocol/messages.js'
import type { MoveEvent } from '../protocol/move-messages.js'
import { DestinationUnavailableError, UnknownPeerError } from '../protocol/errors.js'
import { printable } from './format.js'

/**
 * One move of the drain: a container, or (with `project`) every container of the compose project
 * `container` names, as `goto move --project` moves them; `containers` lists its running ones here.
 */
export type DrainAssignment = { container: string, to: string } | { container: string, to: string, project: true, containers: string[] }

export interface DrainPlan {
  host: string
  assignments: DrainAssignment[]
  /** Containers that stay, with why. */
  left: Array<{ container: string, state: string }>
}

/** What the drain reports as it goes (with --json, one per line, among the moves' own events). */
export type DrainEvent =
  | { event: 'drain-plan', plan: DrainPlan }
  | { event: 'drain-move', container: string, to: string, index: number, of: number, project?: true }
  | { event: 'drained', host: string, dryRun: boolean, moved: DrainAssignment[], failed: Array<DrainAssignment & { error: string }>, left: DrainPlan['left'] }

/**
 * Which member each running container of `host` goes to: members other than `host` that are
 * alive agents, each next move to the one holding the fewest (its running count as its peers row
 * says, plus what this drain already gave it; ties by name). The running containers of one compose
 * project are one move, to one member, and count there as that many. Moves in name order (a
 * project's by its name), so the same mesh gives the same plan.
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
  const running = containers.filter(c => c.state === 'running')
  if (running.length > 0 && load.size === 0) throw new DestinationUnavailableError(`no other alive member can take the containers of ${host}`)
  const projects = new Map<string, string[]>()
  for (const c of running) if (c.project !== undefined) projects.set(c.project, [...projects.get(c.project) ?? [], c.name])
  const moves: Array<{ container: string, containers?: string[] }> = [
    ...running.filter(c => c.project === undefined).map(c => ({ container: c.name })),
    ...[...projects].map(([project, names]) => ({ container: project, containers: names.sort((a, b) => a.localeCompare(b)) }))
  ].sort((a, b) => a.container.localeCompare(b.container))
  const assignments = moves.map((m): DrainAssignment => {
    const [to] = [...load.entries()].sort(([an, al], [bn, bl]) => al - bl || an.localeCompare(bn))[0]
    load.set(to, (load.get(to) ?? 0) + (m.containers?.length ?? 1))
    return m.containers === undefined ? { container: m.container, to } : { container: m.container, to, project: true, containers: m.containers }
  })
  const left = containers.filter(c => c.state !== 'running').map(c => ({ container: c.name, state: c.state }))
  return { host, assignments, left }
}

/** How many containers the assignments move (a project: its running containers). */
export function containersOf (assignments: readonly DrainAssignment[]): number {
  return assignments.reduce((n, a) => n + ('project' in a ? a.containers.length : 1), 0)
}

/** An assignment as a person reads it: `web → b`, or `project shop (shop-db-1, shop-web-1) → c`. */
function describe (a: DrainAssignment): string {
  return 'project' in a ? `project ${a.container} (${a.containers.join(', ')}) → ${a.to}` : `${a.container} → ${a.to}`
}

export type Output = (s: string) => void

/** Plain lines for a person; the moves in between are rendered by the MoveRenderer. What agents said is made printable. */
export function renderDrain (ev: DrainEvent, toOut: Output, toErr: Output): void {
  const out = (s: string): void => { toOut(printable(s) + '\n') }
  const err = (s: string): void => { toErr(printable(s) + '\n') }
  switch (ev.event) {
    case 'drain-plan': {
      const { host, assignments, left } = ev.plan
      out(`drain ${host}: ${containersOf(assignments)} running container(s) to move${assignments.length > 0 ? ': ' + assignments.map(describe).join(', ') : ''}`)
      for (const l of left) out(`  ${l.container} is ${l.state}: only running containers move; it stays on ${host}`)
      break
    }
    case 'drain-move':
      toOut('\n')
      out(`[${ev.index}/${ev.of}] ${ev.project === true ? `project ${ev.container}` : ev.container} → ${ev.to}`)
      break
    case 'drained': {
      const line = ev.dryRun
        ? `dry run: nothing changed; ${containersOf(ev.moved)} container(s) would move, ${containersOf(ev.failed)} would be refused, ${ev.left.length} not running`
        : `drained ${ev.host}: ${containersOf(ev.moved)} moved, ${containersOf(ev.failed)} failed, ${ev.left.length} not running (left)`
      if (ev.failed.length > 0) {
        err(line)
        for (const f of ev.failed) err(`  ${'project' in f ? `project ${f.container} (${f.containers.join(', ')}) (to ${f.to}) still runs` : `${f.container} (to ${f.to}) still runs`} on ${ev.host}: ${f.error}`)
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
