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
