/**
 * A moved container's user-defined networks at the destination (spec.networks: each network's
 * definition as the source's engine has it, the container's aliases and static addresses there).
 * Shared by the destination's prepare, which says what will become of each network (and refuses a
 * conflict before anything is frozen), and by the restore, which makes what is missing:
 *
 *   const plans = await planNetworks(docker, spec, signal)   // NetworkConflictError: named, nothing made
 *   const spec2 = await ensureNetworks(docker, spec, made, signal, onCreate)   // made.networks: what to undo
 *
 * A network of the same name here is the container's network when it has the same driver, driver
 * options, internal and IPv6 flags and subnets (or is the stand-in an earlier move made for it, see
 * below); anything else is a conflict. A missing network is created with the source's name,
 * driver, options and labels, and its subnets when none of them overlaps a network here; when one
 * does, the engine chooses the subnet, the network is labelled as a stand-in for the source's
 * subnets (STAND_IN_LABEL, so that the next container of it that moves here joins it), and static
 * addresses on it are not kept: both are said in the plan. The engine's own address choices on the
 * host's other interfaces are not checked here (the engine refuses or routes as it does for
 * `docker network create --subnet`).
 */
import type { DockerHost, NetworkInfo } from '../docker/docker-host.js'
import type { ContainerSpec, NetworkAttachment, NetworkSpec } from '../docker/types.js'
import type { NetworkPlan } from '../../protocol/move-messages.js'
import { DockerConflictError, NetworkConflictError, NetworkNotFoundError } from '../../protocol/errors.js'
import type { Logger } from '../log.js'

/** Label on a network a move made with the engine's subnet because the source's was taken here: the source's subnets. */
export const STAND_IN_LABEL = 'org.goto.network.stand-in-for'

/** What becomes of each of the spec's networks here; NetworkConflictError names the first that exists with other settings. */
export async function planNetworks (docker: DockerHost, spec: ContainerSpec, signal: AbortSignal): Promise<NetworkPlan[]> {
  const attached = spec.networks ?? []
  if (attached.length === 0) return []
  const here = await docker.listNetworks(signal)
  return attached.map(a => planOne(a, here))
}

function planOne (a: NetworkAttachment, here: NetworkInfo[]): NetworkPlan {
  const want = a.network
  const base = { name: want.name, aliases: a.aliases, ipv4Address: a.ipv4Address }
  const existing = here.find(n => n.name === want.name)
  if (existing !== undefined) {
    const diffs = differences(existing, want)
    if (diffs.length > 0) throw new NetworkConflictError(`a network named '${want.name}' exists here with other settings: ${diffs.join('; ')}`)
    return { ...base, at: 'exists', subnet: want.subnets.length === 0 ? 'none' : sameSubnets(existing, want) ? 'kept' : 'engine' }
  }
  if (want.subnets.length === 0) return { ...base, at: 'create', subnet: 'none' }
  const taken = here.flatMap(n => n.subnets.map(p => p.subnet))
  return { ...base, at: 'create', subnet: want.subnets.some(p => taken.some(t => overlaps(p.subnet, t))) ? 'engine' : 'kept' }
}

/** How a network here differs from the one the container is on at the source (empty: it is that network). */
export function differences (here: NetworkSpec, want: NetworkSpec): string[] {
  const out: string[] = []
  if (here.driver !== want.driver) out.push(`driver ${here.driver} here, ${want.driver} at the source`)
  if (JSON.stringify(sorted(here.options)) !== JSON.stringify(sorted(want.options))) out.push(`options ${JSON.stringify(sorted(here.options))} here, ${JSON.stringify(sorted(want.options))} at the source`)
  if (here.internal !== want.internal) out.push(`internal ${String(here.internal)} here, ${String(want.internal)} at the source`)
  if (here.enableIPv6 !== want.enableIPv6) out.push(`IPv6 ${String(here.enableIPv6)} here, ${String(want.enableIPv6)} at the source`)
  if (want.subnets.length > 0 && !sameSubnets(here, want) && here.labels[STAND_IN_LABEL] !== subnetKey(want)) {
    out.push(`subnet ${subnetKey(here) || 'none'} here, ${subnetKey(want)} at the source`)
  }
  return out
}

/**
 * Makes the spec's missing networks (`onCreate` hears each name first: the incoming journal) and
 * records them in `made.networks`; returns the spec the container is created from: static
 * addresses dropped on networks whose subnet is not the source's. Planned again here, so that a
 * network made or changed since prepare is judged as it is now.
 */
export async function ensureNetworks (
  docker: DockerHost, spec: ContainerSpec, made: { networks?: string[] }, signal: AbortSignal, onCreate?: (name: string) => Promise<void>, log?: Logger
): Promise<ContainerSpec> {
  const plans = await planNetworks(docker, spec, signal)
  if (plans.length === 0) return spec
  made.networks ??= []
  for (const [i, plan] of plans.entries()) {
    if (plan.at !== 'create') continue
    const want = (spec.networks as NetworkAttachment[])[i].network
    await onCreate?.(want.name)
    const net: NetworkSpec = plan.subnet === 'engine' ? { ...want, subnets: [], labels: { ...want.labels, [STAND_IN_LABEL]: subnetKey(want) } } : want
    try {
      await docker.createNetwork(net, signal)
      made.networks.push(want.name)
      log?.info('network created for a moved container', { network: want.name, subnet: plan.subnet })
    } catch (err) {
      // Made meanwhile by another move of the same network (a project's other container): judged as it is.
      if (!(err instanceof DockerConflictError)) throw err
      planOne((spec.networks as NetworkAttachment[])[i], [await docker.inspectNetwork(want.name, signal)])
    }
  }
  const engineChose = new Set(plans.filter(p => p.subnet === 'engine').map(p => p.name))
  if (engineChose.size === 0) return spec
  return { ...spec, networks: (spec.networks ?? []).map(a => engineChose.has(a.network.name) ? { ...a, ipv4Address: '', ipv6Address: '' } : a) }
}

/** Removes the networks a failed restore made, each unless a container is on it now (that one's user keeps it). */
export async function undoNetworks (docker: DockerHost, names: readonly string[], log: Logger, signal: AbortSignal): Promise<void> {
  for (const name of [...names].reverse()) {
    try {
      const n = await docker.inspectNetwork(name, signal)
      if (n.containers > 0) { log.info('rollback: network kept, a container is on it', { network: name, containers: n.containers }); continue }
      await docker.removeNetwork(n.id, signal)
    } catch (err) {
      if (!(err instanceof NetworkNotFoundError)) log.error('rollback: network not removed', { network: name, error: (err as Error).message })
    }
  }
}

/** Warnings for the plan: networks whose subnet is the engine's choice, static addresses that are not kept. */
export function networkWarnings (plans: readonly NetworkPlan[], to: string): string[] {
  return plans.flatMap(p => p.subnet !== 'engine'
    ? []
    : [`${to} has the subnet of network ${p.name} in use: ${p.at === 'create' ? 'it is created there with a subnet the engine chooses' : 'it joins the network a move made there with a subnet the engine chose'}${p.ipv4Address === '' ? '' : `, and the static address ${p.ipv4Address} is not kept`}`])
}

function sameSubnets (a: NetworkSpec, b: NetworkSpec): boolean {
  return subnetKey(a) === subnetKey(b)
}

function subnetKey (n: NetworkSpec): string {
  return n.subnets.map(p => p.subnet).sort().join(',')
}

function sorted (r: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(r).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))
}

/** Whether two CIDRs share an address (IPv4 by range; IPv6 only when written the same). */
export function overlaps (a: string, b: string): boolean {
  const ra = ipv4Range(a)
  const rb = ipv4Range(b)
  if (ra === undefined || rb === undefined) return a === b
  return ra[0] <= rb[1] && rb[0] <= ra[1]
}

function ipv4Range (cidr: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/(\d+)$/.exec(cidr)
  if (m === null) return undefined
  const ip = m.slice(1, 5).reduce((n, o) => n * 256 + Number(o), 0)
  const bits = Number(m[5])
  if (bits > 32) return undefined
  const size = 2 ** (32 - bits)
  const start = ip - (ip % size)
  return [start, start + size - 1]
}
