/**
 * Which Engine API version the agent speaks to its engine. An engine serves a range of API
 * versions, from its `MinAPIVersion` to its `ApiVersion` (both in `GET /version`, which it answers
 * on the unversioned path); the agent speaks a range too (`AGENT_API`). The driver asks once and
 * then prefixes every path with the highest version in both ranges (`/v1.51/containers/json`):
 * Docker 29 refuses any version below 1.44 with a 400, Engine 20.10 knows nothing above 1.41,
 * and Podman's compatible API reports a range of its own (4.3: 1.24-1.41). No common version is a
 * DockerApiVersionError naming both ranges, before the agent asks the engine for anything else.
 *
 *   const v = negotiateApiVersion({ apiVersion: '1.52', minApiVersion: '1.44' })   // '1.51'
 */
import { DockerApiVersionError } from '../../protocol/errors.js'

/**
 * The range the agent speaks: from Engine 20.10's 1.41 (Debian 12's engine, the oldest the lab
 * runs) to Engine 28.5's 1.51 (the newest the lab runs, so the newest whose answers were checked
 * against this driver). An engine serving above it (Docker 29: 1.44-1.52) is spoken to at 1.51.
 */
export const AGENT_API = { min: '1.41', max: '1.51' } as const

export interface EngineApiRange {
  /** The engine's highest version (`ApiVersion`). */
  apiVersion: string
  /** The engine's lowest version (`MinAPIVersion`); an engine that does not say is taken to serve only its highest. */
  minApiVersion?: string | undefined
}

/** `major.minor` as two numbers, or undefined for anything else. */
function parse (v: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)$/.exec(v.trim())
  return m === null ? undefined : [Number(m[1]), Number(m[2])]
}

/** Negative when a < b, 0 when equal, positive when a > b. */
function compare (a: [number, number], b: [number, number]): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1]
}

/** The highest version both the engine and `agent` speak; DockerApiVersionError when there is none. */
export function negotiateApiVersion (engine: EngineApiRange, agent: { min: string, max: string } = AGENT_API, where = 'the docker engine'): string {
  const engineMax = parse(engine.apiVersion)
  const engineMin = engine.minApiVersion === undefined || engine.minApiVersion === '' ? engineMax : parse(engine.minApiVersion)
  const agentMin = parse(agent.min)
  const agentMax = parse(agent.max)
  if (agentMin === undefined || agentMax === undefined) throw new TypeError(`not an API range: ${agent.min}-${agent.max}`)
  const engineRange = `${engine.minApiVersion ?? engine.apiVersion}-${engine.apiVersion}`
  const agentRange = `${agent.min}-${agent.max}`
  const refuse = (why: string): DockerApiVersionError =>
    new DockerApiVersionError(`${where} speaks Engine API ${engineRange} and this agent ${agentRange}: ${why}`, { engine: engineRange, agent: agentRange })
  if (engineMax === undefined || engineMin === undefined) throw refuse('the engine\'s versions are not major.minor')
  if (compare(engineMax, agentMin) < 0) throw refuse(`the engine is too old (it needs to speak ${agent.min} or newer)`)
  if (compare(engineMin, agentMax) > 0) throw refuse(`the engine is too new (it no longer speaks ${agent.max} or older)`)
  const best = compare(engineMax, agentMax) < 0 ? engineMax : agentMax
  return `${best[0]}.${best[1]}`
}
