/**
 * The fidelity table (protocol/fidelity.ts) against real `docker inspect` output of Engine 20.10
 * (test/fixtures/inspect-20.10.ts): every field is classified, what is carried and refused for the
 * container of issue 12 and one with every host power, unknown set fields refused by name, zero
 * values passing; the destination's parser (parseSpec) refusing what the table does not carry;
 * the create body carrying the settings; and docs/operations.md holding exactly the table.
 */
import { expect } from 'chai'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import {
  CONFIG_RULES, ENDPOINT_RULES, HOST_CONFIG_RULES, INSPECT_RULES, NETWORK_DEFINITION_RULES, NETWORK_RULES, fidelityTableMarkdown, hostPowersOf, judgeContainer,
  type EngineNetwork, type InspectSections
} from '../../protocol/fidelity.js'
import { parseSpec } from '../../protocol/move-messages.js'
import { specDigest } from '../../protocol/orders.js'
import { containerInfoFromInspect, createBody, imageRefOf, specFromInspect, type EngineContainer } from '../../agent/docker/spec.js'
import { INSPECT_FULL, INSPECT_PLAIN, INSPECT_POWERS, INSPECT_SIDECAR } from '../fixtures/inspect-20.10.js'
import { unprotectable } from '../../agent/failover/snapshotter.js'

const ALL = { plain: INSPECT_PLAIN, full: INSPECT_FULL, powers: INSPECT_POWERS, sidecar: INSPECT_SIDECAR }
/** `docker network inspect appnet` of that engine (`docker network create appnet`), the network INSPECT_FULL is on. */
const APPNET: EngineNetwork = {
  Name: 'appnet', Id: '9cec60ec7dcbdccebf85e63c085ec570acc89c90341bea0d019a218f5b6ae74c', Created: '2026-12-02T01:58:40.1Z', Scope: 'local', Driver: 'bridge',
  EnableIPv6: false, IPAM: { Driver: 'default', Options: {}, Config: [{ Subnet: '172.18.0.0/16', Gateway: '172.18.0.1' }] }, Internal: false, Attachable: false,
  Ingress: false, ConfigFrom: { Network: '' }, ConfigOnly: false, Containers: { '439cb62f2519': { Name: 'full' } }, Options: {}, Labels: {}
}

const DOCS = fileURLToPath(new URL('../../../docs/operations.md', import.meta.url))

/** The full container without its user network, as if it ran on the default bridge. */
function onBridge (c: typeof INSPECT_FULL): EngineContainer {
  const copy = structuredClone(c) as unknown as EngineContainer & { NetworkSettings: { Networks: Record<string, unknown> } }
  ;(copy.HostConfig as Record<string, unknown>).NetworkMode = 'default'
  copy.NetworkSettings.Networks = { bridge: {} }
  return copy
}

describe('fidelity table (protocol/fidelity.ts) on Engine 20.10 inspect output', () => {
  it('classifies every field of real inspect output: top level, Config, HostConfig, NetworkSettings', () => {
    for (const [name, c] of Object.entries(ALL)) {
      const unknown = [
        ...Object.keys(c).filter(k => !Object.hasOwn(INSPECT_RULES, k)),
        ...Object.keys(c.Config).filter(k => !Object.hasOwn(CONFIG_RULES, k)).map(k => `Config.${k}`),
        ...Object.keys(c.HostConfig).filter(k => !Object.hasOwn(HOST_CONFIG_RULES, k)).map(k => `HostConfig.${k}`),
        ...Object.keys(c.NetworkSettings).filter(k => !Object.hasOwn(NETWORK_RULES, k)).map(k => `NetworkSettings.${k}`)
      ]
      expect(unknown, name).to.deep.equal([])
    }
  })

  it('a plain container: nothing refused, no host power, its defaults not carried', () => {
    const j = judgeContainer(INSPECT_PLAIN as InspectSections)
    expect(j.refused).to.deep.equal([])
    expect(j.hostPowers).to.deep.equal([])
    expect(j.engine.hostConfig).to.deep.equal({ LogConfig: { Type: 'json-file', Config: {} }, IpcMode: 'private', ShmSize: 67108864 })
    expect(j.engine.config).to.deep.equal({})
  })

  it('the container of issue 12: every setting carried, CapAdd a host power, its user network translated with its definition', () => {
    const j = judgeContainer(INSPECT_FULL as InspectSections, { appnet: APPNET })
    expect(j.refused).to.deep.equal([])
    expect(j.primaryNetwork).to.equal('appnet')
    expect(j.networks).to.deep.equal([{
      network: { name: 'appnet', driver: 'bridge', options: {}, labels: {}, subnets: [{ subnet: '172.18.0.0/16', gateway: '172.18.0.1', ipRange: '' }], internal: false, attachable: false, enableIPv6: false },
      // Not the engine's own alias, the short container ID (the destination's engine adds the new one's).
      aliases: ['svc', 'fullhost'],
      ipv4Address: '',
      ipv6Address: ''
    }])
    expect(j.hostPowers).to.deep.equal(['HostConfig.CapAdd'])
    expect(j.engine.config).to.deep.equal({
      Domainname: 'dom.ex', Tty: true, OpenStdin: true, Healthcheck: { Test: ['CMD-SHELL', 'true'], Interval: 5000000000 }, StopSignal: 'SIGINT', StopTimeout: 7
    })
    expect(j.engine.hostConfig).to.deep.include({
      Memory: 67108864, MemorySwap: 134217728, CpuShares: 512, NanoCpus: 500000000, CpusetCpus: '0', PidsLimit: 100,
      CapAdd: ['CAP_SYS_TIME'], CapDrop: ['CAP_NET_RAW'], Init: true, ExtraHosts: ['db.internal:10.9.9.9'], ReadonlyRootfs: true,
      Tmpfs: { '/run': '', '/scratch': 'size=1m' }, ShmSize: 33554432, Ulimits: [{ Name: 'nofile', Hard: 2048, Soft: 1024 }],
      Dns: ['1.1.1.1'], DnsOptions: ['ndots:2'], DnsSearch: ['ex.com'], LogConfig: { Type: 'json-file', Config: { 'max-size': '1m' } }
    })
    // Carried as spec fields, not as is: they must not appear twice.
    for (const k of ['Binds', 'PortBindings', 'RestartPolicy', 'NetworkMode']) expect(j.engine.hostConfig, k).to.not.have.property(k)
    // A network whose definition the engine did not give is refused by the network's name.
    const info = containerInfoFromInspect(INSPECT_FULL as unknown as EngineContainer)
    expect(info.fidelity?.refused.map(r => r.field)).to.deep.equal(['NetworkSettings.Networks.appnet'])
    expect(info.spec.imageRef).to.equal('gotolab/base:latest')
    const spec = specFromInspect(INSPECT_FULL as unknown as EngineContainer, { appnet: APPNET })
    expect(spec.primaryNetwork).to.equal('appnet')
    const body = createBody(spec) as { HostConfig: Record<string, unknown>, NetworkingConfig: unknown }
    expect(body.HostConfig.NetworkMode).to.equal('appnet')
    expect(body.NetworkingConfig).to.deep.equal({ EndpointsConfig: { appnet: { Aliases: ['svc', 'fullhost'] } } })
    expect(parseSpec(JSON.parse(JSON.stringify(spec)))).to.deep.equal(spec)
  })

  it('user networks: other drivers, host-bound options, links and an unknown field are refused by name; a static address travels', () => {
    const on = (def: EngineNetwork, endpoint: Record<string, unknown> = {}): string[] => {
      const c = structuredClone(INSPECT_FULL) as unknown as InspectSections & { NetworkSettings: { Networks: Record<string, Record<string, unknown>> } }
      Object.assign(c.NetworkSettings.Networks.appnet, endpoint)
      return judgeContainer(c, { appnet: def }).refused.map(r => r.field)
    }
    expect(on({ ...APPNET, Driver: 'overlay', Scope: 'swarm' })).to.deep.equal(['Network[appnet].Scope', 'Network[appnet].Driver'])
    expect(on({ ...APPNET, Driver: 'macvlan' })).to.deep.equal(['Network[appnet].Driver'])
    expect(on({ ...APPNET, Options: { 'com.docker.network.bridge.name': 'br-x', 'com.docker.network.driver.mtu': '1400' } }))
      .to.deep.equal(['Network[appnet].Options', 'Network[appnet].Options.com.docker.network.bridge.name'])
    expect(on({ ...APPNET, IPAM: { Driver: 'other' } })).to.deep.equal(['Network[appnet].IPAM'])
    expect(on({ ...APPNET, NewField: 'x' })).to.deep.equal(['Network[appnet].NewField'])
    expect(on(APPNET, { Links: ['db:db'], DriverOpts: { a: 'b' } })).to.deep.equal(['NetworkSettings.Networks.appnet.Links', 'NetworkSettings.Networks.appnet.DriverOpts'])
    expect(on(APPNET, { IPAMConfig: { IPv4Address: '172.18.0.9' } })).to.deep.equal([])
    const c = structuredClone(INSPECT_FULL) as unknown as InspectSections & { NetworkSettings: { Networks: Record<string, Record<string, unknown>> } }
    c.NetworkSettings.Networks.appnet.IPAMConfig = { IPv4Address: '172.18.0.9' }
    expect(judgeContainer(c, { appnet: APPNET }).networks[0].ipv4Address).to.equal('172.18.0.9')
    // Every field of the real endpoint and network inspect is in the table.
    expect(Object.keys(INSPECT_FULL.NetworkSettings.Networks.appnet).filter(k => !Object.hasOwn(ENDPOINT_RULES, k))).to.deep.equal([])
    expect(Object.keys(APPNET).filter(k => !Object.hasOwn(NETWORK_DEFINITION_RULES, k))).to.deep.equal([])
  })

  it('the destination\'s parser refuses a network the table does not carry, by name', () => {
    const spec = JSON.parse(JSON.stringify(specFromInspect(INSPECT_FULL as unknown as EngineContainer, { appnet: APPNET }))) as Record<string, any>
    const bad = (f: (s: Record<string, any>) => void): Error => {
      const copy = structuredClone(spec)
      f(copy)
      try { parseSpec(copy) } catch (err) { return err as Error }
      throw new Error('parsed')
    }
    expect(bad(s => { s.networks[0].network.driver = 'overlay' }).message).to.contain('Network[appnet].Driver')
    expect(bad(s => { s.networks[0].network.options = { 'com.docker.network.bridge.name': 'eth0' } }).message).to.contain('Network[appnet].Options.com.docker.network.bridge.name')
    expect(bad(s => { s.primaryNetwork = 'other' }).name).to.equal('ProtocolError')
    expect(bad(s => { s.networks[0].network.name = 'host' }).name).to.equal('ProtocolError')
  })

  it('every host-level power is named; a log driver that leaves the host and --network container:x are refused by name', () => {
    const powers = judgeContainer(INSPECT_POWERS as InspectSections)
    expect(powers.hostPowers).to.have.members([
      'HostConfig.IpcMode', 'HostConfig.PidMode', 'HostConfig.Privileged', 'HostConfig.SecurityOpt', 'HostConfig.UTSMode', 'HostConfig.Sysctls', 'HostConfig.Devices'
    ])
    expect(powers.refused.map(r => r.field)).to.deep.equal(['HostConfig.LogConfig'])
    // The bind mount is the bind-mount allowance's business (a spec mount, not a carried setting).
    expect(specFromInspect(INSPECT_POWERS as unknown as EngineContainer).mounts).to.deep.include({ type: 'bind', source: '/tmp', destination: '/hosttmp', readOnly: true })
    const sidecar = judgeContainer(INSPECT_SIDECAR as InspectSections)
    expect(sidecar.refused.map(r => r.field)).to.deep.equal(['HostConfig.NetworkMode'])
    expect(sidecar.refused[0]?.why).to.contain('container:')
  })

  it('an unknown field is refused with its name when set; unset values of any field pass', () => {
    const newer = structuredClone(INSPECT_PLAIN) as unknown as InspectSections
    Object.assign(newer.HostConfig as object, { Annotations: { 'io.x': '1' }, FutureThing: null, Unheard: 0, Empty: [], Blank: '', Nothing: {} })
    Object.assign(newer.Config as object, { Fancy: true, Quiet: false })
    expect(judgeContainer(newer).refused.map(r => r.field)).to.deep.equal(['Config.Fancy', 'HostConfig.Annotations'])
    expect(judgeContainer(newer).refused[0]?.why).to.contain('does not know')
    // Unset refused fields are fine too: no links, no volumes-from, no storage options.
    const unset = structuredClone(INSPECT_PLAIN) as unknown as InspectSections
    Object.assign(unset.HostConfig as object, { Links: [], VolumesFrom: null, StorageOpt: {}, VolumeDriver: '', Runtime: 'runc', Privileged: false, CapAdd: [] })
    expect(judgeContainer(unset)).to.deep.include({ refused: [], hostPowers: [] })
  })

  it('writes every carried setting into the create body, the spec\'s own fields after them', () => {
    const spec = specFromInspect(onBridge(INSPECT_FULL))
    const body = createBody(spec) as Record<string, any>
    expect(body).to.deep.include({ StopSignal: 'SIGINT', StopTimeout: 7, Tty: true, OpenStdin: true, Domainname: 'dom.ex', Hostname: 'fullhost' })
    expect(body.Healthcheck).to.deep.equal({ Test: ['CMD-SHELL', 'true'], Interval: 5000000000 })
    expect(body.HostConfig).to.deep.include({ Memory: 67108864, CapDrop: ['CAP_NET_RAW'], CapAdd: ['CAP_SYS_TIME'], Init: true, ReadonlyRootfs: true, ShmSize: 33554432 })
    expect(body.HostConfig.Tmpfs).to.deep.equal({ '/run': '', '/scratch': 'size=1m' })
    expect(body.HostConfig.RestartPolicy).to.deep.equal({ Name: 'on-failure', MaximumRetryCount: 3 })
  })

  it('the destination\'s parser keeps what the table carries and refuses the rest by name', () => {
    const spec = specFromInspect(onBridge(INSPECT_FULL))
    const wire = JSON.parse(JSON.stringify(spec))
    const parsed = parseSpec(wire)
    expect(parsed).to.deep.equal(spec)
    expect(specDigest(parsed)).to.equal(specDigest(spec))
    expect(hostPowersOf(parsed.engine)).to.deep.equal(['HostConfig.CapAdd'])
    const smuggled: Array<[string, Record<string, unknown>]> = [
      ['HostConfig.Binds', { hostConfig: { Binds: ['/:/host'] } }],
      ['HostConfig.Links', { hostConfig: { Links: ['/db:/web/db'] } }],
      ['HostConfig.NetworkMode', { hostConfig: { NetworkMode: 'container:abc' } }],
      ['HostConfig.LogConfig', { hostConfig: { LogConfig: { Type: 'syslog', Config: {} } } }],
      ['HostConfig.Runtime', { hostConfig: { Runtime: 'kata' } }],
      ['HostConfig.Whatever', { hostConfig: { Whatever: 1 } }],
      ['Config.Image', { config: { Image: 'evil' } }],
      ['Config.MacAddress', { config: { MacAddress: '02:42:ac:11:00:09' } }],
      ['spec.engine.other', { other: {} }]
    ]
    for (const [field, engine] of smuggled) {
      expect(() => parseSpec({ ...wire, engine }), field).to.throw(field).with.property('name', 'FieldRefusedError')
    }
    expect(() => parseSpec({ ...wire, imageRef: 'UPPER/Case:x' })).to.throw().with.property('name', 'ProtocolError')
    expect(() => parseSpec({ ...wire, imageRef: 'app@sha256:abc' })).to.throw().with.property('name', 'ProtocolError')
  })

  it('reads the image reference the container was run as, not an ID or a digest', () => {
    const id = `sha256:${'ab'.repeat(32)}`
    expect(imageRefOf('app', id)).to.equal('app:latest')
    expect(imageRefOf('app:v1', id)).to.equal('app:v1')
    expect(imageRefOf('localhost:5000/team/app', id)).to.equal('localhost:5000/team/app:latest')
    expect(imageRefOf(id, id)).to.equal(undefined)
    expect(imageRefOf('ababab', id)).to.equal(undefined)
    expect(imageRefOf('app@sha256:' + 'c'.repeat(64), id)).to.equal(undefined)
    expect(imageRefOf('', id)).to.equal(undefined)
  })

  it('docs/operations.md holds exactly the table the code has', () => {
    expect(readFileSync(DOCS, 'utf8')).to.contain(fidelityTableMarkdown())
  })

  it('a container with a refused setting or a host power cannot be protected: a takeover has no order to restore it by', () => {
    expect(unprotectable(containerInfoFromInspect(INSPECT_PLAIN as unknown as EngineContainer))).to.equal(undefined)
    const full = unprotectable(containerInfoFromInspect(INSPECT_FULL as unknown as EngineContainer)) // on appnet, and --cap-add SYS_TIME
    expect(full?.name).to.equal('FieldRefusedError')
    expect(full?.message).to.contain('NetworkSettings.Networks.appnet')
    // A move carries the network; a takeover does not yet.
    const netted = unprotectable(containerInfoFromInspect(INSPECT_FULL as unknown as EngineContainer, { appnet: APPNET }))
    expect(netted?.name).to.equal('FieldRefusedError')
    expect(netted?.message).to.contain('NetworkSettings.Networks.appnet')
    const powers = unprotectable({ name: 'capable', fidelity: { refused: [], hostPowers: ['HostConfig.CapAdd'] } })
    expect(powers?.name).to.equal('HostAccessRefusedError')
    expect(powers?.message).to.contain('HostConfig.CapAdd')
    const sidecar = unprotectable(containerInfoFromInspect(INSPECT_SIDECAR as unknown as EngineContainer))
    expect(sidecar?.message).to.contain('HostConfig.NetworkMode')
  })
})
