/**
 * Parsing the addresses operators type (agent --listen/--bootstrap/--announce, CLI --agent): an IP or
 * DNS address with a TCP port, optionally /p2p/<peer-id>. Bad input is a ConfigError naming the option.
 */
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { ConfigError } from './errors.js'

export function parseTcpMultiaddr (option: string, value: string): Multiaddr {
  let ma: Multiaddr
  try {
    ma = multiaddr(value)
  } catch (err) {
    throw new ConfigError(option, `'${value}' is not a multiaddr (${(err as Error).message}); expected e.g. /ip4/10.0.0.5/tcp/4001`)
  }
  const names = ma.getComponents().map(c => c.name)
  if (!['ip4', 'ip6', 'dns', 'dns4', 'dns6'].includes(names[0] ?? '') || names[1] !== 'tcp' || names.slice(2).some(n => n !== 'p2p')) {
    throw new ConfigError(option, `'${value}' must be an IP or DNS address with a TCP port, optionally /p2p/<peer-id>, e.g. /ip4/10.0.0.5/tcp/4001`)
  }
  return ma
}

/**
 * An agent's address as the operator gives it (CLI --agent): a direct one (parseTcpMultiaddr), or
 * a relayed one for an agent behind NAT, `<relay's direct address>/p2p/<relay>/p2p-circuit/p2p/<agent>`.
 */
export function parseAgentMultiaddr (option: string, value: string): Multiaddr {
  const [relay, ...rest] = value.split('/p2p-circuit')
  if (rest.length === 0) return parseTcpMultiaddr(option, value)
  const direct = parseTcpMultiaddr(option, relay)
  const names = direct.getComponents().map(c => c.name)
  if (rest.length !== 1 || names.at(-1) !== 'p2p' || !/^\/p2p\/[^/]+$/.test(rest[0])) {
    throw new ConfigError(option, `'${value}' must be <relay address>/p2p/<relay-id>/p2p-circuit/p2p/<agent-id>, e.g. /ip4/10.0.0.5/tcp/4001/p2p/12D3.../p2p-circuit/p2p/12D3...`)
  }
  try {
    return multiaddr(value)
  } catch (err) {
    throw new ConfigError(option, `'${value}' is not a multiaddr (${(err as Error).message})`)
  }
}

/**
 * The relay's peer ID in a circuit address (`.../p2p/<relay>/p2p-circuit[/p2p/<target>]`), or
 * undefined for a direct address.
 */
export function circuitRelayOf (ma: Multiaddr): string | undefined {
  const parts = ma.getComponents()
  const i = parts.findIndex(c => c.name === 'p2p-circuit')
  const relay = i > 0 ? parts[i - 1] : undefined
  return relay?.name === 'p2p' ? relay.value : undefined
}

/** The relay part of a circuit address (what to dial, and authenticate to, first). */
export function circuitRelayAddr (ma: Multiaddr): Multiaddr | undefined {
  if (circuitRelayOf(ma) === undefined) return undefined
  return multiaddr(ma.toString().split('/p2p-circuit')[0])
}

/**
 * An announced address made dialable for `peerId`: `/p2p/<peerId>` appended unless it ends in it
 * already (a relayed address holds the relay's /p2p/ too, so "has a /p2p/" is not the test).
 */
export function peerAddr (addr: string, peerId: string): Multiaddr {
  const ma = multiaddr(addr)
  const last = ma.getComponents().at(-1)
  return last?.name === 'p2p' && last.value === peerId ? ma : ma.encapsulate(`/p2p/${peerId}`)
}
