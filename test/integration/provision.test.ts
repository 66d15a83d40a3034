/**
 * The two unattended ways onto a host, run for real on lab hosts (VirtualBox and clouds cannot run
 * here): the Vagrantfile's provisioning (its own arguments, read from it with a stub of Vagrant, the
 * addresses swapped for the lab's) and `goto cloud-init` user-data (parsed as YAML, its files
 * written and its runcmd run as cloud-init would). Both end in install/provision.sh and the
 * release's goto-install.sh; each lab host runs them in its own mount namespace (see lab/sshd.ts).
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import type { PeerRow } from '../../protocol/messages.js'
import { buildRelease } from '../fixtures/release.js'

const repo = fileURLToPath(new URL('../../../', import.meta.url))
const VAGRANTFILE = join(repo, 'vagrant/Vagrantfile')
const PROVISION = join(repo, 'install/provision.sh')
/** A first start fetches nothing here, but installs ~90 MiB and joins the mesh. */
const JOIN_TIMEOUT_MS = 60_000

interface VagrantMachine { name: string, hostname: string, networks: Array<{ kind: string, ip?: string }>, provisioners: Array<{ kind: string, path: string, args: string[] }> }
interface VagrantModel { machines: VagrantMachine[], triggers: Array<{ when: string, actions: string[], run: { path: string, args: string[] } }> }
interface CloudConfig { write_files: Array<{ path: string, permissions: string, owner: string, encoding: string, content: string }>, runcmd: string[][] }

/** What the Vagrantfile defines, read with Ruby and a stub of Vagrant (test/fixtures/vagrant-stub.rb). */
function vagrantModel (): VagrantModel {
  const r = spawnSync('ruby', ['-r', join(repo, 'test/fixtures/vagrant-stub.rb'), VAGRANTFILE], { encoding: 'utf8', cwd: join(repo, 'vagrant') })
  if (r.status !== 0) throw new Error(`ruby could not load the Vagrantfile: ${r.stderr}`)
  return JSON.parse(r.stdout) as VagrantModel
}

describe('provisioning for Vagrant and cloud-init, run on lab hosts', function () {
  this.timeout(JOIN_TIMEOUT_MS * 2)
  const lab = new Lab({ prefix: 'gotolabi', subnet: '10.213.140.0/24', log: line => { if (process.env.GOTO_LAB_VERBOSE !== undefined) console.log(`      lab: ${line}`) } })
  let seed: LabHost
  let vm: LabHost
  let cloud: LabHost
  let scratch: string
  let release: string

  async function aliveAtSeed (name: string): Promise<PeerRow> {
    return await waitFor(async () => {
      const r = await lab.cli(['peers', '--json'], { agent: seed.agentAddr })
      if (r.code !== 0) return undefined
      return (JSON.parse(r.stdout) as PeerRow[]).find(p => p.name === name && p.state === 'alive')
    }, { timeoutMs: JOIN_TIMEOUT_MS, intervalMs: 500, what: `${name} to be alive in the seed's peer table` })
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[seed, vm, cloud] = await lab.up([
      { name: 'seed-1', provider: 'vagrant' },
      { name: 'vagrant-2', provider: 'vagrant', agent: false },
      { name: 'cloud-1', provider: 'aws', agent: false }
    ])
    // No one logs in: the sshd gives each host its mount namespace (its own /opt/goto, ...).
    for (const h of [vm, cloud]) await lab.startSshd(h.name, { authorizedKeys: {} })
    scratch = await mkdtemp(join(tmpdir(), 'goto-provision-'))
    release = buildRelease(scratch)
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true })
  })

  it('the Vagrantfile is valid Ruby and defines three VMs, each provisioned by install/provision.sh and bootstrapped to the others', () => {
    const syntax = spawnSync('ruby', ['-c', VAGRANTFILE], { encoding: 'utf8' })
    expect(syntax.stdout.trim(), syntax.stderr).to.equal('Syntax OK')
    const model = vagrantModel()
    expect(model.machines.map(m => m.name)).to.deep.equal(['vagrant-1', 'vagrant-2', 'vagrant-3'])
    const ips = model.machines.map(m => m.networks.find(n => n.kind === 'private_network')?.ip)
    expect(new Set(ips).size).to.equal(3)
    for (const [i, m] of model.machines.entries()) {
      const [p] = m.provisioners
      expect(p).to.deep.include({ kind: 'shell', path: '../install/provision.sh' })
      const boots = p.args.flatMap((a, j) => a === '--bootstrap' ? [p.args[j + 1]] : [])
      expect(boots.sort()).to.deep.equal(ips.filter((_, j) => j !== i).map(ip => `/ip4/${ip ?? ''}/tcp/4001`).sort())
      expect(p.args).to.include.members(['--name', m.name, '--announce', `/ip4/${ips[i] ?? ''}/tcp/4001`])
    }
    // The operator-side preparation (release, CA, bundles) runs before `vagrant up`, for these names.
    expect(model.triggers[0]).to.deep.include({ when: 'before' })
    expect(model.triggers[0].run).to.deep.equal({ path: 'prepare.sh', args: ['vagrant-1', 'vagrant-2', 'vagrant-3'] })
  })

  it("runs the Vagrantfile's provisioning of vagrant-2 on a lab host: Docker and Node.js are found, the agent joins", async () => {
    const p = vagrantModel().machines.find(m => m.name === 'vagrant-2')?.provisioners[0]
    if (p === undefined) throw new Error('no vagrant-2 in the Vagrantfile')
    const bundle = await lab.issueBundle('vagrant-2', 'agent')
    // The Vagrantfile's arguments with the lab's paths and addresses for the VM's: the release and
    // bundle (synced at /vagrant there), the private-network addresses, and the lab engine's socket.
    const args: string[] = []
    for (let i = 0; i < p.args.length; i += 2) {
      const [k, v] = [p.args[i], p.args[i + 1]]
      if (k === '--release') args.push(k, release)
      else if (k === '--bundle') args.push(k, bundle)
      else if (k === '--announce') args.push(k, vm.agentAddr)
      else if (k === '--bootstrap') { if (!args.includes(seed.agentAddr)) args.push(k, seed.agentAddr) } else args.push(k, v)
    }
    args.push('--docker', vm.dockerHost)
    const r = await lab.hostExec(vm.name, ['sh', PROVISION, ...args])
    expect(r.stdout).to.contain('Docker Engine is installed').and.to.contain('Node.js v').and.to.contain('agent: started')
    const row = await aliveAtSeed('vagrant-2')
    expect(row.labels).to.deep.include({ provider: 'vagrant' })
    expect(row.addrs).to.include(vm.agentAddr)
  })

  describe('goto cloud-init', () => {
    let text: string
    let doc: CloudConfig

    before(async () => {
      const r = await lab.cli(['cloud-init', '--name', 'cloud-1', '--ca-dir', lab.caDir, '--release-url', `file://${release}`, '--release', release,
        '--bootstrap', seed.agentAddr, '--label', 'provider=aws', '--docker', cloud.dockerHost])
      expect(r.code, r.stderr).to.equal(0)
      text = r.stdout
      doc = parseYaml(text) as CloudConfig
    })

    it('prints #cloud-config YAML under EC2\'s 16 KiB with the bundle (key 0600), the script and a runcmd pinned to the release\'s sha256', async () => {
      expect(text.split('\n')[0]).to.equal('#cloud-config')
      expect(Buffer.byteLength(text)).to.be.below(16_384)
      const files = Object.fromEntries(doc.write_files.map(f => [f.path, f]))
      expect(files['/var/lib/goto/incoming/provision.sh']).to.deep.include({ permissions: '0700', encoding: 'b64' })
      expect(Buffer.from(files['/var/lib/goto/incoming/provision.sh'].content, 'base64').equals(await readFile(PROVISION))).to.equal(true)
      expect(files['/var/lib/goto/incoming/bundle/identity.key']).to.deep.include({ permissions: '0600', owner: 'root:root' })
      for (const f of ['cert.pem', 'ca.pem', 'crl.json']) expect(files[`/var/lib/goto/incoming/bundle/${f}`], f).to.not.equal(undefined)
      const sha = createHash('sha256').update(await readFile(release)).digest('hex')
      const [cmd] = doc.runcmd
      expect(cmd.slice(0, 2)).to.deep.equal(['sh', '/var/lib/goto/incoming/provision.sh'])
      expect(cmd).to.include.members(['--sha256', sha, '--name', 'cloud-1', '--delete-bundle'])
    })

    /** Does what cloud-init does with write_files, inside the lab host. */
    async function writeFiles (): Promise<void> {
      for (const f of doc.write_files) {
        await lab.hostExec(cloud.name, ['sh', '-c', 'mkdir -p "$(dirname "$1")" && base64 -d > "$1" && chmod "$2" "$1"', 'sh', f.path, f.permissions], { input: f.content })
      }
    }

    it('its runcmd refuses a release whose sha256 differs, and installs nothing', async () => {
      await writeFiles()
      const cmd = doc.runcmd[0].map((a, i, all) => all[i - 1] === '--sha256' ? '0'.repeat(64) : a)
      const r = await lab.hostExec(cloud.name, cmd, { allowFail: true })
      expect(r.code).to.not.equal(0)
      expect(r.stderr).to.contain('refusing it')
      expect(await readdir(lab.hostPath(cloud.name, '/opt/goto'))).to.deep.equal([])
    })

    it('its files and runcmd, run on a lab host as cloud-init would, make the VM a mesh member', async () => {
      await writeFiles()
      const r = await lab.hostExec(cloud.name, doc.runcmd[0])
      expect(r.stdout).to.contain('release sha256 verified').and.to.contain('agent: started')
      const row = await aliveAtSeed('cloud-1')
      expect(row.labels).to.deep.include({ provider: 'aws' })
      // The copy of the private key in the user-data's landing place is gone; the installed one is 0600.
      expect(existsSync(lab.hostPath(cloud.name, '/var/lib/goto/incoming/bundle'))).to.equal(false)
      const installed = await readFile(lab.hostPath(cloud.name, '/etc/goto/bundle/bundle.json'), 'utf8')
      expect(JSON.parse(installed)).to.deep.include({ name: 'cloud-1', role: 'agent' })
    })
  })
})
