/**
 * install/goto-install.sh's prerequisite check, run directly (it only reads): a missing or too old
 * Node.js and an unreachable Docker Engine are each one line saying what to install, exit 3.
 * Its agent.json (print-config, which changes nothing): built from the options as JSON, the same
 * bytes as before for the same options, and a value with a control character refused (exit 2)
 * before anything is done; `goto install`/`goto cloud-init` refuse one too and pass the config as
 * JSON. The whole script runs against real hosts in install.test.ts and provision.test.ts.
 */
import { expect } from 'chai'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { initCa, listIssued } from '../../certs/index.js'
import { runInstallCommand } from '../../control/install-cli.js'
import { ConfigError } from '../../protocol/errors.js'

const SCRIPT = fileURLToPath(new URL('../../../install/goto-install.sh', import.meta.url))
/** What the check itself needs besides node (and docker's CLI, left out on purpose). */
const TOOLS = ['sh', 'uname', 'cat', 'tar', 'gzip', 'sha256sum', 'df', 'awk', 'dirname', 'tail']

function check (path: string): { code: number | null, stdout: string } {
  const r = spawnSync('/bin/sh', [SCRIPT, 'check', '--docker', 'unix:///nonexistent/docker.sock'], { encoding: 'utf8', env: { PATH: path } })
  return { code: r.status, stdout: r.stdout }
}

describe('goto-install.sh check', () => {
  let bin: string

  before(async () => {
    bin = await mkdtemp(join(tmpdir(), 'goto-check-'))
    for (const t of TOOLS) {
      const found = spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).stdout.trim()
      await symlink(found, join(bin, t))
    }
  })

  after(async () => { await rm(bin, { recursive: true, force: true }) })

  it('without Node.js: one line to install it, one for Docker, and exit 3', () => {
    const r = check(bin)
    expect(r.code).to.equal(3)
    const missing = r.stdout.split('\n').filter(l => l.startsWith('missing '))
    expect(missing).to.have.length(2)
    expect(missing[0]).to.match(/^missing node: Node.js 20 or newer is not installed; install it/)
    expect(missing[1]).to.match(/^missing docker: .*install Docker Engine/)
    expect(r.stdout).to.match(/^ok os: /m).and.to.match(/^ok disk: /m)
  })

  it('with a Node.js older than 20: says which one it found and what to install', async () => {
    const shim = await mkdtemp(join(tmpdir(), 'goto-old-node-'))
    try {
      await writeFile(join(shim, 'node'), '#!/bin/sh\nprintf 18.19.1\n', { mode: 0o755 })
      const r = check(`${shim}:${bin}`)
      expect(r.code).to.equal(3)
      expect(r.stdout).to.contain('missing node: Node.js 18.19.1 at').and.to.contain('too old; install Node.js 20 or newer')
    } finally {
      await rm(shim, { recursive: true, force: true })
    }
  })
})

function script (args: string[]): { code: number | null, stdout: string, stderr: string } {
  const r = spawnSync('/bin/sh', [SCRIPT, ...args], { encoding: 'utf8' })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** A label value that, as lines of a line-pair config, would add the key stateDir. */
const INJECT = 'a=b\nstateDir\n/tmp/evil'

describe('goto-install.sh: the agent config', () => {
  it('writes the same agent.json as earlier versions for the same options (an upgrade changes nothing)', () => {
    const r = script(['print-config', '--release', 'x.tar.gz', '--bundle', 'b', '--name', 'aws-1', '--docker', 'unix:///run/d.sock',
      '--label', 'provider=aws', '--bootstrap', '/ip4/10.0.0.1/tcp/4001', '--announce', '/ip4/203.0.113.7/tcp/4001', '--label', 'zone=a'])
    expect(r.code, r.stderr).to.equal(0)
    // What goto-install.sh wrote before the config went as JSON (its line pairs, in this order).
    expect(r.stdout).to.equal(JSON.stringify({
      bundle: '/etc/goto/bundle', stateDir: '/var/lib/goto', docker: 'unix:///run/d.sock', name: 'aws-1',
      labels: ['provider=aws', 'zone=a'], bootstrap: ['/ip4/10.0.0.1/tcp/4001'], announce: ['/ip4/203.0.113.7/tcp/4001']
    }, null, 2) + '\n')
  })

  it('takes the agent\'s part as --config-json, single options adding to it', () => {
    const r = script(['print-config', '--name', 'aws-1', '--config-json', JSON.stringify({ labels: ['provider=aws'], bootstrap: ['/ip4/10.0.0.1/tcp/4001'], listen: '/ip4/0.0.0.0/tcp/4002' }), '--label', 'zone=a'])
    expect(r.code, r.stderr).to.equal(0)
    expect(JSON.parse(r.stdout)).to.deep.equal({
      bundle: '/etc/goto/bundle', stateDir: '/var/lib/goto', docker: 'unix:///var/run/docker.sock', name: 'aws-1', listen: '/ip4/0.0.0.0/tcp/4002',
      labels: ['provider=aws', 'zone=a'], bootstrap: ['/ip4/10.0.0.1/tcp/4001']
    })
  })

  it('refuses a control character in any value, as an option or inside --config-json, with exit 2 and the option named', () => {
    for (const [opt, value] of [['--label', INJECT], ['--name', 'aws-1\x1b[2J'], ['--announce', '/ip4/1.2.3.4/tcp/1\r'], ['--config-json', JSON.stringify({ labels: [INJECT] })], ['--config-json', JSON.stringify({ name: 'x\u009b' })]]) {
      const r = script(['print-config', opt, value])
      expect(r.code, `${opt} ${JSON.stringify(value)}`).to.equal(2)
      expect(r.stdout).to.equal('')
      expect(r.stderr).to.contain(opt === '--config-json' ? 'control character' : `${opt}: the value has a control character`)
    }
  })

  it('refuses --config-json keys it does not know, a prototype\'s included, and values of the wrong kind', () => {
    for (const json of ['{"stateDir":"/tmp/evil"}', '{"__proto__":{"stateDir":"/tmp/evil"}}', '{"constructor":"x"}', '{"labels":"a=b"}', '{"name":["a"]}', '[]', 'not json']) {
      const r = script(['print-config', '--config-json', json])
      expect(r.code, json).to.equal(2)
      expect(r.stdout, json).to.equal('')
    }
  })

  it('install refuses such a value before anything else (before the root check, the prerequisites, any change)', () => {
    const r = script(['install', '--release', '/nonexistent.tar.gz', '--bundle', '/nonexistent', '--label', INJECT])
    expect(r.code).to.equal(2)
    expect(r.stderr).to.contain('--label: the value has a control character')
    expect(r.stdout).to.not.contain('checking prerequisites')
  })
})

describe('goto install / goto cloud-init: agent options', () => {
  let ca: string
  before(async () => {
    ca = await mkdtemp(join(tmpdir(), 'goto-install-ca-'))
    await initCa(ca)
  })
  after(async () => { await rm(ca, { recursive: true, force: true }) })

  const cloudInit = async (extra: string[]): Promise<string> => {
    let stdout = ''
    await runInstallCommand('cloud-init', ['--name', 'cloud-1', '--ca-dir', ca, '--release-url', 'https://example.org/r.tar.gz', '--sha256', 'a'.repeat(64), ...extra],
      {}, { stdout: s => { stdout += s }, stderr: () => {} }, AbortSignal.timeout(30_000))
    return stdout
  }

  it('refuses names, labels and addresses with control characters: a ConfigError naming the option, nothing issued', async () => {
    for (const [opt, args] of [['--label', ['--label', INJECT]], ['--bootstrap', ['--bootstrap', '/ip4/10.0.0.1/tcp/4001\n']], ['--release-url', ['--release-url', 'https://x/\x1b']]] as const) {
      let err: unknown
      try { await cloudInit([...args]) } catch (e) { err = e }
      expect(err, opt).to.be.instanceOf(ConfigError)
      expect((err as ConfigError).option, opt).to.equal(opt)
      expect((err as Error).message, opt).to.not.match(/[\u0000-\u001f]/)
    }
    let err: unknown
    try {
      await runInstallCommand('install', ['root@203.0.113.7', '--ca-dir', ca, '--name', 'aws-1\x1b]0;x\x07', '--no-wait'], {}, { stdout: () => {}, stderr: () => {} }, AbortSignal.timeout(30_000))
    } catch (e) { err = e }
    expect(err).to.be.instanceOf(ConfigError)
    expect((err as ConfigError).option).to.equal('--name')
    expect(await listIssued(ca)).to.deep.equal([])
  })

  it('passes the agent config to the host as one --config-json word', async () => {
    const text = await cloudInit(['--label', 'provider=aws', '--bootstrap', '/ip4/10.0.0.1/tcp/4001', '--listen', '/ip4/0.0.0.0/tcp/4002'])
    const runcmd = /^ {2}- \[(.*)\]$/m.exec(text)?.[1]
    const cmd = JSON.parse(`[${runcmd ?? ''}]`) as string[]
    const i = cmd.indexOf('--config-json')
    expect(i).to.be.greaterThan(0)
    expect(JSON.parse(cmd[i + 1])).to.deep.equal({ labels: ['provider=aws'], bootstrap: ['/ip4/10.0.0.1/tcp/4001'], listen: '/ip4/0.0.0.0/tcp/4002' })
    expect(cmd).to.not.include('--label')
  })
})
