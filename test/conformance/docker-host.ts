/**
 * One suite of what the agent relies on of a Docker engine, run against every DockerHost: the
 * in-memory fake (test/unit/memory-docker-host.test.ts) and DockerodeHost on a real lab engine
 * (test/integration/docker-host-conformance.test.ts), so the fake cannot drift from the engine.
 *
 *   describeDockerHost('memory', async () => ({ host, other, baseImage, deletePath, cleanup }))
 *
 * Covered: image chains and thin loads (a layer the engine holds by chain ID may be left out; one it
 * lacks may not; a layer must hash to its diff ID; a refused load keeps nothing), save → load
 * between two engines, the container lifecycle and its errors, volumes, the archive endpoints,
 * changes and their export as a layer that loads on the other engine, and the inspect round trip
 * of a spec. Images are made the way the agent makes them: a config written by buildLayeredConfig
 * over the base image, loaded as a thin tarball.
 *
 * Where the fake and a real engine legitimately differ, the comment "How the fake and a real engine differ" says so; nothing in
 * the suite is skipped for one of them.
 */
import { expect } from 'chai'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import { Readable } from 'node:stream'
import tarStream from 'tar-stream'
import type { DockerHost } from '../../agent/docker/docker-host.js'
import { buildLayeredConfig } from '../../agent/docker/layered-config.js'
import { TAR_END, TarType, newHeader, tarPadding } from '../../agent/docker/layer-tar.js'
import type { ContainerSpec } from '../../agent/docker/types.js'
import { closingEntries, configDigest, layerPaths } from '../../agent/transfer/load.js'
import { chainIds } from '../../agent/transfer/plan.js'
import {
  ContainerNotFoundError, ContainerPathNotFoundError, DockerConflictError, DockerEngineError, DockerLoadError, ImageNotFoundError, VolumeNotFoundError
} from '../../protocol/errors.js'

export interface DockerHostFixture {
  /** The engine under test. */
  host: DockerHost
  /** A second, independent engine of the same kind: the other end of save → load and of exported layers. */
  other: DockerHost
  /** An image on `host` whose containers keep running with RUN_CMD (a shell and `sleep`). */
  baseImage: string
  /** Deletes `path` (rm -rf) in running container `id` of `host`, as its process would. */
  deletePath: (id: string, path: string) => Promise<void>
  /** Removes whatever the fixture made (the suite removes what it made itself). */
  cleanup: () => Promise<void>
}

/** A command that runs until the container is stopped. */
export const RUN_CMD = ['sleep', '3600']

/*
 * How the fake and a real engine differ, in one place. None of it is behaviour the agent relies on.
 * - The fake runs no processes: a running container changes its files only when the test says so.
 * - Sizes: the fake's image size counts file bytes, the engine's its storage; the suite checks neither.
 * - Inspect's image `config` is the engine's whole container-config struct (every field, many empty)
 *   on a real engine and the config as written on the fake; the suite compares the fields it sets.
 * - Error messages differ; the error classes (and statuses) are the same.
 */
/** Names this suite gives containers and volumes (so it can clean up after itself). */
const PREFIX = 'gotoconf-'

export function describeDockerHost (label: string, setup: () => Promise<DockerHostFixture>): void {
  describe(`DockerHost conformance: ${label}`, function () {
    this.timeout(60_000)
    let f: DockerHostFixture
    let tmp: string

    before(async function () {
      this.timeout(180_000)
      f = await setup()
      tmp = await mkdtemp(join(tmpdir(), 'goto-conformance-'))
    })

    afterEach(async () => {
      for (const h of [f.host, f.other]) {
        for (const c of await h.listContainers()) if (c.name.startsWith(PREFIX)) await h.remove(c.id, { force: true, volumes: true })
      }
    })

    after(async function () {
      this.timeout(60_000)
      await rm(tmp, { recursive: true, force: true })
      await f?.cleanup()
    })

    const spec = (name: string, image: string, extra: Partial<ContainerSpec> = {}): ContainerSpec => ({
      name: `${PREFIX}${name}`,
      image,
      env: ['A=1', 'B=two words'],
      cmd: RUN_CMD,
      entrypoint: null,
      workingDir: '/',
      user: '',
      labels: { 'goto.test': label },
      hostname: 'conformance',
      exposedPorts: ['8080/tcp'],
      portBindings: {},
      restartPolicy: { name: 'no', maximumRetryCount: 0 },
      mounts: [],
      ...extra
    })

    it('answers version and info', async () => {
      const v = await f.host.version()
      expect(v.apiVersion).to.match(/^1\.\d+$/)
      const i = await f.host.info()
      expect(i.os).to.equal('linux')
      expect(i.architecture).to.match(/^(amd64|arm64|arm|386|[a-z0-9]+)$/)
      expect(await f.host.flushDataRoot()).to.be.a('boolean')
      const free = await f.host.freeDiskBytes()
      expect(free === null || free > 0).to.equal(true)
    })

    it('loads a thin image on top of one it holds: its ID is the config digest, its chain the base plus one', async () => {
      const { id, diffId, base } = await derive(f.host, f.baseImage, { '/srv/one.txt': 'one\n' })
      const img = await f.host.inspectImage(id)
      expect(img.id).to.equal(id)
      expect(img.diffIds).to.deep.equal([...base.diffIds, diffId])
      expect(img.os).to.equal(base.os)
      expect(img.repoTags).to.deep.equal([])
      expect(await f.host.imageChains()).to.deep.include(img.diffIds)
      const cfg = await f.host.inspectImageConfig(id)
      expect(cfg.id).to.equal(id)
      expect(cfg.diffIds).to.deep.equal(img.diffIds)
      expect(cfg.history.filter(h => h.empty_layer !== true)).to.have.length(img.diffIds.length)
      await f.host.removeImage(id, {})
      await expectReject(f.host.inspectImage(id), ImageNotFoundError)
      await expectReject(f.host.removeImage(id, {}), ImageNotFoundError)
      expect((await f.host.imageChains()).some(c => c.length === img.diffIds.length && c.every((d, i) => d === img.diffIds[i]))).to.equal(false)
    })

    it('refuses a thin load that leaves out a layer it lacks, or a layer that is not its diff ID, and keeps nothing', async () => {
      const base = await f.host.inspectImageConfig(f.baseImage)
      const one = layerTar({ '/a/one.txt': 'one\n' })
      const two = layerTar({ '/a/two.txt': 'two\n' })
      const config = configOf(base, [sha256(one), sha256(two)])
      const diffIds = [...base.diffIds, sha256(one), sha256(two)]
      // Layer one is left out, and the engine does not hold it.
      await expectReject(f.host.loadImage(tarball(config, diffIds, new Map([[sha256(two), two]]))), DockerLoadError)
      await expectReject(f.host.inspectImage(configDigest(config)), ImageNotFoundError)
      // Layer two's bytes are another layer's.
      await expectReject(f.host.loadImage(tarball(config, diffIds, new Map([[sha256(one), one], [sha256(two), one]]))), DockerLoadError)
      await expectReject(f.host.inspectImage(configDigest(config)), ImageNotFoundError)
      // Not a tarball at all.
      await expectReject(f.host.loadImage(Readable.from([Buffer.from('not a tar'.repeat(100))])), DockerLoadError)
      // Complete: it loads.
      const ids = await f.host.loadImage(tarball(config, diffIds, new Map([[sha256(one), one], [sha256(two), two]])))
      expect(ids).to.deep.equal([configDigest(config)])
      await f.host.removeImage(configDigest(config), {})
    })

    it('saves an image that loads on the other engine as the same image, then takes a thin load on top of it', async () => {
      const { id } = await derive(f.host, f.baseImage, { '/srv/saved.txt': 'saved\n', '/srv/dir/deep.txt': 'deep\n' })
      const img = await f.host.inspectImage(id)
      const { bytes, configDigest: digest, layers } = await saveAll(f.host, id)
      expect(digest).to.equal(id)
      expect(layers).to.deep.equal(img.diffIds)
      expect(await f.other.loadImage(Readable.from([bytes]))).to.deep.equal([id])
      expect((await f.other.inspectImage(id)).diffIds).to.deep.equal(img.diffIds)
      expect(await f.other.imageChains()).to.deep.include(img.diffIds)
      const top = await derive(f.other, id, { '/srv/on-top.txt': 'top\n' })
      expect((await f.other.inspectImage(top.id)).diffIds).to.deep.equal([...img.diffIds, top.diffId])
      const c = await f.other.create(spec('saved', top.id))
      expect(await readPath(f.other, c, '/srv/dir/deep.txt')).to.equal('deep\n')
      expect(await readPath(f.other, c, '/srv/on-top.txt')).to.equal('top\n')
      await f.other.remove(c, { force: true, volumes: false })
      await f.other.removeImage(top.id, {})
      await f.other.removeImage(id, {})
      await f.host.removeImage(id, {})
    })

    it('tags an image (taking the tag from the image it named); a container created from the tag has its reference', async () => {
      const { id } = await derive(f.host, f.baseImage, { '/srv/tagged.txt': 'tagged\n' })
      await f.host.tagImage(f.baseImage, 'conformance/tagged:v1')
      await f.host.tagImage(id, 'conformance/tagged:v1')
      expect((await f.host.inspectImage('conformance/tagged:v1')).id).to.equal(id)
      const c = await f.host.create(spec('named', 'conformance/tagged:v1'))
      const got = await f.host.inspectContainer(c)
      expect(got.spec.image).to.equal(id)
      expect(got.spec.imageRef).to.equal('conformance/tagged:v1')
      await f.host.remove(c, { force: true, volumes: false })
      await f.host.removeImage('conformance/tagged:v1', {})
      await expectReject(f.host.inspectImage(id), ImageNotFoundError)
    })

    it('creates a container whose inspected spec creates the same container again', async () => {
      await expectReject(f.host.create(spec('no-image', `sha256:${'0'.repeat(64)}`)), ImageNotFoundError)
      const s = spec('fidelity', f.baseImage, { restartPolicy: { name: 'on-failure', maximumRetryCount: 3 } })
      const id = await f.host.create(s)
      expect(id).to.match(/^[0-9a-f]{64}$/)
      await expectReject(f.host.create(s), DockerConflictError)
      const got = await f.host.inspectContainer(s.name)
      expect(got.id).to.equal(id)
      expect(got.name).to.equal(s.name)
      expect(got.state).to.deep.equal({ status: 'created', running: false, paused: false, execs: 0 })
      expect(got.spec.env.slice(0, 2)).to.deep.equal(s.env)
      expect(got.spec).to.deep.include({ name: s.name, cmd: s.cmd, entrypoint: s.entrypoint, workingDir: '/', hostname: 'conformance', exposedPorts: ['8080/tcp'], restartPolicy: s.restartPolicy })
      expect(got.spec.labels).to.deep.include(s.labels)
      expect((await f.host.inspectImage(got.spec.image)).id).to.equal((await f.host.inspectImage(f.baseImage)).id)
      const copyId = await f.host.create({ ...got.spec, name: `${PREFIX}fidelity-copy` })
      const copy = await f.host.inspectContainer(copyId)
      expect(copy.spec).to.deep.equal({ ...got.spec, name: `${PREFIX}fidelity-copy` })
    })

    it('starts, pauses, unpauses, stops, renames and removes a container, with the engine\'s conflicts', async () => {
      const id = await f.host.create(spec('life', f.baseImage))
      await expectReject(f.host.pause(id), DockerConflictError) // created, not running
      await expectNotPaused(f.host.unpause(id))
      await f.host.start(id)
      await f.host.start(id) // running already: not an error
      expect((await f.host.inspectContainer(id)).state).to.include({ running: true, paused: false, status: 'running' })
      await f.host.pause(id)
      expect((await f.host.inspectContainer(id)).state).to.include({ running: true, paused: true, status: 'paused' })
      await expectReject(f.host.pause(id), DockerConflictError)
      await expectReject(f.host.start(id), DockerConflictError)
      expect((await f.host.listContainers()).find(c => c.id === id)).to.deep.include({ name: `${PREFIX}life`, state: 'paused' })
      await f.host.unpause(id)
      await expectNotPaused(f.host.unpause(id))
      await expectReject(f.host.remove(id, { force: false, volumes: false }), DockerConflictError)
      await f.host.stop(id, { timeoutS: 1 })
      expect((await f.host.inspectContainer(id)).state).to.include({ running: false, paused: false, status: 'exited' })
      await f.host.stop(id, { timeoutS: 1 }) // stopped already: not an error
      await expectReject(f.host.pause(id), DockerConflictError)

      const other = await f.host.create(spec('life-other', f.baseImage))
      await expectReject(f.host.rename(id, `${PREFIX}life-other`), DockerConflictError)
      await f.host.rename(id, `${PREFIX}life-renamed`)
      expect((await f.host.inspectContainer(id)).name).to.equal(`${PREFIX}life-renamed`)
      await expectReject(f.host.inspectContainer(`${PREFIX}life`), ContainerNotFoundError)
      await f.host.start(id)
      await expectReject(f.host.removeImage(f.baseImage, {}), DockerConflictError) // in use
      await f.host.remove(id, { force: true, volumes: false })
      await f.host.remove(other, { force: false, volumes: false }) // created: no force needed
      expect((await f.host.listContainers()).filter(c => c.id === id || c.id === other)).to.deep.equal([])
      const gone = `${PREFIX}gone`
      const calls: Array<() => Promise<unknown>> = [
        async () => await f.host.inspectContainer(gone), async () => await f.host.start(gone), async () => await f.host.stop(gone, { timeoutS: 1 }),
        async () => await f.host.pause(gone), async () => await f.host.unpause(gone), async () => await f.host.remove(gone, { force: true, volumes: false }),
        async () => await f.host.rename(gone, `${PREFIX}x`), async () => await f.host.containerChanges(gone), async () => await f.host.getArchive(gone, '/'),
        async () => await f.host.statPath(gone, '/'), async () => await f.host.putArchive(gone, '/', tarOf({ x: 'x' }))
      ]
      for (const call of calls) await expectReject(call(), ContainerNotFoundError)
    })

    it('keeps volumes, mounts them, and reads and writes them through the archive endpoints', async () => {
      const name = `${PREFIX}data`
      expect(await f.host.volumeExists(name)).to.equal(false)
      await expectReject(f.host.removeVolume(name), VolumeNotFoundError)
      await f.host.createVolume(name, 'local', { 'goto.test': label })
      await f.host.createVolume(name, 'local', { 'goto.test': label }) // exists: reused
      expect(await f.host.volumeExists(name)).to.equal(true)
      const s = spec('vol', f.baseImage, { mounts: [{ type: 'volume', name, destination: '/data', readOnly: false, driver: 'local' }] })
      const id = await f.host.create(s)
      // The volume's own labels come with the mount (what a move gives the volume it creates).
      expect((await f.host.inspectContainer(id)).spec.mounts).to.deep.equal(s.mounts.map(m => ({ ...m, labels: { 'goto.test': label } })))
      // Into the mount point of a created, never started container: the volume.
      await f.host.putArchive(id, '/data', tarOf({ 'in-volume.txt': 'in volume\n' }))
      expect(await readPath(f.host, id, '/data/in-volume.txt')).to.equal('in volume\n')
      await expectReject(f.host.removeVolume(name), DockerConflictError) // in use
      await f.host.remove(id, { force: true, volumes: true })
      expect(await f.host.volumeExists(name)).to.equal(true) // a named volume outlives its container
      const again = await f.host.create(spec('vol-again', f.baseImage, { mounts: s.mounts }))
      expect(await readPath(f.host, again, '/data/in-volume.txt')).to.equal('in volume\n')
      await f.host.remove(again, { force: true, volumes: false })
      await f.host.removeVolume(name)
      expect(await f.host.volumeExists(name)).to.equal(false)
    })

    it('reads, writes and stats paths of a container; an absent path is ContainerPathNotFoundError', async () => {
      const { id: image } = await derive(f.host, f.baseImage, { '/srv/app/conf.txt': 'conf\n' })
      const id = await f.host.create(spec('files', image))
      expect(await readPath(f.host, id, '/srv/app/conf.txt')).to.equal('conf\n')
      const names = await tarNames(await f.host.getArchive(id, '/srv/app'))
      expect(names.map(n => n.replace(/\/$/, ''))).to.deep.equal(['app', 'app/conf.txt'])
      const file = await f.host.statPath(id, '/srv/app/conf.txt')
      expect(file).to.deep.include({ name: 'conf.txt', type: 'file', size: 5 })
      expect(file.mode & 0o170000).to.equal(0o100000)
      const dir = await f.host.statPath(id, '/srv/app')
      expect(dir).to.deep.include({ name: 'app', type: 'directory' })
      expect(dir.mode & 0o170000).to.equal(0o040000)
      await expectReject(f.host.statPath(id, '/nope'), ContainerPathNotFoundError)
      await expectReject(f.host.getArchive(id, '/nope'), ContainerPathNotFoundError)
      await expectReject(f.host.putArchive(id, '/nope', tarOf({ x: 'x' })), ContainerPathNotFoundError)
      await f.host.putArchive(id, '/srv', tarOf({ 'app/new.txt': 'new\n' }))
      expect(await readPath(f.host, id, '/srv/app/new.txt')).to.equal('new\n')
      await f.host.remove(id, { force: true, volumes: false })
      await f.host.removeImage(image, {})
    })

    it('lists and exports a container\'s changes as a layer that loads on the other engine as "image + changes"', async () => {
      const { id: image } = await derive(f.host, f.baseImage, { '/srv/keep.txt': 'keep\n', '/srv/gone.txt': 'gone\n', '/srv/old/x.txt': 'x\n' })
      // The other engine holds the image (as a move's destination does after pre-copy).
      const saved = await saveAll(f.host, image)
      await f.other.loadImage(Readable.from([saved.bytes]))
      const name = `${PREFIX}changes-data`
      const id = await f.host.create(spec('changes', image, { mounts: [{ type: 'volume', name, destination: '/data', readOnly: false, driver: 'local' }] }))
      await f.host.start(id)
      await f.host.putArchive(id, '/srv', tarOf({ 'added.txt': 'added\n', 'keep.txt': 'changed\n', 'newdir/deep.txt': 'deep\n' }))
      await f.host.putArchive(id, '/data', tarOf({ 'in-volume.txt': 'volume\n' }))
      await f.deletePath(id, '/srv/gone.txt')
      await f.deletePath(id, '/srv/old')
      await f.host.pause(id)
      const changes = await f.host.containerChanges(id)
      const kinds = new Map(changes.map(c => [c.path, c.kind]))
      expect(kinds.get('/srv/added.txt')).to.equal('added')
      expect(kinds.get('/srv/newdir')).to.equal('added')
      expect(kinds.get('/srv/keep.txt')).to.equal('modified')
      expect(kinds.get('/srv/gone.txt')).to.equal('deleted')
      expect(kinds.get('/srv/old')).to.equal('deleted')
      expect(changes.some(c => c.path.startsWith('/data/'))).to.equal(false)

      const out = join(tmp, 'top.tar')
      const top = await f.host.exportChanges(id, out)
      const bytes = await readFile(out)
      expect(top.size).to.equal(bytes.byteLength)
      expect(top.diffId).to.equal(sha256(bytes))
      const names = await tarNames(Readable.from([bytes]))
      expect(names).to.include.members(['srv/added.txt', 'srv/keep.txt', 'srv/newdir/deep.txt', 'srv/.wh.gone.txt', 'srv/.wh.old'])
      expect(names.some(n => n.startsWith('data/') && n !== 'data/')).to.equal(false)
      await f.host.unpause(id)

      const config = buildLayeredConfig(await f.host.inspectImageConfig(image), top.diffId)
      const diffIds = [...saved.layers, top.diffId]
      expect(await f.other.loadImage(tarball(config, diffIds, new Map([[top.diffId, bytes]])))).to.deep.equal([configDigest(config)])
      const copy = await f.other.create(spec('changes-copy', configDigest(config)))
      expect(await readPath(f.other, copy, '/srv/added.txt')).to.equal('added\n')
      expect(await readPath(f.other, copy, '/srv/keep.txt')).to.equal('changed\n')
      expect(await readPath(f.other, copy, '/srv/newdir/deep.txt')).to.equal('deep\n')
      await expectReject(f.other.statPath(copy, '/srv/gone.txt'), ContainerPathNotFoundError)
      await expectReject(f.other.statPath(copy, '/srv/old/x.txt'), ContainerPathNotFoundError)
      await expectReject(f.other.statPath(copy, '/data/in-volume.txt'), ContainerPathNotFoundError)
      await f.other.remove(copy, { force: true, volumes: false })
      await f.other.removeImage(configDigest(config), {})
      await f.other.removeImage(image, {})
      await f.host.remove(id, { force: true, volumes: false })
      await f.host.removeVolume(name)
      await f.host.removeImage(image, {})
    })
  })
}

// --- helpers ----------------------------------------------------------------------------------------

async function expectReject (p: Promise<unknown>, type: new (...args: never[]) => Error): Promise<void> {
  let err: unknown
  try {
    await p
  } catch (e) {
    err = e
  }
  expect(err, `expected a ${type.name}`).to.be.instanceOf(type)
}

/** Unpause of a container that is not paused: the engine's plain error (500), not a conflict. */
async function expectNotPaused (p: Promise<unknown>): Promise<void> {
  let err: unknown
  try {
    await p
  } catch (e) {
    err = e
  }
  expect(err).to.be.instanceOf(DockerEngineError)
  expect(err).not.to.be.instanceOf(DockerConflictError)
  expect((err as DockerEngineError).status).to.equal(500)
}

function sha256 (bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

/** A layer tar of `files` (absolute path → contents), parent directories first. */
export function layerTar (files: Record<string, string>): Buffer {
  const dirs = new Set<string>()
  for (const p of Object.keys(files)) for (let d = posix.dirname(p); d !== '/'; d = posix.dirname(d)) dirs.add(d)
  const items = [...[...dirs].map(d => ({ path: d, data: undefined as Buffer | undefined })), ...Object.entries(files).map(([path, s]) => ({ path, data: Buffer.from(s) }))]
  items.sort((a, b) => a.path < b.path ? -1 : 1)
  const chunks: Uint8Array[] = []
  for (const i of items) {
    if (i.data === undefined) chunks.push(...newHeader({ name: `${i.path.slice(1)}/`, type: TarType.directory, mode: 0o40755, mtime: 1_700_000_000 }))
    else chunks.push(...newHeader({ name: i.path.slice(1), type: TarType.file, mode: 0o100644, size: i.data.byteLength, mtime: 1_700_000_000 }), i.data, tarPadding(i.data.byteLength))
  }
  chunks.push(TAR_END)
  return Buffer.concat(chunks)
}

/** A config for `base` plus `extra` layers (buildLayeredConfig applied once per layer). */
function configOf (base: Awaited<ReturnType<DockerHost['inspectImageConfig']>>, extra: string[]): Uint8Array {
  let info = base
  let config: Uint8Array = new Uint8Array()
  for (const d of extra) {
    config = buildLayeredConfig(info, d, { created: new Date(0) })
    const parsed = JSON.parse(Buffer.from(config).toString('utf8')) as { history: typeof base.history, rootfs: { diff_ids: string[] } }
    info = { ...info, diffIds: parsed.rootfs.diff_ids, history: parsed.history }
  }
  return config
}

/** A classic load tarball (transfer/load.ts's layout): the files of `given` layers, then config and manifest. */
function tarball (config: Uint8Array, diffIds: string[], given: Map<string, Buffer>): Readable {
  const paths = layerPaths(diffIds)
  const chunks: Uint8Array[] = []
  diffIds.forEach((d, i) => {
    const bytes = given.get(d)
    if (bytes === undefined || chainIds(diffIds).indexOf(chainIds(diffIds)[i] as string) !== i) return
    chunks.push(...newHeader({ name: paths[i] as string, type: TarType.file, mode: 0o644, size: bytes.byteLength }), bytes, tarPadding(bytes.byteLength))
  })
  chunks.push(...closingEntries(config, paths))
  return Readable.from([Buffer.concat(chunks)], { objectMode: false })
}

/** Loads on `host` an image of `base` plus one layer of `files`, as the agent does (a thin tarball). */
async function derive (host: DockerHost, base: string, files: Record<string, string>): Promise<{ id: string, diffId: string, base: Awaited<ReturnType<DockerHost['inspectImage']>> }> {
  const layer = layerTar(files)
  const diffId = sha256(layer)
  const info = await host.inspectImageConfig(base)
  const config = buildLayeredConfig(info, diffId, { comment: 'conformance' })
  const [id] = await host.loadImage(tarball(config, [...info.diffIds, diffId], new Map([[diffId, layer]])))
  expect(id).to.equal(configDigest(config))
  return { id: id as string, diffId, base: await host.inspectImage(base) }
}

/** Reads `saveImage` to the end and writes what it gave as a classic tarball (layers at their saved paths). */
async function saveAll (host: DockerHost, id: string): Promise<{ bytes: Buffer, configDigest: string, layers: string[] }> {
  const chunks: Uint8Array[] = []
  const byPath = new Map<string, string>()
  let config: Uint8Array | undefined
  let manifest: string[] = []
  for await (const e of host.saveImage(id)) {
    if (e.kind === 'config') config = e.bytes
    else if (e.kind === 'manifest') manifest = e.layers
    else {
      const parts: Buffer[] = []
      for await (const c of e.stream) parts.push(Buffer.from(c))
      const bytes = Buffer.concat(parts)
      if (e.size !== undefined) expect(e.size).to.equal(bytes.byteLength)
      byPath.set(e.path, sha256(bytes))
      chunks.push(...newHeader({ name: e.path, type: TarType.file, mode: 0o644, size: bytes.byteLength }), bytes, tarPadding(bytes.byteLength))
    }
  }
  if (config === undefined) throw new Error('save gave no config')
  const layers = manifest.map(p => byPath.get(p) ?? `missing ${p}`)
  chunks.push(...closingEntries(config, manifest))
  return { bytes: Buffer.concat(chunks), configDigest: configDigest(config), layers }
}

/** A tar stream of `files` (relative name → contents). */
function tarOf (files: Record<string, string>): Readable {
  const chunks: Uint8Array[] = []
  for (const [name, s] of Object.entries(files)) {
    const data = Buffer.from(s)
    chunks.push(...newHeader({ name, type: TarType.file, mode: 0o644, size: data.byteLength, mtime: Math.floor(Date.now() / 1000) }), data, tarPadding(data.byteLength))
  }
  chunks.push(TAR_END)
  return Readable.from([Buffer.concat(chunks)], { objectMode: false })
}

async function tarFiles (source: AsyncIterable<Uint8Array>): Promise<Array<{ name: string, data: Buffer }>> {
  const extract = tarStream.extract()
  const out: Array<{ name: string, data: Buffer }> = []
  const reading = (async () => {
    for await (const entry of extract) {
      const parts: Buffer[] = []
      for await (const c of entry) parts.push(c as Buffer)
      out.push({ name: entry.header.name, data: Buffer.concat(parts) })
    }
  })()
  for await (const c of source) {
    if (!extract.write(Buffer.from(c))) await new Promise<void>(resolve => extract.once('drain', () => { resolve() }))
  }
  extract.end(null)
  await reading
  return out
}

async function tarNames (source: AsyncIterable<Uint8Array>): Promise<string[]> {
  return (await tarFiles(source)).map(e => e.name)
}

/** The contents of file `path` of container `id`, through the archive endpoint. */
async function readPath (host: DockerHost, id: string, path: string): Promise<string | undefined> {
  const files = await tarFiles(await host.getArchive(id, path))
  return files.find(e => e.name === posix.basename(path))?.data.toString('utf8')
}
