/**
 * goto install / uninstall against a real OpenSSH server (Debian's sshd) on a lab host: a seed host
 * runs the mesh's first agent, a fresh host has only its engine and sshd (in its own mount
 * namespace, so /opt/goto, /etc/goto and /var/lib/goto are the host's own). The release is built by
 * install/build-release.sh, as `npm run release` does. One lab for the file; after() removes it.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Lab, waitFor, type CliResult, type LabHost, type SshdHandle } from '../lab/index.js'
import { listIssued } from '../../certs/index.js'
import { fingerprint } from '../../control/known-hosts.js'
import type { PeerRow } from '../../protocol/messages.js'
import { buildRelease } from '../fixtures/release.js'

/** An install uploads ~13 MiB and waits for a join; generous for a loaded 2-core CI machine. */
const INSTALL_TIMEOUT_MS = 180_000

/** Processes in the host's network namespace other than its engine and sshd. */
function otherProcesses (netns: string): string[] {
  const pids = spawnSync('ip', ['netns', 'pids', netns], { encoding: 'utf8' }).stdout.trim().split('\n').filter(p => p !== '')
  const cmdline = (pid: string): string => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() } catch { return '' } }
  return pids.map(cmdline).filter(a => a !== '' && !/dockerd|containerd|sshd/.test(a))
}

describe('goto install over SSH onto a lab host (real sshd, engines and agents)', function () {
  this.timeout(INSTALL_TIMEOUT_MS)
  const lab = new Lab({ prefix: 'gotolabs', subnet: '10.213.130.0/24', log: line => { if (process.env.GOTO_LAB_VERBOSE !== undefined) console.log(`      lab: ${line}`) } })
  const NAME = 'fresh-1'
  let seed: LabHost
  let fresh: LabHost
  let sshd: SshdHandle
  let scratch: string
  let release: string
  let key: string
  let otherKey: string
  let knownHosts: string

  async function goto (args: string[]): Promise<CliResult> {
    // HOME points at the scratch directory: the test never reads or writes the real ~/.ssh.
    return await lab.cli(args, { agent: seed.agentAddr, timeoutMs: INSTALL_TIMEOUT_MS, env: { HOME: scratch } })
  }

  function installArgs (o: { knownHosts?: string, identity?: string, user?: string, extra?: string[] } = {}): string[] {
    return [
      'install', `${o.user ?? 'root'}@${fresh.ip}`, '--ca-dir', lab.caDir, '--name', NAME,
      '--identity', o.identity ?? key, '--known-hosts', o.knownHosts ?? knownHosts, '--release', release,
      '--docker', fresh.dockerHost, '--bootstrap', seed.agentAddr, '--label', 'provider=aws', ...(o.extra ?? [])
    ]
  }

  async function peersAtSeed (): Promise<PeerRow[]> {
    const r = await lab.cli(['peers', '--json'], { agent: seed.agentAddr })
    if (r.code !== 0) throw new Error(`goto peers failed: ${r.stderr}`)
    return JSON.parse(r.stdout) as PeerRow[]
  }

  async function nothingInstalled (): Promise<void> {
    for (const p of ['/opt/goto', '/etc/goto', '/var/lib/goto']) expect(await readdir(lab.hostPath(NAME, p)), p).to.deep.equal([])
    expect(otherProcesses(fresh.netns)).to.deep.equal([])
  }

  function oneErrorLine (r: CliResult, ...parts: string[]): void {
    expect(r.code, r.stderr).to.equal(1)
    const errors = r.stderr.trim().split('\n').filter(l => l.startsWith('goto: error:'))
    expect(errors, r.stderr).to.have.length(1)
    for (const p of parts) expect(errors[0]).to.contain(p)
  }

  before(async function () {
    this.timeout(300_000)
    await lab.down()
    ;[seed, fresh] = await lab.up([{ name: 'seed-1', provider: 'vagrant' }, { name: NAME, provider: 'aws', agent: false }])
    scratch = await mkdtemp(join(tmpdir(), 'goto-install-'))
    key = join(scratch, 'id_ed25519')
    otherKey = join(scratch, 'other_ed25519')
    for (const k of [key, otherKey]) spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', k])
    const pub = (await readFile(`${key}.pub`, 'utf8')).trim()
    // deploy may sudo without a password, as the default users of cloud images may; nosudo may not.
    sshd = await lab.startSshd(NAME, {
      authorizedKeys: { root: [pub], deploy: [pub], nosudo: [pub] },
      users: [{ name: 'deploy', sudo: true }, { name: 'nosudo', sudo: false }]
    })
    knownHosts = join(scratch, 'known_hosts')
    await writeFile(knownHosts, sshd.knownHostsLine + '\n')
    release = buildRelease(scratch)
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true })
  })

  it('refuses an unknown host key, naming its fingerprint and how to check it; nothing changes', async () => {
    const r = await goto(installArgs({ knownHosts: join(scratch, 'empty_known_hosts') }))
    const fp = fingerprint(Buffer.from(sshd.hostKey.split(' ')[1], 'base64'))
    oneErrorLine(r, 'is not known', fp, 'ssh-keygen -lf', '--host-key', '--accept-new-host-key')
    await nothingInstalled()
  })

  it('refuses a changed host key, from known_hosts or from --host-key', async () => {
    const changed = join(scratch, 'changed_known_hosts')
    const stale = (await readFile(`${otherKey}.pub`, 'utf8')).split(' ').slice(0, 2).join(' ')
    await writeFile(changed, `${fresh.ip} ${stale}\n`)
    oneErrorLine(await goto(installArgs({ knownHosts: changed })), 'CHANGED', 'ssh-keygen -lf')
    const wrongFp = fingerprint(Buffer.from(stale.split(' ')[1], 'base64'))
    oneErrorLine(await goto(installArgs({ knownHosts: join(scratch, 'none'), extra: ['--host-key', wrongFp] })), `not the --host-key ${wrongFp}`)
    await nothingInstalled()
  })

  it('a wrong key or a wrong user is one clear line; so is a user who may not sudo', async () => {
    oneErrorLine(await goto(installArgs({ identity: otherKey })), 'refused our key', "user 'root'", 'authorized_keys')
    oneErrorLine(await goto(installArgs({ user: 'nobody' })), 'refused our key', "user 'nobody'")
    oneErrorLine(await goto(installArgs({ user: 'nosudo' })), 'nosudo on', 'is not root and cannot run sudo without a password')
    await nothingInstalled()
  })

  it('a missing prerequisite is one line saying what to install, and nothing changes', async () => {
    const r = await goto(installArgs({ extra: ['--docker', 'unix:///run/gotolabs/fresh-1/no-such.sock'] }))
    oneErrorLine(r, 'lacks 1 prerequisite', 'nothing was changed')
    const missing = r.stdout.split('\n').filter(l => l.includes('missing '))
    expect(missing, r.stdout).to.have.length(1)
    expect(missing[0]).to.contain('missing docker:').and.to.contain('install Docker Engine')
    await nothingInstalled()
  })

  it('installs onto the fresh host step by step, and the new agent joins the mesh', async () => {
    const r = await goto(installArgs())
    expect(r.code, r.stderr + r.stdout).to.equal(0)
    for (let i = 1; i <= 6; i++) expect(r.stdout).to.contain(`[${i}/6]`)
    expect(r.stdout).to.contain('ok docker: Engine').and.to.contain('issued a certificate for fresh-1').and.to.contain('agent: started (background)')
    const rows = await peersAtSeed()
    const row = rows.find(p => p.name === NAME)
    expect(row).to.deep.include({ state: 'alive', role: 'agent' })
    expect(row?.labels).to.deep.include({ provider: 'aws' })
    expect(row?.addrs).to.include(`/ip4/${fresh.ip}/tcp/4001`)
    // The host's own files: the key only root can read, the config the agent runs with.
    expect((await stat(lab.hostPath(NAME, '/etc/goto/bundle/identity.key'))).mode & 0o777).to.equal(0o600)
    expect((await stat(lab.hostPath(NAME, '/etc/goto/bundle'))).mode & 0o777).to.equal(0o700)
    const config = JSON.parse(await readFile(lab.hostPath(NAME, '/etc/goto/agent.json'), 'utf8')) as Record<string, unknown>
    expect(config).to.deep.include({ bundle: '/etc/goto/bundle', stateDir: '/var/lib/goto', name: NAME, bootstrap: [seed.agentAddr], labels: ['provider=aws'] })
    // Nothing was written to the machine's own paths: the lab host has its own.
    expect(existsSync('/opt/goto/current')).to.equal(false)
  })

  it('the systemd unit it writes where systemd is PID 1 passes systemd-analyze verify (systemd cannot run here)', async () => {
    const unit = join(scratch, 'goto-agent.service')
    const r = await lab.hostExec(NAME, ['sh', '-c', 'sh /opt/goto/current/install/goto-install.sh print-unit > "$1" && systemd-analyze verify --man=no "$1"', 'sh', unit], { allowFail: true })
    expect(r.code, r.stderr).to.equal(0)
    expect(await readFile(unit, 'utf8')).to.contain('ExecStart=/opt/goto/bin/goto-agent --config /etc/goto/agent.json')
  })

  it('a second install, as a user with sudo, is idempotent: same certificate, agent not restarted; a new host key needs the flag', async () => {
    const pidFile = lab.hostPath(NAME, '/var/lib/goto/agent.pid')
    const pid = await readFile(pidFile, 'utf8')
    const before = (await peersAtSeed()).find(p => p.name === NAME)
    const fresh2 = join(scratch, 'learned_known_hosts')
    const r = await goto(installArgs({ user: 'deploy', knownHosts: fresh2, extra: ['--accept-new-host-key'] }))
    expect(r.code, r.stderr + r.stdout).to.equal(0)
    expect(r.stdout).to.contain("kept the host's certificate").and.to.contain('already unpacked').and.to.contain('nothing changed')
    expect(await readFile(pidFile, 'utf8')).to.equal(pid)
    expect((await peersAtSeed()).find(p => p.name === NAME)).to.deep.include({ peerId: before?.peerId, state: 'alive' })
    // --accept-new-host-key remembered the key: the next connection needs no flag.
    expect(await readFile(fresh2, 'utf8')).to.contain(sshd.hostKey)
  })

  it('re-running with a new release upgrades in place: the agent restarts on it, the previous release is kept', async () => {
    const pidFile = lab.hostPath(NAME, '/var/lib/goto/agent.pid')
    const oldPid = await readFile(pidFile, 'utf8')
    const oldCurrent = await readlink(lab.hostPath(NAME, '/opt/goto/current'))
    const next = buildRelease(await mkdtemp(join(scratch, 'next-')))
    const r = await goto(installArgs({ extra: ['--release', next] }))
    expect(r.code, r.stderr + r.stdout).to.equal(0)
    expect(r.stdout).to.contain(`(was ${oldCurrent.replace('releases/', '')})`).and.to.contain('agent: restarted (background)').and.to.contain(`${NAME} is alive`)
    const current = await readlink(lab.hostPath(NAME, '/opt/goto/current'))
    expect(current).to.not.equal(oldCurrent)
    expect((await readdir(lab.hostPath(NAME, '/opt/goto/releases'))).sort()).to.deep.equal([oldCurrent, current].map(c => c.replace('releases/', '')).sort())
    expect(await readFile(pidFile, 'utf8')).to.not.equal(oldPid)
    release = next // what the host runs now, for the tests after this one
  })

  it('an agent that does not show up alive in time is an error with its last log lines', async () => {
    // Asking a member that does not exist: the install itself changes nothing (same release, same
    // config), and the wait ends after --wait seconds with the agent's own log.
    const r = await goto(installArgs({ extra: ['--agent', '/ip4/10.213.130.99/tcp/4001', '--wait', '3'] }))
    oneErrorLine(r, `${NAME} did not become alive in the mesh within 3 s`)
    expect(r.stdout).to.contain('nothing changed')
    expect(r.stderr).to.match(/^  agent log: \{".*"service":"goto-agent"/m)
  })

  it('uninstall stops the agent and removes it; --revoke revokes its certificate', async () => {
    const peerId = (await peersAtSeed()).find(p => p.name === NAME)?.peerId
    // The explicit fingerprint alone is enough to trust the host (no known_hosts entry).
    const fp = fingerprint(Buffer.from(sshd.hostKey.split(' ')[1], 'base64'))
    const r = await goto(['uninstall', `root@${fresh.ip}`, '--identity', key, '--known-hosts', join(scratch, 'none'), '--host-key', fp, '--revoke', '--ca-dir', lab.caDir])
    expect(r.code, r.stderr + r.stdout).to.equal(0)
    expect(r.stdout).to.contain('agent: stopped').and.to.contain(`revoked ${NAME} (peer ${peerId})`)
    await nothingInstalled()
    const issued = await listIssued(lab.caDir)
    expect(issued.find(c => c.peerId === peerId)).to.deep.include({ revoked: true })
    // The seed stops hearing from it: the host is gone from the mesh.
    await waitFor(async () => (await peersAtSeed()).find(p => p.name === NAME)?.state !== 'alive',
      { timeoutMs: 30_000, intervalMs: 500, what: `${NAME} to stop being alive at the seed` })
  })
})
