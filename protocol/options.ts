/**
 * Options that the agent and the operator CLI both take: the agent reads them from its flags, env
 * and config file (agent/config.ts); `goto install` and `goto cloud-init` check them on the
 * operator's machine before they write them into a host's agent config (control/install-cli.ts).
 * One definition, so both refuse the same values with the same ConfigError naming the option.
 */
import { ConfigError } from './errors.js'

/** Every interface, the mesh's usual port. */
export const DEFAULT_LISTEN = '/ip4/0.0.0.0/tcp/4001'
/** Where a Linux Docker Engine listens by default. */
export const DEFAULT_DOCKER = 'unix:///var/run/docker.sock'

/** A DOCKER_HOST-style endpoint, parsed: a unix socket or a TCP host and port. */
export type DockerEndpoint = { kind: 'unix', socketPath: string, url: string } | { kind: 'tcp', host: string, port: number, url: string }

/** `unix:///path/docker.sock` (or a bare absolute path), `tcp://host:port` or `http://host:port`. */
export function parseDockerEndpoint (option: string, value: string): DockerEndpoint {
  let url: URL
  try {
    url = new URL(value.startsWith('/') ? `unix://${value}` : value)
  } catch {
    throw new ConfigError(option, `'${value}' is not unix:///path/docker.sock or tcp://host:port`)
  }
  if (url.protocol === 'unix:') {
    if (url.pathname === '' || url.pathname === '/') throw new ConfigError(option, `'${value}' names no socket path`)
    return { kind: 'unix', socketPath: decodeURIComponent(url.pathname), url: `unix://${url.pathname}` }
  }
  if (url.protocol === 'tcp:' || url.protocol === 'http:') {
    const port = url.port === '' ? 2375 : Number(url.port)
    if (url.hostname === '') throw new ConfigError(option, `'${value}' names no host`)
    return { kind: 'tcp', host: url.hostname.replace(/^\[|\]$/g, ''), port, url: `tcp://${url.host}` }
  }
  throw new ConfigError(option, `'${value}' uses ${url.protocol}, expected unix:// or tcp://`)
}

/** Host labels as `KEY=VALUE` strings or an object; keys and values checked as the mesh gossips them. */
export function parseLabels (option: string, values: string[] | Record<string, string>): Record<string, string> {
  const pairs = Array.isArray(values)
    ? values.map(v => {
      const i = v.indexOf('=')
      if (i <= 0) throw new ConfigError(option, `'${v}' must be KEY=VALUE`)
      return [v.slice(0, i), v.slice(i + 1)] as const
    })
    : Object.entries(values)
  const out: Record<string, string> = {}
  for (const [k, v] of pairs) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/.test(k)) throw new ConfigError(option, `label key '${k}' must be 1-63 letters, digits, '.', '_', '-' or '/'`)
    if (typeof v !== 'string' || v.length > 255) throw new ConfigError(option, `label '${k}' must have a string value of at most 255 characters`)
    out[k] = v
  }
  return out
}
