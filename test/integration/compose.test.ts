/**
 * Compose projects move together (issue 12): three lab hosts with real engines and agents, Compose v2
 * from Debian 13's package (.ci/engines fetches it into /var/cache/goto-lab/engines/compose). A
 * three-container project — web → app → db, db with a volume, on the project's network, calling
 * each other by service name — is brought up with `docker compose` on A. Killing B's agent while
 * `goto move --project` has the project frozen leaves the whole project running at A; after B's
 * agent is back, the move — ordered through C's agent, which does not run the project — goes
 * through: the web server answers through the app from the db at B, and `docker compose -p shop ps`
 * there lists it. Then `goto drain B` moves the whole project to one other host, where it answers,
 * `docker compose -p shop logs` and `stop` act on it, and `up` takes its volume without a warning.
 * One lab for the file (prefix gotolabe).
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { spawn, execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Lab, waitFor, type LabHost } from '../lab/index.js'
import type { MoveEvent } from '../../protocol/move-messages.js'
import type { PeerRow } from '../../protocol/messages.js'
import type { DrainEvent } from '../../control/drain.js'

const run = promisify(execFile)
const COMPOSE = join(process.env.GOTO_ENGINES_DIR ?? '/var/cache/goto-lab/engines', 'compose/usr/libexec/docker/cli-plugins/docker-compose')
const SERVICES = ['shop-db-1', 'shop-app-1', 'shop-web-1']
/** web's published port (in each lab host's own namespace). */
const PORT = 18095

const COMPOSE_FILE = `
name: shop
services:
  db:
    image: shop/base:v1
    pull_policy: never
    command: ["sh", "-c", "echo row-1 > /data/rows && echo db-ready && exec httpd -f -p 80 -h /data"]
    volumes: ["data:/data"]
  app:
    image: shop/base:v1
    pull_policy: never
    command: ["httpd", "-f", "-p", "80", "-h", "/www/app"]
    depends_on: [db]
  web:
    image: shop/base:v1
    pull_policy: never
    command: ["httpd", "-f", "-p", "80", "-h", "/www/web"]
    ports: ["${PORT}:80"]
    depends_on: [app]
volumes:
  data: {}
`

describe('compose: a project moves together (3 hosts, real engines, agents and docker compose)', function () {
  this.timeout(240_000)
  const lab = new Lab({ prefix: 'gotolabe', subnet: '10.213.40.0/24' })
  let A: LabHost
  let B: LabHost
  let C: LabHost
  let dir: string

  async function docker (h: LabHost, ...args: string[]): Promise<string> {
    const { stdout } = await run('/usr/bin/docker', ['-H', h.dockerHost, ...args], { maxBuffer: 16 * 1024 * 1024 })
    return stdout.trim()
  }

  async function compose (h: LabHost, ...args: string[]): Promise<string> {
    return (await composeOut(h, ...args)).stdout
  }

  async function composeOut (h: LabHost, ...args: string[]): Promise<{ stdout: string, stderr: string }> {
    const { stdout, stderr } = await run(COMPOSE, ['-p', 'shop', ...args], { env: { ...process.env, DOCKER_HOST: h.dockerHost }, cwd: dir, maxBuffer: 16 * 1024 * 1024 })
    return { stdout: stdout.trim(), stderr: stderr.trim() }
  }

  /** The web server's page at host `h`: it asks the app, which asks the db. */
  async function page (h: LabHost): Promise<string> {
    const { stdout } = await run('ip', ['netns', 'exec', A.netns, 'wget', '-qO-', `http://${h.ip}:${PORT}/cgi-bin/page`])
    return stdout.trim()
  }

  async function aliveAt (from: LabHost, name: string): Promise<boolean> {
    const r = await lab.cli(['peers', '--json'], { agent: from.agentAddr })
    return r.code === 0 && (JSON.parse(r.stdout) as PeerRow[]).some(p => p.name === name && p.state === 'alive')
  }

  /** `goto move --project shop --to B --json` through the agent of `via`; `onEvent` sees each event as it arrives. */
  async function moveProject (via: LabHost, onEvent: (ev: MoveEvent) => void = () => {}): Promise<{ code: number | null, events: MoveEvent[], stderr: string }> {
    const p = spawn(process.execPath, [lab.controlMain, 'move', '--project', 'shop', '--to', B.name, '--json'], {
      env: { ...process.env, GOTO_BUNDLE: lab.operatorBundle, GOTO_AGENT: via.agentAddr }, stdio: ['ignore', 'pipe', 'pipe']
    })
    const events: MoveEvent[] = []
    let buf = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => {
      buf += d.toString()
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).trim()
        buf = buf.slice(i + 1)
        if (line === '') continue
        const ev = JSON.parse(line) as MoveEvent
        events.push(ev)
        onEvent(ev)
      }
    })
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const code = await new Promise<number | null>(resolve => { p.on('exit', resolve) })
    return { code, events, stderr }
  }

  before(async function () {
    this.timeout(300_000)
    dir = await mkdtemp(join(tmpdir(), 'goto-compose-'))
    await writeFile(join(dir, 'compose.yaml'), COMPOSE_FILE)
    await lab.down()
    ;[A, B, C] = await lab.up(3)
    for (const h of [A, B, C]) {
      for (const other of [A, B, C]) await waitFor(async () => await aliveAt(h, other.name), { timeoutMs: 60_000, intervalMs: 250, what: `${other.name} alive at ${h.name}` })
    }
    // The project's image, built offline: busybox httpd with a CGI page for web (asks app) and app (asks db).
    const cgi = (url: string): string => `#!/bin/sh\\necho Content-Type: text/plain\\necho\\nwget -qO- ${url}\\n`
    await docker(A, 'run', '--name', 'shopbuild', 'gotolab/base:latest', 'sh', '-c',
      `mkdir -p /www/web/cgi-bin /www/app/cgi-bin && printf '${cgi('http://app/cgi-bin/rows')}' > /www/web/cgi-bin/page && printf '${cgi('http://db/rows')}' > /www/app/cgi-bin/rows && chmod +x /www/*/cgi-bin/*`)
    await docker(A, 'commit', 'shopbuild', 'shop/base:v1')
    await docker(A, 'rm', 'shopbuild')
    await compose(A, 'up', '-d')
    await waitFor(async () => await page(A).catch(() => '') === 'row-1', { timeoutMs: 30_000, intervalMs: 250, what: 'the project answering at A' })
  })

  after(async function () {
    this.timeout(120_000)
    await lab.down()
    await rm(dir, { recursive: true, force: true })
  })

  it('kill the destination\'s agent while the project is frozen: the whole project runs on at the source', async () => {
    let killed: Promise<void> | undefined
    const r = await moveProject(A, ev => { if (ev.event === 'step' && ev.step === 'freeze' && killed === undefined) killed = lab.killAgent(B.name) })
    await killed
    const last = r.events.at(-1)
    expect(killed, 'the move reached its freeze').to.not.equal(undefined)
    expect(last?.event, `${JSON.stringify(last)} ${r.stderr}`).to.equal('failed')
    expect(r.code).to.equal(1)
    for (const n of SERVICES) {
      const s = JSON.parse(await docker(A, 'inspect', n))[0].State
      expect(s.Running && !s.Paused, n).to.equal(true)
    }
    expect(await page(A)).to.equal('row-1')
    await lab.startAgent(B.name)
    for (const h of [A, B, C]) await waitFor(async () => await aliveAt(h, B.name), { timeoutMs: 60_000, intervalMs: 250, what: `${B.name} alive at ${h.name}` })
    // B's agent removes what the cut-short move made there when it starts again.
    await waitFor(async () => await docker(B, 'ps', '-aq') === '', { timeoutMs: 60_000, intervalMs: 500, what: 'nothing of the project left at B' })
  })

  it('goto move --project through an agent that does not run it (C) moves it from A: the web server answers through the app from the db at B, and docker compose there lists it', async () => {
    const r = await moveProject(C)
    const last = r.events.at(-1)
    expect(last?.event, `${JSON.stringify(last)} ${r.stderr}`).to.equal('done')
    expect(r.code).to.equal(0)
    expect(await page(B)).to.equal('row-1')
    const ps = await compose(B, 'ps', '--format', '{{.Name}}')
    expect(ps.split('\n').sort()).to.deep.equal([...SERVICES].sort())
    expect(await docker(A, 'ps', '-aq')).to.equal('')
  })
  it('goto drain B moves the whole project to one host, where it answers and docker compose logs, stops and starts it without a warning about its volume', async () => {
    const volumeLabels = JSON.parse(await docker(B, 'volume', 'inspect', 'shop_data'))[0].Labels as Record<string, string>
    expect(volumeLabels).to.deep.include({ 'com.docker.compose.project': 'shop', 'com.docker.compose.volume': 'data' })
    const r = await lab.cli(['drain', B.name, '--json'])
    const events = r.stdout.split('\n').filter(l => l.trim() !== '').map(l => JSON.parse(l) as DrainEvent | MoveEvent)
    const plan = events.find((e): e is Extract<DrainEvent, { event: 'drain-plan' }> => e.event === 'drain-plan')?.plan
    expect(plan?.assignments, JSON.stringify(plan)).to.have.length(1)
    const [a] = plan?.assignments ?? []
    expect(a).to.deep.include({ container: 'shop', project: true, containers: [...SERVICES].sort() })
    const last = events.at(-1)
    expect(last?.event, `${r.stdout} ${r.stderr}`).to.equal('drained')
    expect(last?.event === 'drained' && last.failed).to.deep.equal([])
    expect(r.code).to.equal(0)
    const X = [A, C].find(h => h.name === a.to)
    if (X === undefined) throw new Error(`drained to ${a.to}, not A or C`)
    expect(await docker(B, 'ps', '-aq')).to.equal('')
    expect(await page(X)).to.equal('row-1')
    // The moved volume is compose's own there; logs and stop act on the moved containers.
    expect(JSON.parse(await docker(X, 'volume', 'inspect', 'shop_data'))[0].Labels).to.deep.equal(volumeLabels)
    expect(await compose(X, 'logs', 'db')).to.contain('db-ready')
    await compose(X, 'stop')
    for (const n of SERVICES) expect(JSON.parse(await docker(X, 'inspect', n))[0].State.Running, n).to.equal(false)
    const up = await composeOut(X, 'up', '-d', '--no-recreate')
    expect(up.stderr).to.not.match(/already exists|external/i)
    await waitFor(async () => await page(X).catch(() => '') === 'row-1', { timeoutMs: 30_000, intervalMs: 250, what: `the project answering again at ${X.name}` })
  })
})
