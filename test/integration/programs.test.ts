/**
 * The two programs as an operator runs them: help that tells the truth, and bad configuration that
 * exits non-zero with one line naming the option — before anything listens or touches Docker.
 */
import { expect } from 'chai'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createServer, type AddressInfo } from 'node:net'
import { initCa, issueCertificate } from '../../certs/index.js'

const repo = fileURLToPath(new URL('../../../', import.meta.url))
const AGENT = join(repo, 'dist/agent/main.js')
const GOTO = join(repo, 'dist/control/main.js')

function run (main: string, args: string[], env: Record<string, string> = {}): { code: number | null, stdout: string, stderr: string } {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GOTO_') && k !== 'DOCKER_HOST'))
  const r = spawnSync(process.execPath, [main, ...args], { env: { ...clean, ...env }, encoding: 'utf8', timeout: 30_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

function oneLineNaming (r: { code: number | null, stderr: string }, option: string, code = 2): void {
  expect(r.code, r.stderr).to.equal(code)
  const lines = r.stderr.trim().split('\n')
  expect(lines, r.stderr).to.have.length(1)
  expect(lines[0]).to.contain(option)
}

describe('goto and goto-agent as programs', function () {
  this.timeout(60_000)
  let dir: string

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'goto-programs-'))
    await initCa(join(dir, 'ca'))
    await issueCertificate(join(dir, 'ca'), { role: 'agent', name: 'host-1', out: join(dir, 'agent') })
    await issueCertificate(join(dir, 'ca'), { role: 'operator', name: 'alice', out: join(dir, 'op') })
  })

  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('goto-agent --help lists every option', () => {
    const r = run(AGENT, ['--help'])
    expect(r.code).to.equal(0)
    for (const opt of ['--bundle', '--listen', '--bootstrap', '--docker', '--name', '--label', '--state-dir', '--profile', '--config', '--announce', '--metrics-listen', '--docker-save-only', '--no-inbound']) {
      expect(r.stdout).to.contain(opt)
    }
  })

  it('goto --help lists the commands; goto ca --help the CA commands', () => {
    const r = run(GOTO, ['--help'])
    expect(r.code).to.equal(0)
    for (const cmd of ['peers', 'status', 'move', '--to', '--dry-run', 'ca', 'install', 'uninstall', 'cloud-init', '--bundle', '--agent', '--json']) expect(r.stdout).to.contain(cmd)
    const install = run(GOTO, ['install', '--help'])
    expect(install.code).to.equal(0)
    for (const opt of ['--ca-dir', '--name', '--port', '--identity', '--known-hosts', '--host-key', '--accept-new-host-key', '--label', '--bootstrap', '--release', '--no-wait', '--keep-state', '--revoke', '--release-url', '--sha256']) {
      expect(install.stdout).to.contain(opt)
    }
    const ca = run(GOTO, ['ca', '--help'])
    expect(ca.code).to.equal(0)
    for (const cmd of ['init', 'issue', 'revoke', 'list']) expect(ca.stdout).to.contain(cmd)
  })

  it('goto-agent refuses bad configuration with one line naming the option', () => {
    oneLineNaming(run(AGENT, []), '--bundle')
    oneLineNaming(run(AGENT, ['--bundle', join(dir, 'agent'), '--listen', 'localhost:4001']), '--listen')
    oneLineNaming(run(AGENT, ['--bundle', join(dir, 'agent'), '--docker', 'ftp://x']), '--docker')
    oneLineNaming(run(AGENT, ['--bundle', join(dir, 'agent'), '--frobnicate']), '--frobnicate')
    oneLineNaming(run(AGENT, [], { GOTO_BUNDLE: join(dir, 'agent'), GOTO_BOOTSTRAP: '/ip4/1.2.3/tcp/1' }), 'GOTO_BOOTSTRAP')
    oneLineNaming(run(AGENT, ['--bundle', join(dir, 'op'), '--state-dir', join(dir, 'state')]), '--bundle')
    oneLineNaming(run(AGENT, ['--bundle', join(dir, 'agent'), '--name', 'host-2', '--state-dir', join(dir, 'state')]), '--name')
    oneLineNaming(run(AGENT, ['--bundle', join(dir, 'missing')]), join(dir, 'missing'), 1)
    oneLineNaming(run(AGENT, ['--bundle', join(dir, 'agent'), '--metrics-listen', ':9464']), '--metrics-listen')
    oneLineNaming(run(AGENT, [], { GOTO_BUNDLE: join(dir, 'agent'), GOTO_METRICS_LISTEN: 'metrics.example:9464' }), 'GOTO_METRICS_LISTEN')
  })

  it('goto-agent refuses a metrics address it cannot bind, before it joins the mesh', async () => {
    const taken = createServer()
    await new Promise<void>(resolve => { taken.listen(0, '127.0.0.1', resolve) })
    try {
      const { port } = taken.address() as AddressInfo
      const r = run(AGENT, ['--bundle', join(dir, 'agent'), '--state-dir', join(dir, 'state'), '--listen', '/ip4/127.0.0.1/tcp/0', '--metrics-listen', String(port)])
      oneLineNaming(r, '--metrics-listen')
      expect(r.stdout).not.to.contain('agent started')
    } finally {
      taken.close()
    }
  })

  it('goto refuses bad usage with one line and exit 2', () => {
    oneLineNaming(run(GOTO, ['peers']), '--bundle')
    oneLineNaming(run(GOTO, ['peers', '--bundle', join(dir, 'op')]), '--agent')
    oneLineNaming(run(GOTO, ['peers', '--bundle', join(dir, 'op'), '--agent', '10.0.0.1:4001']), '--agent')
    oneLineNaming(run(GOTO, ['status', 'a', 'b', '--bundle', join(dir, 'op'), '--agent', '/ip4/127.0.0.1/tcp/1']), "'b'")
    oneLineNaming(run(GOTO, ['peers', '--bundle', join(dir, 'agent'), '--agent', '/ip4/127.0.0.1/tcp/1']), '--bundle')
    oneLineNaming(run(GOTO, ['frobnicate']), 'frobnicate')
    const common = ['--bundle', join(dir, 'op'), '--agent', '/ip4/127.0.0.1/tcp/1']
    oneLineNaming(run(GOTO, ['move', ...common]), 'CONTAINER')
    oneLineNaming(run(GOTO, ['move', 'web', ...common]), '--to')
    oneLineNaming(run(GOTO, ['peers', '--to', 'x', ...common]), '--to')
  })

  it('goto install, uninstall and cloud-init refuse bad usage with one line naming the option, before connecting', () => {
    const ca = ['--ca-dir', join(dir, 'ca')]
    const env = { HOME: dir }
    oneLineNaming(run(GOTO, ['install', '--name', 'h', ...ca], env), 'USER@HOST')
    oneLineNaming(run(GOTO, ['install', 'root@', '--name', 'h', ...ca], env), 'USER@HOST')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', '--name', 'h'], env), '--ca-dir')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', ...ca], env), '--name')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', '--name', 'bad name', ...ca], env), '--name')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', '--name', 'h', ...ca, '--port', '70000'], env), '--port')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', '--name', 'h', ...ca, '--host-key', 'MD5:aa'], env), '--host-key')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', '--name', 'h', ...ca, '--label', 'novalue'], env), '--label')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', '--name', 'h', ...ca, '--bootstrap', '10.0.0.2:4001'], env), '--bootstrap')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', '--name', 'h', ...ca, '--supervisor', 'cron'], env), '--supervisor')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', '--name', 'h', ...ca], env), '--bundle')
    oneLineNaming(run(GOTO, ['install', 'root@10.0.0.1', '--name', 'h', ...ca, '--no-wait', '--release', join(dir, 'none.tar.gz')], env), join(dir, 'none.tar.gz'), 1)
    oneLineNaming(run(GOTO, ['uninstall', 'root@10.0.0.1', '--revoke'], env), '--ca-dir')
    oneLineNaming(run(GOTO, ['cloud-init', '--name', 'h', ...ca, '--release-url', 'https://example.invalid/r.tgz'], env), '--sha256')
    oneLineNaming(run(GOTO, ['cloud-init', '--name', 'h', ...ca, '--release-url', 'ftp://x', '--sha256', 'a'.repeat(64)], env), '--release-url')
  })
})
