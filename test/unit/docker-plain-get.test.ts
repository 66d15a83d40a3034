import { expect } from 'chai'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EngineStatusError, plainGet } from '../../agent/docker/plain-get.js'
import type { DockerEndpoint } from '../../agent/config.js'
import { GotoError } from '../../protocol/errors.js'

/** A fake engine on a unix socket: answers every connection with `answer` (raw bytes), then closes. */
async function fakeEngine (path: string, answer: (req: string, socket: Socket) => void): Promise<Server> {
  const server = createServer(socket => {
    let req = ''
    socket.on('data', d => {
      req += String(d)
      if (req.includes('\r\n\r\n')) answer(req, socket)
    })
    socket.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(path, resolve))
  return server
}

describe('docker: plainGet (a streamed GET over HTTP/1.0)', () => {
  let dir: string
  let server: Server | undefined
  let endpoint: DockerEndpoint
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-plain-get-'))
    endpoint = { kind: 'unix', socketPath: join(dir, 'engine.sock'), url: `unix://${join(dir, 'engine.sock')}` }
  })
  afterEach(async () => {
    await new Promise<void>(resolve => { if (server === undefined) resolve(); else server.close(() => { resolve() }) })
    server = undefined
    await rm(dir, { recursive: true, force: true })
  })

  it('asks with HTTP/1.0 and yields the whole body, however the engine splits it, up to the close', async () => {
    let request = ''
    const body = Buffer.alloc(300_000, 7)
    server = await fakeEngine(endpoint.kind === 'unix' ? endpoint.socketPath : '', (req, s) => {
      request = req
      s.write('HTTP/1.0 200 OK\r\nContent-Type: application/x-tar\r\n\r\n')
      s.write(body.subarray(0, 10))
      s.end(body.subarray(10))
    })
    const res = await plainGet(endpoint, '/images/abc/get')
    expect(res.status).to.equal(200)
    const parts: Uint8Array[] = []
    for await (const c of res.body) parts.push(c)
    expect(Buffer.concat(parts).equals(body)).to.equal(true)
    expect(request.startsWith('GET /images/abc/get HTTP/1.0\r\n')).to.equal(true)
  })

  it('reaches an engine over TCP too, naming it in the Host header', async () => {
    let request = ''
    const tcp = createServer(socket => {
      socket.on('data', d => {
        request += String(d)
        if (request.includes('\r\n\r\n')) socket.end('HTTP/1.0 200 OK\r\n\r\nbody')
      })
    })
    await new Promise<void>(resolve => tcp.listen(0, '127.0.0.1', resolve))
    try {
      const port = (tcp.address() as { port: number }).port
      const res = await plainGet({ kind: 'tcp', host: '127.0.0.1', port, url: `tcp://127.0.0.1:${port}` }, '/images/x/get')
      const parts: Uint8Array[] = []
      for await (const c of res.body) parts.push(c)
      expect(Buffer.concat(parts).toString()).to.equal('body')
      expect(request).to.include(`\r\nHost: 127.0.0.1:${port}\r\n`)
    } finally {
      await new Promise<void>(resolve => { tcp.close(() => { resolve() }) })
    }
  })

  it('turns an error answer into EngineStatusError with the engine\'s JSON message, and a silent close into an error', async () => {
    server = await fakeEngine(endpoint.kind === 'unix' ? endpoint.socketPath : '', (req, s) => {
      if (req.includes('/missing/')) s.end('HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\r\n{"message":"reference does not exist"}\n')
      else s.end()
    })
    let err: unknown
    try { await plainGet(endpoint, '/images/missing/get') } catch (e) { err = e }
    expect(err).to.be.instanceOf(EngineStatusError).and.instanceOf(GotoError)
    expect((err as Error).name).to.equal('EngineStatusError')
    expect((err as EngineStatusError).statusCode).to.equal(404)
    expect((err as EngineStatusError).json).to.deep.equal({ message: 'reference does not exist' })
    err = undefined
    try { await plainGet(endpoint, '/images/other/get') } catch (e) { err = e }
    expect(String(err)).to.match(/closed the connection before answering/)
  })

  it('fails with the socket\'s error when nothing listens, and with the signal\'s reason when aborted', async () => {
    let err: unknown
    try { await plainGet(endpoint, '/x') } catch (e) { err = e }
    expect((err as NodeJS.ErrnoException).code).to.equal('ENOENT')
    server = await fakeEngine(endpoint.kind === 'unix' ? endpoint.socketPath : '', (_req, s) => { s.write('HTTP/1.0 200 OK\r\n\r\nsome') })
    const ac = new AbortController()
    const res = await plainGet(endpoint, '/slow', ac.signal)
    err = undefined
    try {
      for await (const _ of res.body) ac.abort(new Error('enough'))
    } catch (e) { err = e }
    expect(err).to.be.instanceOf(Error)
  })
})
