/**
 * Host key decisions for goto install: known_hosts entries (plain, [host]:port, wildcards, negation,
 * hashed, @revoked), --host-key and --accept-new-host-key, and the messages that say how to check.
 */
import { expect } from 'chai'
import { createHmac, randomBytes } from 'node:crypto'
import { decideHostKey, entryMatches, fingerprint, keyTypeOf, knownKeyTypes, parseKnownHosts, type HostKeyPolicy } from '../../control/known-hosts.js'

/** An SSH public key blob: string type, then key bytes (enough for what the checks read). */
function blob (type: string, seed = randomBytes(32)): Buffer {
  const t = Buffer.from(type)
  const len = Buffer.alloc(4); len.writeUInt32BE(t.length)
  const klen = Buffer.alloc(4); klen.writeUInt32BE(seed.length)
  return Buffer.concat([len, t, klen, seed])
}

const policy = (o: Partial<HostKeyPolicy> = {}): HostKeyPolicy => ({ knownHostsFile: '/home/op/.ssh/known_hosts', acceptNew: false, ...o })

describe('known_hosts and host key decisions', () => {
  const key = blob('ssh-ed25519')
  const other = blob('ssh-ed25519')
  const line = (hosts: string, k = key): string => `${hosts} ssh-ed25519 ${k.toString('base64')}`

  it('fingerprints like ssh-keygen -l and reads the key type from the blob', () => {
    expect(fingerprint(key)).to.match(/^SHA256:[A-Za-z0-9+/]{43}$/)
    expect(keyTypeOf(key)).to.equal('ssh-ed25519')
    expect(keyTypeOf(Buffer.alloc(2))).to.equal('unknown')
  })

  it('matches plain, [host]:port, wildcard and negated patterns', () => {
    const [plain, ported, wild] = parseKnownHosts([line('a.example,10.0.0.5'), line('[10.0.0.5]:2222'), line('*.example,!bad.example'), '# comment', 'garbage'].join('\n'))
    expect(entryMatches(plain, '10.0.0.5', 22)).to.equal(true)
    expect(entryMatches(plain, '10.0.0.5', 2222)).to.equal(false)
    expect(entryMatches(ported, '10.0.0.5', 2222)).to.equal(true)
    expect(entryMatches(wild, 'b.example', 22)).to.equal(true)
    expect(entryMatches(wild, 'bad.example', 22)).to.equal(false)
  })

  it('matches hashed entries (HashKnownHosts) by HMAC-SHA1 of the host name', () => {
    const salt = randomBytes(20)
    const hash = createHmac('sha1', salt).update('[10.0.0.7]:2200').digest('base64')
    const [e] = parseKnownHosts(line(`|1|${salt.toString('base64')}|${hash}`))
    expect(entryMatches(e, '10.0.0.7', 2200)).to.equal(true)
    expect(entryMatches(e, '10.0.0.7', 22)).to.equal(false)
    expect(decideHostKey([e], '10.0.0.7', 2200, key, policy())).to.deep.include({ ok: true })
  })

  it('accepts the known key, refuses a changed one with both fingerprints and how to check', () => {
    const entries = parseKnownHosts(line('10.0.0.5'))
    expect(decideHostKey(entries, '10.0.0.5', 22, key, policy())).to.deep.include({ ok: true, how: 'matches /home/op/.ssh/known_hosts:1' })
    const d = decideHostKey(entries, '10.0.0.5', 22, other, policy({ acceptNew: true }))
    expect(d.ok).to.equal(false)
    if (d.ok) return
    expect(d.error.name).to.equal('HostKeyMismatchError')
    expect(d.error.message).to.contain('CHANGED').and.to.contain(fingerprint(other)).and.to.contain(fingerprint(key)).and.to.contain('ssh-keygen -lf')
  })

  it('refuses an unknown key unless --accept-new-host-key, which remembers it', () => {
    const d = decideHostKey([], '10.0.0.9', 22, key, policy())
    expect(d.ok).to.equal(false)
    if (!d.ok) {
      expect(d.error.name).to.equal('HostKeyUnknownError')
      expect(d.error.message).to.contain(`--host-key ${fingerprint(key)}`).and.to.contain('ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub')
    }
    const ok = decideHostKey([], '10.0.0.9', 2222, key, policy({ acceptNew: true }))
    expect(ok).to.deep.include({ ok: true, remember: `[10.0.0.9]:2222 ssh-ed25519 ${key.toString('base64')}` })
  })

  it('--host-key decides alone: its key is accepted, any other refused', () => {
    const entries = parseKnownHosts(line('10.0.0.5', other))
    expect(decideHostKey(entries, '10.0.0.5', 22, key, policy({ fingerprint: fingerprint(key) }))).to.deep.include({ ok: true })
    const d = decideHostKey([], '10.0.0.5', 22, other, policy({ fingerprint: fingerprint(key) }))
    expect(d.ok === false && d.error.name).to.equal('HostKeyMismatchError')
  })

  it('refuses a key marked @revoked and asks for known key types first', () => {
    const entries = parseKnownHosts([`@revoked ${line('10.0.0.5')}`, `10.0.0.5 ecdsa-sha2-nistp256 ${blob('ecdsa-sha2-nistp256').toString('base64')}`].join('\n'))
    const d = decideHostKey(entries, '10.0.0.5', 22, key, policy({ acceptNew: true }))
    expect(d.ok === false && d.error.message).to.contain('@revoked')
    expect(knownKeyTypes(entries, '10.0.0.5', 22)).to.deep.equal(['ecdsa-sha2-nistp256'])
  })
})
