/**
 * lab.json: everything a lab made (hosts, addresses, processes, iptables rules, paths it created),
 * written after every step, so a later process (the lab CLI, a test after a crash) can act on a lab
 * that another process built, and `down` can remove it.
 */
import { readFile, rename, writeFile } from 'node:fs/promises'
import type { ProcRecord } from './procs.js'
import type { IptablesRule } from './net.js'
import type { SshdRecord } from './sshd.js'
import type { EngineKind } from './engine.js'

export const STATE_VERSION = 1

export interface AgentRecord extends ProcRecord {
  /** Multiaddr the agent listens on, e.g. /ip4/10.213.0.10/tcp/4001. */
  addr: string
  port: number
  logFile: string
  stateDir: string
  bundleDir: string
}

export interface HostState {
  name: string
  provider: string
  index: number
  /** For a NAT'd host its private address; `nat.publicIp` is its router's on the bridge. */
  ip: string
  netns: string
  /** Behind NAT (HostSpec.nat): the router's namespace and bridge address. */
  nat?: { router: string, publicIp: string }
  /** Root-namespace end of the veth pair. */
  veth: string
  /** `<root>/<name>`: data root, bundle, agent state, logs. */
  dir: string
  dataRoot: string
  /** `<runRoot>/<name>`: dockerd's exec root, socket and pidfile. */
  execRoot: string
  dockerSocket: string
  dockerPidfile: string
  dockerLog: string
  bundleDir: string
  /** Peer ID of the agent bundle, once issued. */
  peerId?: string
  dockerd?: ProcRecord
  /** The containerd the lab started for a newer engine kind (dockerd 20.10 starts its own). */
  containerd?: ProcRecord
  /** The host's engine kind (absent in a lab.json of before the kinds: 'docker-20'). */
  engine?: EngineKind
  /** The host takes live moves (HostSpec.criu): experimental engine, CRIU on its PATH. */
  criu?: boolean
  agent?: AgentRecord
  /** Agents started with startAgent(host, {...}) besides the main one. */
  extraAgents: AgentRecord[]
  /** The host runs no main agent (a fresh host for `goto install`); from HostSpec.agent. */
  noAgent?: boolean
  /** Its OpenSSH server, once startSshd ran (in its own mount namespace, see sshd.ts). */
  sshd?: SshdRecord
}

export interface LabState {
  version: number
  prefix: string
  bridge: string
  subnet: string
  gateway: string
  root: string
  runRoot: string
  repo: string
  agents: boolean
  agentPort: number
  createdAt: string
  caDir: string
  operatorBundle: string
  /** Root-namespace iptables rules the lab added (deleted by exact spec on down). */
  rules: IptablesRule[]
  /** Directories outside the lab's roots that did not exist before the lab (removed if empty). */
  createdDirs: string[]
  hosts: HostState[]
  /** Names of one side of the current partition; undefined when healed. */
  partition?: string[]
}

export async function readState (file: string): Promise<LabState | undefined> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    return undefined
  }
  try {
    const s = JSON.parse(text) as LabState
    return s.version === STATE_VERSION && Array.isArray(s.hosts) ? s : undefined
  } catch {
    return undefined
  }
}

export async function writeState (file: string, state: LabState): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n')
  await rename(tmp, file)
}
