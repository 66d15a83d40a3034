/**
 * The lab's network: one bridge in the root namespace, one network namespace per simulated host
 * joined to it by a veth pair, an iptables ACCEPT rule so bridged traffic passes a FORWARD policy
 * of DROP, and partitions made of DROP rules inside the hosts' own namespaces.
 */
import { readdir } from 'node:fs/promises'
import { run, inNetns } from './sys.js'
import { LabConfigError } from './errors.js'

/** An IPv4 subnet as numbers, for handing out the gateway (.1) and host addresses (.10 + i). */
export interface Subnet { base: number, prefixLen: number }

export function ipToInt (ip: string): number {
  const parts = ip.split('.').map(Number)
  if (parts.length !== 4 || parts.some(p => !Number.isInteger(p) || p < 0 || p > 255)) throw new LabConfigError(`'${ip}' is not an IPv4 address`)
  return ((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3]
}

export function intToIp (n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}

export function parseSubnet (cidr: string): Subnet {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(cidr)
  if (m === null) throw new LabConfigError(`subnet '${cidr}' must be CIDR, e.g. 10.213.0.0/24`)
  const prefixLen = Number(m[2])
  if (prefixLen < 8 || prefixLen > 24) throw new LabConfigError(`subnet '${cidr}' must have a prefix length between 8 and 24`)
  const mask = prefixLen === 0 ? 0 : (~0 << (32 - prefixLen)) >>> 0
  return { base: (ipToInt(m[1]) & mask) >>> 0, prefixLen }
}

export function gatewayIp (s: Subnet): string {
  return intToIp(s.base + 1)
}

/** Host i (0-based) gets base+10+i; a /24 therefore holds up to 245 hosts. */
export function hostIp (s: Subnet, index: number): string {
  const size = 2 ** (32 - s.prefixLen)
  if (10 + index >= size - 1) throw new LabConfigError(`subnet /${s.prefixLen} has no room for host ${index + 1}`)
  return intToIp(s.base + 10 + index)
}

/** Network namespaces whose name starts with `<prefix>-`. */
export async function listNetns (prefix: string): Promise<string[]> {
  let names: string[] = []
  try {
    names = await readdir('/run/netns')
  } catch { /* no namespace was ever made */ }
  return names.filter(n => n.startsWith(`${prefix}-`)).sort()
}

export async function listLinks (): Promise<string[]> {
  return await readdir('/sys/class/net')
}

export async function createBridge (bridge: string, gatewayCidr: string): Promise<void> {
  await run(['ip', 'link', 'add', bridge, 'type', 'bridge'])
  await run(['ip', 'addr', 'add', gatewayCidr, 'dev', bridge])
  await run(['ip', 'link', 'set', bridge, 'up'])
}

export interface HostLink {
  netns: string
  /** Root-namespace end of the veth pair, enslaved to the bridge. */
  veth: string
  bridge: string
  ip: string
  prefixLen: number
  gateway: string
}

/** Namespace, veth pair (namespace end renamed eth0), address, default route, lo up. */
export async function createHostNetwork (h: HostLink): Promise<void> {
  const peer = `${h.veth}p`
  await run(['ip', 'netns', 'add', h.netns])
  await run(['ip', 'link', 'add', h.veth, 'type', 'veth', 'peer', 'name', peer])
  await run(['ip', 'link', 'set', peer, 'netns', h.netns])
  await run(['ip', 'link', 'set', h.veth, 'master', h.bridge])
  await run(['ip', 'link', 'set', h.veth, 'up'])
  const ns = ['ip', '-n', h.netns]
  await run([...ns, 'link', 'set', peer, 'name', 'eth0'])
  await run([...ns, 'addr', 'add', `${h.ip}/${h.prefixLen}`, 'dev', 'eth0'])
  await run([...ns, 'link', 'set', 'eth0', 'up'])
  await run([...ns, 'link', 'set', 'lo', 'up'])
  await run([...ns, 'route', 'add', 'default', 'via', h.gateway])
}

export async function deleteNetns (name: string): Promise<void> {
  await run(['ip', 'netns', 'del', name], { allowFail: true })
}

export async function deleteLink (name: string): Promise<void> {
  await run(['ip', 'link', 'del', name], { allowFail: true })
}

// --- iptables ------------------------------------------------------------------------------

/** A filter-table rule: the chain and the match/target spec, exactly as given to -A/-C/-D. */
export interface IptablesRule { chain: string, spec: string[] }

function iptables (netns: string | undefined, args: string[]): string[] {
  // -w: dockerds in the lab's namespaces use iptables too, and the xtables lock is machine-wide.
  const argv = ['iptables', '-w', '10', ...args]
  return netns === undefined ? argv : inNetns(netns, argv)
}

export async function ruleExists (netns: string | undefined, rule: IptablesRule): Promise<boolean> {
  const r = await run(iptables(netns, ['-C', rule.chain, ...rule.spec]), { allowFail: true })
  return r.code === 0
}

/** Inserts the rule at the top of its chain unless it is already there. */
export async function insertRule (netns: string | undefined, rule: IptablesRule): Promise<void> {
  if (await ruleExists(netns, rule)) return
  await run(iptables(netns, ['-I', rule.chain, '1', ...rule.spec]))
}

/** Deletes every copy of the rule; a rule that is not there is not an error. */
export async function deleteRule (netns: string | undefined, rule: IptablesRule): Promise<number> {
  let n = 0
  while (await ruleExists(netns, rule)) {
    await run(iptables(netns, ['-D', rule.chain, ...rule.spec]))
    n++
  }
  return n
}

export function bridgeForwardRule (bridge: string): IptablesRule {
  return { chain: 'FORWARD', spec: ['-i', bridge, '-o', bridge, '-j', 'ACCEPT'] }
}

/** Chains a partition hooks into: the host's own traffic, and its containers' (forwarded) traffic. */
const PARTITION_HOOKS = ['INPUT', 'OUTPUT', 'FORWARD']

/**
 * Makes `netns` drop every packet from or to `blockedIps`, in the lab-owned chain `chain` jumped to
 * first from INPUT, OUTPUT and FORWARD. Replaces whatever the chain held.
 */
export async function applyPartition (netns: string, chain: string, blockedIps: string[]): Promise<void> {
  await run(iptables(netns, ['-N', chain]), { allowFail: true })
  await run(iptables(netns, ['-F', chain]))
  for (const ip of blockedIps) {
    await run(iptables(netns, ['-A', chain, '-s', ip, '-j', 'DROP']))
    await run(iptables(netns, ['-A', chain, '-d', ip, '-j', 'DROP']))
  }
  for (const hook of PARTITION_HOOKS) {
    // Delete and re-insert so the jump is first even if dockerd put its own rules above it.
    await deleteRule(netns, { chain: hook, spec: ['-j', chain] })
    await run(iptables(netns, ['-I', hook, '1', '-j', chain]))
  }
}

export async function removePartition (netns: string, chain: string): Promise<void> {
  for (const hook of PARTITION_HOOKS) await deleteRule(netns, { chain: hook, spec: ['-j', chain] })
  await run(iptables(netns, ['-F', chain]), { allowFail: true })
  await run(iptables(netns, ['-X', chain]), { allowFail: true })
}

// --- hosts behind NAT ---------------------------------------------------------------------

export interface NatHostLink {
  /** The NAT'd host's namespace: only on the private subnet, default route via the router. */
  netns: string
  /** The router's namespace: one leg on the lab bridge (like any host), one on the private subnet. */
  router: string
  /** Root-namespace end of the router's veth pair, enslaved to the bridge. */
  veth: string
  bridge: string
  /** The router's address on the bridge: what the other hosts see the NAT'd host's traffic come from. */
  publicIp: string
  prefixLen: number
  gateway: string
  /** The host's address on the private subnet. */
  privateIp: string
  privateSubnet: string
  /** The router's address on the private subnet (the host's default gateway). */
  privateGateway: string
}

/** The router's iptables rules: masquerade going out, and nothing new coming in. */
export function natRules (n: Pick<NatHostLink, 'privateSubnet'>): Array<{ table: string, rule: IptablesRule }> {
  return [
    { table: 'nat', rule: { chain: 'POSTROUTING', spec: ['-s', n.privateSubnet, '-o', 'eth0', '-j', 'MASQUERADE'] } },
    { table: 'filter', rule: { chain: 'FORWARD', spec: ['-i', 'eth0', '-o', 'lan0', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT'] } },
    { table: 'filter', rule: { chain: 'FORWARD', spec: ['-i', 'eth0', '-o', 'lan0', '-j', 'DROP'] } }
  ]
}

/**
 * A host behind NAT, as a laptop's VM is: a router namespace joined to the bridge like any host, with
 * a private subnet behind it (veth lan0 ↔ the host's eth0) that it masquerades; the router drops
 * every new connection from the bridge side, so the host can connect out and nothing can connect in.
 * The root namespace routes the private subnet to the router, so a dial to a private address from a
 * lab host ends at the router (and is dropped there) instead of leaving the machine.
 */
export async function createNatHostNetwork (n: NatHostLink): Promise<void> {
  await createHostNetwork({ netns: n.router, veth: n.veth, bridge: n.bridge, ip: n.publicIp, prefixLen: n.prefixLen, gateway: n.gateway })
  const privateLen = Number(n.privateSubnet.split('/')[1])
  await run(['ip', 'netns', 'add', n.netns])
  await run(['ip', 'link', 'add', 'lan0', 'netns', n.router, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.netns])
  await run(['ip', '-n', n.router, 'addr', 'add', `${n.privateGateway}/${privateLen}`, 'dev', 'lan0'])
  await run(['ip', '-n', n.router, 'link', 'set', 'lan0', 'up'])
  const host = ['ip', '-n', n.netns]
  await run([...host, 'addr', 'add', `${n.privateIp}/${privateLen}`, 'dev', 'eth0'])
  await run([...host, 'link', 'set', 'eth0', 'up'])
  await run([...host, 'link', 'set', 'lo', 'up'])
  await run([...host, 'route', 'add', 'default', 'via', n.privateGateway])
  // /proc/sys/net shows the namespace of whoever opens it (tee, not sysctl: procps may be absent).
  await run(inNetns(n.router, ['tee', '/proc/sys/net/ipv4/ip_forward']), { input: '1\n' })
  for (const { table, rule } of natRules(n)) await run(iptables(n.router, ['-t', table, '-A', rule.chain, ...rule.spec]))
  // Goes with the bridge on down.
  await run(['ip', 'route', 'replace', n.privateSubnet, 'via', n.publicIp, 'dev', n.bridge])
}
