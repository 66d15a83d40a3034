/**
 * A compose project as a move sees it: the containers of one project (`com.docker.compose.project`
 * label) on this engine, each with its service and the services it depends on
 * (`com.docker.compose.depends_on`, compose v2: "db:service_started:false,cache:..."), in the order
 * they must start at the destination — a service after everything it depends on, replicas of one
 * service (`com.docker.compose.container-number`) together. The project move (docs/ARCHITECTURE.md
 * "A project move") restores in this order and rolls back in the reverse one. Pure: it reads the
 * engine's container list only.
 *
 *   const members = projectMembers(await docker.listContainers(signal), 'shop')
 *   // [{ name: 'shop-db-1', service: 'db', dependsOn: [] }, { name: 'shop-app-1', service: 'app', dependsOn: ['db'] }, ...]
 */
import type { ContainerRow } from '../../protocol/messages.js'
import { ProjectCycleError, UnknownProjectError } from '../../protocol/errors.js'

export const COMPOSE_PROJECT = 'com.docker.compose.project'
export const COMPOSE_SERVICE = 'com.docker.compose.service'
export const COMPOSE_DEPENDS_ON = 'com.docker.compose.depends_on'
export const COMPOSE_NUMBER = 'com.docker.compose.container-number'

export interface ProjectMember {
  name: string
  id: string
  service: string
  /** Services of the project this one's containers start after (those not in the project are left out). */
  dependsOn: string[]
  state: string
}

/**
 * The project's containers in start order; UnknownProjectError when it has none here,
 * ProjectCycleError when its services depend on each other in a circle.
 */
export function projectMembers (rows: readonly ContainerRow[], project: string): ProjectMember[] {
  const of = rows.filter(r => r.labels?.[COMPOSE_PROJECT] === project)
  if (of.length === 0) throw new UnknownProjectError(`no container of compose project '${project}' here`)
  const members = of.map(r => {
    const labels = r.labels ?? {}
    return { name: r.name, id: r.id, service: labels[COMPOSE_SERVICE] ?? r.name, dependsOn: dependsOnOf(labels[COMPOSE_DEPENDS_ON] ?? ''), state: r.state, number: Number(labels[COMPOSE_NUMBER] ?? 1) }
  })
  const services = new Set(members.map(m => m.service))
  for (const m of members) m.dependsOn = m.dependsOn.filter(d => services.has(d) && d !== m.service)
  const order: string[] = []
  const state = new Map<string, 'visiting' | 'done'>()
  const visit = (s: string, path: string[]): void => {
    if (state.get(s) === 'done') return
    if (state.get(s) === 'visiting') throw new ProjectCycleError(`compose project '${project}': services depend on each other in a circle: ${[...path, s].join(' → ')}`)
    state.set(s, 'visiting')
    const deps = [...new Set(members.filter(m => m.service === s).flatMap(m => m.dependsOn))].sort()
    for (const d of deps) visit(d, [...path, s])
    state.set(s, 'done')
    order.push(s)
  }
  for (const s of [...services].sort()) visit(s, [])
  return members
    .sort((a, b) => order.indexOf(a.service) - order.indexOf(b.service) || a.number - b.number || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map(({ number: _, ...m }) => m)
}

/** Compose v2's depends_on label: "svc:condition:restart,..." (older: "svc,..."); the services named. */
function dependsOnOf (label: string): string[] {
  return label.split(',').map(s => s.trim().split(':')[0]).filter(s => s !== '')
}
