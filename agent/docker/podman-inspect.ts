/**
 * Podman's container inspect (its Docker API, measured on 4.3.1) in Docker's words, so that a
 * container on a Podman host is judged and carried as the same container on a Docker Engine would
 * be. Podman reports its defaults where Docker leaves a field empty: `PidMode` and `UTSMode`
 * `private`, `Runtime` `oci`, and its default network as `Networks.podman` with `NetworkMode`
 * `bridge`; it names ulimits as the kernel does (`RLIMIT_NOFILE`, which Docker's runc refuses:
 * `wrong rlimit value: RLIMIT_RLIMIT_NOFILE`) where Docker says `nofile`; and it adds to every container's env `container=podman` and `HOSTNAME=<its hostname>`,
 * which a container on another engine must not inherit.
 *
 *   containerInfoFromInspect(product === 'podman' ? fromPodmanInspect(c) : c)
 *
 * Podman also adds `PATH`, `TERM=xterm` and `HOME` when the image does not set them; those are
 * kept (telling them from the container's own settings needs the image's env).
 */
import type { EngineContainer } from './spec.js'

/** Podman's default network, which is Docker's default bridge. */
const PODMAN_DEFAULT_NETWORK = 'podman'

/** A copy of `c` with Podman's defaults and additions removed; see the module comment. */
export function fromPodmanInspect (c: EngineContainer): EngineContainer {
  const hostConfig = { ...c.HostConfig ?? {} }
  for (const field of ['PidMode', 'UTSMode']) if (hostConfig[field] === 'private') hostConfig[field] = ''
  if (hostConfig.Runtime === 'oci') hostConfig.Runtime = ''
  if (Array.isArray(hostConfig.Ulimits)) {
    hostConfig.Ulimits = (hostConfig.Ulimits as Array<{ Name?: unknown }>).map(u =>
      typeof u?.Name === 'string' && /^RLIMIT_/.test(u.Name) ? { ...u, Name: u.Name.slice('RLIMIT_'.length).toLowerCase() } : u)
  }
  const out: EngineContainer = { ...c, HostConfig: hostConfig }
  const networks = c.NetworkSettings?.Networks
  if (networks != null && PODMAN_DEFAULT_NETWORK in networks && ['bridge', ''].includes(String(hostConfig.NetworkMode ?? ''))) {
    const { [PODMAN_DEFAULT_NETWORK]: own, ...rest } = networks
    out.NetworkSettings = { ...c.NetworkSettings, Networks: { bridge: own, ...rest } }
  }
  if (c.Config != null && Array.isArray(c.Config.Env)) {
    const added = new Set(['container=podman', ...c.Config.Hostname === undefined ? [] : [`HOSTNAME=${c.Config.Hostname}`]])
    out.Config = { ...c.Config, Env: c.Config.Env.filter(e => !added.has(e)) }
  }
  return out
}
