/**
 * Exporting what a container changed as a layer (DockerodeHost.exportChanges, agent/docker/changes.ts)
 * and loading "image + that layer" (layered-config.ts, transfer/load.ts) on a real engine: one lab
 * host, engine only, its own prefix and subnet. The container is paused while exported, as in a
 * move's freeze. Checked against what it should be: the layer's entries, `docker commit`'s own top
 * layer (same files, same headers), and a container of the loaded image, whose filesystem must be
 * the original's (files added, modified, deleted, chmod/chown, symlinks, a fifo, a 2 MiB file;
 * nothing of volumes, binds, tmpfs or /etc/hosts). Also: the export of a 1 MiB change takes about
 * as long on a ~100 MiB image as on a 2 MiB one. Needs root, dockerd, busybox-static, iproute2.
 */
import { expect } from 'chai'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type Docker from 'dockerode'
import { commitLayer } from '../fixtures/docker.js'
import { Lab, BASE_IMAGE, waitFor, type LabHost } from '../lab/index.js'
import { run } from '../lab/sys.js'
import { DockerodeHost } from '../../agent/docker/host.js'
import { readTar } from '../../agent/docker/layer-tar.js'
import { buildLayeredConfig } from '../../agent/docker/layered-config.js'
import { parseDockerEndpoint } from '../../agent/config.js'
import { LayerStore } from '../../agent/transfer/layer-store.js'
import { configDigest, loadVerified } from '../../agent/transfer/load.js'
import { ContainerPathNotFoundError } from '../../protocol/errors.js'

const PREFIX = 'gotolabc'
const SUBNET = '10.213.110.0/24'
const DOCKER = '/usr/bin/docker'
const APP = 'gotolabc/app:latest'
const BIG = 'gotolabc/big:latest'
const LONG = `${'l'.repeat(70)}/${'m'.repeat(70)}`

/** What the image holds for the container to change. */
const APP_SCRIPT = [
  'mkdir -p /srv/app/old/sub /srv/app/replaced /srv/app/keep',
  'echo x > /srv/app/old/sub/x',
  'echo old > /srv/app/replaced/old-file',
  'echo keep > /srv/app/keep/file',
  'echo conf > /etc/app.conf'
].join(' && ')

/** What the container changes, then it marks itself ready. */
const CHANGES = [
  'echo hello > /added.txt',
  'mkdir -p /newdir/sub/deeper && echo a > /newdir/sub/a && echo b > /newdir/sub/deeper/b',
  'ln -s /added.txt /newdir/link && ln /added.txt /newdir/hard',
  'echo "app:x:1000:1000::/home/app:/bin/sh" >> /etc/passwd', // a file of the image, modified
  'rm /bin/cat && printf "#!/bin/sh\\necho not busybox\\n" > /bin/cat && chmod 755 /bin/cat', // an applet link replaced by a file
  'rm /etc/group', // a file of the image, deleted
  'rm -rf /srv/app/old', // a directory of the image, deleted
  'rm -rf /srv/app/replaced && mkdir /srv/app/replaced && echo new > /srv/app/replaced/new', // replaced by a new directory
  'chmod 700 /srv/app/keep && chown 1000:1000 /srv/app/keep/file && chmod 4750 /srv/app/keep/file',
  `mkdir -p /srv/app/keep/${LONG} && echo deep > /srv/app/keep/${LONG}/${'n'.repeat(60)}.txt`,
  'mkfifo /tmp/fifo',
  'head -c 2097152 /dev/urandom > /var/blob.bin',
  'echo vol > /data/in-volume && echo bind > /bindm/in-bind && echo tmp > /scratch/in-tmpfs',
  'echo "10.0.0.1 extra" >> /etc/hosts',
  'touch /tmp/ready'
].join(' && ')

/**
 * Every path of the container's own filesystem with type, mode, owner, mtime and (files) size and
 * md5. Mount points (volumes, binds, tmpfs, the engine's /etc files) are listed by name only, and
 * / itself not at all (its mtime is the unpacking's). What the engine's init layer makes when it
 * creates a container (/.dockerenv, /etc/mtab, and /etc's mtime, bumped by the mount points it
 * creates there) differs between any two containers and is listed without times.
 */
const LISTING = [
  'find / -xdev \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -print | sort | while read -r f; do',
  '  case "$f" in /) continue;; /etc/hosts|/etc/hostname|/etc/resolv.conf|/data|/bindm|/scratch) echo "$f (mount)"; continue;;',
  '    /.dockerenv|/etc/mtab) echo "$f (init layer)"; continue;; /etc) echo "$f $(stat -c \'%a %u %g %F\' "$f") (mtime: init layer)"; continue;; esac',
  '  if [ -L "$f" ]; then echo "$f $(stat -c \'%a %u %g %Y\' "$f") -> $(readlink "$f")"',
  '  elif [ -f "$f" ]; then echo "$f $(stat -c \'%a %u %g %Y %s\' "$f") $(md5sum < "$f" | cut -c1-32)"',
  '  else echo "$f $(stat -c \'%a %u %g %Y %F\' "$f")"; fi',
  'done'
].join('\n')

interface LayerEntry { name: string, type: string, linkname: string, mode: number, perm: number, uid: number, gid: number, mtime: number, size: number, md5: string }

/** The entries of a layer tar, in order, with the header fields we compare and an md5 of the data. */
async function layerEntries (source: AsyncIterable<Uint8Array>): Promise<LayerEntry[]> {
  const out: LayerEntry[] = []
  for await (const e of readTar(source)) {
    const md5 = createHash('md5')
    for await (const c of e.data()) md5.update(c)
    const num = (off: number, len: number): number => parseInt(e.header.subarray(off, off + len).toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8)
    out.push({
      name: e.name.toString('utf8'),
      type: e.type,
      linkname: e.linkname.toString('utf8'),
      mode: num(100, 8), // as the engine writes it: Go puts the file type bits in too (0o100755)
      perm: num(100, 8) & 0o7777,
      uid: num(108, 8),
      gid: num(116, 8),
      mtime: num(136, 12),
      size: e.size,
      md5: md5.digest('hex')
    })
  }
  return out
}

function lines (text: string): string[] {
  return text.split('\n').filter(l => l !== '')
}

describe('docker host driver: a container\'s changes as a layer (lab engine)', function () {
  this.timeout(60_000)
  const lab = new Lab({ prefix: PREFIX, subnet: SUBNET, agents: false })
  let h: LabHost
  let raw: Docker
  let docker: DockerodeHost
  let tmp: string
  let appId: string
  const cli = async (...args: string[]): Promise<string> => (await run([DOCKER, '-H', h.dockerHost, ...args])).stdout

  /** Starts a container that makes `script`'s changes; resolves once it marked itself ready. */
  async function changedContainer (name: string, image: string, script: string, extra: string[] = []): Promise<string> {
    const id = (await cli('run', '-d', '--name', name, ...extra, image, 'sh', '-c', `${script} && exec sleep 100000`)).trim()
    await waitFor(async () => {
      try {
        return await docker.statPath(id, '/tmp/ready')
      } catch (err) {
        if (err instanceof ContainerPathNotFoundError) return undefined
        throw err
      }
    }, { timeoutMs: 20_000, what: `container ${name} to make its changes` })
    return id
  }

  before(async function () {
    this.timeout(120_000)
    await lab.down()
    ;[h] = await lab.up(1) as [LabHost]
    raw = lab.docker(h.name)
    docker = new DockerodeHost(parseDockerEndpoint('--docker', h.dockerHost))
    tmp = await mkdtemp(join(tmpdir(), 'goto-changes-test-'))
    appId = await commitLayer(raw, BASE_IMAGE, APP_SCRIPT, APP)
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true })
  })

  it('exports a paused container\'s changes: the same files as docker commit\'s layer, and an image that loads into the same filesystem', async () => {
    const bind = join(tmp, 'bind')
    await mkdir(bind)
    const id = await changedContainer('changed', APP, CHANGES, ['-v', 'gotolabc-data:/data', '-v', `${bind}:/bindm`, '--tmpfs', '/scratch'])
    const changes = await docker.containerChanges(id)
    // What the engine lists: mount points as added directories, never their contents or /etc/hosts.
    expect(changes).to.deep.include.members([{ path: '/data', kind: 'added' }, { path: '/bindm', kind: 'added' }, { path: '/scratch', kind: 'added' }])
    expect(changes.map(c => c.path)).to.not.include.members(['/data/in-volume', '/bindm/in-bind', '/scratch/in-tmpfs', '/etc/hosts'])

    await docker.pause(id)
    const out = join(tmp, 'top.tar')
    const started = performance.now()
    const top = await docker.exportChanges(id, out)
    const ms = performance.now() - started
    expect((await docker.inspectContainer(id)).state.paused).to.equal(true)
    const entries = await layerEntries(createReadStream(out))
    const bytes = createHash('sha256')
    for await (const c of createReadStream(out)) bytes.update(c as Buffer)
    expect(top.diffId).to.equal(`sha256:${bytes.digest('hex')}`)
    expect(top.entries).to.equal(entries.length)
    console.log(`      exportChanges: ${entries.length} entries, ${top.size} bytes, ${top.requests} engine requests, ${ms.toFixed(0)} ms`)

    const names = entries.map(e => e.name)
    const byName = new Map(entries.map(e => [e.name, e]))
    // parents before children, and no name twice
    names.forEach((n, i) => {
      const parent = n.replace(/\/$/, '').split('/').slice(0, -1).join('/')
      if (parent !== '' && names.includes(`${parent}/`)) expect(names.indexOf(`${parent}/`), n).to.be.below(i)
    })
    expect(new Set(names).size).to.equal(names.length)
    expect(names).to.include.members([
      'added.txt', 'bin/cat', 'etc/passwd', 'etc/.wh.group', 'srv/app/.wh.old', 'srv/app/keep/', 'srv/app/keep/file', 'srv/app/replaced/', 'srv/app/replaced/new',
      'newdir/', 'newdir/sub/', 'newdir/sub/a', 'newdir/sub/deeper/', 'newdir/sub/deeper/b', 'newdir/link', 'newdir/hard',
      `srv/app/keep/${LONG}/${'n'.repeat(60)}.txt`, 'tmp/fifo', 'tmp/ready', 'var/blob.bin', 'data/', 'bindm/', 'scratch/'
    ])
    // The replaced directory: an opaque marker (native overlay diff) or a whiteout of its old file (naive diff).
    expect(names.includes('srv/app/replaced/.wh..wh..opq') || names.includes('srv/app/replaced/.wh.old-file')).to.equal(true)
    expect(names.filter(n => /^(data|bindm|scratch)\/./.test(n) || n.startsWith('etc/host') || n === 'etc/resolv.conf')).to.deep.equal([])
    expect(byName.get('bin/cat')).to.include({ type: '0', perm: 0o755 })
    expect(byName.get('srv/app/keep/')).to.include({ type: '5', perm: 0o700 })
    expect(byName.get('srv/app/keep/file')).to.include({ uid: 1000, gid: 1000, perm: 0o4750 })
    expect(byName.get('newdir/link')).to.include({ type: '2', linkname: '/added.txt' })
    expect(byName.get('tmp/fifo')).to.include({ type: '6' })
    expect(byName.get('var/blob.bin')?.size).to.equal(2 * 1024 * 1024)
    expect(byName.get('etc/.wh.group')).to.include({ type: '0', size: 0 })
    expect(top.size).to.be.below(2 * 1024 * 1024 + 64 * 1024)

    // docker commit's own top layer: the same files with the same headers and contents. (Its
    // directories are those overlay copied up, a superset of ours; its deletions may be an opaque
    // marker where ours are whiteouts.)
    const { Id: committed } = await raw.getContainer(id).commit({ pause: false, comment: 'reference' }) as { Id: string }
    const chain = (await docker.inspectImage(committed)).diffIds
    let commitTop: LayerEntry[] = []
    const layers = new Map<string, LayerEntry[]>()
    let manifest: string[] = []
    for await (const e of docker.saveImage(committed)) {
      if (e.kind === 'layer') layers.set(e.path, await layerEntries(e.stream))
      if (e.kind === 'manifest') manifest = e.layers
    }
    commitTop = layers.get(manifest[chain.length - 1] ?? '') ?? []
    const content = (list: LayerEntry[]): LayerEntry[] => list.filter(e => e.type !== '5' && !e.name.split('/').pop()?.startsWith('.wh.')).sort((a, b) => a.name < b.name ? -1 : 1)
    // One known difference: a hard link between two paths fetched apart (/added.txt and
    // /newdir/hard) arrives as a second copy of the file, where commit writes a link entry.
    const unlinked = commitTop.map(e => {
      const target = e.type === '1' ? commitTop.find(t => t.name === e.linkname) : undefined
      return target === undefined ? e : { ...target, name: e.name }
    })
    expect(commitTop.find(e => e.name === 'newdir/hard')?.type).to.equal('1')
    expect(content(entries)).to.deep.equal(content(unlinked))
    const commitDirs = new Map(commitTop.filter(e => e.type === '5').map(e => [e.name, e]))
    for (const d of entries.filter(e => e.type === '5')) {
      // A mount point's placeholder has the mount's mtime, not that of the directory under it.
      const mount = ['data/', 'bindm/', 'scratch/'].includes(d.name)
      expect({ ...commitDirs.get(d.name), mtime: mount ? 0 : commitDirs.get(d.name)?.mtime }, d.name).to.deep.equal({ ...d, mtime: mount ? 0 : d.mtime })
    }
    await docker.removeImage(committed, {})
    await docker.unpause(id)

    // "APP + this layer" as a thin load: only the new layer travels, the config is written anew.
    const store = await LayerStore.open(join(tmp, 'store'))
    await store.receive(top.diffId, top.size, createReadStream(out))
    const app = await docker.inspectImageConfig(appId)
    expect(app.diffIds).to.deep.equal((await docker.inspectImage(appId)).diffIds)
    const config = buildLayeredConfig(app, top.diffId, { comment: 'go-to test' })
    const diffIds = [...app.diffIds, top.diffId]
    const loaded = await loadVerified(docker, { config, diffIds, present: app.diffIds.length, store })
    expect(loaded).to.equal(configDigest(config))
    const again = await docker.inspectImageConfig(loaded)
    expect(again.config).to.deep.equal(app.config)
    expect(again.history.map(s => s.comment ?? s.created_by ?? '')).to.deep.equal([...app.history.map(s => s.comment ?? s.created_by ?? ''), 'go-to test'])
    expect(lines(await cli('history', '-q', loaded))).to.have.length(app.history.length + 1)

    const original = await cli('exec', id, 'sh', '-c', LISTING)
    const copy = await cli('run', '--rm', loaded, 'sh', '-c', LISTING)
    const [a, b] = [lines(original), lines(copy)]
    expect(a.length).to.be.above(100)
    expect(a.filter(l => !b.includes(l)), 'only in the original').to.deep.equal([])
    expect(b.filter(l => !a.includes(l)), 'only in the copy').to.deep.equal([])
    expect(a.some(l => l.startsWith('/etc/group'))).to.equal(false)
    expect(a.some(l => l.startsWith('/srv/app/old'))).to.equal(false)
    expect(a.some(l => l.startsWith('/srv/app/replaced/old-file'))).to.equal(false)
    expect(a.some(l => l.startsWith('/srv/app/keep/file 4750 1000 1000'))).to.equal(true)
    expect(a).to.include('/data (mount)')
    expect(b.some(l => l.startsWith('/data/') || l.startsWith('/bindm/') || l.startsWith('/scratch/'))).to.equal(false)
    // The applet link replaced by a script: `cat` is the script now.
    expect((await cli('run', '--rm', loaded, 'cat')).trim()).to.equal('not busybox')
    await docker.remove(id, { force: true, volumes: true })
  })

  it('takes about as long for a 1 MiB change on a ~100 MiB image as on a 2 MiB one', async function () {
    this.timeout(90_000)
    await commitLayer(raw, BASE_IMAGE, 'head -c 104857600 /dev/urandom > /big.bin', BIG)
    const bigImage = await docker.inspectImage(BIG)
    expect(bigImage.size).to.be.above(100 * 1024 * 1024)
    const script = 'head -c 1048576 /dev/urandom > /var/one-mib.bin && touch /tmp/ready'
    const timings: Record<string, number> = {}
    for (const [name, image] of [['small', BASE_IMAGE], ['big', BIG]] as const) {
      const id = await changedContainer(`timed-${name}`, image, script)
      await docker.pause(id)
      let best = Infinity
      let size = 0
      for (let i = 0; i < 3; i++) {
        const started = performance.now()
        size = (await docker.exportChanges(id, join(tmp, `timed-${name}.tar`))).size
        best = Math.min(best, performance.now() - started)
      }
      timings[name] = best
      expect(size).to.be.above(1024 * 1024).and.below(1024 * 1024 + 16 * 1024)
      if (name === 'big') {
        // The freeze as it was: commit, then save the committed image to get its top layer.
        const started = performance.now()
        const { Id: committed } = await raw.getContainer(id).commit({ pause: false }) as { Id: string }
        let saved = 0
        for await (const e of docker.saveImage(committed)) if (e.kind === 'layer') for await (const c of e.stream) saved += c.byteLength
        timings['commit+save (big)'] = performance.now() - started
        expect(saved).to.be.above(100 * 1024 * 1024)
        await docker.removeImage(committed, {})
      }
      await docker.remove(id, { force: true, volumes: true })
    }
    console.log(`      image ${(bigImage.size / 2 ** 20).toFixed(0)} MiB: ${Object.entries(timings).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(', ')}`)
    expect(timings.big).to.be.below((timings.small ?? 0) * 2 + 250)
  })
})
