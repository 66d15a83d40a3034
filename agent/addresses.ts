/**
 * Which of our addresses to tell peers. With an explicit --announce, exactly those. Otherwise the
 * addresses libp2p listens on, minus loopback (unless that is all there is) and minus the bridges
 * Docker and other container tools create on every host (docker0 is 172.17.0.1 everywhere, so a peer
 * dialling it would reach itself).
 */
import { networkInterfaces } from 'node:os'
import type { Multiaddr } from '@multiformats/multiaddr'

const VIRTUAL_INTERFACE = /^(docker|br-|veth|virbr|cni|flannel|cali|vxlan|podman)/

export function hostAddresses (): Set<string> {
  const ips = new Set<string>()
  for (const [name, list] of Object.entries(networkInterfaces())) {
    if (VIRTUAL_INTERFACE.test(name)) continue
    for (const a of list ?? []) ips.add(a.address)
  }
  return ips
}

export function advertisedAddrs (listening: Multiaddr[], announce: Multiaddr[], hostIps: Set<string>): string[] {
  if (announce.length > 0) return announce.map(a => a.toString())
  const bare = listening.map(ma => ma.decapsulateCode(421)) // drop /p2p/<self>
  const usable = bare.filter(ma => {
    const host = ma.getComponents()[0]?.value ?? ''
    return hostIps.has(host)
  })
  const external = usable.filter(ma => !/^(127\.|::1$)/.test(ma.getComponents()[0]?.value ?? ''))
  return [...new Set((external.length > 0 ? external : usable).map(ma => ma.toString()))]
}
