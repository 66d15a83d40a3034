/**
 * A rogue member against operator orders, in the lab: two hosts with real engines and agents; the
 * attacker is this test process holding a bundle the lab's CA issued for an agent ('rogue'), and it
 * speaks /goto/transfer and /goto/failover to the victim (B) directly. Each attempt — a move
 * without an order, a spec with a bind mount of /, a restore with another spec than the prepared
 * one, an existing volume of another container, an order signed by an agent key, an expired order,
 * a replayed order, an order for another destination, unprotect without an operator's signature —
 * is refused with its typed error, logged by B with the rogue's name, and B's containers, volumes,
 * images, held snapshots, staged layers and protections are as before. Honest orders through the
 * real CLI still work afterwards.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import { MeshClient } from '../fixtures/mesh-client.js'
import { rejection } from '../fixtures/assert.js'
import { readBundle, type Bundle } from '../../certs/index.js'
import { FAILOVER_PROTOCOL, TRANSFER_PROTOCOL } from '../../protocol/ids.js'
import { newOrderId, signOrder, specDigest, type MoveOrderBody, type ProtectOrderBody, type SignedOrder } from '../../protocol/orders.js'
import type { ContainerSpec } from '../../protocol/container.js'
import type { AgentStatus, PeerRow } from '../../protocol/messages.js'

const run = promisify(execFile)

describe('a rogue member against operator orders (lab: 2 hosts, real agents)', function () {
  this.timeout(240_000)
  const lab = new Lab({ prefix: 'gotolabo', subnet: '10.213.220.0/24' })
  let A: LabHost
  let B: LabHost
  let rogue: Bundle
  let ops: Bundle
  let probe: MeshClient
  let base: { Id: string, Architecture: string, RootFS: { Layers: string[] } }
  let initial: string

  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
    return stdout.trim()
  }

  async function aliveAt (from: LabHost, name: string): Promise<boolean> {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === name && p.state === 'alive')
  }

  async function protectedAt (h: LabHost, name: string): Promise<boolean | undefined> {
    const r = await lab.cli(['status', h.name, '--json'], { agent: h.agentAddr })
    return (JSON.parse(r.stdout) as AgentStatus).failover?.containers.find(c => c.name === name)?.protected
  }

  /** What B holds: containers, images, volumes, held snapshots, staged layers. */
  async function state (h: LabHost): Promise<string> {
    const ls = async (d: string): Promise<string> => (await readdir(join(h.dir, 'state', d)).catch(() => [] as string[])).sort().join(' ')
    return [
      // A protected container is paused for a moment by each of its own snapshots: that is not a change.
      (await docker(h, 'ps', '-a', '--format', '{{.Names}} {{.State}} {{.Image}} {{.Mounts}}')).replace(/^(\S+) paused /gm, '$1 running '), await docker(h, 'images', '-a', '-q', '--no-trunc'),
      await docker(h, 'volume', 'ls', '-q'), await ls('snapshots'), await ls('layers'), await ls('incoming')
    ].map(s => s.split('\n').sort().join('\n')).join('\n--\n')
  }

  function spec (changes: Partial<ContainerSpec> = {}): ContainerSpec {
    return {
      name: 'pwn', image: base.Id, env: [], cmd: ['sleep', '1000000'], entrypoint: null, workingDir: '', user: '0', labels: {}, hostname: '',
      exposedPorts: [], portBindings: {}, restartPolicy: { name: 'always', maximumRetryCount: 0 }, mounts: [], ...changes
    }
  }
  const BINDS: ContainerSpec['mounts'] = [
    { type: 'bind', source: '/', destination: '/host', readOnly: false },
    { type: 'bind', source: '/var/run/docker.sock', destination: '/var/run/docker.sock', readOnly: false }
  ]

  function prepare (moveId: string, s: ContainerSpec, order?: SignedOrder, purpose: 'move' | 'snapshot' = 'move'): Record<string, unknown> {
    return {
      op: 'prepare', moveId, purpose, spec: s,
      image: { id: base.Id, diffIds: base.RootFS.Layers, os: 'linux', architecture: base.Architecture, size: 0 },
      volumes: s.mounts.flatMap(m => m.type === 'volume' ? [{ name: m.name, driver: m.driver }] : []),
      ...order === undefined ? {} : { order }
    }
  }

  /** A move order as the operator's CLI would sign it: from the rogue's host to B, unless changed. */
  async function moveOrder (moveId: string, s: ContainerSpec, changes: Partial<MoveOrderBody> = {}, signer: Bundle = ops, at = Date.now(), ttlMs?: number): Promise<SignedOrder> {
    return await signOrder<MoveOrderBody>(signer, {
      kind: 'move', id: moveId, container: s.name, from: rogue.peerId, to: B.peerId as string, specDigest: specDigest(s), allow: { binds: [] }, ...changes
    }, at, ttlMs)
  }

  async function refused (req: unknown, name: string, protocol = TRANSFER_PROTOCOL, client = probe): Promise<void> {
    const err = await rejection(client.request(protocol, req))
    expect(err.name, err.message).to.equal(name)
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[A, B] = await lab.up(2)
    for (const h of [A, B]) for (const o of [A, B]) await waitFor(async () => await aliveAt(h, o.name), { timeoutMs: 60_000, intervalMs: 250, what: `${o.name} alive at ${h.name}` })
    rogue = await readBundle(await lab.issueBundle('rogue', 'agent'))
    ops = await readBundle(lab.operatorBundle)
    base = JSON.parse(await docker(B, 'image', 'inspect', 'gotolab/base:latest'))[0]
    // The victim's own: a protected container with its data in a volume, and an unprotected one.
    await docker(B, 'run', '-d', '--name', 'db', '-l', 'goto.protect=true', '-v', 'dbdata:/var/db', 'gotolab/base:latest', 'sleep', '1000000')
    await docker(B, 'exec', 'db', 'sh', '-c', 'echo precious > /var/db/data.txt')
    await docker(B, 'run', '-d', '--name', 'plain', 'gotolab/base:latest', 'sleep', '1000000')
    await waitFor(async () => await protectedAt(B, 'db') === true && await protectedAt(B, 'plain') === false, { timeoutMs: 30_000, intervalMs: 250, what: 'B to see db protected' })
    probe = await MeshClient.connect(rogue, multiaddr(B.agentAddr))
    initial = await state(B)
  })

  after(async function () {
    this.timeout(120_000)
    await probe?.close()
    await lab.down()
  })

  it('refuses a move prepared without an order, and a snapshot that carries a bind mount', async () => {
    await refused(prepare('00000000000000a1', spec({ mounts: BINDS })), 'OrderMissingError')
    await refused(prepare('00000000000000a2', spec()), 'OrderMissingError')
    await refused(prepare('00000000000000a3', spec({ mounts: BINDS }), undefined, 'snapshot'), 'HostPowerNotOrderedError')
    await refused({ ...prepare('00000000000000a4', spec(), undefined, 'snapshot'), spec: { ...spec(), privileged: true } }, 'HostPowerNotOrderedError')
    const log = await readFile(B.agentLog, 'utf8')
    expect(log.split('\n').some(l => l.includes('transfer step refused') && l.includes('"from":"rogue"') && l.includes('OrderMissingError'))).to.equal(true)
  })

  it('refuses a bind-mount spec an operator order does not list, and an order naming another spec', async () => {
    const id = newOrderId()
    const bound = spec({ mounts: BINDS })
    // The order names exactly that spec, but allows no bind mount.
    await refused(prepare(id, bound, await moveOrder(id, bound)), 'HostPowerNotOrderedError')
    // The operator signed a harmless spec; the rogue sends another.
    const id2 = newOrderId()
    await refused(prepare(id2, bound, await moveOrder(id2, spec())), 'OrderMismatchError')
  })

  it('refuses a restore whose spec differs from the prepared one, and the same order again (replay)', async () => {
    const id = newOrderId()
    const order = await moveOrder(id, spec())
    await probe.request(TRANSFER_PROTOCOL, prepare(id, spec(), order))
    await refused({ op: 'restore', moveId: id, config: '', diffIds: base.RootFS.Layers, spec: spec({ mounts: BINDS }), volumes: [] }, 'SpecMismatchError')
    // The same spec, but with an archive for another container's volume.
    const id2 = newOrderId()
    await probe.request(TRANSFER_PROTOCOL, prepare(id2, spec(), await moveOrder(id2, spec())))
    await refused({ op: 'restore', moveId: id2, config: '', diffIds: base.RootFS.Layers, spec: spec(), volumes: [{ name: 'dbdata', destination: '/var/db', size: 0 }] }, 'SpecMismatchError')
    // The restore failed, the move is gone at B; its order cannot prepare it again.
    await refused(prepare(id, spec(), order), 'OrderReplayedError')
  })

  it('refuses to mount an existing volume of another container', async () => {
    const id = newOrderId()
    const s = spec({ mounts: [{ type: 'volume', name: 'dbdata', destination: '/var/db', readOnly: false, driver: 'local' }] })
    await refused({ ...prepare(id, s, await moveOrder(id, s)), volumes: [] }, 'NameConflictError')
  })

  it('refuses an order signed with an agent key, an expired one, and one for another destination, source or move', async () => {
    const s = spec()
    const id = newOrderId()
    await refused(prepare(id, s, await moveOrder(id, s, {}, rogue)), 'OrderSignerNotOperatorError')
    const id2 = newOrderId()
    await refused(prepare(id2, s, await moveOrder(id2, s, {}, ops, Date.now() - 120_000, 60_000)), 'OrderExpiredError')
    const id3 = newOrderId()
    await refused(prepare(id3, s, await moveOrder(id3, s, { to: A.peerId as string })), 'OrderMismatchError')
    const id4 = newOrderId()
    await refused(prepare(id4, s, await moveOrder(id4, s, { from: A.peerId as string })), 'OrderMismatchError')
    await refused(prepare(newOrderId(), s, await moveOrder(newOrderId(), s)), 'OrderMismatchError')
  })

  it('refuses protect and unprotect without an operator\'s signature on an order for this agent', async () => {
    const op = async (kind: 'protect' | 'unprotect', container: string, signer: Bundle, host = B.peerId as string): Promise<SignedOrder> =>
      await signOrder<ProtectOrderBody>(signer, { kind, id: newOrderId(), container, host })
    // An agent connection: not an operator at all.
    await refused({ op: 'unprotect', container: 'db' }, 'RoleNotAllowedError', FAILOVER_PROTOCOL)
    await refused({ op: 'unprotect', container: 'db', order: await op('unprotect', 'db', ops) }, 'RoleNotAllowedError', FAILOVER_PROTOCOL)
    // An operator's connection carrying no order, or an order that is not this one.
    const opsClient = await MeshClient.connect(await readBundle(await lab.issueBundle('ops2', 'operator')), multiaddr(B.agentAddr))
    try {
      await refused({ op: 'unprotect', container: 'db' }, 'OrderMissingError', FAILOVER_PROTOCOL, opsClient)
      await refused({ op: 'unprotect', container: 'db', order: await op('unprotect', 'db', rogue) }, 'OrderSignerNotOperatorError', FAILOVER_PROTOCOL, opsClient)
      await refused({ op: 'unprotect', container: 'db', order: await op('unprotect', 'db', ops, A.peerId as string) }, 'OrderMismatchError', FAILOVER_PROTOCOL, opsClient)
      await refused({ op: 'unprotect', container: 'db', order: await op('protect', 'db', ops) }, 'OrderSignatureError', FAILOVER_PROTOCOL, opsClient)
      await refused({ op: 'protect', container: 'plain', order: await op('protect', 'db', ops) }, 'OrderMismatchError', FAILOVER_PROTOCOL, opsClient)
      const order = await op('protect', 'plain', ops)
      const expired = await signOrder<ProtectOrderBody>(ops, { kind: 'protect', id: newOrderId(), container: 'plain', host: B.peerId as string }, Date.now() - 120_000, 60_000)
      await refused({ op: 'protect', container: 'plain', order: expired }, 'OrderExpiredError', FAILOVER_PROTOCOL, opsClient)
      // A valid order is carried out once; the same order again is a replay.
      await opsClient.request(FAILOVER_PROTOCOL, { op: 'protect', container: 'plain', order })
      expect(await protectedAt(B, 'plain')).to.equal(true)
      await refused({ op: 'protect', container: 'plain', order }, 'OrderReplayedError', FAILOVER_PROTOCOL, opsClient)
    } finally {
      await opsClient.close()
    }
    expect(await protectedAt(B, 'db')).to.equal(true)
    // The honest CLI signs its own order.
    const un = await lab.cli(['unprotect', 'plain'])
    expect(un.code, un.stderr).to.equal(0)
    expect(await protectedAt(B, 'plain')).to.equal(false)
  })

  it('left B as it was: containers, volumes and their data, images, held snapshots, staged layers', async () => {
    expect(await state(B)).to.equal(initial)
    expect(await docker(B, 'exec', 'db', 'cat', '/var/db/data.txt')).to.equal('precious')
    expect(await protectedAt(B, 'db')).to.equal(true)
  })

  it('an honest move through the CLI still works (the CLI signs the spec it is shown)', async () => {
    await docker(A, 'run', '-d', '--name', 'web', '-v', 'webdata:/data', 'gotolab/base:latest', 'sleep', '1000000')
    const r = await lab.cli(['move', 'web', '--to', B.name, '--json'], { agent: A.agentAddr, timeoutMs: 120_000 })
    expect(r.code, r.stderr).to.equal(0)
    const events = r.stdout.trim().split('\n').map(l => JSON.parse(l))
    expect(events.map(e => e.event)).to.include.members(['order', 'plan', 'done'])
    expect(JSON.parse(await docker(B, 'inspect', 'web'))[0].State.Running).to.equal(true)
  })
})
