/**
 * The claim round of failover: how one member comes to own a protected container at a new epoch.
 * A claimant grants the claim itself, asks every alive peer (through `ClaimPeers`, so unit tests run
 * it with fake peers; claim-peers.ts sends it over /goto/failover) and wins only with a majority of
 * the known members, itself counted. A member grants a claim only by `judgeClaim` (placement.ts),
 * judged in its own view, and persists the grant before it answers, so a restarted member never
 * grants one epoch twice and two claimants can never both win an epoch, whatever their views of
 * the mesh. Each grant is signed (protocol/epoch-certs.ts); the winner keeps the grants as the
 * epoch's certificate, which every other member verifies before it acts on the epoch.
 *
 *   const claims = new ClaimRound({ state, table, selfId, signer, certs, peers: new Libp2pClaimPeers(auth), log })
 *   const { epoch, cert } = await claims.claim('web', claims.nextEpoch('web'), previousOwner, view) // or TakeoverRefusedError
 *   const reply = await claims.decide(req, claimantPeerId)                                        // serving a peer's claim
 */
import type { PeerEntry, PeerTable } from '../membership/peer-table.js'
import type { Logger } from '../log.js'
import type { FailoverState } from './state.js'
import type { EpochCertificates } from './certificates.js'
import { hasQuorum, judgeClaim, majority, type GossipedOwner } from './placement.js'
import type { ClaimReply, ClaimRequest } from '../../protocol/failover-messages.js'
import { grantBytes, verifyGrant, type EpochCertificate, type GrantClaim, type SignedGrant } from '../../protocol/epoch-certs.js'
import { TakeoverRefusedError } from '../../protocol/errors.js'
// A peer that ignores the signal cannot stall a claim.
import { untilAborted } from '../abort.js'

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
  /** Verified members (PeerTable.verifiedMembers: heard from, or a certificate verified), this host counted. */
  members: number
  /** Alive peers. */
  alive: PeerEntry[]
  /** Whether this host hears a majority now. */
  quorum: boolean
}

/**
 * The view of the mesh that the peer table gives now. Only verified members count: a peer ID
 * learned second-hand without a certificate (possibly made up) cannot take a majority away.
 */
export function meshView (table: Pick<PeerTable, 'entries' | 'verifiedMembers'>): MeshView {
  const alive = table.entries().filter(e => e.state === 'alive')
  const members = table.verifiedMembers()
  return { members, alive, quorum: hasQuorum(alive.length + 1, members) }
}

/** Who owned a container before the claim, at which epoch. */
export interface PreviousOwner { peerId: string, epoch: number }

/** How this member signs its grants: its identity key, and the agent certificate that goes with them. */
export interface GrantSigner {
  certPem: string
  sign: (data: Uint8Array) => Uint8Array | Promise<Uint8Array>
}

/** A won claim: the epoch, and its certificate (the majority's signed grants). */
export interface WonClaim { epoch: number, cert: EpochCertificate }

/** The other members that gossip owning `name` in `table`, with whether each one's epoch is shown. */
export function gossipedOwners (name: string, table: Pick<PeerTable, 'entries'>, certs: Pick<EpochCertificates, 'shows'>): GossipedOwner[] {
  const out: GossipedOwner[] = []
  for (const e of table.entries()) {
    const o = e.failover?.owned.find(x => x.name === name)
    if (o !== undefined) out.push({ peerId: e.peerId, epoch: o.epoch, shown: certs.shows(name, o.epoch, e.peerId, o.cert), dead: e.state === 'dead' })
  }
  return out
}

export interface ClaimRoundDeps {
  state: FailoverState
  /** Whether a previous owner is dead, and who owns what, is judged in this member's own view. */
  table: Pick<PeerTable, 'get' | 'entries' | 'verifiedMembers'>
  selfId: string
  signer: GrantSigner
  certs: EpochCertificates
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
   * Resolves with the epoch and its certificate when valid signed grants of a majority of the known
   * members came back; TakeoverRefusedError otherwise, after raising the floor past any higher
   * epoch a member reported (nextEpoch).
   */
  async claim (name: string, epoch: number, previous: PreviousOwner, view: Pick<MeshView, 'members' | 'alive'>): Promise<WonClaim> {
    const known = this.deps.certs.highest(name)
    const req: ClaimRequest = { op: 'claim', name, epoch, previousOwner: previous.peerId, previousEpoch: previous.epoch, ...known === undefined ? {} : { previous: known } }
    const claim: GrantClaim = { container: name, epoch, claimant: this.deps.selfId, previousOwner: previous.peerId, previousEpoch: previous.epoch }
    const own = await this.decide(req, this.deps.selfId, this.floor.get(name) ?? 0)
    if (!own.granted || own.grant === undefined) {
      this.raise(name, own.epoch + 1)
      throw new TakeoverRefusedError(`this host does not grant epoch ${epoch} of '${name}' (highest it knows: ${own.epoch}): ${own.why ?? 'refused'}`)
    }
    const replies = await Promise.all(view.alive.map(async peer => ({ peer, reply: await this.ask(peer, req) })))
    const grants: SignedGrant[] = [own.grant]
    for (const { peer, reply } of replies) {
      if (reply?.granted !== true || reply.grant === undefined) continue
      try {
        if (reply.grant.grantor !== peer.peerId) throw new Error(`signed as ${reply.grant.grantor}`)
        verifyGrant(claim, reply.grant, this.deps.certs.trust)
        grants.push(reply.grant)
      } catch (err) {
        this.deps.log.warn('claim grant refused: not a valid grant of this claim', { peer: peer.name, container: name, epoch, error: (err as Error).message })
      }
    }
    const need = majority(Math.max(view.members, ...grants.map(g => g.members)))
    const cert: EpochCertificate = { ...claim, grants }
    if (grants.length >= need && this.deps.certs.valid(cert)) return { epoch, cert }
    // Members that know this epoch or a higher one (granted to another claimant): go past such an
    // epoch once those reporting it leave too few others to win below it. One member's word alone
    // (it may lie) cannot push the epoch past what the others would grant. A refusal below the
    // claimed epoch only means that member does not see the owner dead yet.
    const higher = replies.flatMap(({ reply: r }) => r !== undefined && !r.granted && r.epoch >= epoch ? [r.epoch] : []).sort((a, b) => b - a)
    const voters = view.alive.length + 1
    const forced = higher.findIndex((_e, i) => voters - (i + 1) < need)
    if (forced >= 0) this.raise(name, higher[forced] + 1)
    throw new TakeoverRefusedError(`epoch ${epoch} of '${name}' won ${grants.length} of the ${need} signed grants needed`)
  }

  /**
   * Whether we grant a claim (ours included); a grant is persisted before it is reported, signed.
   * `floor`: for our own claim, the epoch the others made us go past (a known epoch to us).
   */
  async decide (req: ClaimRequest, claimant: string, floor = 0): Promise<ClaimReply & { why?: string }> {
    const { state, table, selfId, certs, signer } = this.deps
    const shown = req.previous !== undefined && req.previous.container === req.name && certs.valid(req.previous) ? req.previous.epoch : 0
    const view = meshView(table)
    const verdict = judgeClaim(req, claimant, {
      self: selfId,
      grant: state.grant(req.name),
      ownEpoch: state.peek(req.name)?.epoch,
      owners: gossipedOwners(req.name, table, certs),
      certified: Math.max(shown, certs.highest(req.name)?.epoch ?? 0),
      passed: claimant === selfId ? floor - 1 : 0,
      isDead: peerId => (table.get(peerId)?.state ?? 'dead') === 'dead'
    })
    if (!verdict.granted) return { granted: false, epoch: verdict.epoch, why: verdict.why }
    state.setGrant(req.name, { epoch: req.epoch, claimant })
    await state.save()
    const claim: GrantClaim = { container: req.name, epoch: req.epoch, claimant, previousOwner: req.previousOwner, previousEpoch: req.previousEpoch }
    const sig = await signer.sign(grantBytes(claim, selfId, view.members))
    return { granted: true, epoch: req.epoch, grant: { grantor: selfId, members: view.members, sig: Buffer.from(sig).toString('base64'), cert: signer.certPem } }
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
