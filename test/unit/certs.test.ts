/**
 * Unit tests of the mesh CA (certs/): issuing, verifying (every rejection by its error class),
 * revocation lists, bundles and the `goto ca` CLI. One CA is shared by the suites, because RSA key
 * generation is the slow part; crafted certificates are built here with node-forge and signed with
 * node:crypto.
 */
import '../../protocol/polyfill.js'
import { expect } from 'chai'
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync, sign } from 'node:crypto'
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import forge from 'node-forge'
import {
  BundleError,
  CertificateExpiredError,
  CertificateMalformedError,
  CertificateNotLeafError,
  CertificateNotYetValidError,
  CertificatePeerMismatchError,
  CertificateRevokedError,
  CertificateUntrustedError,
  ConfigError,
  RevocationListInvalidError,
  RoleNotAllowedError
} from '../../protocol/errors.js'
import {
  TrustStore, initCa, issueCertificate, listIssued, readBundle, readCaCrl, revoke, runCaCommand, writeCrl
} from '../../certs/index.js'
import type { IssuedInfo, SignedCrl } from '../../certs/index.js'

const DAY = 86_400_000
const MINUTE = 60_000

/** Runs fn and returns what it threw; fails the test if it did not throw. */
function thrown (fn: () => unknown): unknown {
  try {
    fn()
  } catch (err) {
    return err
  }
  expect.fail('expected an error to be thrown')
}

async function rejected (p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  expect.fail('expected the promise to reject')
}

const readText = async (path: string): Promise<string> => await readFile(path, 'utf8')

interface CraftOptions {
  /** PEM private key (RSA) that signs the certificate. */
  signerKeyPem: string
  issuer: forge.pki.CertificateField[]
  cn: string
  ou?: string
  cA: boolean
  sanPeerId?: string
  /** Raw Ed25519 public key for the SPKI; without it the certificate holds `rsaPublicKey`. */
  ed25519Raw?: Uint8Array
  rsaPublicKey: forge.pki.PublicKey
  notBefore?: Date
  notAfter?: Date
}

/** Builds any certificate the tests need, signing the TBSCertificate with node:crypto. */
function craftCert (o: CraftOptions): string {
  const cert = forge.pki.createCertificate()
  cert.serialNumber = '4' + forge.util.bytesToHex(forge.random.getBytesSync(15)).slice(1)
  cert.validity.notBefore = o.notBefore ?? new Date(Date.now() - DAY)
  cert.validity.notAfter = o.notAfter ?? new Date(Date.now() + DAY)
  const subject: forge.pki.CertificateField[] = [{ shortName: 'CN', value: o.cn }]
  if (o.ou !== undefined) subject.push({ shortName: 'OU', value: o.ou })
  subject.push({ shortName: 'O', value: 'Go-To' })
  cert.setSubject(subject)
  cert.setIssuer(o.issuer)
  cert.publicKey = o.rsaPublicKey
  const extensions: any[] = [
    { name: 'basicConstraints', cA: o.cA, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyCertSign: o.cA, critical: true }
  ]
  if (o.sanPeerId !== undefined) {
    extensions.push({ name: 'subjectAltName', altNames: [{ type: 6, value: `urn:goto:peer:${o.sanPeerId}` }] })
  }
  cert.setExtensions(extensions)
  cert.siginfo.algorithmOid = forge.pki.oids.sha256WithRSAEncryption
  cert.signatureOid = forge.pki.oids.sha256WithRSAEncryption
  const tbs = (forge.pki as unknown as { getTBSCertificate: (c: forge.pki.Certificate) => forge.asn1.Asn1 }).getTBSCertificate(cert)
  if (o.ed25519Raw !== undefined) {
    const der = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(o.ed25519Raw).toString('base64url') }, format: 'jwk'
    }).export({ type: 'spki', format: 'der' })
    ;(tbs.value as forge.asn1.Asn1[])[6] = forge.asn1.fromDer(der.toString('binary'))
  }
  const signature = sign('sha256', Buffer.from(forge.asn1.toDer(tbs).getBytes(), 'binary'), createPrivateKey(o.signerKeyPem))
  const c = cert as forge.pki.Certificate & { tbsCertificate: forge.asn1.Asn1, signature: string }
  c.tbsCertificate = tbs
  c.signature = signature.toString('binary')
  return forge.pki.certificateToPem(cert)
}

/** A fresh libp2p Ed25519 identity: its peer ID and raw public key. */
async function identity (): Promise<{ peerId: string, raw: Uint8Array }> {
  const key = await generateKeyPair('Ed25519')
  return { peerId: peerIdFromPrivateKey(key).toString(), raw: key.publicKey.raw }
}

/** A CRL signed by `keyPem` with any payload (to forge lists with wrong issuers). */
function signedCrl (keyPem: string, payload: object): SignedCrl {
  const text = JSON.stringify(payload)
  return { payload: text, signature: sign('sha256', Buffer.from(text), createPrivateKey(keyPem)).toString('base64') }
}

describe('certs', function () {
  let tmp: string
  let caDir: string
  let caPem: string
  let caKeyPem: string
  let caForge: forge.pki.Certificate
  let agent: IssuedInfo
  let agentPem: string
  let agent2: IssuedInfo
  let agent2Pem: string
  let operator: IssuedInfo
  let operatorPem: string
  let foreignDir: string

  before(async function () {
    tmp = await mkdtemp(join(tmpdir(), 'goto-certs-'))
    caDir = join(tmp, 'ca')
    foreignDir = join(tmp, 'foreign-ca')
    await Promise.all([initCa(caDir), initCa(foreignDir, { name: 'Other CA' })])
    caPem = await readText(join(caDir, 'ca.pem'))
    caKeyPem = await readText(join(caDir, 'ca.key'))
    caForge = forge.pki.certificateFromPem(caPem)
    agent = await issueCertificate(caDir, { role: 'agent', name: 'host-1', out: join(tmp, 'host-1') })
    agent2 = await issueCertificate(caDir, { role: 'agent', name: 'host-2', out: join(tmp, 'host-2') })
    operator = await issueCertificate(caDir, { role: 'operator', name: 'alice', out: join(tmp, 'alice') })
    agentPem = await readText(join(tmp, 'host-1', 'cert.pem'))
    agent2Pem = await readText(join(tmp, 'host-2', 'cert.pem'))
    operatorPem = await readText(join(tmp, 'alice', 'cert.pem'))
  })

  after(async function () {
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true })
  })

  describe('issuing', function () {
    it('creates a CA directory with a private key, a CA certificate, list number 1 and a register', async function () {
      expect((await stat(caDir)).mode & 0o777).to.equal(0o700)
      expect((await stat(join(caDir, 'ca.key'))).mode & 0o777).to.equal(0o600)
      expect((await readdir(caDir)).sort()).to.deep.equal(['ca.key', 'ca.pem', 'crl.json', 'issued.json'])
      const x = new X509Certificate(caPem)
      expect(x.ca).to.equal(true)
      expect(x.verify(x.publicKey)).to.equal(true)
      expect(x.subject).to.include('CN=Go-To mesh CA')
      const store = new TrustStore(caPem, await readCaCrl(caDir))
      expect(store.crlNumber).to.equal(1)
    })

    it('refuses to create a CA where one exists', async function () {
      expect(await rejected(initCa(caDir))).to.be.instanceOf(BundleError)
    })

    it('issues a certificate whose key is the peer\'s Ed25519 identity, signed by the CA', async function () {
      const x = new X509Certificate(agentPem)
      expect(x.publicKey.asymmetricKeyType).to.equal('ed25519')
      expect(x.verify(new X509Certificate(caPem).publicKey)).to.equal(true)
      expect(x.ca).to.equal(false)
      expect(x.subject.split('\n')).to.deep.equal(['CN=host-1', 'OU=agent', 'O=Go-To'])
      expect(x.subjectAltName).to.equal(`URI:urn:goto:peer:${agent.peerId}`)
      expect(x.serialNumber.toLowerCase()).to.equal(agent.serial)
      expect(agent.serial).to.match(/^[0-9a-f]{32}$/)
      const notAfterDays = (new Date(agent.notAfter).getTime() - Date.now()) / DAY
      expect(notAfterDays).to.be.within(364.9, 365.1)
    })

    it('writes a bundle directory with a private identity key', async function () {
      const dir = join(tmp, 'host-1')
      expect((await stat(dir)).mode & 0o777).to.equal(0o700)
      expect((await stat(join(dir, 'identity.key'))).mode & 0o777).to.equal(0o600)
      expect((await readdir(dir)).sort()).to.deep.equal(['bundle.json', 'ca.pem', 'cert.pem', 'crl.json', 'identity.key'])
      expect(JSON.parse(await readText(join(dir, 'bundle.json')))).to.deep.equal(agent)
      expect(await readText(join(dir, 'ca.pem'))).to.equal(caPem)
    })

    it('refuses an existing bundle and an invalid name', async function () {
      const err = await rejected(issueCertificate(caDir, { role: 'agent', name: 'host-9', out: join(tmp, 'host-1') }))
      expect(err).to.be.instanceOf(BundleError)
      expect((err as Error).message).to.include('refusing to overwrite')
      const bad = await rejected(issueCertificate(caDir, { role: 'agent', name: '-x', out: join(tmp, 'never') }))
      expect(bad).to.be.instanceOf(ConfigError)
      expect((bad as ConfigError).option).to.equal('--name')
      expect(await rejected(issueCertificate(caDir, { role: 'agent', name: 'a'.repeat(64), out: join(tmp, 'never') }))).to.be.instanceOf(ConfigError)
    })
  })

  describe('TrustStore.verify', function () {
    let store: TrustStore
    before(function () { store = new TrustStore(caPem) })

    it('accepts a good agent and a good operator certificate', function () {
      const a = store.verify(agentPem, agent.peerId)
      expect(a).to.deep.include({ name: 'host-1', role: 'agent', peerId: agent.peerId, serial: agent.serial })
      expect(a.notAfter.toISOString()).to.equal(agent.notAfter)
      const o = store.verify(operatorPem, operator.peerId)
      expect(o).to.deep.include({ name: 'alice', role: 'operator', peerId: operator.peerId })
    })

    it('refuses a certificate of a foreign CA', async function () {
      const other = await issueCertificate(foreignDir, { role: 'agent', name: 'host-1', out: join(tmp, 'foreign-host') })
      const pem = await readText(join(tmp, 'foreign-host', 'cert.pem'))
      expect(thrown(() => store.verify(pem, other.peerId))).to.be.instanceOf(CertificateUntrustedError)
    })

    it('refuses an expired certificate', async function () {
      const info = await issueCertificate(caDir, {
        role: 'agent', name: 'old', out: join(tmp, 'old'), notBefore: new Date(Date.now() - 4 * MINUTE), notAfter: new Date(Date.now() - 2 * MINUTE)
      })
      const pem = await readText(join(tmp, 'old', 'cert.pem'))
      expect(thrown(() => store.verify(pem, info.peerId))).to.be.instanceOf(CertificateExpiredError)
      // ... and the clock is what decides: the same certificate was fine in its window (which lies
      // inside the CA's, that starts 5 minutes before it was created).
      expect(store.verify(pem, info.peerId, new Date(Date.now() - 3 * MINUTE)).name).to.equal('old')
    })

    it('refuses a certificate that is not yet valid', async function () {
      const info = await issueCertificate(caDir, {
        role: 'agent', name: 'future', out: join(tmp, 'future'), notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 10 * DAY)
      })
      const pem = await readText(join(tmp, 'future', 'cert.pem'))
      expect(thrown(() => store.verify(pem, info.peerId))).to.be.instanceOf(CertificateNotYetValidError)
    })

    it('refuses a certificate signed by a leaf used as a CA', async function () {
      // A leaf with an RSA key, properly issued by the mesh CA ...
      const leafKeys = generateKeyPairSync('rsa', { modulusLength: 2048 })
      const leafKeyPem = leafKeys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
      const leafPublic = forge.pki.publicKeyFromPem(leafKeys.publicKey.export({ type: 'spki', format: 'pem' }).toString())
      const leafPeer = await identity()
      const leafPem = craftCert({
        signerKeyPem: caKeyPem, issuer: caForge.subject.attributes, cn: 'rogue', ou: 'agent', cA: false,
        sanPeerId: leafPeer.peerId, rsaPublicKey: leafPublic
      })
      expect(new X509Certificate(leafPem).verify(new X509Certificate(caPem).publicKey)).to.equal(true)
      // ... signs a child that is perfect in every other way.
      const child = await identity()
      const leafSubject = forge.pki.certificateFromPem(leafPem).subject.attributes
      const childPem = craftCert({
        signerKeyPem: leafKeyPem, issuer: leafSubject, cn: 'child', ou: 'operator', cA: false,
        sanPeerId: child.peerId, ed25519Raw: child.raw, rsaPublicKey: leafPublic
      })
      expect(new X509Certificate(childPem).verify(new X509Certificate(leafPem).publicKey)).to.equal(true)
      expect(thrown(() => store.verify(childPem, child.peerId))).to.be.instanceOf(CertificateUntrustedError)
      // Claiming the mesh CA as issuer does not help: the signature is the leaf's.
      const spoofPem = craftCert({
        signerKeyPem: leafKeyPem, issuer: caForge.subject.attributes, cn: 'child', ou: 'operator', cA: false,
        sanPeerId: child.peerId, ed25519Raw: child.raw, rsaPublicKey: leafPublic
      })
      expect(thrown(() => store.verify(spoofPem, child.peerId))).to.be.instanceOf(CertificateUntrustedError)
    })

    it('refuses a certificate naming a different peer ID (two agents\' certificates swapped)', function () {
      expect(thrown(() => store.verify(agentPem, agent2.peerId))).to.be.instanceOf(CertificatePeerMismatchError)
      expect(thrown(() => store.verify(agent2Pem, agent.peerId))).to.be.instanceOf(CertificatePeerMismatchError)
    })

    it('refuses a certificate whose key is not the peer ID it names', async function () {
      const other = await identity()
      const pem = craftCert({
        signerKeyPem: caKeyPem, issuer: caForge.subject.attributes, cn: 'host-1', ou: 'agent', cA: false,
        sanPeerId: agent.peerId, ed25519Raw: other.raw, rsaPublicKey: caForge.publicKey as forge.pki.PublicKey
      })
      expect(thrown(() => store.verify(pem, agent.peerId))).to.be.instanceOf(CertificatePeerMismatchError)
      expect(thrown(() => store.verify(pem, other.peerId))).to.be.instanceOf(CertificatePeerMismatchError)
    })

    it('refuses a certificate whose signature was tampered with', function () {
      const der = Buffer.from(new X509Certificate(agentPem).raw)
      der[der.length - 10] ^= 0x01 // inside the signature BIT STRING, the last field
      const pem = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`
      expect(thrown(() => store.verify(pem, agent.peerId))).to.be.instanceOf(CertificateUntrustedError)
    })

    it('refuses a CA certificate presented as a leaf', async function () {
      const peer = await identity()
      const subCaPem = craftCert({
        signerKeyPem: caKeyPem, issuer: caForge.subject.attributes, cn: 'sub-ca', ou: 'agent', cA: true,
        sanPeerId: peer.peerId, ed25519Raw: peer.raw, rsaPublicKey: caForge.publicKey as forge.pki.PublicKey
      })
      expect(thrown(() => store.verify(subCaPem, peer.peerId))).to.be.instanceOf(CertificateNotLeafError)
      // The mesh CA certificate itself lacks the Go-To fields, so it never gets that far.
      expect(thrown(() => store.verify(caPem, agent.peerId))).to.be.instanceOf(CertificateMalformedError)
    })

    it('refuses garbage and an unknown role as malformed', async function () {
      expect(thrown(() => store.verify('not a certificate', agent.peerId))).to.be.instanceOf(CertificateMalformedError)
      const peer = await identity()
      const pem = craftCert({
        signerKeyPem: caKeyPem, issuer: caForge.subject.attributes, cn: 'boss', ou: 'admin', cA: false,
        sanPeerId: peer.peerId, ed25519Raw: peer.raw, rsaPublicKey: caForge.publicKey as forge.pki.PublicKey
      })
      expect(thrown(() => store.verify(pem, peer.peerId))).to.be.instanceOf(CertificateMalformedError)
    })

    it('allows operator-only calls to operators only', function () {
      const a = store.verify(agentPem, agent.peerId)
      const o = store.verify(operatorPem, operator.peerId)
      const err = thrown(() => store.requireRole(a, ['operator'], 'move'))
      expect(err).to.be.instanceOf(RoleNotAllowedError)
      expect((err as Error).message).to.include('agent').and.include('move')
      expect(() => store.requireRole(o, ['operator'], 'move')).not.to.throw()
      expect(() => store.requireRole(a, ['agent', 'operator'], 'status')).not.to.throw()
    })

    it('refuses a CA certificate that is not a CA, or not self-signed', function () {
      expect(thrown(() => new TrustStore(agentPem))).to.be.instanceOf(CertificateUntrustedError)
      expect(thrown(() => new TrustStore('garbage'))).to.be.instanceOf(BundleError)
    })
  })

  describe('revocation', function () {
    let victim: IssuedInfo
    let victimPem: string
    let firstCrl: SignedCrl

    before(async function () {
      victim = await issueCertificate(caDir, { role: 'agent', name: 'victim', out: join(tmp, 'victim') })
      victimPem = await readText(join(tmp, 'victim', 'cert.pem'))
      firstCrl = await readCaCrl(caDir)
    })

    it('refuses a revoked certificate once the new list is adopted', async function () {
      const store = new TrustStore(caPem, firstCrl)
      expect(store.verify(victimPem, victim.peerId).name).to.equal('victim')
      const result = await revoke(caDir, { name: 'victim' }, { bundles: [join(tmp, 'host-1')] })
      expect(result.revoked.map(r => r.serial)).to.deep.equal([victim.serial])
      expect(result.crlNumber).to.equal(JSON.parse(firstCrl.payload).number + 1)
      const crl = await readCaCrl(caDir)
      expect(store.adoptCrl(crl)).to.equal(true)
      expect(store.crlNumber).to.equal(result.crlNumber)
      expect(store.isRevoked(victim.peerId)).to.equal(true)
      expect(thrown(() => store.verify(victimPem, victim.peerId))).to.be.instanceOf(CertificateRevokedError)
      expect(store.verify(agentPem, agent.peerId).name).to.equal('host-1')
      // The bundle got the same list, and the register shows it.
      expect(JSON.parse(await readText(join(tmp, 'host-1', 'crl.json')))).to.deep.equal(crl)
      const listed = (await listIssued(caDir)).find(c => c.name === 'victim')
      expect(listed).to.deep.include({ revoked: true, peerId: victim.peerId })
      expect(listed?.revokedAt).to.be.a('string')
    })

    it('does not adopt an older list, nor the same one twice', async function () {
      const store = new TrustStore(caPem, await readCaCrl(caDir))
      const n = store.crlNumber
      expect(store.adoptCrl(firstCrl)).to.equal(false)
      expect(store.adoptCrl(await readCaCrl(caDir))).to.equal(false)
      expect(store.crlNumber).to.equal(n)
    })

    it('refuses a list with a bad signature, from another CA, or naming another issuer', async function () {
      const store = new TrustStore(caPem)
      const good = await readCaCrl(caDir)
      const payload = JSON.parse(good.payload)
      const tampered = { payload: JSON.stringify({ ...payload, number: payload.number + 5 }), signature: good.signature }
      expect(thrown(() => store.adoptCrl(tampered))).to.be.instanceOf(RevocationListInvalidError)
      const foreign = await readCaCrl(foreignDir)
      expect(thrown(() => store.adoptCrl(foreign))).to.be.instanceOf(RevocationListInvalidError)
      const wrongIssuer = signedCrl(caKeyPem, { ...payload, issuer: new X509Certificate(await readText(join(foreignDir, 'ca.pem'))).fingerprint256 })
      expect(thrown(() => store.adoptCrl(wrongIssuer))).to.be.instanceOf(RevocationListInvalidError)
      expect(thrown(() => store.adoptCrl({ payload: 1 }))).to.be.instanceOf(RevocationListInvalidError)
      expect(thrown(() => store.adoptCrl(null))).to.be.instanceOf(RevocationListInvalidError)
      expect(store.crlNumber).to.equal(0)
      expect(store.crl).to.equal(undefined)
    })

    it('refuses to revoke a name that was never issued', async function () {
      const err = await rejected(revoke(caDir, { name: 'nobody' }))
      expect(err).to.be.instanceOf(ConfigError)
      expect((err as ConfigError).option).to.equal('--name')
      expect(await rejected(revoke(caDir, { peerId: agent.peerId + 'x' }))).to.be.instanceOf(ConfigError)
    })
  })

  describe('bundles', function () {
    it('reads a bundle whose key, certificate and CA agree', async function () {
      const b = await readBundle(join(tmp, 'alice'))
      expect(b).to.deep.include({ name: 'alice', role: 'operator', peerId: operator.peerId, caCertPem: caPem, certPem: operatorPem })
      expect(peerIdFromPrivateKey(b.privateKey).toString()).to.equal(operator.peerId)
      expect(b.crl).to.have.keys('payload', 'signature')
    })

    it('refuses an identity key readable by others', async function () {
      const dir = join(tmp, 'alice')
      await chmod(join(dir, 'identity.key'), 0o644)
      try {
        const err = await rejected(readBundle(dir))
        expect(err).to.be.instanceOf(BundleError)
        expect((err as Error).message).to.include('chmod 600')
      } finally {
        await chmod(join(dir, 'identity.key'), 0o600)
      }
    })

    it('refuses a key that is not the certificate\'s, and names a missing file', async function () {
      const dir = join(tmp, 'mixed')
      await mkdir(dir, { mode: 0o700 })
      for (const f of ['cert.pem', 'ca.pem', 'crl.json']) await copyFile(join(tmp, 'host-1', f), join(dir, f))
      await copyFile(join(tmp, 'host-2', 'identity.key'), join(dir, 'identity.key'))
      await chmod(join(dir, 'identity.key'), 0o600)
      expect(await rejected(readBundle(dir))).to.be.instanceOf(BundleError)
      await rm(join(dir, 'cert.pem'))
      const err = await rejected(readBundle(dir))
      expect(err).to.be.instanceOf(BundleError)
      expect((err as Error).message).to.include('cert.pem')
    })

    it('writes a newer revocation list into a bundle', async function () {
      const crl = await readCaCrl(caDir)
      await writeCrl(join(tmp, 'host-2'), crl)
      expect((await readBundle(join(tmp, 'host-2'))).crl).to.deep.equal(crl)
    })
  })

  describe('goto ca', function () {
    let cliDir: string
    async function run (...argv: string[]): Promise<{ code: number, out: string, err: string }> {
      let out = ''
      let err = ''
      const code = await runCaCommand(argv, { stdout: s => { out += s }, stderr: s => { err += s } })
      return { code, out, err }
    }

    before(async function () {
      cliDir = join(tmp, 'cli')
    })

    it('init, issue, revoke and list', async function () {
      const ca = join(cliDir, 'ca')
      let r = await run('init', '--dir', ca, '--name', 'Test CA', '--days', '30')
      expect(r.code, r.err).to.equal(0)
      expect(r.out).to.match(/^created CA "Test CA" in .*\n$/)
      expect((await run('init', '--dir', ca)).code).to.equal(1)

      r = await run('issue', '--dir', ca, '--role', 'agent', '--name', 'node-a', '--out', join(cliDir, 'node-a'))
      expect(r.code, r.err).to.equal(0)
      expect(r.out).to.match(/^issued agent certificate for node-a \(peer 12D3KooW\w+, serial [0-9a-f]{32}, valid until .*\) in .*\n$/)
      r = await run('issue', '--dir', ca, '--role', 'operator', '--name', 'ops', '--out', join(cliDir, 'ops'), '--days', '7')
      expect(r.code, r.err).to.equal(0)

      r = await run('issue', '--dir', ca, '--role', 'agent', '--name', 'node-b', '--out', join(cliDir, 'node-a'))
      expect(r.code).to.equal(1)
      expect(r.err).to.match(/^error: .*node-a already exists.*\n$/)

      const peerId = JSON.parse(await readText(join(cliDir, 'node-a', 'bundle.json'))).peerId as string
      r = await run('revoke', '--dir', ca, '--peer-id', peerId, '--bundle', join(cliDir, 'ops'))
      expect(r.code, r.err).to.equal(0)
      expect(r.out.split('\n')[0]).to.equal(`revoked node-a (peer ${peerId}, serial ${JSON.parse(await readText(join(cliDir, 'node-a', 'bundle.json'))).serial as string})`)
      expect(r.out).to.include('revocation list 2')
      expect((await readBundle(join(cliDir, 'ops'))).crl).to.deep.equal(await readCaCrl(ca))

      r = await run('revoke', '--dir', ca, '--name', 'ghost')
      expect(r.code).to.equal(1)
      expect(r.err).to.match(/^error: --name: no certificate .*ghost.*\n$/)

      r = await run('list', '--dir', ca)
      expect(r.code, r.err).to.equal(0)
      const lines = r.out.trimEnd().split('\n')
      expect(lines).to.have.length(3)
      expect(lines[0]).to.match(/^NAME\s+ROLE\s+PEER-ID\s+EXPIRES\s+STATUS$/)
      expect(lines[1]).to.match(/^node-a\s+agent\s+12D3KooW\w+\s+\S+Z\s+revoked$/)
      expect(lines[2]).to.match(/^ops\s+operator\s+12D3KooW\w+\s+\S+Z\s+valid$/)
      expect(lines[1].indexOf('12D3')).to.equal(lines[2].indexOf('12D3'))

      r = await run('list', '--dir', ca, '--json')
      expect(r.code).to.equal(0)
      const listed = JSON.parse(r.out)
      expect(listed.map((c: { name: string, revoked: boolean }) => [c.name, c.revoked])).to.deep.equal([['node-a', true], ['ops', false]])
    })

    it('returns 2 with one line naming the option for usage errors', async function () {
      const ca = join(cliDir, 'ca')
      let r = await run('issue', '--dir', ca, '--role', 'admin', '--name', 'x', '--out', join(cliDir, 'x'))
      expect(r.code).to.equal(2)
      expect(r.err).to.match(/^error: .*--role.*\n$/)
      r = await run('issue', '--dir', ca, '--role', 'agent', '--name', 'bad name', '--out', join(cliDir, 'x'))
      expect(r.code).to.equal(2)
      expect(r.err).to.match(/^error: .*--name.*\n$/)
      r = await run('issue', '--dir', ca, '--role', 'agent', '--name', 'x', '--out', join(cliDir, 'x'), '--days', 'soon')
      expect(r.code).to.equal(2)
      expect(r.err).to.include('--days')
      r = await run('revoke', '--dir', ca, '--name', 'a', '--peer-id', 'b')
      expect(r.code).to.equal(2)
      r = await run('list', '--dir', ca, '--bogus')
      expect(r.code).to.equal(2)
      expect(r.err.trimEnd().split('\n')).to.have.length(1)
      r = await run('frobnicate')
      expect(r.code).to.equal(2)
      expect(await readdir(cliDir)).not.to.include('x')
    })

    it('prints help for each command', async function () {
      for (const cmd of ['init', 'issue', 'revoke', 'list']) {
        const r = await run(cmd, '--help')
        expect(r.code).to.equal(0)
        expect(r.out).to.match(new RegExp(`^usage: goto ca ${cmd} `))
      }
      expect((await run('--help')).out).to.include('commands:')
    })
  })
})
