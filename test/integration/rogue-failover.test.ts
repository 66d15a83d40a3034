/**
 * A rogue member against failover, in the lab: three hosts with real engines and agents (test
 * timing profile), and in the test process a rogue holding an agent bundle the lab's CA issued,
 * speaking /goto/heartbeat, /goto/failover and /goto/transfer directly to the victims' lab addresses. Each attack
 * is refused or ignored, logged by the victim with the rogue's name, and changes nothing there:
 * the protected container keeps running at its owner at its epoch, no grant is recorded, the held
 * snapshots stay the owner's.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { dockerCli, runningNames } from '../fixtures/docker.js'
import { MeshClient } from '../fixtures/mesh-client.js'
import { logged as agentLogged, loggedWhere as agentLoggedWhere } from '../fixtures/agent-log.js'
import { readBundle, type Bundle } from '../../certs/index.js'
import { FAILOVER_PROTOCOL, HEARTBEAT_PROTOCOL, TRANSFER_PROTOCOL } from '../../protocol/ids.js'
import { readResult, sendBlob } from '../../protocol/wire.js'
import { SnapshotOwnerMismatchError } from '../../protocol/errors.js'
import { GOTO_VERSION } from '../../protocol/version.js'
import { grantBytes, type EpochCertificate } from '../../protocol/epoch-certs.js'
import type { OwnedEntry } from '../../protocol/failover-messages.js'
import type { AgentStatus, FailoverContainerRow, PeerRow } from '../../protocol/messages.js'

/** Generous next to the test profile (dead after 3 s): a loaded machine is slow, not wrong. */
const STATE_TIMEOUT_MS = 60_000
/** How often the rogue heartbeats, well within the test profile's suspicion timeout (1 s). */
const ROGUE_HEARTBEAT_MS = 250

describe('a rogue member against failover (3 hosts, real agents)', function () {
  this.timeout(300_000)
  const lab = new Lab({ prefix: 'gotolabr', subnet: '10.213.230.0/24', log: line => { if (process.env.GOTO_LAB_VERBOSE !== undefined) console.log(`      lab: ${line}`) } })
  let hosts: LabHost[]
  let rogue: Bundle
  const clients: MeshClient[] = []

  async function status (h: LabHost): Promise<AgentStatus | undefined> {
    const r = await lab.cli(['status', '--json'], { agent: h.agentAddr })
    return r.code === 0 ? JSON.parse(r.stdout) as AgentStatus : undefined
  }

  async function row (h: LabHost, name: string): Promise<FailoverContainerRow | undefined> {
    return (await status(h))?.failover?.containers.find(c => c.name === name)
  }

  async function peers (h: LabHost): Promise<PeerRow[]> {
    const r = await lab.cli(['peers', '--json'], { agent: h.agentAddr })
    return r.code === 0 ? JSON.parse(r.stdout) as PeerRow[] : []
  }

  /** The grants a host has recorded (its failover.json), as persisted. */
  async function grants (h: LabHost): Promise<unknown> {
    const text = await readFile(join(h.dir, 'state', 'failover.json'), 'utf8').catch(() => '{}')
    return (JSON.parse(text) as { grants?: unknown }).grants ?? {}
  }

  async function logged (h: LabHost, message: string, fields: Record<string, unknown>): Promise<boolean> {
    return await agentLogged(h.agentLog, message, fields)
  }

  async function loggedWhere (h: LabHost, message: string, test: (o: Record<string, unknown>) => boolean): Promise<boolean> {
    return await agentLoggedWhere(h.agentLog, message, test)
  }

  async function connect (h: LabHost): Promise<MeshClient> {
    const c = await MeshClient.connect(rogue, multiaddr(h.agentAddr))
    clients.push(c)
    return c
  }

  /** What the rogue says of itself in a heartbeat: it owns `owned`. */
  function heartbeat (owned: OwnedEntry[]): unknown {
    return {
      from: { name: rogue.name, peerId: rogue.peerId, addrs: [], labels: {}, agentVersion: GOTO_VERSION, dockerVersion: null, containers: 0, crlNumber: 0, failover: { owned, held: [] } },
      members: []
    }
  }

  /** A certificate the rogue makes alone: its own signed grant, stating the mesh's 4 members. */
  async function selfCertified (epoch: number): Promise<EpochCertificate> {
    const claim = { container: 'web', epoch, claimant: rogue.peerId, previousOwner: rogue.peerId, previousEpoch: epoch - 1 }
    const sig = await rogue.privateKey.sign(grantBytes(claim, rogue.peerId, 4))
    return { ...claim, grants: [{ grantor: rogue.peerId, members: 4, sig: Buffer.from(sig).toString('base64'), cert: rogue.certPem }] }
  }

  /**
   * A certificate with a "majority" of grants: the rogue's own, and grants in the name of the
   * victims B and C (and of a member that does not exist) that the rogue signed itself with its own
   * certificate — grants forged for members that never granted.
   */
  async function forgedMajority (epoch: number, names: string[]): Promise<EpochCertificate> {
    const claim = { container: 'web', epoch, claimant: rogue.peerId, previousOwner: rogue.peerId, previousEpoch: epoch - 1 }
    const grants = []
    for (const grantor of [rogue.peerId, ...names]) {
      const sig = await rogue.privateKey.sign(grantBytes(claim, grantor, 4))
      grants.push({ grantor, members: 4, sig: Buffer.from(sig).toString('base64'), cert: rogue.certPem })
    }
    return { ...claim, grants }
  }

  /** What must not change on the victims: where web runs, its owner and epoch, grants, held snapshots. */
  async function snapshotOfVictims (): Promise<unknown> {
    const [A] = hosts
    const held = []
    for (const h of hosts) for (const s of (await status(h))?.failover?.held ?? []) held.push({ at: h.name, name: s.name, owner: s.owner, epoch: s.epoch })
    const r = await row(A, 'web')
    return {
      running: await Promise.all(hosts.map(async h => (await runningNames(h)).filter(n => n.startsWith('web')))),
      all: (await dockerCli(A, 'ps', '-a', '--format', '{{.Names}}')).split('\n').filter(n => n.startsWith('web')).sort(),
      owner: r?.owner,
      epoch: r?.epoch,
      fenced: r?.fenced,
      grants: await Promise.all(hosts.map(grants)),
      held
    }
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    hosts = await lab.up(3)
    for (const h of hosts) {
      await waitFor(async () => { const p = await peers(h); return p.length === 3 && p.every(x => x.state === 'alive') }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `every member alive at ${h.name}` })
    }
    rogue = await readBundle(await lab.issueBundle('rogue-1', 'agent'))
    const [A] = hosts
    await dockerCli(A, 'run', '-d', '--name', 'web', '-l', 'goto.protect=true', '-v', 'webdata:/data', 'gotolab/base:latest', 'sleep', '1000000')
    await waitFor(async () => {
      const r = await row(A, 'web')
      return r !== undefined && (r.snapshotSeq ?? 0) > 0 && r.holders.length > 0 ? r : undefined
    }, { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: 'a snapshot of web' })
  })

  after(async function () {
    this.timeout(120_000)
    for (const c of clients) await c.close().catch(() => {})
    await lab.down()
  })

  it("a heartbeat gossiping the owner's container at a huge, self-certified or forged-majority epoch stops and renames nothing (attack 3)", async () => {
    const [A] = hosts
    const before = await snapshotOfVictims()
    expect(before).to.deep.include({ owner: A.name, epoch: 1, fenced: false, all: ['web'] })
    const client = await connect(A)
    const forged = await selfCertified(999998)
    const absent = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    const majority = await forgedMajority(999997, [...hosts.slice(1).map(h => { if (h.peerId === undefined) throw new Error(`${h.name} has no peer ID yet`); return h.peerId }), absent])
    const gossip: OwnedEntry[][] = [[{ name: 'web', epoch: 999999 }], [{ name: 'web', epoch: 999998, cert: forged }], [{ name: 'web', epoch: 999997, cert: majority }]]
    for (const owned of gossip) {
      let stop = false
      const beat = (async () => {
        while (!stop) {
          await client.request(HEARTBEAT_PROTOCOL, heartbeat(owned))
          await new Promise(resolve => setTimeout(resolve, ROGUE_HEARTBEAT_MS))
        }
      })()
      try {
        await waitFor(async () => (await peers(A)).some(p => p.name === rogue.name && p.state === 'alive'), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: 'the rogue alive at A' })
        // The stale-copy rule saw the rogue's epoch, logged it with the rogue's name, and ignored it.
        await waitFor(async () => await logged(A, 'ignoring a higher epoch gossiped without a valid certificate', { peer: rogue.name, peerEpoch: owned[0].epoch }), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: "A's log of the ignored epoch" })
        if (owned[0].cert !== undefined) expect(await logged(A, 'epoch certificate refused', { claimant: rogue.peerId, reason: 'EpochCertificateInvalidError' })).to.equal(true)
      } finally {
        stop = true
        await beat
      }
    }
    // Long after the rogue went silent (dead in every table, its last word a huge epoch), nothing moved.
    await waitFor(async () => (await peers(A)).some(p => p.name === rogue.name && p.state === 'dead'), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: 'the rogue dead at A' })
    expect(await snapshotOfVictims()).to.deep.equal(before)
  })

  it('a peer exchange of 40 made-up members (with certificates that are not theirs) makes no victim fence (attack 4)', async () => {
    const [A] = hosts
    const before = await snapshotOfVictims()
    // Made-up peer IDs: real Ed25519 keys nobody in the mesh holds, at an address nobody answers on;
    // half of them "vouched for" with the rogue's own certificate.
    const ghosts = await Promise.all(Array.from({ length: 40 }, async (_, i) => ({
      peerId: peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString(), name: `ghost-${i}`, addrs: ['/ip4/10.213.230.250/tcp/9'],
      ...(i % 2 === 0 ? { cert: rogue.certPem } : {})
    })))
    let stop = false
    let client = await connect(A)
    const beat = (async () => {
      while (!stop) {
        // A refused or cut request is not what this test checks (a loaded victim may close a quiet
        // stream): the rogue just goes on, on a new connection if that one closed.
        await client.request(HEARTBEAT_PROTOCOL, { ...heartbeat([]) as object, members: ghosts }).catch(async () => {
          if (!stop) client = await connect(A).catch(() => client)
        })
        await new Promise(resolve => setTimeout(resolve, ROGUE_HEARTBEAT_MS))
      }
    })()
    try {
      await waitFor(async () => await logged(A, 'peer exchange over its limits or with certificates that do not verify: entries ignored', { name: rogue.name, offered: 40 }), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: "A's log of the rogue's peer exchange" })
      // The ghosts A took (at most LEARN_PER_SENDER per window) go dead there and are forgotten: by
      // then A had ticked through far more than fenceAfterMs with every one of them in its table, unheard.
      const ghost = (o: Record<string, unknown>): boolean => typeof o.name === 'string' && o.name.startsWith('ghost-')
      expect(await loggedWhere(A, 'learned peer', o => ghost(o) && o.from === rogue.name && o.verified === false)).to.equal(true)
      await waitFor(async () => await loggedWhere(A, 'forgot peer', ghost), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: 'A to forget a ghost' })
    } finally {
      stop = true
      await beat
    }
    await waitFor(async () => (await peers(A)).some(p => p.name === rogue.name && p.state === 'dead'), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: 'the rogue dead at A' })
    expect(await snapshotOfVictims()).to.deep.equal(before)
  })

  it("a claim of a live owner's container — naming the claimant itself, or the live owner, at any epoch — is refused and recorded nowhere (attack 5)", async () => {
    const [A, B, C] = hosts
    const before = await snapshotOfVictims()
    const requests = [
      { op: 'claim', name: 'web', epoch: 1e12, previousOwner: rogue.peerId, previousEpoch: 1 },
      { op: 'claim', name: 'web', epoch: 2, previousOwner: rogue.peerId, previousEpoch: 1 },
      { op: 'claim', name: 'web', epoch: 2, previousOwner: rogue.peerId, previousEpoch: 0 },
      { op: 'claim', name: 'web', epoch: 2, previousOwner: (await status(A))?.peerId, previousEpoch: 1 }
    ]
    for (const h of [A, B, C]) {
      let client = await connect(h)
      for (const req of requests) {
        // The rogue sends no heartbeats here, so a victim may close its connection as that of a
        // silent peer: a request cut off before any answer is asked again on a new connection
        // (whatever the cut one did is still caught by the check of the victims' state below).
        let reply: { granted: boolean, grant?: unknown }
        try {
          reply = await client.request(FAILOVER_PROTOCOL, req) as typeof reply
        } catch (err) {
          if ((err as Error).name !== 'ProtocolError') throw err
          client = await connect(h)
          reply = await client.request(FAILOVER_PROTOCOL, req) as typeof reply
        }
        expect(reply.granted, `${h.name}: ${JSON.stringify(req)}`).to.equal(false)
        expect(reply.grant).to.equal(undefined)
      }
      await waitFor(async () => await logged(h, 'takeover claim refused', { claimant: rogue.name, container: 'web', epoch: 1e12 }), { timeoutMs: STATE_TIMEOUT_MS, intervalMs: 250, what: `${h.name}'s log of the refused claim` })
    }
    expect(await snapshotOfVictims()).to.deep.equal(before)
  })

  it("a store of a snapshot named like the owner's container, at a higher version, replaces nothing at its holder (attack 2)", async () => {
    const [A] = hosts
    const web = await row(A, 'web')
    const H = hosts.find(h => h.name === web?.holders[0]) as LabHost
    const owner = (await status(A))?.peerId as string
    const dir = join(H.dir, 'state', 'snapshots')
    const held = JSON.parse(await readFile(await currentManifest(join(dir, `${owner}.web`)), 'utf8')) as { spec: unknown, config: string, diffIds: string[] }
    const before = await snapshotOfVictims()
    const entries = (await readdir(dir)).filter(d => !d.startsWith('.'))
    // The rogue offers the owner's own image and spec, with its own changes, far newer.
    const config = Buffer.from(held.config, 'base64')
    const { os, architecture } = JSON.parse(config.toString('utf8')) as { os: string, architecture: string }
    const client = await connect(H)
    const moveId = randomBytes(8).toString('hex')
    await client.request(TRANSFER_PROTOCOL, {
      op: 'prepare', moveId, purpose: 'snapshot', spec: held.spec, volumes: [],
      image: { id: `sha256:${createHash('sha256').update(config).digest('hex')}`, diffIds: held.diffIds, os, architecture, size: 0 }
    })
    const changes = Buffer.from('the rogue\'s files')
    const js = await client.open(TRANSFER_PROTOCOL)
    const signal = AbortSignal.timeout(STATE_TIMEOUT_MS)
    let refused: unknown
    try {
      await js.write({
        op: 'store', moveId, owner: rogue.peerId, epoch: 999999, seq: 999999, takenAt: new Date().toISOString(), config: held.config, diffIds: held.diffIds, spec: held.spec,
        top: { diffId: `sha256:${createHash('sha256').update(changes).digest('hex')}`, size: changes.length }, volumes: []
      }, signal)
      await sendBlob(js, (async function * () { yield changes })(), changes.length, signal).catch(() => {})
      await readResult(js, signal)
    } catch (err) {
      refused = err
    } finally {
      js.abort(new Error('done'))
    }
    expect(refused).to.be.instanceOf(SnapshotOwnerMismatchError)
    expect(await logged(H, 'transfer step refused', { op: 'store', from: rogue.name, reason: 'SnapshotOwnerMismatchError' })).to.equal(true)
    expect((await readdir(dir)).filter(d => !d.startsWith('.'))).to.deep.equal(entries)
    expect(JSON.parse(await readFile(await currentManifest(join(dir, `${owner}.web`)), 'utf8'))).to.deep.include({ owner, epoch: 1 })
    expect(await snapshotOfVictims()).to.deep.equal(before)
  })
})

/** The manifest of a holder's current version of a container (snapshot-store.ts: CURRENT names it). */
async function currentManifest (containerDir: string): Promise<string> {
  const { version } = JSON.parse(await readFile(join(containerDir, 'CURRENT'), 'utf8')) as { version: string }
  return join(containerDir, version, 'manifest.json')
}
