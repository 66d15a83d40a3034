/**
 * Where a host is and what the link between two hosts costs. A member's location is read from its
 * labels (`provider`, `region`, as `goto install` and cloud-init set them); the mesh's link table
 * (agent config `links`) says, for a pair of locations, the link's class, its price per GiB, an
 * optional rate cap and whether blobs crossing it are compressed. Pure data: no I/O.
 *
 *   const table = new LinkTable(config.links)
 *   const link = table.between(locationOf(selfLabels), locationOf(entry.labels))
 *   // link.class 'expensive', link.compress 'zstd', link.rateMbit 100, link.costPerGiB 0.09
 *
 * Rules are tried in order; the first whose `from` and `to` both match wins, in either direction
 * (a link costs the same both ways unless a rule for the other direction comes first). A rule side
 * that names no field matches every location. With no rule matching, DEFAULT_LINK_RULES decide.
 */
import { ConfigError } from '../../protocol/errors.js'

export type LinkClass = 'free' | 'cheap' | 'expensive'
export type CompressMode = 'none' | 'zstd' | 'auto'

/** Where a host is: both fields from its labels, absent when it has no such label. */
export interface Location { provider?: string, region?: string }

export interface LinkRule {
  from: Location
  to: Location
  class: LinkClass
  /** Price of one GiB leaving over this link (the currency is the operator's; dry runs multiply by it). */
  costPerGiB?: number
  /** A rate cap in Mbit/s (10^6 bits) the sender keeps to on this link. */
  rateMbit?: number
  compress?: CompressMode
}

/** What the table decided for one pair of locations. */
export interface LinkPolicy {
  class: LinkClass
  costPerGiB: number
  rateMbit: number | undefined
  /** 'auto' is resolved: zstd unless the link is free. */
  compress: 'none' | 'zstd'
}

/** The labels a location is read from (see `goto install --label`, cloud-init). */
export const PROVIDER_LABEL = 'provider'
export const REGION_LABEL = 'region'

/**
 * Default prices when a rule names a class but no costPerGiB: AWS's egress to the internet is about
 * $0.09/GB and between its regions about $0.02/GB (issue 13); a free link costs nothing.
 */
export const DEFAULT_COST_PER_GIB: Record<LinkClass, number> = { free: 0, cheap: 0.02, expensive: 0.09 }

/**
 * Without a table: hosts of one provider and region share a fast free network (no compression: it
 * would cost more CPU time than the bytes it saves); everything else is an expensive WAN link,
 * where zstd level 1 compresses faster than such a link carries bytes (docs/performance.md).
 */
export const DEFAULT_LINK_RULES: readonly LinkRule[] = [
  { from: {}, to: {}, class: 'expensive', compress: 'zstd' }
]

export function locationOf (labels: Readonly<Record<string, string>>): Location {
  const loc: Location = {}
  if (labels[PROVIDER_LABEL] !== undefined) loc.provider = labels[PROVIDER_LABEL]
  if (labels[REGION_LABEL] !== undefined) loc.region = labels[REGION_LABEL]
  return loc
}

function sideMatches (side: Location, loc: Location): boolean {
  return (side.provider === undefined || side.provider === loc.provider) && (side.region === undefined || side.region === loc.region)
}

function policyOf (rule: LinkRule): LinkPolicy {
  const compress = rule.compress ?? 'auto'
  return {
    class: rule.class,
    costPerGiB: rule.costPerGiB ?? DEFAULT_COST_PER_GIB[rule.class],
    rateMbit: rule.rateMbit,
    compress: compress === 'auto' ? (rule.class === 'free' ? 'none' : 'zstd') : compress
  }
}

const SAME_PLACE: LinkPolicy = { class: 'free', costPerGiB: 0, rateMbit: undefined, compress: 'none' }

export class LinkTable {
  constructor (private readonly rules: readonly LinkRule[] = []) {}

  /** The link from a host at `from` to one at `to`. */
  between (from: Location, to: Location): LinkPolicy {
    for (const r of this.rules) {
      if ((sideMatches(r.from, from) && sideMatches(r.to, to)) || (sideMatches(r.from, to) && sideMatches(r.to, from))) return policyOf(r)
    }
    // Same provider and region (both known, or both unlabelled: one lab, one laptop): one network.
    if (from.provider === to.provider && from.region === to.region) return SAME_PLACE
    return policyOf(DEFAULT_LINK_RULES[0])
  }
}

/** Estimated cost of `bytes` over a link priced `costPerGiB`. */
export function costOf (bytes: number, costPerGiB: number): number {
  return bytes / 2 ** 30 * costPerGiB
}

const CLASSES: readonly LinkClass[] = ['free', 'cheap', 'expensive']
const COMPRESS: readonly CompressMode[] = ['none', 'zstd', 'auto']
/** A cap below this would make a layer of a few MiB take minutes: surely a unit mistake (kbit?). */
const MIN_RATE_MBIT = 0.1

/**
 * The `links` option: a JSON array of rules (from a config file, or the text of `--links-json` /
 * GOTO_LINKS_JSON). Strict: an unknown key or a bad value is a ConfigError naming it.
 */
export function parseLinkRules (option: string, value: unknown): LinkRule[] {
  let v = value
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v)
    } catch (err) {
      throw new ConfigError(option, `is not valid JSON: ${(err as Error).message}`)
    }
  }
  if (!Array.isArray(v)) throw new ConfigError(option, 'must be a JSON array of rules {from, to, class, costPerGiB?, rateMbit?, compress?}')
  return v.map((r, i) => parseRule(`${option}[${i}]`, r))
}

function isObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function parseRule (at: string, r: unknown): LinkRule {
  if (!isObject(r)) throw new ConfigError(at, 'must be an object {from, to, class, ...}')
  const known = ['from', 'to', 'class', 'costPerGiB', 'rateMbit', 'compress']
  for (const k of Object.keys(r)) if (!known.includes(k)) throw new ConfigError(`${at}.${k}`, `unknown key (known: ${known.join(', ')})`)
  if (!CLASSES.includes(r.class as LinkClass)) throw new ConfigError(`${at}.class`, `'${String(r.class)}' is not one of ${CLASSES.join(', ')}`)
  const rule: LinkRule = { from: parseLocation(`${at}.from`, r.from), to: parseLocation(`${at}.to`, r.to), class: r.class as LinkClass }
  if (r.costPerGiB !== undefined) {
    if (typeof r.costPerGiB !== 'number' || !Number.isFinite(r.costPerGiB) || r.costPerGiB < 0) throw new ConfigError(`${at}.costPerGiB`, `'${String(r.costPerGiB)}' is not a number ≥ 0`)
    rule.costPerGiB = r.costPerGiB
  }
  if (r.rateMbit !== undefined) {
    if (typeof r.rateMbit !== 'number' || !Number.isFinite(r.rateMbit) || r.rateMbit < MIN_RATE_MBIT) throw new ConfigError(`${at}.rateMbit`, `'${String(r.rateMbit)}' is not a number of Mbit/s ≥ ${MIN_RATE_MBIT}`)
    rule.rateMbit = r.rateMbit
  }
  if (r.compress !== undefined) {
    if (!COMPRESS.includes(r.compress as CompressMode)) throw new ConfigError(`${at}.compress`, `'${String(r.compress)}' is not one of ${COMPRESS.join(', ')}`)
    rule.compress = r.compress as CompressMode
  }
  return rule
}

function parseLocation (at: string, v: unknown): Location {
  if (v === undefined) throw new ConfigError(at, 'required: an object {provider?, region?} ({} matches every host)')
  if (!isObject(v)) throw new ConfigError(at, 'must be an object {provider?, region?}')
  const loc: Location = {}
  for (const [k, x] of Object.entries(v)) {
    if (k !== 'provider' && k !== 'region') throw new ConfigError(`${at}.${k}`, 'unknown key (known: provider, region)')
    if (typeof x !== 'string' || x === '') throw new ConfigError(`${at}.${k}`, 'must be a non-empty string')
    loc[k] = x
  }
  return loc
}
