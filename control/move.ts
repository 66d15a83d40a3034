/**
 * `goto move CONTAINER --to NAME`: finds the container's agent, orders the move there and shows it:
 * a progress bar on a terminal (step, bytes, rate, ETA), plain lines otherwise, or with --json the
 * events themselves, one JSON object per line, the last being `done` or `failed`. Before anything
 * reaches the destination the source sends the spec it will move (an `order` event): signMoveOrder
 * signs the order the destination will insist on (protocol/orders.ts).
 */
import { bindsOf, type LiveReport, type MoveEvent, type MoveOrder, type MovePlan, type MoveStep, type OrderRequest } from '../protocol/move-messages.js'
import { signOrder, specDigest, type MoveOrderBody, type OrderSigner, type SignedOrder } from '../protocol/orders.js'
import { OrderMismatchError } from '../protocol/errors.js'
import { hostPowersOf } from '../protocol/fidelity.js'
import { printable } from './format.js'

/** The label compose puts on a project's containers (agent/move/project.ts has the same). */
const COMPOSE_PROJECT = 'com.docker.compose.project'

/**
 * The operator's signed order for the move the source `sourceId` proposes in `request`, after
 * checking that it is the move the operator asked for (`asked`): from that agent, to the member
 * named, of the container named. The spec's digest is computed here from the spec shown; bind
 * mounts are allowed only with --allow-bind-mounts, exactly those of that spec; the spec's host-level
 * powers (protocol/fidelity.ts) only with --allow-host-access, and the order says so only then.
 */
export async function signMoveOrder (signer: OrderSigner, request: OrderRequest, asked: MoveOrder, sourceId: string): Promise<SignedOrder> {
  if (request.from !== sourceId) throw new OrderMismatchError(`the agent proposes a move from ${request.fromName} (${request.from}), but it is ${sourceId}`)
  if (request.toName !== asked.to) throw new OrderMismatchError(`the agent proposes a move to ${request.toName}, not to ${asked.to}`)
  if (request.container !== request.spec.name) throw new OrderMismatchError(`the agent proposes to move '${request.container}' with the spec of '${request.spec.name}'`)
  if (asked.project === true && request.spec.labels[COMPOSE_PROJECT] !== asked.container) {
    throw new OrderMismatchError(`the agent proposes to move '${request.container}', which is not a container of compose project '${asked.container}'`)
  }
  return await signOrder<MoveOrderBody>(signer, {
    kind: 'move',
    id: request.moveId,
    container: request.spec.name,
    from: request.from,
    to: request.to,
    specDigest: specDigest(request.spec),
    allow: {
      binds: asked.allowBindMounts ? bindsOf(request.spec) : [],
      ...asked.allowHostAccess === true && hostPowersOf(request.spec.engine).length > 0 ? { hostAccess: true } : {},
      ...asked.live === true || asked.live === 'auto' ? { live: true } : {}
    }
  })
}

export type Output = (s: string) => void

const MiB = 1024 * 1024
const ROLLBACK = {
  'none-needed': ' (nothing was changed)',
  done: ' — rolled back: the container runs where it was, nothing is left at the destination',
  incomplete: ' — ROLLBACK INCOMPLETE: see the source agent\'s log'
}
const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`
/** A cost in the link table's currency: 4 decimals (a few MiB at $0.09/GiB is a fraction of a cent). */
const cost = (c: number): string => c.toFixed(4)

/** A cap as an operator wrote it: Mbit/s, and MiB/s beside it. */
function rateText (bytesPerSecond: number): string {
  return `${(bytesPerSecond * 8 / 1e6).toFixed(1)} Mbit/s (${mib(bytesPerSecond)}/s)`
}

/**
 * Time left at the rate seen so far, and with a cap, at the cap too (the soonest the move can end):
 * a rate well below the cap means the link or the engine, not the cap, is what holds the move back.
 */
export function eta (left: number, rate: number, cap?: number): string {
  if (left <= 0) return ''
  const seen = rate > 0 ? `ETA ${Math.ceil(left / rate)}s` : 'ETA ?'
  return cap === undefined ? seen : `${seen} (${Math.ceil(left / cap)}s at the cap)`
}

function summary (ev: Extract<MoveEvent, { event: 'done' }>, dryRun: boolean): string {
  if (dryRun) return `dry run: nothing changed (${ev.layersSkipped} layer(s) already on ${ev.to})`
  const live = ev.live === undefined
    ? ev.notLive === undefined ? '' : `; NOT live (--live=auto fell back to an ordinary move: ${ev.notLive}): its processes started afresh`
    : `; live: its processes go on there (checkpoint ${ev.live.checkpointMs} ms, ${mib(ev.live.checkpointBytes)} in ${ev.live.checkpointFiles} file(s) sent in ${ev.live.transferMs} ms, restore ${ev.live.restoreMs} ms)`
  return `done: ${ev.container} moved ${ev.from} → ${ev.to}: ${mib(ev.bytesSent)} sent in ${ev.layersSent} layer(s), ${ev.bytesFromHolders === undefined ? '' : `${mib(ev.bytesFromHolders)} taken from members near ${ev.to}, `}${ev.layersSkipped} layer(s) already there, downtime ${ev.downtimeMs} ms${live}`
}

const RESUMED = {
  checkpoint: ' (restored from its own checkpoint: its processes go on with their memory)',
  fresh: ' (its checkpoint could not be restored: started afresh, its processes\' memory lost)'
}

function liveLine (r: LiveReport): string {
  return `${r.host}: ${r.ok ? `can take live moves (CRIU ${r.criu ?? '?'}, ${r.arch})` : `cannot take live moves: ${r.missing.join('; ')}`}`
}

/** Renders move events for a person; returns the final event. */
export class MoveRenderer {
  private step: MoveStep = 'plan'
  private stepStarted = Date.now()
  private barShown = false
  private lastQuarter = -1
  /** The sender's rate cap (bytes/s on the wire), from the plan. */
  private cap: NonNullable<MovePlan['rateCap']> | undefined

  constructor (private readonly out: Output, private readonly err: Output, private readonly tty: boolean, private readonly dryRun: boolean) {}

  render (ev: MoveEvent): void {
    switch (ev.event) {
      case 'order': {
        const r = ev.request
        this.line(`order ${r.moveId}: signed: ${r.container} ${r.fromName} → ${r.toName}, spec ${specDigest(r.spec).slice(7, 19)}`)
        break
      }
      case 'plan': {
        const p = ev.plan
        this.line(`plan ${p.moveId}: ${p.container} ${p.from} → ${p.to}; image ${p.image.slice(7, 19)}: ${p.layersTotal} layer(s), ${p.layersPresent} already there, ${p.layersToSend} to send (up to ${mib(p.bytesToSend)}); volumes: ${p.volumes.join(', ') || 'none'}`)
        if (p.rateCap !== undefined) {
          this.cap = p.rateCap
          this.line(`plan ${p.moveId}: rate capped at ${rateText(p.rateCap.bytesPerSecond)} (${p.rateCap.by === 'move' ? '--max-rate' : 'the link\'s cap'})`)
        }
        if ((p.hostPowers ?? []).length > 0) this.line(`plan ${p.moveId}: host-level powers carried (--allow-host-access): ${(p.hostPowers ?? []).join(', ')}`)
        if (p.link !== undefined) {
          const l = p.link
          this.line(`plan ${p.moveId}: link ${p.from} → ${p.to}: ${l.class}, ${l.costPerGiB}/GiB, ${l.compress === 'zstd' ? 'zstd' : 'uncompressed'}${l.rateMbit === undefined ? '' : `, capped at ${l.rateMbit} Mbit/s`}`)
          for (const x of p.layers ?? []) {
            this.line(`plan ${p.moveId}: layer ${x.diffId.slice(7, 19)} ${x.bytes === null ? 'size unknown' : mib(x.bytes)} ${x.send ? `from ${x.from ?? p.from} sent over ${x.link ?? l.class} link, cost ${cost(x.cost)}` : 'already there'}`)
          }
          const by = p.linkBytes === undefined ? `over the ${l.class} link` : `(${(['expensive', 'cheap', 'free'] as const).map(c => `${c} ${mib(p.linkBytes?.[c] ?? 0)}`).join(', ')})`
          this.line(`plan ${p.moveId}: total ${mib(p.bytesToSend)} ${by}, estimated cost ${cost(p.estimatedCost ?? 0)}`)
        }
        if (p.live !== undefined) {
          this.line(`plan ${p.moveId}: live: ${liveLine(p.live.source)}`)
          this.line(`plan ${p.moveId}: live: ${liveLine(p.live.destination)}`)
        }
        for (const n of p.networks ?? []) {
          const subnet = n.subnet === 'kept' ? 'its subnet kept' : n.subnet === 'engine' ? 'a subnet the engine chooses' : 'no IPv4 subnet'
          this.line(`network ${n.name}: ${n.at === 'create' ? `created at ${p.to}` : `exists at ${p.to}, joined`}, ${subnet}; aliases ${n.aliases.join(', ') || 'none'}${n.ipv4Address === '' ? '' : `; address ${n.ipv4Address}${n.subnet === 'engine' ? ' not kept' : ''}`}`)
        }
        for (const w of p.warnings ?? []) this.line(`plan ${p.moveId}: warning: ${w}`)
        for (const v of p.volumeData ?? []) {
          this.line(`volume ${v.name}: ${v.bytes === null ? 'size unknown' : mib(v.bytes)} to send, ${v.copy === 'rounds' ? 'in rounds while it runs (only the last difference in the freeze)' : 'whole, inside the freeze'}`)
        }
        break
      }
      case 'round':
        this.line(`${ev.final ? 'final round (frozen)' : `pre-copy round ${ev.round}`}: ${mib(ev.bytes)} changed, ${ev.files} file(s)`)
        break
      case 'step':
        this.step = ev.step
        this.stepStarted = Date.now()
        this.lastQuarter = -1
        this.line(`${ev.step}...`)
        break
      case 'progress':
        this.progress(ev.bytesSent, ev.bytesTotal)
        break
      case 'done':
        this.line(summary(ev, this.dryRun))
        break
      case 'failed':
        this.line(`goto: error: move failed${ev.moveId !== null ? ` (move ${ev.moveId})` : ''}: ${ev.error.message}${ROLLBACK[ev.rollback]}${ev.resumed === undefined ? '' : RESUMED[ev.resumed]}`, this.err)
        break
    }
  }

  /** One line of the agents' words (names, messages): made printable, the newline is ours. */
  private line (s: string, to: Output = this.out): void {
    if (this.barShown) { this.out('\r\x1b[2K'); this.barShown = false }
    to(printable(s) + '\n')
  }

  private progress (sent: number, total: number): void {
    const step = printable(this.step)
    const elapsedS = Math.max(0.001, (Date.now() - this.stepStarted) / 1000)
    const rate = sent / elapsedS
    const frac = total > 0 ? Math.min(1, sent / total) : 0
    const speed = this.cap === undefined ? `${mib(rate)}/s` : `${mib(rate)}/s of ${mib(this.cap.bytesPerSecond)}/s cap`
    if (!this.tty) {
      const quarter = Math.floor(frac * 4)
      if (quarter > this.lastQuarter) {
        this.lastQuarter = quarter
        this.out(`${step}: ${mib(sent)} of ${mib(total)} (${Math.round(frac * 100)}%), ${speed}\n`)
      }
      return
    }
    const width = 30
    const filled = Math.round(frac * width)
    this.out(`\r\x1b[2K${step.padEnd(9)} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.round(frac * 100)).padStart(3)}% ${mib(sent)}/${mib(total)} ${speed} ${eta(total - sent, rate, this.cap?.bytesPerSecond)}`)
    this.barShown = true
  }
}
