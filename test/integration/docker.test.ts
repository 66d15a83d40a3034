/**
 * The Docker host driver (agent/docker/) against a real engine: one lab host (engine only, its own
 * prefix and subnet so other labs are left alone). Covers spec fidelity of inspect and create,
 * pause/unpause (with a commit by the test's own client), the save stream (classic from the engine, OCI from skopeo, plain and gzip),
 * load (full, thin, corrupted, truncated), the archive endpoints into a named volume, and the typed
 * errors. Needs root, dockerd, busybox-static, iproute2, iptables and skopeo (.ci/setup installs them).
 */
import { expect } from 'chai'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, statfs, truncate, writeFile, stat, open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import type Docker from 'dockerode'
import tarStream from 'tar-stream'
import { commitLayer } from '../fixtures/docker.js'
import { Lab, BASE_IMAGE, waitFor, type LabHost } from '../lab/index.js'
import { run } from '../lab/sys.js'
import { DockerodeHost, readSavedImage } from '../../agent/docker/host.js'
import { LayerFiles, type LayerFile } from '../../agent/docker/layer-files.js'
import { chainIds } from '../../agent/transfer/plan.js'
import type { ContainerSpec, SavedEntry } from '../../agent/docker/types.js'
import { parseDockerEndpoint } from '../../agent/config.js'
import {
  ContainerNotFoundError, ContainerPathNotFoundError, DockerConflictError, DockerLoadError, DockerUnavailableError,
  ImageNotFoundError, VolumeNotFoundError
} from '../../protocol/errors.js'

const PREFIX = 'gotolabd'
const SUBNET = '10.213.70.0/24'
const THREE = 'gotolabd/three:latest'

interface ReadEntries {
  config?: { digest: string, bytes: Uint8Array }
  layers: Map<string, { sha256: string, bytes: number, size: number | undefined, compressed: boolean, names: string[] }>
  manifest?: { config: string, layers: string[] }
}

/** Reads a save stream to the end: each layer hashed and its file names listed. */
async function readAllEntries (entries: AsyncIterable<SavedEntry>): Promise<ReadEntries> {
  const out: ReadEntries = { layers: new Map() }
  for await (const e of entries) {
    if (e.kind === 'config') out.config = { digest: e.digest, bytes: e.bytes }
    else if (e.kind === 'manifest') out.manifest = { config: e.config, layers: e.layers }
    else {
      const hash = createHash('sha256')
      let bytes = 0
      const names: string[] = []
      const extract = tarStream.extract()
      const listing = (async () => { for await (const entry of extract) { names.push(entry.header.name); entry.resume() } })()
      for await (const chunk of e.stream) {
        hash.update(chunk)
        bytes += chunk.byteLength
        if (!extract.write(Buffer.from(chunk))) await new Promise<void>(resolve => extract.once('drain', () => { resolve() }))
      }
      extract.end(null)
      await listing
      out.layers.set(e.path, { sha256: `sha256:${hash.digest('hex')}`, bytes, size: e.size, compressed: e.compressed, names })
    }
  }
  return out
}

function chainOf (r: ReadEntries): string[] {
  return (r.manifest?.layers ?? []).map(p => r.layers.get(p)?.sha256 ?? `missing ${p}`)
}

/** A tar stream of `files` (name -> content); the engine makes the directories. */
async function * tarOf (files: Record<string, Buffer>): AsyncGenerator<Uint8Array> {
  const pack = tarStream.pack()
  for (const [name, content] of Object.entries(files)) pack.entry({ name, mode: 0o644 }, content)
  pack.finalize()
  for await (const chunk of pack) yield chunk as Uint8Array
}

async function tarContents (source: AsyncIterable<Uint8Array>): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>()
  const extract = tarStream.extract()
  const listing = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = []
      for await (const c of entry) chunks.push(c as Buffer)
      if (entry.header.type === 'file') files.set(entry.header.name, Buffer.concat(chunks))
    }
  })()
  for await (const chunk of source) {
    if (!extract.write(Buffer.from(chunk))) await new Promise<void>(resolve => extract.once('drain', () => { resolve() }))
  }
  extract.end(null)
  await listing
  return files
}

/** Copies a tar file, leaving out the entries `drop` names. */
async function filterTar (from: string, to: string, drop: Set<string>): Promise<void> {
  const extract = tarStream.extract()
  const pack = tarStream.pack()
  const writing = pipeline(pack, createWriteStream(to))
  const feeding = pipeline(createReadStream(from), extract)
  for await (const entry of extract) {
    if (drop.has(entry.header.name)) {
      entry.resume()
      continue
    }
    const sink = pack.entry(entry.header)
    for await (const c of entry) {
      if (!sink.write(c)) await new Promise<void>(resolve => sink.once('drain', () => { resolve() }))
    }
    sink.end(null)
  }
  pack.finalize()
  await feeding
  await writing
}

async function saveToFile (docker: Docker, ref: string, file: string): Promise<void> {
  const stream = await docker.getImage(ref).get()
  await pipeline(stream, createWriteStream(file))
}

describe('docker host driver (DockerodeHost on a lab engine)', function () {
  this.timeout(60_000)
  const lab = new Lab({ prefix: PREFIX, subnet: SUBNET, agents: false })
  let h: LabHost
  let raw: Docker
  let docker: DockerodeHost
  let tmp: string
  let threeId: string

  before(async function () {
    this.timeout(120_000)
    await lab.down()
    ;[h] = await lab.up(1) as [LabHost]
    raw = lab.docker(h.name)
    docker = new DockerodeHost(parseDockerEndpoint('--docker', h.dockerHost))
    tmp = await mkdtemp(join(tmpdir(), 'goto-docker-test-'))
    // Three layers: the base, 1 MiB of random data, a small file and a directory.
    await commitLayer(raw, BASE_IMAGE, 'head -c 1048576 /dev/urandom > /random.bin', 'gotolabd/two:latest')
    threeId = await commitLayer(raw, 'gotolabd/two:latest', 'mkdir -p /etc/app && echo three > /etc/app/three.txt', THREE)
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true })
  })

  it('tells the engine\'s architecture, OS, data root and free disk', async () => {
    const info = await docker.info()
    expect(info.architecture).to.equal(({ x64: 'amd64', arm64: 'arm64' } as Record<string, string>)[process.arch] ?? process.arch)
    expect(info.os).to.equal('linux')
    expect(info.dockerRootDir).to.equal(join(h.dir, 'docker'))
    const free = await docker.freeDiskBytes()
    const s = await statfs(info.dockerRootDir)
    expect(free).to.be.a('number')
    // Free space moves while other things run; the same filesystem within 5 %.
    expect(Math.abs((free as number) - Number(s.bavail) * Number(s.bsize))).to.be.below(Number(s.blocks) * Number(s.bsize) * 0.05)
    expect((await docker.version()).apiVersion).to.match(/^1\.\d+$/)
    // The engine is on this host: its data root's filesystem can be flushed (syncfs) from here; an
    // engine reached over TCP on another host cannot (decided from the endpoint alone: never dialled).
    expect(await docker.flushDataRoot()).to.equal(true)
    expect(await new DockerodeHost(parseDockerEndpoint('--docker', 'tcp://10.255.255.1:2375')).flushDataRoot()).to.equal(false)
  })

  it('inspects an image and lists every local chain', async () => {
    const img = await docker.inspectImage(THREE)
    const base = await docker.inspectImage(BASE_IMAGE)
    expect(img.id).to.equal(threeId)
    expect(img.diffIds).to.have.length(3)
    expect(img.diffIds[0]).to.equal(base.diffIds[0])
    expect(img.os).to.equal('linux')
    expect(img.repoTags).to.deep.equal([THREE])
    expect(img.size).to.be.above(1_048_576)
    const chains = await docker.imageChains()
    expect(chains).to.deep.include(img.diffIds)
    expect(chains).to.deep.include(base.diffIds)
  })

  it('reads back every field of a container\'s spec, and creates the same container from it', async () => {
    const bindDir = join(tmp, 'bind')
    await mkdir(bindDir)
    await raw.createContainer({
      name: 'fidelity',
      Image: THREE,
      Entrypoint: ['sh', '-c'],
      Cmd: ['echo hello; sleep 1000'],
      Env: ['MODE=test', 'EMPTY='],
      WorkingDir: '/etc/app',
      User: '1000:1000',
      Hostname: 'web-1',
      Labels: { 'goto.test': 'yes', tier: 'web' },
      ExposedPorts: { '53/udp': {} },
      HostConfig: {
        PortBindings: { '8080/tcp': [{ HostIp: '', HostPort: '18080' }], '53/udp': [{ HostIp: '127.0.0.1', HostPort: '15353' }] },
        RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 3 },
        Binds: [`${bindDir}:/bind:ro`],
        Mounts: [{ Type: 'volume', Source: 'gotolabd-data', Target: '/data' }],
        Tmpfs: { '/scratch': '' }
      }
    })
    const got = await docker.inspectContainer('fidelity')
    expect(got.name).to.equal('fidelity')
    expect(got.state).to.deep.equal({ status: 'created', running: false, paused: false, execs: 0 })
    const want: ContainerSpec = {
      name: 'fidelity',
      image: threeId,
      env: got.spec.env, // checked below: the image's PATH is merged in
      cmd: ['echo hello; sleep 1000'],
      entrypoint: ['sh', '-c'],
      workingDir: '/etc/app',
      user: '1000:1000',
      labels: { 'goto.test': 'yes', tier: 'web' },
      hostname: 'web-1',
      exposedPorts: ['53/udp'], // the engine does not expose a bound port by itself (the CLI does)
      portBindings: { '8080/tcp': [{ hostIp: '', hostPort: '18080' }], '53/udp': [{ hostIp: '127.0.0.1', hostPort: '15353' }] },
      restartPolicy: { name: 'on-failure', maximumRetryCount: 3 },
      mounts: [
        { type: 'bind', source: bindDir, destination: '/bind', readOnly: true },
        { type: 'volume', name: 'gotolabd-data', destination: '/data', readOnly: false, driver: 'local' },
        { type: 'tmpfs', destination: '/scratch' }
      ],
      // The tag it was created from, and what the fidelity table carries as is: here only the
      // engine's own defaults (protocol/fidelity.ts; test/integration/fidelity.test.ts has the rest).
      imageRef: THREE,
      engine: { config: {}, hostConfig: { IpcMode: 'private', LogConfig: { Type: 'json-file', Config: {} }, ShmSize: 67108864 } }
    }
    expect(got.spec).to.deep.equal(want)
    expect(got.spec.env).to.include.members(['MODE=test', 'EMPTY='])

    const copyId = await docker.create({ ...got.spec, name: 'fidelity-copy' })
    const copy = await docker.inspectContainer(copyId)
    expect(copy.id).to.equal(copyId)
    // Created from the image ID, so without a reference (a move's restore names it: agent/move/restore.ts).
    const { imageRef: _, ...unnamed } = got.spec
    expect(copy.spec).to.deep.equal({ ...unnamed, name: 'fidelity-copy' })
    await docker.remove(copyId, { force: true, volumes: false })
    await docker.remove('fidelity', { force: true, volumes: false })
    expect(await docker.volumeExists('gotolabd-data')).to.equal(true)
    await docker.removeVolume('gotolabd-data')
  })

  it('pauses, commits what the container wrote after it started, unpauses, stops and starts it', async () => {
    const id = await docker.create({
      name: 'busy', image: threeId, env: [], cmd: ['sh', '-c', 'echo written-after-start > /after-start.txt; exec sleep 1000'], entrypoint: null,
      workingDir: '', user: '', labels: {}, hostname: 'busy', exposedPorts: [], portBindings: {},
      restartPolicy: { name: 'no', maximumRetryCount: 0 }, mounts: []
    })
    await docker.start(id)
    await docker.start(id) // already running: not an error
    const written = await waitFor(async () => {
      try {
        return (await tarContents(await docker.getArchive(id, '/after-start.txt'))).get('after-start.txt')
      } catch (err) {
        if (err instanceof ContainerPathNotFoundError) return undefined
        throw err
      }
    }, { timeoutMs: 10_000, what: 'the container to write /after-start.txt' })
    expect(written?.toString()).to.equal('written-after-start\n')

    await docker.pause(id)
    expect((await docker.inspectContainer(id)).state.paused).to.equal(true)
    const { Id: imageId } = await raw.getContainer(id).commit({ pause: false, comment: 'freeze' }) as { Id: string }
    expect(imageId).to.match(/^sha256:[0-9a-f]{64}$/)
    const committed = await docker.inspectImage(imageId)
    expect(committed.repoTags).to.deep.equal([])
    expect(committed.diffIds.slice(0, 3)).to.deep.equal((await docker.inspectImage(threeId)).diffIds)
    expect(committed.diffIds).to.have.length(4)
    const saved = await readAllEntries(docker.saveImage(imageId))
    const top = saved.layers.get(saved.manifest?.layers[3] ?? '')
    expect(top?.names).to.include('after-start.txt')
    expect(top?.sha256).to.equal(committed.diffIds[3])
    // still paused after the commit (the engine was told not to pause and unpause it)
    expect((await docker.inspectContainer(id)).state.paused).to.equal(true)
    await docker.unpause(id)
    expect((await docker.inspectContainer(id)).state).to.include({ running: true, paused: false })

    await docker.stop(id, { timeoutS: 1 })
    expect((await docker.inspectContainer(id)).state.running).to.equal(false)
    await docker.stop(id, { timeoutS: 1 }) // already stopped: not an error
    await docker.start(id)
    expect((await docker.inspectContainer(id)).state.running).to.equal(true)
    await docker.remove(id, { force: true, volumes: true })
    await docker.removeImage(imageId, {})
    let err: unknown
    try { await docker.inspectImage(imageId) } catch (e) { err = e }
    expect(err).to.be.instanceOf(ImageNotFoundError)
  })

  it('streams docker save: the config hashes to the image ID, the layers to the diff IDs in manifest order', async () => {
    const img = await docker.inspectImage(threeId)
    const saved = await readAllEntries(docker.saveImage(threeId))
    expect(saved.config?.digest).to.equal(threeId)
    expect(`sha256:${createHash('sha256').update(saved.config?.bytes ?? new Uint8Array()).digest('hex')}`).to.equal(threeId)
    expect(saved.manifest?.config).to.equal(`${threeId.slice('sha256:'.length)}.json`)
    expect(chainOf(saved)).to.deep.equal(img.diffIds)
    for (const l of saved.layers.values()) {
      expect(l.compressed).to.equal(false)
      expect(l.size).to.equal(l.bytes)
    }
    expect([...saved.layers.values()].some(l => l.names.includes('random.bin'))).to.equal(true)

    // A consumer that reads only some layers: the rest are drained for it.
    let configs = 0
    let manifests = 0
    for await (const e of docker.saveImage(threeId)) {
      if (e.kind === 'config') configs++
      if (e.kind === 'manifest') manifests++
    }
    expect([configs, manifests]).to.deep.equal([1, 1])
  })

  it('reads each layer from the engine\'s own storage (tar-split) as the same bytes docker save gives: whiteouts, links, empty files, a name not in UTF-8', async () => {
    await commitLayer(raw, BASE_IMAGE, [
      'mkdir -p /d/sub /t && echo x > /d/x && echo y > /d/sub/y && echo a > /t/a && ln /t/a /t/hard && ln -s a /t/sym',
      ': > /t/empty && head -c 3000000 /dev/urandom > /t/big.bin && echo café > /t/café.txt && chmod 0600 /t/a && mkfifo /t/fifo',
      // A name that is not UTF-8 (byte 0xe9): tar-split records it as raw bytes.
      'echo raw > "$(printf \'/t/raw\\351\')"'
    ].join(' && '), 'gotolabd/links:latest')
    const id = await commitLayer(raw, 'gotolabd/links:latest', 'rm /d/x /t/a && rm -rf /d/sub && rm -rf /t2 && mkdir -p /d && echo z > /d/z && rm /bin/ls', 'gotolabd/whiteouts:latest')
    const img = await docker.inspectImage(id)
    const saved = await readAllEntries(docker.saveImage(id))
    expect([...saved.layers.values()].some(l => l.names.includes('t/raw\uFFFD')), 'a layer holds the name in bytes').to.equal(true)
    const layers = new LayerFiles((await docker.info()).dockerRootDir)
    const chains = chainIds(img.diffIds)
    for (const [i, chainId] of chains.entries()) {
      const layer = await layers.open(chainId)
      expect(layer, `layer ${i}`).to.not.equal(undefined)
      const hash = createHash('sha256')
      let bytes = 0
      for await (const chunk of (layer as LayerFile).stream()) { hash.update(chunk); bytes += chunk.byteLength }
      expect(`sha256:${hash.digest('hex')}`, `layer ${i}`).to.equal(img.diffIds[i])
      expect(bytes).to.equal((layer as LayerFile).size)
      expect(bytes).to.equal([...saved.layers.values()].find(l => l.sha256 === img.diffIds[i])?.bytes)
    }
    // Nothing to read: an unknown chain, another engine's root, not a chain ID at all.
    expect(await layers.open(`sha256:${'0'.repeat(64)}`)).to.equal(undefined)
    expect(await new LayerFiles(tmp).open(chains[0])).to.equal(undefined)
    expect(await layers.open('latest')).to.equal(undefined)
  })

  it('reads skopeo\'s OCI archives of the image (uncompressed and gzip) to the same diff IDs', async () => {
    const img = await docker.inspectImage(threeId)
    for (const [file, flags, gzip] of [['oci-plain.tar', ['--dest-oci-accept-uncompressed-layers'], false], ['oci-gzip.tar', ['--dest-compress'], true]] as const) {
      const path = join(tmp, file)
      await run(['skopeo', 'copy', '-q', ...flags, '--src-daemon-host', h.dockerHost, `docker-daemon:${THREE}`, `oci-archive:${path}`])
      const read = await readAllEntries(readSavedImage(createReadStream(path)))
      expect(read.manifest?.config).to.match(/^blobs\/sha256\/[0-9a-f]{64}$/)
      expect(chainOf(read), file).to.deep.equal(img.diffIds)
      expect([...read.layers.values()].map(l => l.compressed), file).to.deep.equal([gzip, gzip, gzip])
      expect(read.config?.digest).to.equal(`sha256:${read.manifest?.config.slice('blobs/sha256/'.length) ?? ''}`)
    }
  })

  it('loads a classic tarball, and refuses a corrupted or truncated one with DockerLoadError', async () => {
    const file = join(tmp, 'three.tar')
    await saveToFile(raw, THREE, file) // tagged: the engine answers "Loaded image: <tag>"
    const saved = await readAllEntries(readSavedImage(createReadStream(file)))
    const randomLayer = [...saved.layers.entries()].find(([, l]) => l.names.includes('random.bin'))?.[0] as string

    // Corrupt one byte inside the random-data layer; the engine must not hold that layer already.
    const corrupt = join(tmp, 'corrupt.tar')
    await writeFile(corrupt, await readFile(file))
    const offset = await dataOffset(file, randomLayer)
    const fh = await open(corrupt, 'r+')
    try {
      const b = Buffer.alloc(1)
      await fh.read(b, 0, 1, offset + 4096)
      b[0] = (b[0] as number) ^ 0xff
      await fh.write(b, 0, 1, offset + 4096)
    } finally {
      await fh.close()
    }
    const truncated = join(tmp, 'truncated.tar')
    await writeFile(truncated, await readFile(file))
    await truncate(truncated, Math.floor((await stat(file)).size / 2))

    await docker.removeImage(THREE, {})
    await docker.removeImage('gotolabd/two:latest', {})
    expect(await docker.imageChains()).to.not.deep.include(saved.manifest?.layers.map(p => saved.layers.get(p)?.sha256))

    for (const bad of [corrupt, truncated]) {
      let err: unknown
      try { await docker.loadImage(createReadStream(bad)) } catch (e) { err = e }
      expect(err, bad).to.be.instanceOf(DockerLoadError)
      expect((err as Error).message).to.match(/docker engine at unix:\/\//)
      let gone: unknown
      try { await docker.inspectImage(threeId) } catch (e) { gone = e }
      expect(gone, bad).to.be.instanceOf(ImageNotFoundError)
    }

    expect(await docker.loadImage(createReadStream(file))).to.deep.equal([threeId])
    expect((await docker.inspectImage(THREE)).id).to.equal(threeId)
  })

  it('loads a thin tarball that omits the layers the engine has, and refuses one that omits a layer it lacks', async () => {
    const file = join(tmp, 'three-untagged.tar')
    await saveToFile(raw, threeId, file) // by ID: the engine answers "Loaded image ID: <id>"
    const saved = await readAllEntries(readSavedImage(createReadStream(file)))
    const [baseLayer, randomLayer, topLayer] = saved.manifest?.layers ?? []

    // The engine has the base image, so the base layer (a chain of one) can be left out...
    await docker.removeImage(THREE, { force: true })
    const thin = join(tmp, 'thin.tar')
    await filterTar(file, thin, new Set([baseLayer as string]))
    expect((await stat(thin)).size).to.be.below((await stat(file)).size - 2_000_000) // the base layer is ~2 MiB
    // ...but not the layers after it: the engine lacks them.
    const broken = join(tmp, 'thin-broken.tar')
    await filterTar(file, broken, new Set([baseLayer as string, topLayer as string]))
    let err: unknown
    try { await docker.loadImage(createReadStream(broken)) } catch (e) { err = e }
    expect(err).to.be.instanceOf(DockerLoadError)

    // The source may be any async iterable of bytes, not only a Readable.
    async function * bytesOf (path: string): AsyncGenerator<Uint8Array> { yield * createReadStream(path) }
    expect(await docker.loadImage(bytesOf(thin))).to.deep.equal([threeId])
    expect((await docker.inspectImage(threeId)).diffIds).to.deep.equal(chainOf(saved))
    expect(randomLayer).to.be.a('string')
    const [repo, tag] = THREE.split(':')
    await raw.getImage(threeId).tag({ repo, tag })
  })

  it('writes a tar into a named volume of a created container and reads it back', async () => {
    const volumeSpec: ContainerSpec = {
      name: 'vol-writer', image: threeId, env: [], cmd: ['true'], entrypoint: null, workingDir: '', user: '', labels: {}, hostname: '',
      exposedPorts: [], portBindings: {}, restartPolicy: { name: 'no', maximumRetryCount: 0 },
      mounts: [{ type: 'volume', name: 'gotolabd-rt', destination: '/vol', readOnly: false, driver: 'local' }]
    }
    await docker.createVolume('gotolabd-rt', 'local', { 'goto.test': 'round-trip' })
    const id = await docker.create(volumeSpec)
    expect((await docker.inspectContainer(id)).state.status).to.equal('created')
    const big = randomBytes(300_000)
    await docker.putArchive(id, '/vol', tarOf({ 'hello.txt': Buffer.from('hello volume\n'), 'sub/big.bin': big }))

    const back = await tarContents(await docker.getArchive(id, '/vol'))
    expect(back.get('vol/hello.txt')?.toString()).to.equal('hello volume\n')
    expect(back.get('vol/sub/big.bin')?.equals(big)).to.equal(true)
    // It is in the volume, not in the container's own layer: another container sees it.
    const other = await docker.create({ ...volumeSpec, name: 'vol-reader', mounts: [{ type: 'volume', name: 'gotolabd-rt', destination: '/elsewhere', readOnly: true, driver: 'local' }] })
    const seen = await tarContents(await docker.getArchive(other, '/elsewhere/hello.txt'))
    expect(seen.get('hello.txt')?.toString()).to.equal('hello volume\n')

    let err: unknown
    try { await docker.getArchive(id, '/no/such/path') } catch (e) { err = e }
    expect(err).to.be.instanceOf(ContainerPathNotFoundError)
    err = undefined
    try { await docker.putArchive('no-such-container', '/vol', tarOf({ 'x': Buffer.from('x') })) } catch (e) { err = e }
    expect(err).to.be.instanceOf(ContainerNotFoundError)

    await docker.remove(other, { force: true, volumes: false })
    await docker.remove(id, { force: true, volumes: false })
    let inUse: unknown
    const holder = await docker.create({ ...volumeSpec, name: 'vol-holder' })
    try { await docker.removeVolume('gotolabd-rt') } catch (e) { inUse = e }
    expect(inUse).to.be.instanceOf(DockerConflictError)
    await docker.remove(holder, { force: true, volumes: false })
    await docker.removeVolume('gotolabd-rt')
    expect(await docker.volumeExists('gotolabd-rt')).to.equal(false)
  })

  it('turns engine errors into typed errors', async () => {
    const expectThrows = async (p: Promise<unknown>, cls: new (...a: any[]) => Error): Promise<Error> => {
      let err: unknown
      try { await p } catch (e) { err = e }
      expect(err, String(err)).to.be.instanceOf(cls)
      return err as Error
    }
    await expectThrows(docker.inspectContainer('no-such-container'), ContainerNotFoundError)
    await expectThrows(docker.pause('no-such-container'), ContainerNotFoundError)
    await expectThrows(docker.inspectImage('gotolabd/no-such-image:latest'), ImageNotFoundError)
    await expectThrows(docker.removeImage('gotolabd/no-such-image:latest', {}), ImageNotFoundError)
    await expectThrows(readAllEntries(docker.saveImage(`sha256:${'0'.repeat(64)}`)), ImageNotFoundError)
    await expectThrows(docker.removeVolume('gotolabd-no-such-volume'), VolumeNotFoundError)
    expect(await docker.volumeExists('gotolabd-no-such-volume')).to.equal(false)

    const spec: ContainerSpec = {
      name: 'taken', image: threeId, env: [], cmd: ['true'], entrypoint: null, workingDir: '', user: '', labels: {}, hostname: '',
      exposedPorts: [], portBindings: {}, restartPolicy: { name: 'no', maximumRetryCount: 0 }, mounts: []
    }
    const id = await docker.create(spec)
    const conflict = await expectThrows(docker.create(spec), DockerConflictError)
    expect(conflict.message).to.include('taken')
    await expectThrows(docker.create({ ...spec, name: 'no-image', image: `sha256:${'0'.repeat(64)}` }), ImageNotFoundError)
    await expectThrows(docker.removeImage(threeId, {}), DockerConflictError) // used by a container
    await docker.remove(id, { force: true, volumes: false })
    const sleeper = await docker.create({ ...spec, name: 'sleeper', cmd: ['sleep', '1000'] })
    await docker.start(sleeper)
    await docker.pause(sleeper)
    await expectThrows(docker.pause(sleeper), DockerConflictError) // already paused
    await expectThrows(docker.remove(sleeper, { force: false, volumes: false }), DockerConflictError) // paused
    await docker.unpause(sleeper)
    await docker.remove(sleeper, { force: true, volumes: false })

    const missing = new DockerodeHost(parseDockerEndpoint('--docker', `unix://${join(tmp, 'no-engine.sock')}`))
    await expectThrows(missing.version(), DockerUnavailableError)
    await expectThrows(missing.inspectContainer('x'), DockerUnavailableError)
    await expectThrows(readAllEntries(missing.saveImage(threeId)), DockerUnavailableError)

    const aborted = AbortSignal.abort(new Error('stop here'))
    const reason = await expectThrows(docker.inspectImage(threeId, aborted), Error)
    expect(reason.message).to.equal('stop here')
    // An abort in the middle of a save stream ends it with the signal's reason.
    const ac = new AbortController()
    const midway = await expectThrows((async () => {
      for await (const e of docker.saveImage(threeId, ac.signal)) {
        if (e.kind === 'layer') for await (const _ of e.stream) ac.abort(new Error('cancelled midway'))
      }
    })(), Error)
    expect(midway.message).to.equal('cancelled midway')
  })
})

/** Offset of an entry's data in a tar file (sequential scan of the headers). */
async function dataOffset (file: string, name: string): Promise<number> {
  const fh = await open(file, 'r')
  try {
    let pos = 0
    const header = Buffer.alloc(512)
    for (;;) {
      const { bytesRead } = await fh.read(header, 0, 512, pos)
      if (bytesRead < 512 || header.every(b => b === 0)) throw new Error(`${name} not in ${file}`)
      const entryName = header.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '')
      const size = parseInt(header.subarray(124, 136).toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8)
      if (entryName === name) return pos + 512
      pos += 512 + Math.ceil(size / 512) * 512
    }
  } finally {
    await fh.close()
  }
}
