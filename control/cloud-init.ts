/**
 * `goto cloud-init`: user-data that turns a fresh Ubuntu VM (EC2, Azure, anything running
 * cloud-init) into a mesh member. It carries the host's bundle, issued here from the CA (the CA key
 * stays on this machine), and install/provision.sh; its runcmd runs that script, which installs
 * Docker and Node.js if missing, fetches the release from an operator-given URL (EC2 limits
 * user-data to 16 KiB, so the release cannot travel inside it), checks its sha256 and runs
 * goto-install.sh — the same script `goto install` and the Vagrant provisioner use.
 */
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { BUNDLE_FILES, issueCertificate, readCaCrl } from '../certs/index.js'
import { INSTALL_DIR } from './install.js'

/** EC2's limit on user-data (Azure's custom data allows 64 KiB); the output is checked against it. */
export const USER_DATA_LIMIT_BYTES = 16_384
/** Where cloud-init writes the provisioning script and the bundle (inside the agent's state dir, 0700 after install). */
export const INCOMING_DIR = '/var/lib/goto/incoming'

export interface CloudInitOptions {
  caDir: string
  name: string
  days?: number
  releaseUrl: string
  sha256: string
  /** Options for goto-install.sh install: --label, --bootstrap, --announce, --listen, --docker, --supervisor. */
  agentArgs: string[]
}

export interface UserData { text: string, peerId: string, bytes: number }

/** A YAML double-quoted scalar: JSON strings are valid YAML. */
const q = (s: string): string => JSON.stringify(s)

function writeFileEntry (path: string, data: Buffer, permissions: string): string {
  return [
    `  - path: ${q(path)}`,
    `    permissions: ${q(permissions)}`,
    '    owner: "root:root"',
    '    encoding: b64',
    `    content: ${data.toString('base64')}`
  ].join('\n')
}

export async function cloudInitUserData (o: CloudInitOptions): Promise<UserData> {
  await readCaCrl(o.caDir)
  const provision = await readFile(join(INSTALL_DIR, 'provision.sh'))
  const local = await mkdtemp(join(tmpdir(), 'goto-cloud-init-'))
  try {
    const dir = join(local, 'bundle')
    const info = await issueCertificate(o.caDir, { role: 'agent', name: o.name, out: dir, days: o.days })
    const files = [writeFileEntry(`${INCOMING_DIR}/provision.sh`, provision, '0700')]
    for (const f of (await readdir(dir)).sort()) {
      files.push(writeFileEntry(`${INCOMING_DIR}/bundle/${f}`, await readFile(join(dir, f)), f === BUNDLE_FILES.identity ? '0600' : '0644'))
    }
    const cmd = [
      'sh', `${INCOMING_DIR}/provision.sh`,
      '--release', o.releaseUrl, '--sha256', o.sha256,
      '--bundle', `${INCOMING_DIR}/bundle`, '--delete-bundle',
      '--name', o.name, ...o.agentArgs
    ]
    const text = [
      '#cloud-config',
      `# Go-To: makes this VM the mesh member ${o.name} (peer ${info.peerId}), made by goto cloud-init.`,
      '# It holds that member\'s private key: treat this user-data as a secret (see docs/clouds.md).',
      'write_files:',
      ...files,
      'runcmd:',
      `  - [${cmd.map(q).join(', ')}]`,
      ''
    ].join('\n')
    return { text, peerId: info.peerId, bytes: Buffer.byteLength(text) }
  } finally {
    await rm(local, { recursive: true, force: true })
  }
}
