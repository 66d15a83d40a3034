/**
 * Full fidelity in the lab (issue 12, first slice): two hosts with real engines and agents, the real
 * CLI. The container of the issue (limits, capabilities, health check, stop signal and timeout,
 * init, extra hosts, tty, ulimits, shm, read-only root, tmpfs, dns, log options, ports, a volume)
 * moves with every setting equal, compared field by field from `docker inspect` before and after;
 * its added capability is a host power, refused by name until --allow-host-access; a container on
 * user-defined networks (an alias on one, a static address on another) moves with them, its network
 * settings and the networks' definitions equal at the destination, and answers there by its alias;
 * a network at the destination with other settings refuses the move by its name and changes
 * nothing; `docker ps` at the destination shows the image's name, and a tag there that names
 * another image is left alone. One lab for the file.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import type { MoveEvent } from '../../protocol/move-messages.js'
import type { PeerRow } from '../../protocol/messages.js'
import { isUnset } from '../../protocol/fidelity.js'

const run = promisify(execFile)
type Done = Extract<MoveEvent, { event: 'done' }>
type Failed = Extract<MoveEvent, { event: 'failed' }>
type Plan = Extract<MoveEvent, { event: 'plan' }>
type Result = { code: number | null, events: MoveEvent[], stderr: string }

/**
 * Compared otherwise: `-v NAME:/path` volumes are created as `--mount` volumes (the same volume at
 * the same place), so HostConfig.Binds and HostConfig.Mounts are compared as the container's Mounts.
 */
const TRANSLATED_HOST_CONFIG = new Set(['Binds', 'Mounts'])

/** Equal, or both unset ([] and null are the same empty list to the engine). */
function same (a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b) || (isUnset(a) && isUnset(b))
}

describe('fidelity: every setting moves or the move says why (2 hosts, real engines and agents)', function () {
  this.timeout(180_000)
  const lab = new Lab({ prefix: 'gotolabw', subnet: '10.213.180.0/24' })
  let A: LabHost
  let B: LabHost

  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
    return stdout.trim()
  }

  async function inspect (h: LabHost, name: string): Promise<any> {
    return JSON.parse(await docker(h, 'inspect', name))[0]
  }

  /** `goto move ... --json` through the real CLI: its events (the last is done or failed) and exit code. */
  async function move (container: string, to: string, extra: string[] = []): Promise<Result> {
    const p = spawn(process.execPath, [lab.controlMain, 'move', container, '--to', to, '--json', ...extra], {
      env: { ...process.env, GOTO_BUNDLE: lab.operatorBundle, GOTO_AGENT: A.agentAddr },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let out = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => { out += d.toString() })
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const code = await new Promise<number | null>(resolve => { p.on('exit', resolve) })
    return { code, events: out.split('\n').filter(l => l.trim() !== '').map(l => JSON.parse(l) as MoveEvent), stderr }
  }

  function done (r: Result): Done {
    const last = r.events.at(-1)
    expect(last?.event, `${JSON.stringify(last)} ${r.stderr}`).to.equal('done')
    expect(r.code).to.equal(0)
    return last as Done
  }

  function failed (r: Result, name: string): Failed {
    expect(r.code, r.stderr).to.equal(1)
    const last = r.events.at(-1) as Failed
    expect(last?.event, JSON.stringify(last)).to.equal('failed')
    expect(last.error.name, last.error.message).to.equal(name)
    expect(last.rollback).to.equal('none-needed')
    return last
  }

  /** What both engines hold, to show a refused move changed nothing. */
  async function holdings (): Promise<string[]> {
    const out: string[] = []
    for (const h of [A, B]) {
      out.push([
        await docker(h, 'ps', '-a', '--format', '{{.Names}} {{.State}} {{.Image}}'), await docker(h, 'images', '-a', '--no-trunc', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}'),
        await docker(h, 'volume', 'ls', '-q'), await docker(h, 'network', 'ls', '--no-trunc', '--format', '{{.Name}} {{.ID}}')
      ]
        .map(s => s.split('\n').sort().join('\n')).join('\n--\n'))
    }
    return out
  }

  /**
   * A container's settings on a network, minus addresses and IDs: the engine's own aliases, its short
   * ID, and the source's short ID (its default hostname, which moves with it and which the engine
   * adds as an alias there too), are in `ids`.
   */
  function endpoint (c: any, n: string, ids: string[]): unknown {
    const ep = c.NetworkSettings.Networks[n]
    const or = (v: unknown): unknown => isUnset(v) ? null : v // {} and null are the same nothing to the engine
    return { Aliases: ((ep.Aliases ?? []) as string[]).filter(a => !ids.includes(a)).sort(), IPAMConfig: or(ep.IPAMConfig), Links: or(ep.Links), DriverOpts: or(ep.DriverOpts) }
  }

  /** A network's definition, minus its ID, creation time and containers. */
  async function networkDef (h: LabHost, n: string): Promise<unknown> {
    const { Name, Driver, Scope, EnableIPv6, IPAM, Internal, Attachable, Options, Labels } = JSON.parse(await docker(h, 'network', 'inspect', n))[0]
    // IPAM options {} (docker network create) and null (the API without them) are the same nothing.
    return { Name, Driver, Scope, EnableIPv6, IPAM: { ...IPAM, Options: isUnset(IPAM.Options) ? null : IPAM.Options }, Internal, Attachable, Options, Labels }
  }

  async function aliveAt (from: LabHost, name: string): Promise<boolean> {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === name && p.state === 'alive')
  }

  before(async function () {
    this.timeout(240_000)
    await lab.down()
    ;[A, B] = await lab.up(2)
    for (const h of [A, B]) {
      for (const other of [A, B]) await waitFor(async () => await aliveAt(h, other.name), { timeoutMs: 60_000, intervalMs: 250, what: `${other.name} alive at ${h.name}` })
    }
    // Two images of A's own: fid/app:v1 (free at B) and fid/other:v1 (B has that tag on another image).
    await docker(A, 'run', '--name', 'build1', 'gotolab/base:latest', 'sh', '-c', 'mkdir -p /www && echo app > /www/index.html')
    await docker(A, 'commit', 'build1', 'fid/app:v1')
    await docker(A, 'run', '--name', 'build2', 'gotolab/base:latest', 'sh', '-c', 'echo other > /other.txt')
    await docker(A, 'commit', 'build2', 'fid/other:v1')
    await docker(A, 'rm', 'build1', 'build2')
    await docker(B, 'tag', 'gotolab/base:latest', 'fid/other:v1')
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
  })

  it('refuses the container of the issue by its host power (CapAdd) without --allow-host-access, and changes nothing', async () => {
    await docker(A, 'run', '-d', '--name', 'full',
      '--memory', '64m', '--memory-swap', '128m', '--cpu-shares', '512', '--cpus', '0.5', '--cpuset-cpus', '0', '--pids-limit', '100',
      '--cap-drop', 'NET_RAW', '--cap-add', 'SYS_TIME', '--health-cmd', 'true', '--health-interval', '5s',
      '--stop-signal', 'SIGINT', '--stop-timeout', '7', '--init', '--add-host', 'db.internal:10.9.9.9', '-t', '-i',
      '--ulimit', 'nofile=1024:2048', '--shm-size', '32m', '--read-only', '--tmpfs', '/run', '--tmpfs', '/scratch:size=1m',
      '-e', 'A=1', '-l', 'x=y', '--dns', '1.1.1.1', '--dns-option', 'ndots:2', '--dns-search', 'ex.com', '--domainname', 'dom.ex',
      '-h', 'fullhost', '-u', '0', '-w', '/www', '--restart', 'on-failure:3', '--log-opt', 'max-size=1m', '-p', '18091:80', '--expose', '99',
      '-v', 'fullvol:/data', 'fid/app:v1', 'httpd', '-f', '-p', '80', '-h', '/www')
    const before = await holdings()
    const r = failed(await move('full', B.name), 'HostAccessRefusedError')
    expect(r.error.message).to.contain('HostConfig.CapAdd').and.to.contain('--allow-host-access')
    const dry = failed(await move('full', B.name, ['--dry-run']), 'HostAccessRefusedError')
    expect(dry.error.message).to.contain('HostConfig.CapAdd')
    expect(await holdings()).to.deep.equal(before)
  })

  it('moves it with --allow-host-access, every setting equal field by field, its image named at the destination', async () => {
    const before = await inspect(A, 'full')
    const r = await move('full', B.name, ['--allow-host-access'])
    const plan = r.events.find(e => e.event === 'plan') as Plan | undefined
    expect(plan?.plan.hostPowers).to.deep.equal(['HostConfig.CapAdd'])
    expect(plan?.plan.warnings ?? []).to.deep.equal([])
    done(r)
    const after = await inspect(B, 'full')
    expect(after.State.Running).to.equal(true)
    const diffs: string[] = []
    for (const k of new Set([...Object.keys(before.Config), ...Object.keys(after.Config)])) {
      if (!same(after.Config[k], before.Config[k])) diffs.push(`Config.${k}: ${JSON.stringify(before.Config[k])} → ${JSON.stringify(after.Config[k])}`)
    }
    for (const k of new Set([...Object.keys(before.HostConfig), ...Object.keys(after.HostConfig)])) {
      if (TRANSLATED_HOST_CONFIG.has(k)) continue
      if (!same(after.HostConfig[k], before.HostConfig[k])) diffs.push(`HostConfig.${k}: ${JSON.stringify(before.HostConfig[k])} → ${JSON.stringify(after.HostConfig[k])}`)
    }
    const mounts = (c: any): string[] => (c.Mounts as any[]).map(m => `${m.Type as string} ${m.Name as string ?? ''} ${m.Destination as string} ${String(m.RW)} ${m.Driver as string ?? ''}`).sort()
    if (JSON.stringify(mounts(after)) !== JSON.stringify(mounts(before))) diffs.push(`Mounts: ${mounts(before).join(', ')} → ${mounts(after).join(', ')}`)
    expect(Object.keys(after.NetworkSettings.Networks)).to.deep.equal(Object.keys(before.NetworkSettings.Networks))
    expect(diffs).to.deep.equal([])
    // The settings act: read-only root, the tmpfs, the limit, the extra host.
    expect(await docker(B, 'exec', 'full', 'sh', '-c', 'touch /x 2>/dev/null && echo writable || echo read-only')).to.equal('read-only')
    expect(await docker(B, 'exec', 'full', 'sh', '-c', 'grep db.internal /etc/hosts')).to.contain('10.9.9.9')
    expect(await docker(B, 'ps', '--filter', 'name=^full$', '--format', '{{.Image}}')).to.equal('fid/app:v1')
    const { stdout } = await run('ip', ['netns', 'exec', A.netns, 'wget', '-qO-', `http://${B.ip}:18091/index.html`])
    expect(stdout.trim()).to.equal('app')
  })

  it('refuses a container with each other host power by that field\'s name (devices, host pid and ipc, security options, sysctls), changes nothing, and moves it with --allow-host-access, the power kept', async () => {
    // Not --privileged: no privileged container starts on this machine (runc: "unable to apply caps:
    // operation not permitted", its own bounding set lacks some); its rule is unit-tested (fidelity.test).
    const powers: Array<{ field: string, args: string[], kept: (c: any) => unknown, want: unknown }> = [
      { field: 'HostConfig.Devices', args: ['--device', '/dev/null:/dev/xnull'], kept: c => c.HostConfig.Devices?.[0]?.PathInContainer, want: '/dev/xnull' },
      { field: 'HostConfig.PidMode', args: ['--pid', 'host'], kept: c => c.HostConfig.PidMode, want: 'host' },
      { field: 'HostConfig.IpcMode', args: ['--ipc', 'host'], kept: c => c.HostConfig.IpcMode, want: 'host' },
      { field: 'HostConfig.SecurityOpt', args: ['--security-opt', 'no-new-privileges'], kept: c => c.HostConfig.SecurityOpt, want: ['no-new-privileges'] },
      { field: 'HostConfig.Sysctls', args: ['--sysctl', 'net.ipv4.ip_unprivileged_port_start=99'], kept: c => c.HostConfig.Sysctls, want: { 'net.ipv4.ip_unprivileged_port_start': '99' } }
    ]
    for (const [i, p] of powers.entries()) {
      const name = `power${i}`
      await docker(A, 'run', '-d', '--name', name, ...p.args, 'fid/app:v1', 'sleep', '3600')
      const before = await holdings()
      const r = failed(await move(name, B.name), 'HostAccessRefusedError')
      expect(r.error.message, p.field).to.contain(p.field).and.to.contain('--allow-host-access')
      expect(await holdings(), `${p.field}: nothing changed`).to.deep.equal(before)
      const ok = await move(name, B.name, ['--allow-host-access'])
      // (The engine may add a power of its own beside it: --pid host comes with a SecurityOpt.)
      expect((ok.events.find(e => e.event === 'plan') as Plan | undefined)?.plan.hostPowers, p.field).to.include(p.field)
      done(ok)
      const after = await inspect(B, name)
      expect(after.State.Running, p.field).to.equal(true)
      expect(p.kept(after), p.field).to.deep.equal(p.want)
      expect(await docker(A, 'ps', '-a', '--filter', `name=^${name}$`, '--format', '{{.Names}}'), `${p.field}: gone from A`).to.equal('')
      await docker(B, 'rm', '-f', name)
    }
  })

  it('refuses to protect a container a takeover could not restore (its user network), by the field\'s name, and changes nothing', async () => {
    await docker(A, 'network', 'create', 'appnet')
    await docker(A, 'network', 'create', '--subnet', '172.30.5.0/24', '--label', 'tier=back', 'staticnet')
    await docker(A, 'run', '-d', '--name', 'netted', '--network', 'appnet', '--network-alias', 'svc', 'fid/app:v1', 'httpd', '-f', '-p', '80', '-h', '/www')
    await docker(A, 'network', 'connect', '--ip', '172.30.5.9', '--alias', 'back', 'staticnet', 'netted')
    const r = await lab.cli(['protect', 'netted'], { agent: A.agentAddr })
    expect(r.code, r.stdout).to.not.equal(0)
    expect(r.stderr).to.contain('NetworkSettings.Networks.appnet')
    const status = JSON.parse((await lab.cli(['status', '--json'], { agent: A.agentAddr })).stdout) as { failover?: { containers: Array<{ name: string, protected: boolean }> } }
    expect(status.failover?.containers.find(c => c.name === 'netted')?.protected ?? false).to.equal(false)
  })

  it('moves a container on user networks with them: the same network settings and definitions at the destination, its alias answering there', async () => {
    const before = await inspect(A, 'netted')
    const nets = Object.keys(before.NetworkSettings.Networks).sort()
    expect(nets).to.deep.equal(['appnet', 'staticnet'])
    const defsBefore = await Promise.all(nets.map(async n => await networkDef(A, n)))
    const dry = await move('netted', B.name, ['--dry-run'])
    done(dry)
    const planned = (dry.events.find(e => e.event === 'plan') as Plan).plan
    expect(planned.networks?.map(n => `${n.name} ${n.at} ${n.subnet}`)).to.deep.equal(['appnet create kept', 'staticnet create kept'])
    expect(await docker(B, 'network', 'ls', '--format', '{{.Name}}')).to.not.contain('appnet')
    const r = await move('netted', B.name)
    done(r)
    const after = await inspect(B, 'netted')
    expect(after.State.Running).to.equal(true)
    expect(after.HostConfig.NetworkMode).to.equal(before.HostConfig.NetworkMode)
    expect(Object.keys(after.NetworkSettings.Networks).sort()).to.deep.equal(nets)
    const ids = [before.Id.slice(0, 12), after.Id.slice(0, 12)]
    for (const n of nets) expect(endpoint(after, n, ids), n).to.deep.equal(endpoint(before, n, ids))
    expect(endpoint(after, 'appnet', ids)).to.deep.include({ Aliases: ['svc'] })
    expect(after.NetworkSettings.Networks.staticnet.IPAddress).to.equal('172.30.5.9')
    expect(await Promise.all(nets.map(async n => await networkDef(B, n)))).to.deep.equal(defsBefore)
    // Found by its alias on its network at the destination.
    expect(await docker(B, 'run', '--rm', '--network', 'appnet', 'fid/app:v1', 'wget', '-qO-', 'http://svc/index.html')).to.equal('app')
  })

  it('refuses a container whose network exists at the destination with other settings, naming it, and changes nothing', async () => {
    await docker(A, 'network', 'create', '--subnet', '172.30.7.0/24', 'clashnet')
    await docker(B, 'network', 'create', '--subnet', '172.30.8.0/24', 'clashnet')
    await docker(A, 'run', '-d', '--name', 'clash', '--network', 'clashnet', 'fid/app:v1', 'sleep', '100000')
    const before = await holdings()
    for (const extra of [[], ['--dry-run']]) {
      const r = failed(await move('clash', B.name, extra), 'NetworkConflictError')
      expect(r.error.message, extra.join(' ')).to.contain("'clashnet'").and.to.contain('subnet')
    }
    expect(await holdings()).to.deep.equal(before)
  })

  it('still refuses a network of another driver, and --network container:x, by their field names', async () => {
    await docker(A, 'run', '-d', '--name', 'sidecar', '--network', 'container:clash', 'fid/app:v1', 'sleep', '100000')
    const r = failed(await move('sidecar', B.name, ['--allow-host-access']), 'FieldRefusedError')
    expect(r.error.message).to.contain('HostConfig.NetworkMode')
  })

  it('leaves a tag at the destination that names another image alone, and says so in the plan', async () => {
    const victim = await docker(B, 'image', 'inspect', '--format', '{{.Id}}', 'fid/other:v1')
    await docker(A, 'run', '-d', '--name', 'tagged', 'fid/other:v1', 'sleep', '100000')
    const r = await move('tagged', B.name)
    const plan = r.events.find(e => e.event === 'plan') as Plan | undefined
    expect(plan?.plan.warnings?.join('\n')).to.contain('fid/other:v1').and.to.contain('another image')
    done(r)
    expect(await docker(B, 'image', 'inspect', '--format', '{{.Id}}', 'fid/other:v1')).to.equal(victim)
    const shown = await docker(B, 'ps', '--filter', 'name=^tagged$', '--format', '{{.Image}}')
    expect(shown).to.not.equal('fid/other:v1')
    expect((await inspect(B, 'tagged')).State.Running).to.equal(true)
  })
})
