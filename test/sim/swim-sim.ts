/**
 * N SwimNodes in one process over an in-memory network with a fake clock. Every message is encoded
 * to JSON (its bytes counted, plus FRAME_OVERHEAD_BYTES for the stream framing it would travel in)
 * and parsed back by the real checker (protocol/swim-messages.ts) before the receiver sees it. The
 * network loses messages at `loss`, delivers the others one step later, holds messages to a paused
 * node until it resumes (a SIGSTOPped process's socket buffers do) and drops those to a dead one.
 *
 *   const sim = await SwimSim.create({ n: 1000, timings: SWIM_PROFILES.lan, seed: 1 })
 *   sim.run(10_000)                 // fake ms
 *   sim.kill(sim.ids[5]); sim.runUntil(() => sim.deadEverywhere(id), 30_000)
 */
import type { MemberInfo } from '../../protocol/messages.js'
import { parseSwimMessage, type SwimMessage } from '../../protocol/swim-messages.js'
import { SwimNode, type SwimChange } from '../../agent/membership/swim/node.js'
import type { SwimTimings } from '../../agent/membership/swim/timings.js'
import { SimKeys, seeded } from './keys.js'

/** One simulation step (fake ms): also the one-way latency of every message. */
export const STEP_MS = 10
/**
 * Per message, what the stream it travels in adds: yamux frame header (12), Noise length and tag
 * (2 + 16) and the JSON stream's length prefix (2). TCP/IP headers are left out (as for today's design).
 */
export const FRAME_OVERHEAD_BYTES = 32

/** What a typical agent says of itself: two addresses, a label, versions. */
export function memberInfo (id: string, i: number): MemberInfo {
  return {
    name: `host-${String(i).padStart(4, '0')}`,
    peerId: id,
    addrs: [`/ip4/10.${(i >> 8) & 255}.${i & 255}.7/tcp/4001`, `/ip4/203.0.${(i >> 8) & 255}.${i & 255}/tcp/4001`],
    labels: { zone: `z${i % 3}` },
    agentVersion: '0.1.0',
    dockerVersion: 'docker 28.5.2+dfsg4 containerd-store',
    containers: 4,
    crlNumber: 1
  }
}

export interface SimEvent extends SwimChange { at: number, observer: string }

export interface SimOptions {
  n: number
  timings: SwimTimings
  seed?: number
  loss?: number
  /** Nodes that exist but are not yet members (for joins); not started. */
  spare?: number
  keys?: SimKeys
}

interface InFlight { from: string, to: string, json: string }

export class SwimSim {
  now = 0
  loss: number
  readonly nodes = new Map<string, SwimNode>()
  readonly ids: string[]
  readonly spare: string[]
  readonly sent = new Map<string, { bytes: number, msgs: number }>()
  readonly events: SimEvent[] = []
  readonly killed = new Set<string>()
  private readonly paused = new Map<string, InFlight[]>()
  private inFlight: InFlight[] = []
  readonly random: () => number
  /** Each node's view: how many observers hold each member in each state (for convergence checks). */
  private readonly viewCount = new Map<string, Record<string, number>>()

  private constructor (readonly opts: SimOptions, readonly keys: SimKeys) {
    this.loss = opts.loss ?? 0
    this.random = seeded(opts.seed ?? 1)
    this.ids = keys.ids.slice(0, opts.n)
    this.spare = keys.ids.slice(opts.n, opts.n + (opts.spare ?? 0))
  }

  /** N members that already know each other (a converged mesh), plus `spare` nodes that may join. */
  static async create (opts: SimOptions): Promise<SwimSim> {
    const keys = opts.keys ?? await SimKeys.create(opts.n + (opts.spare ?? 0))
    const sim = new SwimSim(opts, keys)
    for (const id of sim.ids) sim.nodes.set(id, sim.makeNode(id))
    // Converged start: every node holds every other's record, heard from directly.
    const saved = sim.ids.map(id => ({ record: (sim.nodes.get(id) as SwimNode).selfRecord(), state: 'alive' as const, direct: true, cert: keys.cert(id) }))
    for (const id of sim.ids) (sim.nodes.get(id) as SwimNode).restore(saved)
    sim.inFlight = [] // the start-up wants/certs are not traffic
    sim.resetCounters()
    return sim
  }

  private makeNode (id: string): SwimNode {
    const i = this.keys.ids.indexOf(id)
    return new SwimNode({
      self: memberInfo(id, i),
      timings: this.opts.timings,
      crypto: this.keys.crypto(id),
      now: () => this.now,
      random: this.random,
      send: (to, msg) => { this.send(id, to, msg) },
      onChange: c => { this.record(id, c) }
    })
  }

  private record (observer: string, c: SwimChange): void {
    this.events.push({ ...c, at: this.now, observer })
    let v = this.viewCount.get(c.id)
    if (v === undefined) { v = {}; this.viewCount.set(c.id, v) }
    if (c.from !== 'unknown') v[c.from] = (v[c.from] ?? 1) - 1
    v[c.to] = (v[c.to] ?? 0) + 1
  }

  /** How many nodes hold `id` in `state` in their table. */
  holding (id: string, state: string): number {
    return this.viewCount.get(id)?.[state] ?? 0
  }

  resetCounters (): void {
    this.sent.clear()
    this.events.length = 0
  }

  /** Sees every message sent (before loss), for tests. */
  onSend?: (from: string, to: string, msg: SwimMessage) => void

  private send (from: string, to: string, msg: SwimMessage): void {
    this.onSend?.(from, to, msg)
    const json = JSON.stringify(msg)
    const s = this.sent.get(from) ?? { bytes: 0, msgs: 0 }
    s.bytes += json.length + FRAME_OVERHEAD_BYTES
    s.msgs++
    this.sent.set(from, s)
    if (this.killed.has(to) || !this.nodes.has(to) || this.random() < this.loss) return
    this.inFlight.push({ from, to, json })
  }

  /** Members that are up (not killed). */
  live (): string[] { return [...this.nodes.keys()].filter(id => !this.killed.has(id)) }

  kill (id: string): void { this.killed.add(id); this.paused.delete(id) }
  pause (id: string): void { if (!this.paused.has(id)) this.paused.set(id, []) }
  /** Resumes a paused node: it handles what queued up for it, then runs on. */
  resume (id: string): void {
    const held = this.paused.get(id) ?? []
    this.paused.delete(id)
    for (const m of held) this.deliver(m)
  }

  /** Starts a spare node and has it join through `seed`. */
  join (id: string, seed: string): SwimNode {
    const node = this.makeNode(id)
    this.nodes.set(id, node)
    node.join([seed])
    return node
  }

  /** A killed node comes back as a fresh process (incarnation 0, empty table) and joins through `seed`. */
  restart (id: string, seed: string): SwimNode {
    this.killed.delete(id)
    return this.join(id, seed)
  }

  private deliver (m: InFlight): void {
    const node = this.nodes.get(m.to)
    if (node === undefined || this.killed.has(m.to)) return
    const held = this.paused.get(m.to)
    if (held !== undefined) { held.push(m); return }
    node.receive(m.from, parseSwimMessage(JSON.parse(m.json)), this.keys.cert(m.from))
  }

  step (): void {
    this.now += STEP_MS
    const due = this.inFlight
    this.inFlight = []
    for (const m of due) this.deliver(m)
    for (const [id, node] of this.nodes) if (!this.killed.has(id) && !this.paused.has(id)) node.tick()
  }

  run (ms: number): void {
    const end = this.now + ms
    while (this.now < end) this.step()
  }

  /** Steps until `done()` (checked every step) or `maxMs`; the fake time it took, or undefined. */
  runUntil (done: () => boolean, maxMs: number): number | undefined {
    const start = this.now
    while (this.now - start < maxMs) {
      this.step()
      if (done()) return this.now - start
    }
    return undefined
  }

  /** Every live node other than `id` holds it dead. */
  deadEverywhere (id: string): boolean {
    return this.holding(id, 'dead') >= this.live().filter(x => x !== id).length
  }

  /** Bytes and messages sent per live node per second since the last resetCounters, over `ms`. */
  rates (ms: number): { bytesPerNodeS: number, msgsPerNodeS: number } {
    let bytes = 0
    let msgs = 0
    for (const s of this.sent.values()) { bytes += s.bytes; msgs += s.msgs }
    const n = this.live().length
    return { bytesPerNodeS: bytes / n / (ms / 1000), msgsPerNodeS: msgs / n / (ms / 1000) }
  }

  /** Changes to suspect / dead of members that were up the whole time (`exclude`: the ones killed on purpose). */
  falseReports (exclude: Set<string> = this.killed): { suspicions: number, episodes: number, deaths: number, deadMembers: number } {
    const s = this.events.filter(e => e.to === 'suspect' && !exclude.has(e.id))
    const d = this.events.filter(e => e.to === 'dead' && !e.left && !exclude.has(e.id))
    // An episode: one member suspected at one incarnation (its refutation raises it), however many nodes heard of it.
    return { suspicions: s.length, episodes: new Set(s.map(e => `${e.id}:${e.inc}`)).size, deaths: d.length, deadMembers: new Set(d.map(e => e.id)).size }
  }
}
