/**
 * Live moves' parts that need no CRIU (agent/move/live.ts, the `checkpoint` step's parser): the
 * preflight's findings from a faked CRIU and engine, the CPU check, a hostile checkpoint refused,
 * and the source's resume after a rollback on the in-memory engine.
 */
import { expect } from 'chai'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, mkdir, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LiveCheck, cpuRefusal, listCheckpoint, outsidePeers, receiveCheckpoint, resumeSource, type RunProgram } from '../../agent/move/live.js'
import { createRootLogger } from '../../agent/log.js'
import type { EngineInfo, EngineVersion } from '../../agent/docker/docker-host.js'
import { parseTransferRequest } from '../../protocol/move-messages.js'
import { CheckpointRefusedError, DockerEngineError, ProtocolError } from '../../protocol/errors.js'
import { MemoryDockerHost } from '../fixtures/memory-docker-host.js'

const log = createRootLogger('error', { test: 'move-live' })
// The fresh-start fallback logs an error on purpose: not on the test's output.
log.silent = true
const MOVE = '0123456789abcdef'
const sha = (b: string | Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`

/** An engine as the preflight sees it. */
function engine (o: { product?: 'docker' | 'podman', experimental?: boolean, local?: boolean } = {}): ConstructorParameters<typeof LiveCheck>[0]['docker'] {
  return {
    version: async () => ({ version: '20.10.24', apiVersion: '1.41', os: 'linux', arch: 'amd64', product: o.product ?? 'docker' }) satisfies EngineVersion,
    info: async () => ({ architecture: 'amd64', os: 'linux', dockerRootDir: '/var/lib/docker', storageDriver: 'overlay2', imageStore: 'graphdriver', serverVersion: '20.10.24', name: 'h', cpus: 2, memoryBytes: 1, experimental: o.experimental ?? true }) satisfies EngineInfo,
    checkpointDirectory: async (id: string, name: string) => o.local === false ? undefined : `/var/lib/docker/containers/${id}/checkpoints/${name}`
  }
}

/** A CRIU that answers `--version` with `version` and `check` with `check`; counts its runs. */
function criu (version: string | 'ENOENT', check = 'Looks good.'): RunProgram & { runs: string[] } {
  const runs: string[] = []
  const run = async (_file: string, args: string[]): Promise<{ code: number | string | null, stdout: string, stderr: string }> => {
    runs.push(args[0])
    if (version === 'ENOENT') return { code: 'ENOENT', stdout: '', stderr: '' }
    if (args[0] === '--version') return { code: 0, stdout: `Version: ${version}\n`, stderr: '' }
    return check === 'Looks good.' ? { code: 0, stdout: '', stderr: 'Looks good.\n' } : { code: 1, stdout: '', stderr: `Error (criu/cr-check.c:1): ${check}\n` }
  }
  return Object.assign(run, { runs })
}

describe('live moves: preflight, checkpoint files, resume', () => {
  it('finds a host that can take live moves, and runs criu check only once within its TTL', async () => {
    const run = criu('4.2.1')
    let now = 0
    const check = new LiveCheck({ docker: engine(), criu: 'criu', selfName: 'aws-1', run, cpuFlags: async () => ['avx2', 'sse4_2'], now: () => now })
    const r = await check.report(AbortSignal.timeout(1000))
    expect(r).to.deep.include({ host: 'aws-1', ok: true, criu: '4.2.1', arch: 'amd64', missing: [], cpuFlags: ['avx2', 'sse4_2'] })
    now += 60_000
    await check.require(AbortSignal.timeout(1000))
    expect(run.runs).to.deep.equal(['--version', 'check'])
  })

  it('names everything a host lacks, in one refusal', async () => {
    const check = new LiveCheck({ docker: engine({ experimental: false, local: false }), criu: '/opt/criu', selfName: 'vagrant-1', run: criu('ENOENT'), cpuFlags: async () => [] })
    const r = await check.report(AbortSignal.timeout(1000))
    expect(r.ok).to.equal(false)
    expect(r.missing).to.have.length(3)
    expect(r.missing[0]).to.match(/^CRIU not found \(\/opt\/criu: ENOENT/)
    expect(r.missing[1]).to.include('not in experimental mode')
    expect(r.missing[2]).to.include('data root')
    const err = await check.require(AbortSignal.timeout(1000)).catch((e: Error) => e)
    expect(err).to.have.property('name', 'LiveUnavailableError')
    expect((err as Error).message).to.match(/^live move not possible: vagrant-1: CRIU not found .*; the engine is not in experimental mode/)
  })

  it('refuses a CRIU older than 4.2, one failing its check, and a Podman engine', async () => {
    const old = await new LiveCheck({ docker: engine(), criu: 'criu', selfName: 'h', run: criu('4.1.1'), cpuFlags: async () => [] }).report(AbortSignal.timeout(1000))
    expect(old.missing).to.deep.equal(['CRIU 4.1.1 is older than 4.2 (older ones cannot dump a TCP socket on this kernel)'])
    const failing = await new LiveCheck({ docker: engine(), criu: 'criu', selfName: 'h', run: criu('4.2.1', 'vdso mismatch'), cpuFlags: async () => [] }).report(AbortSignal.timeout(1000))
    expect(failing.missing[0]).to.match(/^criu check fails here \(.*vdso mismatch\)/)
    const podman = await new LiveCheck({ docker: engine({ product: 'podman' }), criu: 'criu', selfName: 'h', run: criu('4.2.1'), cpuFlags: async () => [] }).report(AbortSignal.timeout(1000))
    expect(podman.missing[0]).to.include('the engine is podman')
  })

  it('takes a source CPU only of the same architecture whose flags the destination has', () => {
    const here = { host: 'azure-1', arch: 'amd64', cpuFlags: ['avx', 'avx2', 'sse4_2'] }
    expect(cpuRefusal({ arch: 'amd64', cpuFlags: ['avx', 'sse4_2'] }, here)).to.equal(undefined)
    expect(cpuRefusal({ arch: 'arm64', cpuFlags: [] }, here)).to.include('same CPU architecture')
    expect(cpuRefusal({ arch: 'amd64', cpuFlags: ['avx', 'avx512f'] }, here)).to.match(/lacks flags the source's has \(avx512f\).*SIGILL/)
  })

  it('finds the established TCP connections to peers outside the container, and only those', () => {
    const head = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
    const tcp = head + [
      // 172.17.0.2:43210 → 10.213.55.13:19999 established: outside.
      '   0: 020011AC:A8CA 0D37D50A:4E1F 01 00000000:00000000 00:00000000 00000000     0        0 1 1',
      // listening on *:80: not a connection.
      '   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1',
      // 127.0.0.1:5000 → 127.0.0.1:40000: loopback.
      '   2: 0100007F:1388 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1',
      // 172.17.0.2:80 ← 172.17.0.2:40001: the container talking to itself over its own address.
      '   3: 020011AC:0050 020011AC:9C41 01 00000000:00000000 00:00000000 00000000     0        0 4 1',
      // 172.17.0.2:40002 → 10.0.0.9:443 in TIME_WAIT: no longer established.
      '   4: 020011AC:9C42 0900000A:01BB 06 00000000:00000000 00:00000000 00000000     0        0 5 1'
    ].join('\n')
    const tcp6 = head + [
      // ::ffff:172.17.0.2:80 ← ::ffff:10.213.55.1:50000 (an IPv4 peer on an IPv6 socket): outside.
      '   0: 0000000000000000FFFF0000020011AC:0050 0000000000000000FFFF00000137D50A:C350 01 00000000:00000000 00:00000000 00000000     0        0 6 1',
      // ::1 → ::1: loopback.
      '   1: 00000000000000000000000001000000:1388 00000000000000000000000001000000:9C40 01 00000000:00000000 00:00000000 00000000     0        0 7 1'
    ].join('\n')
    expect(outsidePeers([tcp, tcp6])).to.deep.equal(['10.213.55.13:19999', '10.213.55.1:50000'])
    expect(outsidePeers(['', ''])).to.deep.equal([])
  })

  it('parses a checkpoint step and refuses paths that could leave its directory, duplicates and too many files', () => {
    const file = (path: string): unknown => ({ path, size: 1, digest: sha('x') })
    const req = (files: unknown[], name = 'goto-x'): unknown => ({ op: 'checkpoint', moveId: MOVE, name, files })
    expect(parseTransferRequest(req([file('core-1.img'), file('sub/pages-1.img')]))).to.deep.include({ op: 'checkpoint', name: 'goto-x' })
    for (const bad of ['../etc/passwd', '/etc/passwd', 'a/../../b', '.hidden', 'a//b', '', 'a/b/c/d/e', 'x\0y']) {
      expect(() => parseTransferRequest(req([file(bad)])), bad).to.throw(ProtocolError)
    }
    expect(() => parseTransferRequest(req([file('a'), file('a')]))).to.throw(ProtocolError, /twice/)
    expect(() => parseTransferRequest(req([], '../x'))).to.throw(ProtocolError)
    expect(() => parseTransferRequest(req(Array.from({ length: 4097 }, (_, i) => file(`f${i}`))))).to.throw(ProtocolError)
  })

  describe('on disk', () => {
    let dir: string
    beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'goto-live-')) })
    afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

    const blobs = (contents: string[]): (size: number) => AsyncIterable<Uint8Array> => {
      let i = 0
      return () => (async function * () { yield Buffer.from(contents[i++]) })()
    }

    it('lists a checkpoint directory with sizes and digests, and a receiver rebuilds it verified', async () => {
      const src = join(dir, 'src')
      await mkdir(join(src, 'sub'), { recursive: true })
      await writeFile(join(src, 'core-1.img'), 'core')
      await writeFile(join(src, 'sub', 'pages-1.img'), 'pages!')
      const files = await listCheckpoint(src, AbortSignal.timeout(1000))
      expect(files).to.deep.equal([{ path: 'core-1.img', size: 4, digest: sha('core') }, { path: 'sub/pages-1.img', size: 6, digest: sha('pages!') }])
      const out = join(dir, 'staging', MOVE)
      expect(await receiveCheckpoint(out, files, blobs(['core', 'pages!']), 1024, AbortSignal.timeout(1000))).to.equal(10)
      expect(await readFile(join(out, 'sub', 'pages-1.img'), 'utf8')).to.equal('pages!')
    })

    it('refuses a file whose bytes are not the announced ones, and a total beyond the bound before reading', async () => {
      const files = [{ path: 'core-1.img', size: 4, digest: sha('core') }]
      const err = await receiveCheckpoint(join(dir, 'a'), files, blobs(['evil']), 1024, AbortSignal.timeout(1000)).catch((e: Error) => e)
      expect(err).to.be.instanceOf(CheckpointRefusedError)
      let read = false
      const big = await receiveCheckpoint(join(dir, 'b'), [{ path: 'p', size: 2048, digest: sha('x') }], () => { read = true; return blobs(['x'])(1) }, 1024, AbortSignal.timeout(1000)).catch((e: Error) => e)
      expect(big).to.be.instanceOf(CheckpointRefusedError)
      expect(read).to.equal(false)
    })
  })

  it('resumes the source from its checkpoint, or afresh when that fails, and says which', async () => {
    const host = new MemoryDockerHost({ experimental: true })
    const image = await host.addImage([{ '/bin/sh': 'busybox' }])
    const spec = (name: string): Parameters<MemoryDockerHost['create']>[0] => ({
      name, image, env: [], cmd: ['sleep', '1'], entrypoint: null, workingDir: '', user: '', labels: {}, hostname: '',
      exposedPorts: [], portBindings: {}, restartPolicy: { name: 'no', maximumRetryCount: 0 }, mounts: []
    })
    const signal = AbortSignal.timeout(5000)
    const a = await host.create(spec('a'))
    await host.start(a)
    expect(await resumeSource(host, a, 'cp', log, signal), 'never checkpointed: still running').to.equal('running')
    await host.checkpoint(a, 'cp', signal)
    expect((await host.inspectContainer(a)).state.running).to.equal(false)
    expect(await resumeSource(host, a, 'cp', log, signal)).to.equal('checkpoint')
    expect((await host.inspectContainer(a)).state.running).to.equal(true)

    const b = await host.create(spec('b'))
    await host.start(b)
    await host.checkpoint(b, 'cp', signal)
    await host.setRestartPolicy(b, { name: 'no', maximumRetryCount: 0 })
    host.failNext('startFromCheckpoint', new DockerEngineError('criu restore failed'))
    expect(await resumeSource(host, b, 'cp', log, signal, { name: 'always', maximumRetryCount: 0 })).to.equal('fresh')
    const after = await host.inspectContainer(b)
    expect(after.state.running).to.equal(true)
    expect(after.spec.restartPolicy.name, 'the policy the move set aside is given back').to.equal('always')
  })
})
