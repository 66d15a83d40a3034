import { expect } from 'chai'
import { loadConfig, HelpRequested, DEFAULT_LISTEN } from '../../agent/config.js'
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
  it('answers --help', () => { expect(() => load(['--help'])).to.throw(HelpRequested) })
})
