#!/usr/bin/env node
/**
 * goto: the operator CLI and its composition root (the only place that reads argv and env).
 * `goto ca ...` manages the mesh CA (certs/cli.ts); `goto peers`, `status`, `move`, `drain`,
 * `protect` and `unprotect` ask one agent over an authenticated libp2p connection (mesh.ts);
 * `goto install`, `uninstall` and `cloud-init` set up hosts (install-cli.ts). Options may come
 * before the command as well as after it (args.ts).
 *
 * Start-up time is most of what a command costs, so each command loads only its own modules:
 * libp2p only for the commands that talk to the mesh, ssh2 only for install, node-forge only where
 * a certificate is issued. Static imports here stay small; everything else is an import() below.
 */
import '../protocol/polyfill.js'
import { parseCommandLine } from './args.js'
import { USAGE } from './usage.js'
import { printable } from './format.js'
import { GOTO_VERSION } from '../protocol/version.js'
import { ConfigError, GotoError, UsageError } from '../protocol/errors.js'
import type { Io, MeshCommand } from './mesh.js'

const MESH_COMMANDS: readonly string[] = ['peers', 'status', 'move', 'drain', 'protect', 'unprotect'] satisfies readonly MeshCommand[]

async function run (argv: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const line = parseCommandLine(argv)
  if (line.kind === 'usage') { io.stdout(USAGE + '\n'); return 2 }
  if (line.kind === 'help') { io.stdout(USAGE + '\n'); return 0 }
  if (line.kind === 'version') { io.stdout(GOTO_VERSION + '\n'); return 0 }
  const { command, args } = line
  if (command === 'ca') {
    const { runCaCommand } = await import('../certs/cli.js')
    return await runCaCommand(args, io)
  }
  if (command === 'install' || command === 'uninstall' || command === 'cloud-init') {
    const ac = new AbortController()
    const onSigint = (): void => { ac.abort(new GotoError('interrupted')) }
    process.once('SIGINT', onSigint)
    try {
      const { runInstallCommand } = await import('./install-cli.js')
      return await runInstallCommand(command, args, env, io, ac.signal)
    } finally {
      process.removeListener('SIGINT', onSigint)
    }
  }
  if (!MESH_COMMANDS.includes(command)) {
    io.stderr(`goto: error: unknown command '${command}' (try 'goto --help')\n`)
    return 2
  }
  const { runMeshCommand } = await import('./mesh.js')
  return await runMeshCommand(command as MeshCommand, args, env, io)
}

async function main (): Promise<number> {
  const io: Io = { stdout: s => process.stdout.write(s), stderr: s => process.stderr.write(s) }
  try {
    return await run(process.argv.slice(2), process.env, io)
  } catch (err) {
    const e = err as Error
    if (err instanceof ConfigError || err instanceof UsageError) { io.stderr(`goto: error: ${printable(e.message)}\n`); return 2 }
    if (err instanceof GotoError) { io.stderr(`goto: error: ${printable(e.message)}\n`); return 1 }
    io.stderr(`goto: error: ${printable(e.message)}\n`)
    return 1
  }
}

// libp2p may hold sockets a moment after stop(); the CLI is done, so leave now. (No top-level
// await: the bundle that `goto` runs is a script, see launcher.ts.)
void main().then(code => process.exit(code))
