/**
 * The bundled CLI (dist/bin/goto.js, what package.json's "bin" and the release run) answers as the
 * unbundled dist/control/main.js does: help, version, usage errors, and the CA commands, which
 * issue certificates with node-forge loaded from a chunk of its own. No network, no root.
 */
import { expect } from 'chai'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = fileURLToPath(new URL('../../../', import.meta.url))
const BUNDLE = join(repo, 'dist/bin/goto.js')
const UNBUNDLED = join(repo, 'dist/control/main.js')

function run (main: string, args: string[]): { code: number | null, stdout: string, stderr: string } {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GOTO_')))
  const r = spawnSync(process.execPath, [main, ...args], { env, encoding: 'utf8', timeout: 30_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('the bundled goto (dist/bin/goto.js)', function () {
  this.timeout(60_000)
  let dir: string

  before(async () => { dir = await mkdtemp(join(tmpdir(), 'goto-bundle-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('prints the same help, version and usage errors as dist/control/main.js', () => {
    for (const args of [['--help'], ['--version'], [], ['frobnicate'], ['--frobnicate', 'peers'], ['peers'], ['ca', '--help'], ['install', '--help']]) {
      const b = run(BUNDLE, args)
      const u = run(UNBUNDLED, args)
      expect(b, args.join(' ')).to.deep.equal(u)
    }
    expect(run(BUNDLE, ['--version']).stdout.trim()).to.match(/^\d+\.\d+\.\d+/)
  })

  it('creates a CA, issues a certificate and lists it, options before the command too', () => {
    const ca = join(dir, 'ca')
    expect(run(BUNDLE, ['ca', 'init', '--dir', ca]).code).to.equal(0)
    const issued = run(BUNDLE, ['ca', 'issue', '--dir', ca, '--role', 'operator', '--name', 'alice', '--out', join(dir, 'alice')])
    expect(issued.code, issued.stderr).to.equal(0)
    const list = run(BUNDLE, ['--json', 'ca', 'list', '--dir', ca])
    expect(list.code, list.stderr).to.equal(0)
    expect((JSON.parse(list.stdout) as Array<{ name: string }>).map(c => c.name)).to.deep.equal(['alice'])
    // A mesh command gets as far as reading the bundle, with its options before the command.
    const status = run(BUNDLE, ['--bundle', join(dir, 'missing'), '--agent', '/ip4/127.0.0.1/tcp/1', 'status'])
    expect(status.code).to.equal(1)
    expect(status.stderr).to.contain(join(dir, 'missing'))
  })
})
