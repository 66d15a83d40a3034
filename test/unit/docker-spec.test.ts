/**
 * The pure parts of the Docker driver: container inspect JSON -> ContainerSpec -> create body
 * (agent/docker/spec.ts), the engine's streamed JSON messages (json-messages.ts) and architecture
 * names. The same round trip against a real engine is in test/integration/docker.test.ts.
 */
import { expect } from 'chai'
import { containerInfoFromInspect, createBody, specFromInspect, type EngineContainer } from '../../agent/docker/spec.js'
import { messageError, readJsonMessages } from '../../agent/docker/json-messages.js'
import { normalizeArch } from '../../agent/docker/host.js'

const ANON = 'f'.repeat(64)

/** Trimmed from `GET /containers/web/json` of Engine 20.10. */
const INSPECT: EngineContainer = {
  Id: 'abc123',
  Name: '/web',
  Image: 'sha256:' + '1'.repeat(64),
  State: { Status: 'paused', Running: true, Paused: true },
  Config: {
    Hostname: 'web-1',
    User: '1000:1000',
    Env: ['PATH=/bin', 'MODE=prod'],
    Cmd: ['serve'],
    Entrypoint: null,
    WorkingDir: '/srv',
    Labels: { tier: 'web' },
    ExposedPorts: { '80/tcp': {}, '53/udp': {} }
  },
  HostConfig: {
    PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8080' }], '53/udp': null },
    RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
    Tmpfs: { '/run': 'size=1m' },
    Mounts: [{ Type: 'tmpfs', Target: '/cache' }]
  },
  Mounts: [
    { Type: 'volume', Name: 'data', Source: '/var/lib/docker/volumes/data/_data', Destination: '/data', Driver: 'local', RW: true },
    { Type: 'volume', Name: ANON, Source: '/var/lib/docker/volumes/x/_data', Destination: '/anon', Driver: 'local', RW: true },
    { Type: 'bind', Source: '/etc/app', Destination: '/config', RW: false },
    { Type: 'tmpfs', Destination: '/cache' }
  ]
}

describe('docker driver: container spec translation', () => {
  it('reads every spec field from inspect JSON', () => {
    const info = containerInfoFromInspect(INSPECT)
    expect(info).to.deep.include({ id: 'abc123', name: 'web', state: { status: 'paused', running: true, paused: true, execs: 0 } })
    expect(info.spec).to.deep.equal({
      name: 'web',
      image: 'sha256:' + '1'.repeat(64),
      env: ['PATH=/bin', 'MODE=prod'],
      cmd: ['serve'],
      entrypoint: null,
      workingDir: '/srv',
      user: '1000:1000',
      labels: { tier: 'web' },
      hostname: 'web-1',
      exposedPorts: ['53/udp', '80/tcp'],
      portBindings: { '80/tcp': [{ hostIp: '', hostPort: '8080' }], '53/udp': [] },
      restartPolicy: { name: 'unless-stopped', maximumRetryCount: 0 },
      mounts: [
        { type: 'volume', name: ANON, destination: '/anon', readOnly: false, driver: 'local' },
        { type: 'tmpfs', destination: '/cache' },
        { type: 'bind', source: '/etc/app', destination: '/config', readOnly: true },
        { type: 'volume', name: 'data', destination: '/data', readOnly: false, driver: 'local' },
        { type: 'tmpfs', destination: '/run' }
      ],
      // --tmpfs options are carried as is (protocol/fidelity.ts).
      engine: { config: {}, hostConfig: { Tmpfs: { '/run': 'size=1m' } } }
    })
  })

  it('fills defaults for a sparse inspect answer', () => {
    const spec = specFromInspect({ Id: 'x', Name: '/bare', Image: 'sha256:2' })
    expect(spec).to.deep.equal({
      name: 'bare', image: 'sha256:2', env: [], cmd: null, entrypoint: null, workingDir: '', user: '', labels: {}, hostname: '',
      exposedPorts: [], portBindings: {}, restartPolicy: { name: '', maximumRetryCount: 0 }, mounts: []
    })
  })

  it('writes a create body with exactly the spec: volumes as mounts with their driver, binds, tmpfs, ports, restart policy', () => {
    const body = createBody(specFromInspect(INSPECT))
    expect(body).to.deep.equal({
      Image: 'sha256:' + '1'.repeat(64),
      Hostname: 'web-1',
      User: '1000:1000',
      Env: ['PATH=/bin', 'MODE=prod'],
      Cmd: ['serve'],
      Entrypoint: null,
      WorkingDir: '/srv',
      Labels: { tier: 'web' },
      ExposedPorts: { '53/udp': {}, '80/tcp': {} },
      HostConfig: {
        Binds: ['/etc/app:/config:ro'],
        Mounts: [
          { Type: 'volume', Source: ANON, Target: '/anon', ReadOnly: false, VolumeOptions: { DriverConfig: { Name: 'local' } } },
          { Type: 'volume', Source: 'data', Target: '/data', ReadOnly: false, VolumeOptions: { DriverConfig: { Name: 'local' } } }
        ],
        Tmpfs: { '/cache': '', '/run': 'size=1m' },
        PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8080' }], '53/udp': [] },
        RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 }
      }
    })
  })

  it('names architectures as images do', () => {
    expect(['x86_64', 'aarch64', 'armv7l', 'i686', 'amd64', 's390x'].map(normalizeArch)).to.deep.equal(['amd64', 'arm64', 'arm', '386', 'amd64', 's390x'])
  })
})

describe('docker driver: streamed JSON messages', () => {
  async function * chunks (...parts: Array<string | Uint8Array>): AsyncGenerator<Uint8Array> {
    for (const p of parts) yield typeof p === 'string' ? new TextEncoder().encode(p) : p
  }

  it('splits lines across chunks, also inside a multi-byte character, and reads a last line without newline', async () => {
    const euro = new TextEncoder().encode('{"stream":"€"}\n')
    const out = []
    for await (const m of readJsonMessages(chunks('{"stream":"Loaded ', 'image ID: sha256:1"}\r\n\n', euro.subarray(0, 12), euro.subarray(12), '{"status":"done"}'))) out.push(m)
    expect(out).to.deep.equal([{ stream: 'Loaded image ID: sha256:1' }, { stream: '€' }, { status: 'done' }])
  })

  it('finds the error in a message of an HTTP 200 answer', () => {
    expect(messageError({ stream: 'Loaded image: x:1\n' })).to.equal(undefined)
    expect(messageError({ errorDetail: { message: 'invalid diffID' }, error: 'invalid diffID' })).to.equal('invalid diffID')
    expect(messageError({ error: 'unexpected EOF' })).to.equal('unexpected EOF')
  })

  it('throws on a line that is not JSON', async () => {
    let err: unknown
    try { for await (const _ of readJsonMessages(chunks('{"stream":"ok"}\n<html>\n'))) { /* read */ } } catch (e) { err = e }
    expect(err).to.be.instanceOf(SyntaxError)
  })
})
