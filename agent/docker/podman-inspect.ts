/**
 * Podman (its Docker API, measured on 4.3.1) in Docker's words, both ways, so that a container on
 * a Podman host is judged and carried as the same container on a Docker Engine would be.
 *
 * Its inspect (`fromPodmanInspect`): Podman reports its defaults where Docker leaves a field
 * empty: `PidMode` and `UTSMode` `private`, `Runtime` `oci`, and its default network as
 * `Networks.podman` with `NetworkMode` `bridge`; it names ulimits as the kernel does
 * (`RLIMIT_NOFILE`, which Docker's runc refuses: `wrong rlimit value: RLIMIT_RLIMIT_NOFILE`) where
 * Docker says `nofile`. And it writes into a container's env what Docker adds only to the
 * process's env when it starts it, or not at all: `container=podman` always, `PATH` (the same
 * default Docker's runtime gives) and `TERM=xterm` at create, `HOME` and `HOSTNAME` at start.
 * Those are known as Podman's by their values and by the image's env (what Docker's own inspect
 * shows is the image's env merged with the container's): an entry is dropped when it is Podman's
 * value and the image sets no such variable. Cannot be told apart, so also dropped: a `TERM=xterm`
 * or default `PATH` the user set on Podman themselves (on Docker a tty gets the same TERM and every
 * process the same PATH); kept: a non-root user's `HOME` (Podman's from the image's passwd, which
 * Docker would give the process the same).
 *
 *   containerInfoFromInspect(product === 'podman' ? fromPodmanInspect(c, imageEnv) : c)
 *
 * Its create (`toPodmanCreate`): Podman's create takes `UnsetEnv` (names of its default variables
 * not to add) beside Docker's body; given `container` and, without a tty, `TERM`, the container's
 * processes see exactly the env they saw on a Docker Engine (`PATH`, `HOME` and `HOSTNAME` as
 * Docker's runtime gives them). Variables the body names itself are set as given.
 */
import type { EngineContainer } from './spec.js'

/** Podman's default network, which is Docker's default bridge. */
const PODMAN_DEFAULT_NETWORK = 'podman'

/** Podman's (and Docker's runtime's) PATH for a container whose image sets none. */
const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** Users whose HOME Podman sets to /root. */
const ROOT_USER = /^(|root|0)(:.*)?$/

/**
 * A copy of `c` with Podman's defaults and additions removed (`imageEnv`: the env of the
 * container's image, `Config.Env` of its inspect); see the module comment.
 */
export function fromPodmanInspect (c: EngineContainer, imageEnv: string[]): EngineContainer {
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
    const imageSets = new Set(imageEnv.map(e => e.split('=', 1)[0]))
    const podmans = [
      'container=podman',
      DEFAULT_PATH,
      'TERM=xterm',
      ...typeof c.Config.Hostname === 'string' ? [`HOSTNAME=${c.Config.Hostname}`] : [],
      ...ROOT_USER.test(String(c.Config.User ?? '')) ? ['HOME=/root'] : []
    ]
    const added = new Set(podmans.filter(e => !imageSets.has(e.split('=', 1)[0])))
    out.Config = { ...c.Config, Env: (c.Config.Env as string[]).filter(e => !added.has(e)) }
  }
  return out
}

/** Podman's create body for Docker's `body` (spec.ts `createBody`); see the module comment. */
export function toPodmanCreate (body: Record<string, unknown>): Record<string, unknown> {
  return { ...body, UnsetEnv: body.Tty === true ? ['container'] : ['container', 'TERM'] }
}
