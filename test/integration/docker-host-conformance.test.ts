/**
 * The DockerHost conformance suite (test/conformance/docker-host.ts) against DockerodeHost on two
 * real lab engines (engine only, its own prefix and subnet), the same suite the in-memory engine
 * passes in test/unit/memory-docker-host.test.ts. The base image is the lab's busybox rootfs
 * (`docker import`, offline). Needs root, dockerd, busybox-static, iproute2, iptables.
 */
import { Lab, BASE_IMAGE, type LabHost } from '../lab/index.js'
import { DockerodeHost } from '../../agent/docker/host.js'
import { parseDockerEndpoint } from '../../agent/config.js'
import { dockerCli } from '../fixtures/docker.js'
import { describeDockerHost } from '../conformance/docker-host.js'

const PREFIX = 'gotolabq'
const SUBNET = '10.213.210.0/24'

describeDockerHost('DockerodeHost on a lab engine', async () => {
  const lab = new Lab({ prefix: PREFIX, subnet: SUBNET, agents: false })
  await lab.down()
  const [a, b] = await lab.up(2) as [LabHost, LabHost]
  const host = new DockerodeHost(parseDockerEndpoint('--docker', a.dockerHost))
  const other = new DockerodeHost(parseDockerEndpoint('--docker', b.dockerHost))
  const baseImage = (await host.inspectImage(BASE_IMAGE)).id
  return {
    host,
    other,
    baseImage,
    deletePath: async (id, path) => { await dockerCli(a, 'exec', id, 'rm', '-rf', path) },
    cleanup: async () => { await lab.down() }
  }
})
