/**
 * The claim round of failover: how one member comes to own a protected container at a new epoch.
 * A claimant grants the claim itself, asks every alive peer (through `ClaimPeers`, so unit tests run
 * it with fake peers; claim-peers.ts sends it over /goto/failover) and wins only with a majority of
 * the known members, itself counted. A member grants a claim only by `judgeClaim` (placement.ts)
 * and persists the grant before it answers, so a restarted member never grants one epoch twice and
 * two claimants can never both win an epoch, whatever their views of the mesh.
 *
 *   const claims = new ClaimRound({ state, table, selfId, peers: new Libp2pClaimPeers(auth), log })
 *   const epoch = await claims.claim('web', claims.nextEpoch('web'), previousOwner, view) // or TakeoverRefusedError
 *   const reply = await claims.decide(req, claimantPeerId)                              // serving a peer's claim
 */
import type { PeerEntry, PeerTable } from '../membership/peer-table.js'
import type { Logger } from '../log.js'
import type { FailoverState } from './state.js'
import { hasQuorum, judgeClaim, majority } from './placement.js'
import type { ClaimReply, ClaimRequest } from '../../protocol/failover-messages.js'
import { TakeoverRefusedError } from '../../protocol/errors.js'

/**
 * How long one peer may take to answer a claim: a dial (direct or relayed) and one round trip, with
 * room for a slow WAN link. A peer that does not answer in time counts as no vote.
 */
export const CLAIM_TIMEOUT_MS = 5000

/** What the claim round asks of the mesh: one claim request to one peer, its answer back. */
export interface ClaimPeers {
  ask (peer: PeerEntry, req: ClaimRequest, signal: AbortSignal): Promise<ClaimReply>
}

/** The mesh as this host sees it at one tick. */
export interface MeshView {
  /** Known members, this host counted. */
  members: number
  /** Alive peers. */
  alive: PeerEntry[]
  /** Whether this host hears a majority now. */
  quorum: boolean
}

/** The view of the mesh that the peer table gives now. */
export function meshView (table: Pick<PeerTable, 'entries'>): MeshView {
  const entries = table.entries()
  const alive = entries.filter(e => e.state === 'alive')
  const members = entries.length + 1
  return { members, alive, quorum: hasQuorum(alive.length + 1, members) }
}

/** Who owned a container before the claim, at which epoch. */
export interface PreviousOwner { peerId: string, epoch: number }

export interface ClaimRoundDeps {
  state: FailoverState
  /** Whether a previous owner is dead is judged in this member's own view. */
  table: Pick<PeerTable, 'get'>
  selfId: string
  peers: ClaimPeers
  log: Logger
  /** How long each peer may take to answer (default CLAIM_TIMEOUT_MS). */
  claimTimeoutMs?: number
}

export class ClaimRound {
  /** Lowest epoch worth claiming next per container, raised by refusals. */
  private readonly floor = new Map<string, number>()
  private readonly timeoutMs: number

  constructor (private readonly deps: ClaimRoundDeps) {
    this.timeoutMs = deps.claimTimeoutMs ?? CLAIM_TIMEOUT_MS
  }

  /** The lowest epoch worth claiming for `name`: past every grant we know of, except our own. */
  nextEpoch (name: string): number {
    const g = this.deps.state.grant(name)
    const granted = g === undefined ? 0 : g.claimant === this.deps.selfId ? g.epoch : g.epoch + 1
    return Math.max(granted, this.floor.get(name) ?? 0)
  }

  /**
   * Grants `name` at `epoch` to ourselves and asks every alive peer of `view` to grant it too.
   * Resolves with `epoch` when a majority of the known members granted it; TakeoverRefusedError
   * otherwise, after raising the floor past any higher epoch a member reported (nextEpoch).
   */
  async claim (name: string, epoch: number, previous: PreviousOwner, view: Pick<MeshView, 'members' | 'alive'>): Promise<number> {
    const req: ClaimRequest = { op: 'claim', name, epoch, previousOwner: previous.peerId, previousEpoch: previous.epoch }
    const own = await this.decide(req, this.deps.selfId)
    if (!own.granted) {
      this.raise(name, own.epoch + 1)
      throw new TakeoverRefusedError(`this host already granted epoch ${own.epoch} of '${name}'`)
    }
    const replies = await Promise.all(view.alive.map(async peer => await this.ask(peer, req)))
    const votes = 1 + replies.filter(r => r?.granted === true).length
    const need = majority(view.members)
    if (votes >= need) return epoch
    // A member that granted this epoch (to another claimant) or a higher one: go past it next time.
    // A refusal below it only means that member does not see the owner dead yet.
    const higher = Math.max(0, ...replies.map(r => r !== undefined && !r.granted ? r.epoch : 0))
    if (higher >= epoch) this.raise(name, higher + 1)
    throw new TakeoverRefusedError(`epoch ${epoch} of '${name}' won ${votes} of the ${need} votes needed`)
  }

  /** Whether we grant a claim (ours included); a grant is persisted before it is reported. */
  async decide (req: ClaimRequest, claimant: string): Promise<ClaimReply> {
    const { state, table, selfId } = this.deps
    const verdict = judgeClaim(req, claimant, {
      self: selfId,
      grant: state.grant(req.name),
      ownEpoch: state.peek(req.name)?.epoch,
      isDead: peerId => (table.get(peerId)?.state ?? 'dead') === 'dead'
    })
    if (verdict.granted) {
      state.setGrant(req.name, { epoch: req.epoch, claimant })
      await state.save()
    }
    return verdict
  }

  /** One peer's answer, or undefined (no vote) if it failed or did not answer in time. */
  private async ask (peer: PeerEntry, req: ClaimRequest): Promise<ClaimReply | undefined> {
    const signal = AbortSignal.timeout(this.timeoutMs)
    try {
      return await untilAborted(this.deps.peers.ask(peer, req, signal), signal)
    } catch (err) {
      this.deps.log.debug('claim request failed', { peer: peer.name, container: req.name, error: (err as Error).message })
      return undefined
    }
  }

  private raise (name: string, epoch: number): void {
    this.floor.set(name, Math.max(this.floor.get(name) ?? 0, epoch))
  }
}

/** `p`, or a rejection once `signal` aborts: a peer that ignores the signal cannot stall a claim. */
async function untilAborted<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => {
      onAbort = () => { reject(signal.reason) }
      signal.addEventListener('abort', onAbort, { once: true })
    })])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}
