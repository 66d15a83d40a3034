/**
 * Today's design (agent/membership/service.ts) in the same harness, for comparison: every interval
 * each pair of agents exchanges one request and one reply, each carrying the sender's MemberInfo
 * and its peer exchange (up to PEER_EXCHANGE_MAX_MEMBERS summaries). A round is one heartbeat
 * interval. Each node's request and reply are encoded once per round (they differ per receiver
 * only in the rare `wantCerts`) and counted once per peer they go to, plus the same framing as the
 * SWIM simulation. A peer is dead after deadAfterMs without an exchange, as PeerTable.tick() says;
 * a member learned by peer exchange is heartbeated (and so heard from) from the next round on.
 */
import { createHash } from 'node:crypto'
import type { HeartbeatReply, HeartbeatRequest, MemberSummary } from '../../protocol/messages.js'
import { PEER_EXCHANGE_MAX_MEMBERS } from '../../agent/membership/service.js'
import type { Timings } from '../../agent/timings.js'
import { seeded } from './keys.js'
import { FRAME_OVERHEAD_BYTES, memberInfo } from './swim-sim.js'

const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz'
/** A string of a real Ed25519 peer ID's length and alphabet (only its size matters here: nothing parses it). */
function fakePeerId (i: number): string {
  const h = createHash('sha256').update(String(i)).digest()
  return '12D3KooW' + Array.from({ length: 44 }, (_, k) => B58[h[k % 32] % 58]).join('')
}

export class FullTableSim {
  now = 0
  private readonly n: number
  private readonly ids: string[]
  private readonly addrs: string[][]
  private readonly summaryLengths: Uint32Array
  /** lastSeen[i * n + j]: when i last exchanged with j (ms); NaN if i does not list j. */
  private readonly lastSeen: Float64Array
  private readonly dead = new Set<number>()
  private readonly out = new Set<number>()
  private readonly random: () => number
  private readonly loss: number
  private readonly timings: Timings
  bytes = 0
  msgs = 0
  falseDeaths = 0
  private readonly deadIn: Uint8Array

  constructor (opts: { n: number, timings: Timings, seed?: number, loss?: number }) {
    this.n = opts.n
    this.timings = opts.timings
    this.loss = opts.loss ?? 0
    this.random = seeded(opts.seed ?? 1)
    this.ids = Array.from({ length: this.n }, (_, i) => fakePeerId(i))
    this.addrs = this.ids.map((id, i) => memberInfo(id, i).addrs)
    this.summaryLengths = new Uint32Array(this.n)
    this.lastSeen = new Float64Array(this.n * this.n).fill(0)
    this.deadIn = new Uint8Array(this.n * this.n)
    for (let i = 0; i < this.n; i++) this.lastSeen[i * this.n + i] = NaN
  }

  /** Takes node i out of the mesh (not started, known to no one): a joiner to be. */
  leaveOut (i: number): void {
    this.out.add(i)
    for (let j = 0; j < this.n; j++) { this.lastSeen[i * this.n + j] = NaN; this.lastSeen[j * this.n + i] = NaN }
  }

  join (i: number, seed: number): void {
    this.out.delete(i)
    this.lastSeen[i * this.n + seed] = this.now
    this.lastSeen[seed * this.n + i] = this.now
  }

  kill (i: number): void { this.dead.add(i) }

  private up (i: number): boolean { return !this.dead.has(i) && !this.out.has(i) }
  private lists (i: number, j: number): boolean { return !Number.isNaN(this.lastSeen[i * this.n + j]) }
  private isDead (i: number, j: number): boolean { return this.now - this.lastSeen[i * this.n + j] >= this.timings.deadAfterMs }

  /**
   * What node i passes on: the members it lists and does not hold dead, heard from most recently
   * first (ties in random order, as millisecond clocks make them), at most PEER_EXCHANGE_MAX_MEMBERS.
   */
  private summaries (i: number): number[] {
    const list: Array<{ j: number, seen: number }> = []
    for (let j = 0; j < this.n; j++) if (j !== i && this.lists(i, j) && !this.isDead(i, j)) list.push({ j, seen: this.lastSeen[i * this.n + j] + this.random() })
    if (list.length > PEER_EXCHANGE_MAX_MEMBERS) list.sort((a, b) => b.seen - a.seen).length = PEER_EXCHANGE_MAX_MEMBERS
    return list.map(({ j }) => j)
  }

  /**
   * The encoded length of node i's request and reply listing `members`: the message without its
   * members, plus each member's summary as JSON.stringify writes it (the sum is exact, and saves
   * encoding the same summaries once per node and round).
   */
  private sizes (i: number, members: number[]): { req: number, rep: number } {
    const from = memberInfo(this.ids[i], i)
    const req: HeartbeatRequest = { from, members: [], rttMs: 0.4 }
    const rep: HeartbeatReply = { self: from, members: [] }
    let list = Math.max(0, members.length - 1)
    for (const j of members) list += this.summaryLength(j)
    return { req: JSON.stringify(req).length + list + FRAME_OVERHEAD_BYTES, rep: JSON.stringify({ ok: true, result: rep }).length + list + FRAME_OVERHEAD_BYTES }
  }

  private summaryLength (j: number): number {
    let l = this.summaryLengths[j]
    if (l === 0) {
      const m: MemberSummary = { peerId: this.ids[j], name: `host-${String(j).padStart(4, '0')}`, addrs: this.addrs[j] }
      l = this.summaryLengths[j] = JSON.stringify(m).length
    }
    return l
  }

  /** One heartbeat interval: every pair that lists each other (either way) exchanges once. */
  round (): void {
    this.now += this.timings.heartbeatIntervalMs
    const n = this.n
    const reqBytes = new Float64Array(n)
    const repBytes = new Float64Array(n)
    const exchange: number[][] = Array.from({ length: n }, () => [])
    for (let i = 0; i < n; i++) {
      if (!this.up(i)) continue
      exchange[i] = this.summaries(i)
      const { req, rep } = this.sizes(i, exchange[i])
      reqBytes[i] = req
      repBytes[i] = rep
    }
    const learned: Array<[number, number]> = []
    for (let i = 0; i < n; i++) {
      if (!this.up(i)) continue
      for (let j = i + 1; j < n; j++) {
        if (!this.lists(i, j) && !this.lists(j, i)) continue
        // The lower ID sends (to a peer it holds dead too: it redials), the other answers if it is up.
        this.bytes += reqBytes[i]; this.msgs++
        if (!this.up(j) || this.random() < this.loss) continue
        this.lastSeen[j * n + i] = this.now
        for (const k of exchange[i]) if (k !== j && !this.lists(j, k)) learned.push([j, k])
        this.bytes += repBytes[j]; this.msgs++
        if (this.random() < this.loss) continue
        this.lastSeen[i * n + j] = this.now
        for (const k of exchange[j]) if (k !== i && !this.lists(i, k)) learned.push([i, k])
      }
    }
    // Learned second-hand: listed now (so heartbeated from the next round), not yet heard from.
    for (const [a, k] of learned) if (!this.lists(a, k)) this.lastSeen[a * n + k] = this.now - this.timings.suspectAfterMs
    for (let i = 0; i < n; i++) {
      if (!this.up(i)) continue
      for (let j = 0; j < n; j++) {
        if (j === i || !this.lists(i, j)) continue
        const d = this.isDead(i, j) ? 1 : 0
        if (d === 1 && this.deadIn[i * n + j] === 0 && this.up(j)) this.falseDeaths++
        this.deadIn[i * n + j] = d
      }
    }
  }

  run (rounds: number): void { for (let r = 0; r < rounds; r++) this.round() }

  /** Rounds until done(), at most maxRounds; undefined if not done. */
  runUntil (done: () => boolean, maxRounds: number): number | undefined {
    for (let r = 1; r <= maxRounds; r++) {
      this.round()
      if (done()) return r
    }
    return undefined
  }

  resetCounters (): void { this.bytes = 0; this.msgs = 0; this.falseDeaths = 0 }

  rates (rounds: number): { bytesPerNodeS: number, msgsPerNodeS: number } {
    const live = [...Array(this.n).keys()].filter(i => this.up(i)).length
    const s = rounds * this.timings.heartbeatIntervalMs / 1000
    return { bytesPerNodeS: this.bytes / live / s, msgsPerNodeS: this.msgs / live / s }
  }

  deadEverywhere (v: number): boolean {
    for (let i = 0; i < this.n; i++) if (i !== v && this.up(i) && this.lists(i, v) && !this.isDead(i, v)) return false
    return true
  }

  knownEverywhere (v: number): boolean {
    for (let i = 0; i < this.n; i++) if (i !== v && this.up(i) && !this.lists(i, v)) return false
    return true
  }
}
