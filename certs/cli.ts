/**
 * `goto ca ...`: the operator's commands for the mesh CA (init, issue, revoke, list). The operator
 * CLI (control/main.ts) calls runCaCommand(argv.slice(1), out) and exits with the returned code:
 * 0 done, 1 the operation failed, 2 the command line is wrong (nothing was done).
 */
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { ConfigError, UsageError } from '../protocol/errors.js'
import { DEFAULT_CA_DAYS, DEFAULT_CA_NAME, DEFAULT_LEAF_DAYS, initCa, issueCertificate, listIssued, revoke } from './ca.js'
import type { IssuedCertificate } from './ca.js'
import { CA_FILES, isRole, validatePeerName } from './format.js'

/** Where a command writes. Every call passes whole lines ending in "\n": write them as they are. */
export interface CommandOutput {
  stdout: (s: string) => void
  stderr: (s: string) => void
}

const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 2

const USAGE = `usage: goto ca <command> [options]

Manage the mesh certificate authority: it issues the certificates that let agents and operators
join the mesh.

commands:
  init     create a new CA in a directory
  issue    make an identity and certificate for an agent or operator, written as a bundle directory
  revoke   revoke the certificates of a name or peer ID
  list     list the certificates the CA has issued

Run 'goto ca <command> --help' for its options.
Exit status: 0 done, 1 the operation failed, 2 the command line is wrong (nothing was done).
`

const HELP = {
  init: `usage: goto ca init --dir DIR [--name NAME] [--days N]

Create a new mesh CA in DIR (created with mode 0700 if missing): ca.key (RSA-2048 private key, mode
0600; keep it offline and backed up), ca.pem (the CA certificate every bundle carries), crl.json
(the signed revocation list, number 1, empty) and issued.json (the register of issued certificates).
Refuses if DIR already holds a CA.

options:
  --dir DIR     CA directory (required)
  --name NAME   common name of the CA certificate (default "${DEFAULT_CA_NAME}")
  --days N      validity in days (default ${DEFAULT_CA_DAYS})
  -h, --help    show this help
`,
  issue: `usage: goto ca issue --dir DIR --role agent|operator --name NAME --out BUNDLE [--days N]

Generate a new libp2p Ed25519 identity and a certificate binding its peer ID to NAME and the role,
signed by the CA in DIR, and write them as the bundle directory BUNDLE (mode 0700): identity.key
(mode 0600), cert.pem, ca.pem, crl.json (the CA's current revocation list) and bundle.json. Records
the certificate in DIR/issued.json. Refuses to overwrite an existing, non-empty BUNDLE.
The certificate is valid from 5 minutes ago (to allow for clock skew) for N days.

options:
  --dir DIR                CA directory (required)
  --role agent|operator    agent: runs on a Docker host; operator: may order moves (required)
  --name NAME              peer name, 1-63 characters of letters, digits, '.', '_', '-',
                           starting with a letter or digit (required)
  --out BUNDLE             bundle directory to create (required)
  --days N                 validity in days (default ${DEFAULT_LEAF_DAYS})
  -h, --help               show this help
`,
  revoke: `usage: goto ca revoke --dir DIR (--name NAME | --peer-id ID) [--bundle BUNDLE]...

Revoke every not yet revoked certificate the CA in DIR issued to NAME or to peer ID: adds them to
the revocation list, increases its number, re-signs it and writes DIR/crl.json. With --bundle, also
replaces crl.json in each given bundle directory (which must belong to this CA). Agents refuse
certificates on the newest list they have seen; they pass newer lists on to each other.

options:
  --dir DIR          CA directory (required)
  --name NAME        revoke the certificates issued to this name
  --peer-id ID       revoke the certificate of this peer ID
  --bundle BUNDLE    bundle directory to copy the new crl.json into (repeatable)
  -h, --help         show this help
`,
  list: `usage: goto ca list --dir DIR [--json]

List the certificates the CA in DIR has issued, oldest first: NAME, ROLE, PEER-ID, EXPIRES (UTC) and
STATUS (valid, revoked, expired or not-yet-valid).

options:
  --dir DIR     CA directory (required)
  --json        print a JSON array with every field instead of a table
  -h, --help    show this help
`
} as const

type Command = keyof typeof HELP

/** Runs `goto ca <argv...>` and returns the exit status. Never throws. */
export async function runCaCommand (argv: string[], out: CommandOutput): Promise<number> {
  const [command, ...rest] = argv
  if (command === undefined) {
    out.stderr(USAGE)
    return EXIT_USAGE
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    out.stdout(USAGE)
    return EXIT_OK
  }
  if (!(command in HELP)) {
    out.stderr(`error: unknown command "${command}"; commands are init, issue, revoke, list (see goto ca --help)\n`)
    return EXIT_USAGE
  }
  const cmd = command as Command
  let run: () => Promise<void>
  try {
    const parsed = parse(cmd, rest, out)
    if (parsed === 'help') return EXIT_OK
    run = parsed
  } catch (err) {
    const message = err instanceof UsageError || err instanceof ConfigError || isParseArgsError(err)
      ? (err as Error).message
      : String(err)
    out.stderr(`error: ${oneLine(message)} (see goto ca ${cmd} --help)\n`)
    return EXIT_USAGE
  }
  try {
    await run()
    return EXIT_OK
  } catch (err) {
    out.stderr(`error: ${oneLine(err instanceof Error ? err.message : String(err))}\n`)
    return EXIT_FAILED
  }
}

/** Checks the command line and returns the action to run, or 'help' after printing help. */
function parse (cmd: Command, args: string[], out: CommandOutput): (() => Promise<void>) | 'help' {
  switch (cmd) {
    case 'init': {
      const { values } = parseArgs({
        args,
        strict: true,
        allowPositionals: false,
        options: { dir: { type: 'string' }, name: { type: 'string' }, days: { type: 'string' }, help: { type: 'boolean', short: 'h' } }
      })
      if (values.help === true) { out.stdout(HELP.init); return 'help' }
      const dir = required(values.dir, '--dir')
      const days = values.days === undefined ? undefined : parseDays(values.days)
      const name = values.name
      return async () => {
        const ca = await initCa(dir, { name, days })
        out.stdout(`created CA "${ca.name}" in ${dir} (valid until ${isoSeconds(ca.notAfter)}, SHA-256 fingerprint ${ca.fingerprint})\n`)
      }
    }
    case 'issue': {
      const { values } = parseArgs({
        args,
        strict: true,
        allowPositionals: false,
        options: {
          dir: { type: 'string' },
          role: { type: 'string' },
          name: { type: 'string' },
          out: { type: 'string' },
          days: { type: 'string' },
          help: { type: 'boolean', short: 'h' }
        }
      })
      if (values.help === true) { out.stdout(HELP.issue); return 'help' }
      const dir = required(values.dir, '--dir')
      const role = required(values.role, '--role')
      if (!isRole(role)) throw new UsageError(`--role must be agent or operator, not "${role}"`)
      const name = required(values.name, '--name')
      validatePeerName(name)
      const bundle = required(values.out, '--out')
      const days = values.days === undefined ? undefined : parseDays(values.days)
      return async () => {
        const info = await issueCertificate(dir, { role, name, out: bundle, days })
        out.stdout(`issued ${info.role} certificate for ${info.name} (peer ${info.peerId}, serial ${info.serial}, valid until ${isoSeconds(info.notAfter)}) in ${bundle}\n`)
      }
    }
    case 'revoke': {
      const { values } = parseArgs({
        args,
        strict: true,
        allowPositionals: false,
        options: {
          dir: { type: 'string' },
          name: { type: 'string' },
          'peer-id': { type: 'string' },
          bundle: { type: 'string', multiple: true },
          help: { type: 'boolean', short: 'h' }
        }
      })
      if (values.help === true) { out.stdout(HELP.revoke); return 'help' }
      const dir = required(values.dir, '--dir')
      const name = values.name
      const peerId = values['peer-id']
      if ((name === undefined) === (peerId === undefined)) {
        throw new UsageError('give exactly one of --name or --peer-id')
      }
      if (name === '' || peerId === '') throw new UsageError(`${name === '' ? '--name' : '--peer-id'} is empty`)
      const bundles = values.bundle ?? []
      return async () => {
        const selector = name !== undefined ? { name } : { peerId: peerId as string }
        const result = await revoke(dir, selector, { bundles })
        if (result.revoked.length === 0) {
          out.stdout(`nothing to revoke: every certificate of ${name ?? peerId ?? ''} is already revoked (revocation list ${result.crlNumber})\n`)
        }
        for (const r of result.revoked) {
          out.stdout(`revoked ${r.name} (peer ${r.peerId}, serial ${r.serial})\n`)
        }
        if (result.revoked.length > 0) {
          out.stdout(`wrote revocation list ${result.crlNumber} to ${join(dir, CA_FILES.crl)}\n`)
        }
        for (const b of result.bundles) out.stdout(`updated ${join(b, 'crl.json')}\n`)
      }
    }
    case 'list': {
      const { values } = parseArgs({
        args,
        strict: true,
        allowPositionals: false,
        options: { dir: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }
      })
      if (values.help === true) { out.stdout(HELP.list); return 'help' }
      const dir = required(values.dir, '--dir')
      const json = values.json === true
      return async () => {
        const issued = await listIssued(dir)
        if (json) {
          out.stdout(JSON.stringify(issued, null, 2) + '\n')
        } else if (issued.length === 0) {
          out.stdout(`no certificates issued by the CA in ${dir}\n`)
        } else {
          out.stdout(table(issued, new Date()))
        }
      }
    }
  }
}

/** Error messages go out as one line, whatever their source put in them. */
function oneLine (message: string): string {
  return message.split('\n').map(s => s.trim()).filter(s => s !== '').join(' ')
}

function required (value: string | undefined, option: string): string {
  if (value === undefined || value === '') throw new UsageError(`${option} is required`)
  return value
}

function parseDays (text: string): number {
  if (!/^[0-9]+$/.test(text) || Number(text) < 1 || !Number.isSafeInteger(Number(text))) {
    throw new UsageError(`--days must be a positive whole number of days, not "${text}"`)
  }
  return Number(text)
}

function isParseArgsError (err: unknown): boolean {
  const code = (err as { code?: unknown })?.code
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_')
}

/** ISO 8601 without milliseconds: 2027-01-31T12:00:00Z. */
function isoSeconds (iso: string): string {
  return new Date(iso).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

function status (c: IssuedCertificate, now: Date): string {
  if (c.revoked) return 'revoked'
  if (now.getTime() > new Date(c.notAfter).getTime()) return 'expired'
  if (now.getTime() < new Date(c.notBefore).getTime()) return 'not-yet-valid'
  return 'valid'
}

/** Columns padded to their widest cell, two spaces apart; the last column is not padded. */
function table (issued: IssuedCertificate[], now: Date): string {
  const rows = [
    ['NAME', 'ROLE', 'PEER-ID', 'EXPIRES', 'STATUS'],
    ...issued.map(c => [c.name, c.role, c.peerId, isoSeconds(c.notAfter), status(c, now)])
  ]
  const widths = rows[0].map((_, i) => Math.max(...rows.map(r => r[i].length)))
  return rows.map(r => r.map((cell, i) => i === r.length - 1 ? cell : cell.padEnd(widths[i])).join('  ')).join('\n') + '\n'
}
