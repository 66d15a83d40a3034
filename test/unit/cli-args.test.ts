/**
 * The operator CLI's first parse (control/args.ts): options before the command are handed to the
 * command as if they followed it, as docker and git take them; bad input is a UsageError that says
 * what is wrong.
 */
import { expect } from 'chai'
import { parseCommandLine } from '../../control/args.js'
import { UsageError } from '../../protocol/errors.js'

function usageError (argv: string[]): UsageError {
  try {
    parseCommandLine(argv)
  } catch (err) {
    expect(err).to.be.instanceOf(UsageError)
    expect((err as Error).name).to.equal('UsageError')
    return err as UsageError
  }
  throw new Error(`no UsageError for ${argv.join(' ')}`)
}

describe('goto command line (options before the command)', () => {
  it('hands options before the command to it, in front of its own arguments', () => {
    expect(parseCommandLine(['--bundle', 'B', '--agent', 'A', 'peers'])).to.deep.equal({ kind: 'command', command: 'peers', args: ['--bundle', 'B', '--agent', 'A'] })
    expect(parseCommandLine(['--bundle=B', '--json', 'status', 'web-1'])).to.deep.equal({ kind: 'command', command: 'status', args: ['--bundle=B', '--json', 'web-1'] })
    expect(parseCommandLine(['--timeout', '5', 'move', 'web', '--to', 'b'])).to.deep.equal({ kind: 'command', command: 'move', args: ['--timeout', '5', 'web', '--to', 'b'] })
    expect(parseCommandLine(['--bundle', 'B', '--agent', 'A', 'install', 'root@h', '--name', 'h'])).to.deep.equal({ kind: 'command', command: 'install', args: ['--bundle', 'B', '--agent', 'A', 'root@h', '--name', 'h'] })
  })

  it('leaves a command line without options before the command as it is', () => {
    expect(parseCommandLine(['peers', '--bundle', 'B'])).to.deep.equal({ kind: 'command', command: 'peers', args: ['--bundle', 'B'] })
    expect(parseCommandLine(['frobnicate', 'x'])).to.deep.equal({ kind: 'command', command: 'frobnicate', args: ['x'] })
    expect(parseCommandLine(['--', 'peers'])).to.deep.equal({ kind: 'command', command: 'peers', args: [] })
  })

  it('gives --json before `goto ca list` to the subcommand', () => {
    expect(parseCommandLine(['--json', 'ca', 'list', '--dir', 'D'])).to.deep.equal({ kind: 'command', command: 'ca', args: ['list', '--json', '--dir', 'D'] })
    expect(usageError(['--json', 'ca', 'init', '--dir', 'D']).message).to.contain("--json does not apply to 'goto ca init'")
  })

  it('answers help, version and nothing at all', () => {
    expect(parseCommandLine([])).to.deep.equal({ kind: 'usage' })
    expect(parseCommandLine(['--help'])).to.deep.equal({ kind: 'help', command: undefined })
    expect(parseCommandLine(['-h'])).to.deep.equal({ kind: 'help', command: undefined })
    expect(parseCommandLine(['help'])).to.deep.equal({ kind: 'help', command: undefined })
    expect(parseCommandLine(['--bundle', 'B', '--help', 'peers'])).to.deep.equal({ kind: 'help', command: 'peers' })
    expect(parseCommandLine(['--version'])).to.deep.equal({ kind: 'version' })
    // After the command, --help is the command's own.
    expect(parseCommandLine(['peers', '--help'])).to.deep.equal({ kind: 'command', command: 'peers', args: ['--help'] })
  })

  it('refuses an unknown option before the command, naming it and what is taken there', () => {
    const e = usageError(['--frobnicate', 'peers'])
    expect(e.message).to.contain("'--frobnicate'").and.contain('--bundle').and.contain('--agent')
    expect(usageError(['-x', 'peers']).message).to.contain("'-x'")
    expect(usageError(['--to=b', 'move', 'web']).message).to.contain("'--to'")
  })

  it('refuses a missing value, a value to a flag, and no command', () => {
    expect(usageError(['--bundle']).message).to.contain('--bundle needs a value')
    expect(usageError(['--bundle', '--agent', 'A', 'peers']).message).to.contain("--bundle needs a value (got '--agent'")
    expect(usageError(['--json=yes', 'peers']).message).to.contain('--json takes no value')
    expect(usageError(['--bundle', 'B']).message).to.contain('no command after --bundle')
  })

  it('refuses an option given twice, or before and after the command', () => {
    expect(usageError(['--agent', 'A', '--agent', 'B', 'peers']).message).to.contain('--agent is given twice')
    expect(usageError(['--agent', 'A', 'peers', '--agent=B']).message).to.contain("--agent is given both before and after 'peers'")
    // After `--` nothing is an option.
    expect(parseCommandLine(['--agent', 'A', 'status', '--', '--agent'])).to.deep.equal({ kind: 'command', command: 'status', args: ['--agent', 'A', '--', '--agent'] })
  })

  it('refuses an option before a command that does not take it', () => {
    expect(usageError(['--timeout', '5', 'install', 'root@h']).message).to.contain("--timeout does not apply to 'goto install' (it takes --bundle, --agent)")
    expect(usageError(['--bundle', 'B', 'uninstall', 'root@h']).message).to.contain("--bundle does not apply to 'goto uninstall'")
    expect(usageError(['--json', 'cloud-init']).message).to.contain("'goto cloud-init'")
    expect(usageError(['--json', 'frobnicate']).message).to.contain("'goto frobnicate'")
  })
})

describe('options shared by the agent and the CLI (protocol/options.ts)', () => {
  it('are the ones agent/config.ts exports, so both refuse the same values', async () => {
    const shared = await import('../../protocol/options.js')
    const agent = await import('../../agent/config.js')
    expect(agent.parseDockerEndpoint).to.equal(shared.parseDockerEndpoint)
    expect(agent.parseLabels).to.equal(shared.parseLabels)
    expect(agent.DEFAULT_LISTEN).to.equal(shared.DEFAULT_LISTEN)
    expect(agent.DEFAULT_DOCKER).to.equal(shared.DEFAULT_DOCKER)
    expect(shared.parseDockerEndpoint('--docker', '/run/d.sock')).to.deep.equal({ kind: 'unix', socketPath: '/run/d.sock', url: 'unix:///run/d.sock' })
    expect(() => shared.parseLabels('--label', ['novalue'])).to.throw("--label: 'novalue' must be KEY=VALUE")
  })
})
