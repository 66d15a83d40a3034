/** Human-readable output of the operator CLI: aligned tables and short summaries. */
import type { AgentStatus, PeerRow } from '../protocol/messages.js'
import type { FailoverStatus } from '../protocol/failover-messages.js'

export function table (headers: string[], rows: string[][]): string {
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
    ['NAME', 'STATE', 'ADDRESS', 'DOCKER', 'CONTAINERS', 'RTT', 'LAST SEEN', 'LABELS'],
    rows.map(r => [
      r.self ? `${r.name} *` : r.name,
      r.state,
      hostOf(r.addrs),
      r.dockerVersion ?? '-',
      r.containers === null ? '-' : String(r.containers),
      r.rttMs === null ? '-' : r.self ? '-' : `${r.rttMs.toFixed(1)}ms`,
      r.self ? 'self' : ago(r.lastSeen, now),
      Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-'
    ])
  ) + '\n(* = the agent that answered)'
}

export function formatStatus (s: AgentStatus): string {
  const docker = 'error' in s.docker ? `unavailable (${s.docker.error})` : `${s.docker.version} (API ${s.docker.apiVersion}, ${s.docker.os}/${s.docker.arch})`
  const lines = [
    `name:       ${s.name}`,
    `peer id:    ${s.peerId}`,
    `version:    ${s.version}`,
    `uptime:     ${s.uptimeS}s`,
    `labels:     ${Object.entries(s.labels).map(([k, v]) => `${k}=${v}`).join(', ') || '-'}`,
    `docker:     ${docker}`,
    `peers:      ${s.peers.alive} alive, ${s.peers.suspect} suspect, ${s.peers.dead} dead`,
    `containers: ${s.containers.length}`
  ]
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
  ]
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
