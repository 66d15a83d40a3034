/**
 * The shapes of every message the agent and the CLI exchange, and small checks that turn untrusted
 * JSON into these types (a peer that sends something else gets a ProtocolError, never a crash).
 */
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { ProtocolError } from './errors.js'
import { parseFailoverGossip, parseFailoverStatus, type FailoverGossip, type FailoverStatus } from './failover-messages.js'
import { obj, str } from './parse.js'

// The failover section of a status reply is defined with the other failover messages; re-exported
// because it is part of the status reply.
export type { FailoverContainerRow, FailoverStatus, HeldSnapshotRow } from './failover-messages.js'

export type Role = 'agent' | 'operator'
export type PeerState = 'alive' | 'suspect' | 'dead'

export interface SignedCrlWire { payload: string, signature: string }

/** First message on /goto/auth: each side's certificate and its newest revocation list. */
export interface AuthHello { cert: string, crl?: SignedCrlWire }

/** What an agent says of itself in heartbeats. */
export interface MemberInfo {
  name: string
  peerId: string
  addrs: string[]
  labels: Record<string, string>
  agentVersion: string
  dockerVersion: string | null
  containers: number | null
  /** Number of the newest revocation list this agent holds; a peer with a newer one sends it. */
  crlNumber: number
  /** Protected containers it owns and snapshots it holds (absent from agents without failover). */
  failover?: FailoverGossip
}

/**
 * What an agent passes on of the members it knows (peer exchange); `cert` (PEM) when the receiver
 * asked for it, so the receiver can count that member without having reached it yet.
 */
export interface MemberSummary { peerId: string, name: string, addrs: string[], cert?: string }

/** Most members one peer exchange may list. */
export const MAX_EXCHANGED_MEMBERS = 1024
/** Most certificates one heartbeat may ask for (`wantCerts`). */
export const MAX_WANTED_CERTS = 32
/** Longest certificate (PEM) a member summary may carry. */
export const MAX_MEMBER_CERT_CHARS = 8192

/**
 * `rttMs`: the sender's last round-trip time to the receiver, so the quiet side of a pair knows it too.
 * `wantCerts`: peer IDs the receiver listed without a certificate the sender can check; the answer
 * (or the next request) carries them.
 */
export interface HeartbeatRequest { from: MemberInfo, members: MemberSummary[], rttMs?: number, crl?: SignedCrlWire, wantCerts?: string[] }
export interface HeartbeatReply { self: MemberInfo, members: MemberSummary[], crl?: SignedCrlWire, wantCerts?: string[] }

/** One row of `goto peers`. */
export interface PeerRow {
  name: string
  peerId: string
  self: boolean
  state: PeerState
  role: Role
  addrs: string[]
  labels: Record<string, string>
  agentVersion: string | null
  dockerVersion: string | null
  containers: number | null
  lastSeen: string | null
  rttMs: number | null
  /**
   * Whether the member can take live moves (its status's `live`), asked by the CLI of each alive
   * agent after the peers answered (control/mesh.ts): absent when it was not asked or did not say.
   */
  live?: NonNullable<AgentStatus['live']>
}

export interface StatusRequest { name?: string }

/**
 * A container as an engine lists it. `labels` only from this host's engine (a status reply leaves
 * them out); `project`, its compose project (`com.docker.compose.project`), is what a status
 * reply says of them instead (absent: none, or an agent before it).
 */
export interface ContainerRow { name: string, id: string, image: string, state: string, status: string, labels?: Record<string, string>, project?: string }

export interface AgentStatus {
  name: string
  peerId: string
  version: string
  uptimeS: number
  labels: Record<string, string>
  /** `kind`: product, version and image store, e.g. `docker 28.5.2 containerd-store` (absent from older agents). */
  docker: { version: string, apiVersion: string, os: string, arch: string, kind?: string } | { error: string }
  containers: ContainerRow[]
  peers: Record<PeerState, number>
  failover?: FailoverStatus
  /** Whether this host can take live moves (goto move --live): its CRIU version, or what it lacks (absent from older agents). */
  live?: { ok: boolean, criu?: string, missing: string[] }
}

// --- checks -----------------------------------------------------------------------------

function strArray (v: unknown, what: string, maxItems = 64): string[] {
  if (!Array.isArray(v) || v.length > maxItems) throw new ProtocolError(`${what} must be an array of at most ${maxItems} strings`)
  return v.map((s, i) => str(s, `${what}[${i}]`, 1024))
}

/** Multiaddrs a peer asks us to dial: each must parse. */
function multiaddrArray (v: unknown, what: string): string[] {
  const list = strArray(v, what, 16)
  for (const a of list) {
    try {
      multiaddr(a)
    } catch {
      throw new ProtocolError(`${what}: '${a.slice(0, 80)}' is not a multiaddr`)
    }
  }
  return list
}

function labels (v: unknown, what: string): Record<string, string> {
  const o = obj(v, what)
  const out: Record<string, string> = {}
  const entries = Object.entries(o)
  if (entries.length > 64) throw new ProtocolError(`${what} has too many entries`)
  for (const [k, val] of entries) out[str(k, `${what} key`, 256)] = str(val, `${what}.${k}`, 1024)
  return out
}

/** A libp2p peer ID in its string form; anything else is refused before it can be dialled. */
function peerIdStr (v: unknown, what: string): string {
  const s = str(v, what, 256)
  try {
    peerIdFromString(s)
  } catch {
    throw new ProtocolError(`${what} is not a peer ID`)
  }
  return s
}

function nullable<T> (v: unknown, f: (v: unknown) => T): T | null {
  return v === null || v === undefined ? null : f(v)
}

export function parseAuthHello (v: unknown): AuthHello {
  const o = obj(v, 'auth hello')
  return { cert: str(o.cert, 'auth hello cert', 16384), ...optionalCrl(o.crl) }
}

export function parseMemberInfo (v: unknown): MemberInfo {
  const o = obj(v, 'member')
  return {
    name: str(o.name, 'member name', 256),
    peerId: peerIdStr(o.peerId, 'member peerId'),
    addrs: multiaddrArray(o.addrs, 'member addrs'),
    labels: labels(o.labels, 'member labels'),
    agentVersion: str(o.agentVersion, 'member agentVersion', 64),
    dockerVersion: nullable(o.dockerVersion, x => str(x, 'member dockerVersion', 64)),
    containers: nullable(o.containers, x => {
      if (typeof x !== 'number' || !Number.isInteger(x) || x < 0) throw new ProtocolError('member containers must be a count')
      return x
    }),
    crlNumber: typeof o.crlNumber === 'number' && Number.isInteger(o.crlNumber) ? o.crlNumber : 0,
    ...(o.failover === undefined || o.failover === null ? {} : { failover: parseFailoverGossip(o.failover) })
  }
}

function optionalCrl (v: unknown): { crl?: SignedCrlWire } {
  if (v === undefined || v === null) return {}
  const c = obj(v, 'crl')
  return { crl: { payload: str(c.payload, 'crl payload', 512 * 1024), signature: str(c.signature, 'crl signature', 4096) } }
}

export function parseMemberSummaries (v: unknown): MemberSummary[] {
  if (!Array.isArray(v) || v.length > MAX_EXCHANGED_MEMBERS) throw new ProtocolError(`members must be an array of at most ${MAX_EXCHANGED_MEMBERS} entries`)
  return v.map((m, i) => {
    const o = obj(m, `members[${i}]`)
    const cert = o.cert === undefined || o.cert === null ? {} : { cert: str(o.cert, `members[${i}].cert`, MAX_MEMBER_CERT_CHARS) }
    return { peerId: peerIdStr(o.peerId, `members[${i}].peerId`), name: str(o.name, 'name', 256), addrs: multiaddrArray(o.addrs, `members[${i}].addrs`), ...cert }
  })
}

function optionalWantCerts (v: unknown): { wantCerts?: string[] } {
  if (v === undefined || v === null) return {}
  if (!Array.isArray(v) || v.length > MAX_WANTED_CERTS) throw new ProtocolError(`wantCerts must be an array of at most ${MAX_WANTED_CERTS} peer IDs`)
  return { wantCerts: v.map((x, i) => peerIdStr(x, `wantCerts[${i}]`)) }
}

export function parseHeartbeatRequest (v: unknown): HeartbeatRequest {
  const o = obj(v, 'heartbeat')
  const rtt = typeof o.rttMs === 'number' && Number.isFinite(o.rttMs) && o.rttMs >= 0 ? { rttMs: o.rttMs } : {}
  return { from: parseMemberInfo(o.from), members: parseMemberSummaries(o.members), ...rtt, ...optionalCrl(o.crl), ...optionalWantCerts(o.wantCerts) }
}

export function parseHeartbeatReply (v: unknown): HeartbeatReply {
  const o = obj(v, 'heartbeat reply')
  return { self: parseMemberInfo(o.self), members: parseMemberSummaries(o.members), ...optionalCrl(o.crl), ...optionalWantCerts(o.wantCerts) }
}

export function parseStatusRequest (v: unknown): StatusRequest {
  const o = obj(v, 'status request')
  return o.name === undefined || o.name === null ? {} : { name: str(o.name, 'status name', 256) }
}

/** The peers reply, checked enough that printing it cannot fail. */
export function parsePeerRows (v: unknown): PeerRow[] {
  if (!Array.isArray(v) || v.length > 4096) throw new ProtocolError('peers reply must be a list')
  return v.map((r, i) => {
    const o = obj(r, `peers[${i}]`)
    const state = o.state
    if (state !== 'alive' && state !== 'suspect' && state !== 'dead') throw new ProtocolError(`peers[${i}].state is not alive, suspect or dead`)
    const num = (x: unknown, what: string): number | null => nullable(x, y => {
      if (typeof y !== 'number' || !Number.isFinite(y)) throw new ProtocolError(`peers[${i}].${what} must be a number`)
      return y
    })
    return {
      name: str(o.name, `peers[${i}].name`, 256),
      peerId: peerIdStr(o.peerId, `peers[${i}].peerId`),
      self: o.self === true,
      state,
      role: o.role === 'operator' ? 'operator' : 'agent',
      addrs: strArray(o.addrs, `peers[${i}].addrs`),
      labels: labels(o.labels, `peers[${i}].labels`),
      agentVersion: nullable(o.agentVersion, x => str(x, 'agentVersion', 64)),
      dockerVersion: nullable(o.dockerVersion, x => str(x, 'dockerVersion', 64)),
      containers: num(o.containers, 'containers'),
      lastSeen: nullable(o.lastSeen, x => str(x, 'lastSeen', 64)),
      rttMs: num(o.rttMs, 'rttMs')
    }
  })
}

/** The status reply, checked enough that printing it cannot fail. */
export function parseAgentStatus (v: unknown): AgentStatus {
  const o = obj(v, 'status')
  const d = obj(o.docker, 'status docker')
  const docker: AgentStatus['docker'] = typeof d.error === 'string'
    ? { error: d.error }
    : {
        version: str(d.version, 'docker version', 64),
        apiVersion: str(d.apiVersion, 'docker apiVersion', 64),
        os: str(d.os, 'docker os', 64),
        arch: str(d.arch, 'docker arch', 64),
        ...d.kind === undefined ? {} : { kind: str(d.kind, 'docker kind', 64) }
      }
  if (!Array.isArray(o.containers)) throw new ProtocolError('status containers must be a list')
  const p = obj(o.peers, 'status peers')
  const count = (x: unknown): number => typeof x === 'number' && Number.isInteger(x) && x >= 0 ? x : 0
  if (typeof o.uptimeS !== 'number') throw new ProtocolError('status uptimeS must be a number')
  return {
    name: str(o.name, 'status name', 256),
    peerId: peerIdStr(o.peerId, 'status peerId'),
    version: str(o.version, 'status version', 64),
    uptimeS: o.uptimeS,
    labels: labels(o.labels, 'status labels'),
    docker,
    containers: o.containers.map((c, i) => {
      const x = obj(c, `containers[${i}]`)
      return {
        name: str(x.name, 'container name', 256), id: str(x.id, 'container id', 128), image: str(x.image, 'container image', 1024), state: str(x.state, 'container state', 64), status: str(x.status, 'container status', 256),
        ...x.project === undefined ? {} : { project: str(x.project, 'container project', 256) }
      }
    }),
    peers: { alive: count(p.alive), suspect: count(p.suspect), dead: count(p.dead) },
    ...(o.failover === undefined || o.failover === null ? {} : { failover: parseFailoverStatus(o.failover) }),
    ...(o.live === undefined || o.live === null ? {} : { live: parseLiveStatus(o.live) })
  }
}

function parseLiveStatus (v: unknown): NonNullable<AgentStatus['live']> {
  const l = obj(v, 'status live')
  if (!Array.isArray(l.missing) || l.missing.length > 16) throw new ProtocolError('status live.missing must be a list')
  return {
    ok: l.ok === true,
    ...l.criu === undefined ? {} : { criu: str(l.criu, 'status live.criu', 32) },
    missing: l.missing.map((m, i) => str(m, `status live.missing[${i}]`, 512))
  }
}
