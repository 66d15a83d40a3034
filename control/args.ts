/**
 * The operator CLI's first look at its command line: options given before the command, as docker
 * and git take them (`goto --bundle B --agent A peers`), are handed to the command as if they had
 * followed it (`goto peers --bundle B --agent A`), so each command keeps one parser of its own.
 * Pure: control/main.ts passes argv in and dispatches on the result; no module is loaded here.
 */
import { UsageError } from '../protocol/errors.js'

/** The options `goto` takes before its command, and whether each takes a value. */
export const GLOBAL_OPTIONS = {
  bundle: { value: true },
  agent: { value: true },
  json: { value: false },
  timeout: { value: true }
} as const

export type GlobalOption = keyof typeof GLOBAL_OPTIONS

const MESH: readonly GlobalOption[] = ['bundle', 'agent', 'json', 'timeout']

/**
 * Which options before the command each command takes (the same options it takes after itself).
 * `ca` is keyed by its subcommand. A command missing here takes none.
 */
const ACCEPTS: Record<string, readonly GlobalOption[]> = {
  peers: MESH,
  status: MESH,
  move: MESH,
  drain: MESH,
  protect: MESH,
  unprotect: MESH,
  install: ['bundle', 'agent'],
  'ca list': ['json']
}

export type CommandLine =
  | { kind: 'help', command: string | undefined }
  | { kind: 'version' }
  | { kind: 'usage' }
  | { kind: 'command', command: string, args: string[] }

/**
 * Splits `goto [GLOBAL OPTIONS] COMMAND [ARGS...]`: 'usage' when nothing at all was given, 'help'
 * for -h/--help/help before the command, 'version' for --version, else the command and its
 * arguments with the options given before it placed first (after the subcommand for `ca`).
 * Throws UsageError for an unknown option before the command, a missing value, no command after
 * the options, an option the command does not take, or one given both before and after it.
 */
export function parseCommandLine (argv: readonly string[]): CommandLine {
  if (argv.length === 0) return { kind: 'usage' }
  const given: Array<{ name: GlobalOption, tokens: string[] }> = []
  let i = 0
  for (; i < argv.length; i++) {
    const token = argv[i]
    if (token === '-h' || token === '--help') return { kind: 'help', command: argv.slice(i + 1).find(t => !t.startsWith('-')) }
    if (token === '--version') return { kind: 'version' }
    if (token === '--') { i++; break }
    if (!token.startsWith('-')) break
    const eq = token.indexOf('=')
    const name = (eq < 0 ? token : token.slice(0, eq)).replace(/^--?/, '')
    if (!token.startsWith('--') || !Object.hasOwn(GLOBAL_OPTIONS, name)) {
      throw new UsageError(`unknown option '${eq < 0 ? token : token.slice(0, eq)}' before the command (there goto takes ${globalList()}; try 'goto --help')`)
    }
    const option = name as GlobalOption
    if (given.some(g => g.name === option)) throw new UsageError(`--${option} is given twice before the command`)
    if (!GLOBAL_OPTIONS[option].value) {
      if (eq >= 0) throw new UsageError(`--${option} takes no value (got '${token}')`)
      given.push({ name: option, tokens: [token] })
      continue
    }
    if (eq >= 0) { given.push({ name: option, tokens: [token] }); continue }
    const value = argv[i + 1]
    // A value that looks like an option is a forgotten value; `--bundle=-odd-dir` still passes one.
    if (value === undefined || value.startsWith('-')) throw new UsageError(`--${option} needs a value${value === undefined ? '' : ` (got '${value}'; write --${option}=VALUE for a value starting with '-')`}`)
    given.push({ name: option, tokens: [token, value] })
    i++
  }
  const command = argv[i]
  if (command === undefined) throw new UsageError(`no command after ${given.map(g => `--${g.name}`).join(' ')} (try 'goto --help')`)
  if (command === 'help') return { kind: 'help', command: argv[i + 1] }
  const rest = argv.slice(i + 1)
  if (given.length === 0) return { kind: 'command', command, args: rest }
  // `ca` has subcommands: options before `goto ca` belong to the subcommand (`goto --json ca list`).
  const sub = command === 'ca' ? rest[0] : undefined
  const key = sub === undefined ? command : `${command} ${sub}`
  const accepted = ACCEPTS[key] ?? []
  for (const g of given) {
    if (!accepted.includes(g.name)) throw new UsageError(`--${g.name} does not apply to 'goto ${key}'${accepted.length > 0 ? ` (it takes ${accepted.map(o => `--${o}`).join(', ')})` : ''} (try 'goto --help')`)
    const after = givenAfter(sub === undefined ? rest : rest.slice(1), g.name)
    if (after) throw new UsageError(`--${g.name} is given both before and after '${key}'; give it once`)
  }
  const forwarded = given.flatMap(g => g.tokens)
  return { kind: 'command', command, args: sub === undefined ? [...forwarded, ...rest] : [sub, ...forwarded, ...rest.slice(1)] }
}

/** Whether `--name` (or `--name=...`) appears among a command's own arguments (before any `--`). */
function givenAfter (args: readonly string[], name: GlobalOption): boolean {
  for (const a of args) {
    if (a === '--') return false
    if (a === `--${name}` || a.startsWith(`--${name}=`)) return true
  }
  return false
}

function globalList (): string {
  return [...Object.keys(GLOBAL_OPTIONS).map(o => `--${o}`), '--help', '--version'].join(', ')
}
