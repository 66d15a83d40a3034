/**
 * /goto/peers, /goto/status and /goto/locate (agent/status/service.ts, agent/status/locate.ts)
 * served by two agents in this process over real libp2p on loopback with real certificates, each on
 * an in-memory engine, and asked by bare clients holding an operator's or an agent's certificate
 * (test/fixtures/mesh-client.ts) — including requests no real client sends, which must come back as
 * typed errors that say what was wrong.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { initCa } from '../../certs/index.js'
import { LOCATE_PROTOCOL, PEERS_PROTOCOL, STATUS_PROTOCOL } from '../../protocol/ids.js'
import { parseAgentStatus, parsePeerRows } from '../../protocol/messages.js'
import { readResult } from '../../protocol/wire.js'
import { GOTO_VERSION } from '../../protocol/version.js'
import type { ContainerSpec } from '../../agent/docker/types.js'
import { MemoryDockerHost } from '../fixtures/memory-docker-host.js'
import { introduce, NO_FAILOVER, startMiniAgent, stopAll, type MiniAgent } from '../fixtures/mini-agent.js'
import { issuedBundle, MeshClient } from '../fixtures/mesh-client.js'
import { rejection } from '../fixtures/assert.js'

const BASE = { '/bin/sh': 'a shell' }

function spec (name: string, image: string): ContainerSpec {
  return {
    name, image, env: [], cmd: ['/bin/sh'], entrypoint: null, workingDir: '/', user: '', labels: { secret: 'not in status' }, hostname: name,
    exposedPorts: [], portBindings: {}, restartPolicy: { name: 'no', maximumRetryCount: 0 }, mounts: []
  }
}

describe('status, peers and locate (two agents on in-memory engines, libp2p on loopback)', function () {
  this.timeout(30_000)
  let dir: string
  let caDir: string
  let A: MemoryDockerHost
  let B: MemoryDockerHost
  let a: MiniAgent
  let b: MiniAgent
  let operator: MeshClient
  let probe: MeshClient
  const clients: MeshClient[] = []

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-status-'))
    caDir = join(dir, 'ca')
    await initCa(caDir)
    A = new MemoryDockerHost({ name: 'A' })
    B = new MemoryDockerHost({ name: 'B' })
    const imageA = await A.addImage([BASE])
    const imageB = await B.addImage([BASE])
    await A.start(await A.create(spec('web', imageA)))
    await B.create(spec('db', imageB)) // created, not running: still listed
    a = await startMiniAgent({ dir, caDir, name: 'a', docker: A })
    b = await startMiniAgent({ dir, caDir, name: 'b', docker: B })
    introduce(a, b)
    const addr = a.node.getMultiaddrs()[0]
    operator = await MeshClient.connect(await issuedBundle(caDir, dir, 'operator', 'ops'), addr)
    clients.push(operator)
    // An agent's certificate on a process that is no agent: what a member asking another looks like.
    probe = await MeshClient.connect(await issuedBundle(caDir, dir, 'agent', 'probe'), addr)
    clients.push(probe)
  })

  after(async () => {
    for (const c of clients.splice(0)) await c.close().catch(() => {})
    await stopAll([a, b])
    await rm(dir, { recursive: true, force: true })
  })

  describe('/goto/peers', () => {
    it('lists this agent first, then its peer table', async () => {
      const rows = parsePeerRows(await operator.request(PEERS_PROTOCOL, {}))
      expect(rows.map(r => [r.name, r.peerId, r.self, r.state])).to.deep.equal([
        ['a', a.peerId, true, 'alive'],
        ['b', b.peerId, false, 'alive']
      ])
      expect(rows[0].agentVersion).to.equal(GOTO_VERSION)
      expect(rows[0].addrs).to.deep.equal(a.info().addrs)
      expect(rows[1].addrs).to.deep.equal(b.info().addrs)
    })

    it('answers an agent certificate as well', async () => {
      const rows = parsePeerRows(await probe.request(PEERS_PROTOCOL, {}))
      expect(rows.map(r => r.name)).to.deep.equal(['a', 'b'])
    })

    // The auth gate answers a request its handler could not take with a typed error (not a reset stream).
    it('refuses a request that is not JSON with a ProtocolError that says so', async () => {
      const js = await operator.open(PEERS_PROTOCOL)
      const signal = AbortSignal.timeout(10_000)
      await js.writeBytes(new TextEncoder().encode('{ not json'), signal)
      const err = await rejection(readResult(js, signal))
      expect(err.name).to.equal('ProtocolError')
      expect(err.message).to.match(/not valid JSON/)
      await js.close(signal)
    })
  })

  describe('/goto/status', () => {
    it("answers this host's status from its engine, to an operator", async () => {
      const status = parseAgentStatus(await operator.request(STATUS_PROTOCOL, {}))
      const version = await A.version(AbortSignal.timeout(1000))
      const web = (await A.listContainers(AbortSignal.timeout(1000))).find(c => c.name === 'web')
      expect(status.name).to.equal('a')
      expect(status.peerId).to.equal(a.peerId)
      expect(status.version).to.equal(GOTO_VERSION)
      expect(status.docker).to.deep.equal({ version: version.version, apiVersion: version.apiVersion, os: version.os, arch: version.arch, kind: `docker ${version.version} memory` })
      expect(status.containers).to.deep.equal([{ name: 'web', id: web?.id, image: web?.image, state: 'running', status: web?.status }])
      expect(status.peers).to.deep.equal({ alive: 1, suspect: 0, dead: 0 })
      expect(status.failover).to.deep.equal(NO_FAILOVER)
      // Container labels stay on the host (they may carry anything).
      expect(JSON.stringify(status)).to.not.include('not in status')
    })

    it('answers its own name like no name', async () => {
      const status = parseAgentStatus(await probe.request(STATUS_PROTOCOL, { name: 'a' }))
      expect(status.peerId).to.equal(a.peerId)
      expect(status.containers.map(c => c.name)).to.deep.equal(['web'])
    })

    it("fetches another member's status over the mesh, for an operator and for an agent", async () => {
      for (const client of [operator, probe]) {
        const status = parseAgentStatus(await client.request(STATUS_PROTOCOL, { name: 'b' }))
        expect(status.name).to.equal('b')
        expect(status.peerId).to.equal(b.peerId)
        expect(status.containers.map(c => [c.name, c.state])).to.deep.equal([['db', 'created']])
      }
    })

    it('says when the engine does not answer, instead of failing the request', async () => {
      A.failNext('version', new Error('engine is down'))
      const status = parseAgentStatus(await operator.request(STATUS_PROTOCOL, {}))
      expect(status.docker).to.deep.equal({ error: 'engine is down' })
      expect(status.containers).to.deep.equal([])
    })

    it('answers UnknownPeerError for a name that is not in the mesh, naming the known ones', async () => {
      const err = await rejection(operator.request(STATUS_PROTOCOL, { name: 'nobody' }))
      expect(err.name).to.equal('UnknownPeerError')
      expect(err.message).to.include("'nobody'").and.include('a, b')
    })

    it('answers AgentUnreachableError when the named member does not answer', async () => {
      const c = await startMiniAgent({ dir, caDir, name: 'c', docker: new MemoryDockerHost({ name: 'C' }) })
      introduce(a, c)
      await c.stop()
      try {
        const err = await rejection(operator.request(STATUS_PROTOCOL, { name: 'c' }))
        expect(err.name).to.equal('AgentUnreachableError')
        expect(err.message).to.include("'c'")
      } finally {
        a.table.remove(c.peerId)
      }
    })

    // The auth gate answers a request its handler could not take with a typed error (not a reset stream).
    it('refuses a name that is not a string with a ProtocolError naming the field', async () => {
      const err = await rejection(operator.request(STATUS_PROTOCOL, { name: 5 }))
      expect(err.name).to.equal('ProtocolError')
      expect(err.message).to.match(/status name must be a string/)
    })

    // The auth gate answers a request its handler could not take with a typed error (not a reset stream).
    it('refuses a request that is not an object with a ProtocolError', async () => {
      const err = await rejection(probe.request(STATUS_PROTOCOL, ['a']))
      expect(err.name).to.equal('ProtocolError')
      expect(err.message).to.match(/status request must be an object/)
    })
  })

  describe('/goto/locate', () => {
    it('finds a container on this host', async () => {
      const found = await operator.request(LOCATE_PROTOCOL, { container: 'web' })
      expect(found).to.deep.equal({ name: 'a', peerId: a.peerId, addrs: a.info().addrs })
    })

    it('finds a container on a peer, by name or by id prefix, for an agent too', async () => {
      const db = (await B.listContainers(AbortSignal.timeout(1000)))[0]
      for (const container of ['db', db.id.slice(0, 12)]) {
        expect(await probe.request(LOCATE_PROTOCOL, { container })).to.deep.equal({ name: 'b', peerId: b.peerId, addrs: b.info().addrs })
      }
    })

    it('answers UnknownContainerError for a container no member runs', async () => {
      const err = await rejection(operator.request(LOCATE_PROTOCOL, { container: 'ghost' }))
      expect(err.name).to.equal('UnknownContainerError')
      expect(err.message).to.include("'ghost'").and.include('a, b')
    })

    it('refuses a request without a container name with a typed error', async () => {
      const err = await rejection(operator.request(LOCATE_PROTOCOL, { container: 42 }))
      expect(err.name).to.equal('UnknownContainerError')
      expect(err.message).to.match(/needs a container name/)
    })

    it('finds the one member that runs a compose project; refuses one spread over several, naming them', async () => {
      const [imageA] = A.imageIds()
      const [imageB] = B.imageIds()
      const project = (p: string, name: string, image: string): ContainerSpec => ({ ...spec(name, image), labels: { 'com.docker.compose.project': p } })
      const made = [
        { host: B, id: await B.create(project('shop', 'shop-db-1', imageB)) }, { host: B, id: await B.create(project('shop', 'shop-web-1', imageB)) },
        { host: A, id: await A.create(project('split', 'split-a-1', imageA)) }, { host: B, id: await B.create(project('split', 'split-b-1', imageB)) }
      ]
      try {
        expect(await operator.request(LOCATE_PROTOCOL, { project: 'shop' })).to.deep.equal({ name: 'b', peerId: b.peerId, addrs: b.info().addrs })
        const spread = await rejection(operator.request(LOCATE_PROTOCOL, { project: 'split' }))
        expect(spread.name).to.equal('ProjectSpreadError')
        expect(spread.message).to.include("'split'").and.include('a (1 container(s))').and.include('b (1 container(s))')
      } finally {
        for (const m of made) await m.host.remove(m.id, { force: true, volumes: false })
      }
      const none = await rejection(operator.request(LOCATE_PROTOCOL, { project: 'nope' }))
      expect(none.name).to.equal('UnknownProjectError')
    })

    it('status rows name each container\'s compose project, and no other label', async () => {
      const [image] = B.imageIds()
      const id = await B.create({ ...spec('shop-db-1', image), labels: { 'com.docker.compose.project': 'shop', secret: 'x' } })
      try {
        const rows = parseAgentStatus(await operator.request(STATUS_PROTOCOL, { name: 'b' })).containers
        expect(rows.find(r => r.name === 'shop-db-1')).to.deep.include({ project: 'shop' }).and.not.have.property('labels')
        expect(rows.find(r => r.name === 'db')).to.not.have.property('project')
      } finally {
        await B.remove(id, { force: true, volumes: false })
      }
    })

    it('refuses a request that is not an object with a typed error, not a reset stream', async () => {
      for (const body of [null, 'web', 7]) {
        const err = await rejection(operator.request(LOCATE_PROTOCOL, body))
        expect(err.name, JSON.stringify(body)).to.equal('UnknownContainerError')
        expect(err.message).to.match(/needs a container name/)
      }
    })
  })
})
