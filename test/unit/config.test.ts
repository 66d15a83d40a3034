import { expect } from 'chai'
import { loadConfig, HelpRequested, DEFAULT_LISTEN, AGENT_USAGE } from '../../agent/config.js'
import { ConfigError } from '../../protocol/errors.js'
import { PROFILES } from '../../agent/timings.js'

function load (argv: string[], env: Record<string, string> = {}, files: Record<string, string> = {}): ReturnType<typeof loadConfig> {
  return loadConfig({
    argv,
    env,
    readFile: p => {
      if (files[p] === undefined) throw new Error('ENOENT: no such file')
      return files[p]
    }
  })
}

function rejects (argv: string[], option: string, env: Record<string, string> = {}, files: Record<string, string> = {}): ConfigError {
  try {
    load(argv, env, files)
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError)
    expect((err as ConfigError).option).to.equal(option)
    expect((err as ConfigError).message).to.contain(option)
    return err as ConfigError
  }
  expect.fail(`expected a ConfigError naming ${option}`)
}

describe('agent config', () => {
  it('applies defaults', () => {
    const c = load(['--bundle', '/b'])
    expect(c.bundleDir).to.equal('/b')
    expect(c.listen.map(String)).to.deep.equal([DEFAULT_LISTEN])
    expect(c.docker).to.deep.include({ kind: 'unix', socketPath: '/var/run/docker.sock' })
    expect(c.bootstrap).to.deep.equal([])
    expect(c.profile).to.equal('default')
    expect(c.timings).to.deep.equal(PROFILES.default)
  })

  it('takes the replica count and snapshot interval from a flag, the environment or the file', () => {
    expect(load(['--bundle', '/b']).replicas).to.equal(1)
    const c = load(['--bundle', '/b', '--replicas', '2', '--snapshot-interval', '5', '--profile', 'lan'])
    expect(c.replicas).to.equal(2)
    expect(c.timings).to.deep.equal({ ...PROFILES.lan, snapshotIntervalMs: 5000 })
    expect(load(['--bundle', '/b'], { GOTO_REPLICAS: '3' }).replicas).to.equal(3)
    expect(load(['--bundle', '/b', '--config', '/c.json'], {}, { '/c.json': '{"replicas":2,"snapshotInterval":30}' }).timings.snapshotIntervalMs).to.equal(30_000)
    rejects(['--bundle', '/b', '--replicas', '0'], '--replicas')
    rejects(['--bundle', '/b', '--replicas', 'two'], '--replicas')
    rejects(['--bundle', '/b', '--snapshot-interval', '0.1'], '--snapshot-interval')
    rejects(['--bundle', '/b'], 'GOTO_SNAPSHOT_INTERVAL', { GOTO_SNAPSHOT_INTERVAL: 'soon' })
  })

  it('parses every flag', () => {
    const c = load(['--bundle', '/b', '--listen', '/ip4/10.0.0.1/tcp/5000', '--bootstrap', '/ip4/10.0.0.2/tcp/4001',
      '--bootstrap', '/dns4/agent.example/tcp/4001', '--docker', 'tcp://10.0.0.1:2375', '--name', 'aws-1',
      '--label', 'provider=aws', '--label', 'region=eu-west-1', '--state-dir', '/s', '--profile', 'test'])
    expect(c.listen[0].toString()).to.equal('/ip4/10.0.0.1/tcp/5000')
    expect(c.bootstrap.map(String)).to.deep.equal(['/ip4/10.0.0.2/tcp/4001', '/dns4/agent.example/tcp/4001'])
    expect(c.docker).to.deep.equal({ kind: 'tcp', host: '10.0.0.1', port: 2375, url: 'tcp://10.0.0.1:2375' })
    expect(c.name).to.equal('aws-1')
    expect(c.labels).to.deep.equal({ provider: 'aws', region: 'eu-west-1' })
    expect(c.stateDir).to.equal('/s')
    expect(c.timings).to.deep.equal(PROFILES.test)
  })

  it('takes flags over environment over config file', () => {
    const files = { '/c.json': JSON.stringify({ bundle: '/file', listen: '/ip4/1.1.1.1/tcp/1', labels: { a: 'file' }, bootstrap: ['/ip4/3.3.3.3/tcp/3'] }) }
    const env = { GOTO_CONFIG: '/c.json', GOTO_LISTEN: '/ip4/2.2.2.2/tcp/2', GOTO_LABELS: 'a=env,b=env', DOCKER_HOST: 'unix:///env.sock' }
    const c = load(['--listen', '/ip4/4.4.4.4/tcp/4'], env, files)
    expect(c.bundleDir).to.equal('/file')
    expect(c.listen[0].toString()).to.equal('/ip4/4.4.4.4/tcp/4')
    expect(c.labels).to.deep.equal({ a: 'env', b: 'env' })
    expect(c.bootstrap.map(String)).to.deep.equal(['/ip4/3.3.3.3/tcp/3'])
    expect(c.docker).to.deep.include({ kind: 'unix', socketPath: '/env.sock' })
  })

  it('accepts a bootstrap address with or without /p2p/', () => {
    const id = '12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA'
    const c = load(['--bundle', '/b', '--bootstrap', `/ip4/10.0.0.2/tcp/4001/p2p/${id}`])
    expect(c.bootstrap[0].toString()).to.equal(`/ip4/10.0.0.2/tcp/4001/p2p/${id}`)
  })

  it('requires --bundle', () => { rejects([], '--bundle') })
  it('rejects a malformed listen address', () => { rejects(['--bundle', '/b', '--listen', 'localhost:4001'], '--listen') })
  it('rejects a non-TCP listen address', () => { rejects(['--bundle', '/b', '--listen', '/ip4/0.0.0.0/udp/4001'], '--listen') })
  it('rejects a malformed bootstrap address', () => { rejects(['--bundle', '/b', '--bootstrap', '/ip4/999.1.1.1/tcp/1'], '--bootstrap') })
  it('rejects an unknown docker scheme', () => { rejects(['--bundle', '/b', '--docker', 'ssh://host'], '--docker') })
  it('rejects a docker unix URL without a path', () => { rejects(['--bundle', '/b', '--docker', 'unix://'], '--docker') })
  it('rejects a label without =', () => { rejects(['--bundle', '/b', '--label', 'provider'], '--label') })
  it('rejects a bad label key', () => { rejects(['--bundle', '/b', '--label', '-x=1'], '--label') })
  it('rejects an unknown profile', () => { rejects(['--bundle', '/b', '--profile', 'fast'], '--profile') })
  it('rejects a bad name', () => { rejects(['--bundle', '/b', '--name', 'a b'], '--name') })
  it('rejects an unknown flag', () => { rejects(['--bundle', '/b', '--colour'], '--colour') })
  it('rejects a bad log level', () => { rejects(['--bundle', '/b', '--log-level', 'loud'], '--log-level') })
  it('rejects an unreadable config file', () => { rejects(['--config', '/missing.json'], '--config') })
  it('rejects a config file that is not JSON', () => { rejects(['--config', '/c'], '--config', {}, { '/c': 'bundle=/b' }) })
  it('rejects an unknown config key', () => { rejects(['--config', '/c'], '--config', {}, { '/c': '{"bundel": "/b"}' }) })
  it('rejects a config value of the wrong type', () => { rejects(['--config', '/c'], '--config', {}, { '/c': '{"bootstrap": "/ip4/1.1.1.1/tcp/1"}' }) })
  it('names the environment variable or config key a bad value came from', () => {
    rejects(['--bundle', '/b'], 'GOTO_LISTEN', { GOTO_LISTEN: 'nope' })
    rejects(['--bundle', '/b', '--config', '/c'], "'bootstrap' in /c", {}, { '/c': '{"bootstrap": ["nope"]}' })
  })
  it('rejects inherited names as a profile', () => { rejects(['--bundle', '/b', '--profile', 'constructor'], '--profile') })
  it('rejects config-file labels of the wrong type', () => {
    rejects(['--config', '/c'], '--config', {}, { '/c': '{"bundle": "/b", "labels": "a=b"}' })
    rejects(['--config', '/c'], '--config', {}, { '/c': '{"bundle": "/b", "labels": [1]}' })
  })
  it('takes --no-inbound from a flag, GOTO_NO_INBOUND or noInbound; off by default', () => {
    expect(load(['--bundle', '/b']).noInbound).to.equal(false)
    expect(load(['--bundle', '/b', '--no-inbound']).noInbound).to.equal(true)
    expect(load(['--bundle', '/b'], { GOTO_NO_INBOUND: 'yes' }).noInbound).to.equal(true)
    expect(load(['--bundle', '/b'], { GOTO_NO_INBOUND: '0' }).noInbound).to.equal(false)
    expect(load(['--config', '/c'], {}, { '/c': '{"bundle": "/b", "noInbound": true}' }).noInbound).to.equal(true)
  })
  it('rejects a bad GOTO_NO_INBOUND', () => { rejects(['--bundle', '/b'], 'GOTO_NO_INBOUND', { GOTO_NO_INBOUND: 'maybe' }) })
  it('rejects a non-boolean noInbound in the config file', () => { rejects(['--config', '/c'], '--config', {}, { '/c': '{"bundle": "/b", "noInbound": "yes"}' }) })
  it('takes --docker-save-only from a flag, GOTO_DOCKER_SAVE_ONLY or dockerSaveOnly; off by default; refuses a bad value', () => {
    expect(load(['--bundle', '/b']).dockerSaveOnly).to.equal(false)
    expect(load(['--bundle', '/b', '--docker-save-only']).dockerSaveOnly).to.equal(true)
    expect(load(['--bundle', '/b'], { GOTO_DOCKER_SAVE_ONLY: '1' }).dockerSaveOnly).to.equal(true)
    expect(load(['--config', '/c'], {}, { '/c': '{"bundle": "/b", "dockerSaveOnly": true}' }).dockerSaveOnly).to.equal(true)
    rejects(['--bundle', '/b'], 'GOTO_DOCKER_SAVE_ONLY', { GOTO_DOCKER_SAVE_ONLY: 'maybe' })
    rejects(['--config', '/c'], '--config', {}, { '/c': '{"bundle": "/b", "dockerSaveOnly": "yes"}' })
  })
  it('rejects --no-inbound with --announce: such a host has no address of its own', () => {
    rejects(['--bundle', '/b', '--no-inbound', '--announce', '/ip4/1.2.3.4/tcp/4001'], '--no-inbound')
  })
  it('answers --help', () => { expect(() => load(['--help'])).to.throw(HelpRequested) })

  describe('--metrics-listen', () => {
    const metrics = (value: string): unknown => load(['--bundle', '/b', '--metrics-listen', value]).metricsListen

    it('is off by default', () => { expect(load(['--bundle', '/b']).metricsListen).to.equal(undefined) })
    it('binds a bare port to loopback', () => { expect(metrics('9464')).to.deep.equal({ host: '127.0.0.1', port: 9464 }) })
    it('takes localhost as loopback', () => { expect(metrics('localhost:9464')).to.deep.equal({ host: '127.0.0.1', port: 9464 }) })
    it('takes an explicit IPv4 address, loopback or not', () => {
      expect(metrics('10.0.0.5:9100')).to.deep.equal({ host: '10.0.0.5', port: 9100 })
      expect(metrics('0.0.0.0:9100')).to.deep.equal({ host: '0.0.0.0', port: 9100 })
    })
    it('takes a bracketed IPv6 address', () => { expect(metrics('[::1]:9464')).to.deep.equal({ host: '::1', port: 9464 }) })
    it('allows port 0 (a free port, logged)', () => { expect(metrics('0')).to.deep.equal({ host: '127.0.0.1', port: 0 }) })
    it('takes flag over environment over config file', () => {
      const files = { '/c.json': JSON.stringify({ bundle: '/b', metricsListen: 9001 }) }
      expect(load(['--config', '/c.json'], {}, files).metricsListen).to.deep.equal({ host: '127.0.0.1', port: 9001 })
      expect(load(['--config', '/c.json'], { GOTO_METRICS_LISTEN: '127.0.0.2:9002' }, files).metricsListen).to.deep.equal({ host: '127.0.0.2', port: 9002 })
      expect(load(['--config', '/c.json', '--metrics-listen', '9003'], { GOTO_METRICS_LISTEN: '9002' }, files).metricsListen).to.deep.equal({ host: '127.0.0.1', port: 9003 })
    })
    it('rejects a port out of range or not a number', () => {
      const err = rejects(['--bundle', '/b', '--metrics-listen', '65536'], '--metrics-listen')
      expect(err.message).to.contain('not a port')
      rejects(['--bundle', '/b', '--metrics-listen', '127.0.0.1:http'], '--metrics-listen')
      rejects(['--bundle', '/b', '--metrics-listen', '127.0.0.1:-1'], '--metrics-listen')
      rejects(['--bundle', '/b', '--metrics-listen', '127.0.0.1:'], '--metrics-listen')
    })
    it('rejects an address with no host rather than guess every interface', () => {
      expect(rejects(['--bundle', '/b', '--metrics-listen', ':9464'], '--metrics-listen').message).to.contain('0.0.0.0:PORT')
    })
    it('rejects host names, bad IPs, unbracketed IPv6 and URLs', () => {
      for (const bad of ['metrics.example:9464', '999.1.1.1:9464', '::1:9464', '[10.0.0.1]:9464', 'http://127.0.0.1:9464', '', '127.0.0.1']) {
        rejects(['--bundle', '/b', '--metrics-listen', bad], '--metrics-listen')
      }
    })
    it('names the environment variable or config key a bad value came from', () => {
      rejects(['--bundle', '/b'], 'GOTO_METRICS_LISTEN', { GOTO_METRICS_LISTEN: 'nope' })
      rejects(['--config', '/c'], "'metricsListen' in /c", {}, { '/c': '{"bundle": "/b", "metricsListen": "10.0.0.1"}' })
      rejects(['--config', '/c'], '--config', {}, { '/c': '{"bundle": "/b", "metricsListen": true}' })
    })
    it('is listed in --help', () => { expect(AGENT_USAGE).to.contain('--metrics-listen').and.contain('GOTO_METRICS_LISTEN').and.contain('metricsListen') })
  })
})
