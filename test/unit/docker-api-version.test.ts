import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AGENT_API, negotiateApiVersion } from '../../agent/docker/api-version.js'
import { DockerodeHost } from '../../agent/docker/host.js'
import { DockerApiVersionError, ImageNotFoundError, fromWireError, toWireError } from '../../protocol/errors.js'

/**
 * A fake engine on a unix socket that serves API versions `min`-`max` as Docker does: `/version`
 * on any path, every other path only with a version prefix in range (Docker 29 answers a lower one
 * with 400 "client version 1.41 is too old"), and an empty container list.
 */
async function fakeEngine (socketPath: string, min: string, max: string, seen: string[], versionDelayMs = 0): Promise<Server> {
  const num = (v: string): number => { const [a, b] = v.split('.').map(Number); return (a ?? 0) * 1000 + (b ?? 0) }
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? ''
    seen.push(url)
    const m = /^\/v(\d+\.\d+)(\/.*)$/.exec(url)
    const path = (m?.[2] ?? url).replace(/\?.*$/, '')
    const json = (status: number, body: unknown): void => { res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body)) }
    if (path === '/version') {
      setTimeout(() => { json(200, { Version: '29.0.0', ApiVersion: max, MinAPIVersion: min, Os: 'linux', Arch: 'amd64' }) }, versionDelayMs)
      return
    }
    if (m?.[1] === undefined) { json(400, { message: 'this fake engine wants a versioned path' }); return }
    if (num(m[1]) < num(min)) { json(400, { message: `client version ${m[1]} is too old. Minimum supported API version is ${min}, please upgrade your client to a newer version` }); return }
    if (num(m[1]) > num(max)) { json(400, { message: `client version ${m[1]} is too new. Maximum supported API version is ${max}` }); return }
    if (path === '/containers/json') { json(200, []); return }
    json(404, { message: 'no such thing' })
  })
  await new Promise<void>(resolve => server.listen(socketPath, resolve))
  return server
}

describe('docker: Engine API version negotiation', () => {
  describe('negotiateApiVersion', () => {
    it('speaks the highest version both sides serve', () => {
      expect(negotiateApiVersion({ apiVersion: '1.52', minApiVersion: '1.44' })).to.equal(AGENT_API.max) // Docker 29
      expect(negotiateApiVersion({ apiVersion: '1.41', minApiVersion: '1.12' })).to.equal('1.41') // Engine 20.10, Podman 4.3
      expect(negotiateApiVersion({ apiVersion: '1.45', minApiVersion: '1.24' })).to.equal('1.45') // Engine 26
      expect(negotiateApiVersion({ apiVersion: '1.41' })).to.equal('1.41') // no MinAPIVersion: only its own
      expect(negotiateApiVersion({ apiVersion: '1.60', minApiVersion: '1.9' }, { min: '1.10', max: '1.55' })).to.equal('1.55') // numbers, not strings
    })

    it('refuses an engine too old or too new with both ranges named', () => {
      const refused = (engine: { apiVersion: string, minApiVersion?: string }): DockerApiVersionError => {
        try { negotiateApiVersion(engine, { min: '1.41', max: '1.51' }) } catch (err) { return err as DockerApiVersionError }
        throw new Error('not refused')
      }
      const old = refused({ apiVersion: '1.40', minApiVersion: '1.12' })
      expect(old).to.be.instanceOf(DockerApiVersionError)
      expect(old.engine).to.equal('1.12-1.40')
      expect(old.agent).to.equal('1.41-1.51')
      expect(old.message).to.include('1.12-1.40').and.include('1.41-1.51').and.include('too old')
      const young = refused({ apiVersion: '1.60', minApiVersion: '1.52' })
      expect(young.message).to.include('1.52-1.60').and.include('too new')
      expect(refused({ apiVersion: 'v2' }).name).to.equal('DockerApiVersionError')
    })

    it('crosses the wire as its own class', () => {
      expect(fromWireError(toWireError(new DockerApiVersionError('x')))).to.be.instanceOf(DockerApiVersionError)
    })
  })

  describe('DockerodeHost against an engine serving 1.44 and newer only (as Docker 29)', () => {
    let dir: string
    let server: Server | undefined
    let socketPath: string
    const host = (): DockerodeHost => new DockerodeHost({ kind: 'unix', socketPath, url: `unix://${socketPath}` })
    beforeEach(async () => {
      dir = await mkdtemp(join(tmpdir(), 'goto-api-version-'))
      socketPath = join(dir, 'engine.sock')
    })
    afterEach(async () => {
      await new Promise<void>(resolve => { if (server === undefined) resolve(); else server.close(() => { resolve() }) })
      server = undefined
      await rm(dir, { recursive: true, force: true })
    })

    it('asks /version unversioned once, then speaks the negotiated version on every path', async () => {
      const seen: string[] = []
      server = await fakeEngine(socketPath, '1.44', '1.52', seen)
      const docker = host()
      expect(await docker.listContainers()).to.deep.equal([])
      expect(await docker.listContainers()).to.deep.equal([])
      expect(seen).to.deep.equal(['/version', `/v${AGENT_API.max}/containers/json?all=1`, `/v${AGENT_API.max}/containers/json?all=1`])
      expect((await docker.version()).apiVersion).to.equal('1.52') // what the engine says of itself
      // The save, read over its own HTTP/1.0 connection (plain-get.ts), is versioned too.
      let err: unknown
      try { for await (const e of docker.saveImage('x')) void e } catch (e) { err = e }
      expect(err).to.be.instanceOf(ImageNotFoundError)
      expect(seen).to.include(`/v${AGENT_API.max}/images/x/get`)
    })

    it('a caller that gives up during the ask fails alone; the others get their answer', async () => {
      const seen: string[] = []
      server = await fakeEngine(socketPath, '1.44', '1.52', seen, 200)
      const docker = host()
      const [impatient, patient] = await Promise.allSettled([docker.listContainers(AbortSignal.timeout(20)), docker.listContainers()])
      expect(impatient.status).to.equal('rejected')
      expect(patient).to.deep.equal({ status: 'fulfilled', value: [] })
      expect(seen.filter(p => p === '/version')).to.have.length(1)
    })

    it('speaks 1.41 to an engine whose newest is 1.41 (Engine 20.10)', async () => {
      const seen: string[] = []
      server = await fakeEngine(socketPath, '1.12', '1.41', seen)
      expect(await host().listContainers()).to.deep.equal([])
      expect(seen[1]).to.equal('/v1.41/containers/json?all=1')
    })

    it('fails every request with DockerApiVersionError when no version is shared, asking the engine nothing else', async () => {
      const seen: string[] = []
      server = await fakeEngine(socketPath, '1.60', '1.62', seen)
      const docker = host()
      let err: unknown
      try { await docker.listContainers() } catch (e) { err = e }
      expect(err).to.be.instanceOf(DockerApiVersionError)
      expect((err as DockerApiVersionError).message).to.include('1.60-1.62').and.include(`${AGENT_API.min}-${AGENT_API.max}`)
      expect(seen.every(p => p === '/version')).to.equal(true)
    })
  })
})
