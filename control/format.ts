/**
 * Human-readable output of the operator CLI: aligned tables and short summaries. Everything in them
 * that came from the network (names, labels, addresses, messages) passes through `printable`, the
 * one place that makes a peer's text safe for the operator's terminal; --json output through
 * `jsonText` (JSON.stringify escapes C0 controls only; the rest are escaped there as \uXXXX, the
 * same JSON value).
 */
import type { AgentStatus, PeerRow } from '../protocol/messages.js'
import type { FailoverStatus } from '../protocol/failover-messages.js'

/**
 * C0 controls, DEL, C1 controls (U+0080-U+009F: 0x9b is CSI on some terminals), the line and
 * paragraph separators, and the bidirectional overrides and isolates that reorder what is shown.
 */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' }

/**
 * Text from the network as one line the terminal shows as it is: each control character written
 * as an escape (ESC as \x1b, a newline as \n, U+2028 as \u2028), so a peer can neither send
 * escape sequences to the operator's terminal (colours, cursor moves, its title, a clipboard
 * write) nor add lines that look like our own output.
 *
 *   printable('web\x1b[2J')   // 'web\\x1b[2J'
 */
export function printable (s: string): string {
  return String(s).replace(CONTROL, c => NAMED[c] ?? (c.charCodeAt(0) < 0x100 ? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}` : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`))
}

/** Characters JSON.stringify leaves raw that a terminal acts on (it escapes C0 controls itself). */
const JSON_RAW_CONTROL = /[\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

/**
 * JSON.stringify's text with the controls it leaves raw (DEL, C1, separators, bidi) written as
 * \uXXXX escapes: outside strings JSON has only ASCII, so this is the same JSON value, and a
 * terminal that shows it acts on nothing.
 */
export function jsonText (value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(JSON_RAW_CONTROL, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** A table of cells that may have come from the network: every cell is made `printable` before it is measured. */
export function table (headers: string[], rawRows: string[][]): string {
  const rows = rawRows.map(r => r.map(printable))
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map(r => (r[i] ?? '').length)))
  const line = (cells: string[]): string => cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i])).join('  ').trimEnd()
  return [line(headers), ...rows.map(line)].join('\n')
}

function ago (iso: string | null, now: number): string {
  if (iso === null) return 'never'
  const s = Math.max(0, (now - Date.parse(iso)) / 1000)
  return s < 1 ? 'now' : s < 120 ? `${Math.round(s)}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}

function hostOf (addrs: string[]): string {
  const a = addrs[0]
  if (a === undefined) return '-'
  const m = /^\/ip[46]\/([^/]+)\/tcp\/(\d+)/.exec(a)
  if (m === null) return a
  // Behind NAT: reached through a relay at that address.
  return a.includes('/p2p-circuit') ? `relay ${m[1]}:${m[2]}` : `${m[1]}:${m[2]}`
}

export function formatPeers (rows: PeerRow[], now = Date.now()): string {
  return table(
    ['NAME', 'STATE', 'ADDRESS', 'ENGINE', 'CONTAINERS', 'LIVE', 'RTT', 'LAST SEEN', 'LABELS'],
    rows.map(r => [
      r.self ? `${r.name} *` : r.name,
      r.state,
      hostOf(r.addrs),
      r.dockerVersion ?? '-',
      r.containers === null ? '-' : String(r.containers),
      r.live === undefined ? '-' : r.live.ok ? `CRIU ${r.live.criu ?? '?'}` : 'no',
      r.rttMs === null ? '-' : r.self ? '-' : `${r.rttMs.toFixed(1)}ms`,
      r.self ? 'self' : ago(r.lastSeen, now),
      Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-'
    ])
  ) + rows.filter(r => r.live?.ok === false).map(r => printable(`\n${r.name} takes no live moves: ${r.live?.missing.join('; ') ?? ''}`)).join('') +
    '\n(* = the agent that answered; LIVE: whether it takes goto move --live)'
}

export function formatStatus (s: AgentStatus): string {
  const docker = 'error' in s.docker ? `unavailable (${s.docker.error})` : `${s.docker.kind ?? s.docker.version} (API ${s.docker.apiVersion}, ${s.docker.os}/${s.docker.arch})`
  const lines = [
    `name:       ${s.name}`,
    `peer id:    ${s.peerId}`,
    `version:    ${s.version}`,
    `uptime:     ${s.uptimeS}s`,
    `labels:     ${Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(', ') || '-'}`,
    `docker:     ${docker}`,
    `peers:      ${s.peers.alive} alive, ${s.peers.suspect} suspect, ${s.peers.dead} dead`,
    `containers: ${s.containers.length}`,
    ...s.live === undefined ? [] : [`live moves: ${s.live.ok ? `yes (CRIU ${s.live.criu ?? '?'})` : `no: ${s.live.missing.join('; ')}`}`]
  ].map(printable)
  if (s.containers.length > 0) {
    lines.push('', table(['NAME', 'ID', 'IMAGE', 'STATE', 'STATUS'], s.containers.map(c => [c.name, c.id.slice(0, 12), c.image, c.state, c.status])))
  }
  if (s.failover !== undefined) lines.push('', ...formatFailover(s.failover))
  return lines.join('\n')
}

function formatFailover (f: FailoverStatus): string[] {
  const lines = [
    `failover:   ${f.safe ? 'safe' : `NOT SAFE: ${f.reason ?? ''}`}`,
    `quorum:     ${f.reachable} of ${f.members} members reachable, majority ${f.majority}; ${f.replicas} replica(s), snapshot every ${f.snapshotIntervalS}s`
  ].map(printable)
  const rows = f.containers.filter(c => c.protected || c.owner !== null)
  if (rows.length > 0) {
    lines.push('', table(['CONTAINER', 'PROTECTED', 'OWNER', 'EPOCH', 'SNAPSHOT', 'HOLDERS'], rows.map(c => [
      c.name,
      c.protected ? (c.fenced ? 'yes (fenced)' : 'yes') : 'no',
      c.owner ?? '-',
      c.epoch === null ? '-' : String(c.epoch),
      c.snapshotAgeS === null ? 'none yet' : `${c.snapshotAgeS}s ago`,
      c.holders.join(',') || '-'
    ])))
  }
  if (f.held.length > 0) {
    lines.push('', table(['HELD SNAPSHOT', 'OWNER', 'EPOCH', 'SEQ', 'AGE'], f.held.map(h => [h.name, h.owner, String(h.epoch), String(h.seq), `${h.ageS}s`])))
  }
  return lines
}
