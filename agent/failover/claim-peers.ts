/**
 * The claim round's transport over libp2p: each claim request is one /goto/failover/1.0.0 stream
 * to the peer (dialled as every part dials, net/dial.ts), one request, one reply. The serving side
 * is FailoverService's handler, which answers with ClaimRound.decide.
 */
import type { AuthService } from '../net/auth-service.js'
import { openStream } from '../net/dial.js'
import type { PeerEntry } from '../membership/peer-table.js'
import type { ClaimPeers } from './consensus.js'
import { FAILOVER_PROTOCOL } from '../../protocol/ids.js'
import { readResult } from '../../protocol/wire.js'
import { parseClaimReply, type ClaimReply, type ClaimRequest } from '../../protocol/failover-messages.js'

export class Libp2pClaimPeers implements ClaimPeers {
  constructor (private readonly auth: AuthService) {}

  async ask (peer: PeerEntry, req: ClaimRequest, signal: AbortSignal): Promise<ClaimReply> {
    const js = await openStream(this.auth, peer.peerId, peer.addrs, FAILOVER_PROTOCOL, signal)
    await js.write(req, signal)
    const reply = parseClaimReply(await readResult(js, signal))
    await js.close(signal).catch(() => {})
    return reply
  }
}
