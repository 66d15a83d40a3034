/**
 * install/goto-install.sh's prerequisite check, run directly (it only reads): a missing or too old
 * Node.js and an unreachable Docker Engine are each one line saying what to install, exit 3.
 * The whole script runs against real hosts in install.test.ts and provision.test.ts.
 */
import { expect } from 'chai'
import { spawnSync } from 'node:child_process'
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

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
