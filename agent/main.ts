#!/usr/bin/env node
/**
 * goto-agent: the composition root of the agent. It alone reads argv and the environment; it builds
 * the parts (metrics endpoint when asked for, docker monitor, auth gate, status, moves out and in,
 * failover, membership) around one libp2p node, starts them in order and stops them in reverse on
 * SIGINT/SIGTERM.
 */
import '../protocol/polyfill.js'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadConfig, AGENT_USAGE, HelpRequested, VersionRequested, type AgentConfig } from './config.js'
import { createRootLogger } from './log.js'
import { DockerodeHost } from './docker/host.js'
import { DockerMonitor } from './docker/monitor.js'
import { createGatedNode } from './net/gated-node.js'
import { PeerTable } from './membership/peer-table.js'
import { MembershipService } from './membership/service.js'
import { StatusService } from './status/service.js'
import { LocateService } from './status/locate.js'
import { DestinationService } from './move/destination.js'
import { openFreezeJournal } from './move/freeze-journal.js'
import { openIncomingJournal } from './move/incoming-journal.js'
import { attrTools, NO_XATTRS } from './sync/index.js'
import { ContainerLocks } from './move/locks.js'
import { KeptImages } from './move/kept-images.js'
import { FreezeRecovery } from './move/recovery.js'
import type { SessionDeps } from './move/session.js'
import { LinkTable } from './transfer/links.js'
import { MoveService } from './move/source.js'
import { LiveCheck, cpuFlags } from './move/live.js'
import { LayerStore } from './transfer/layer-store.js'
import { LayerSender, SavePathCache } from './transfer/layer-sender.js'
import { HolderClient, HolderService } from './transfer/holders.js'
import { SnapshotStore } from './failover/snapshot-store.js'
import { FailoverState } from './failover/state.js'
import { FailoverService } from './failover/service.js'
import { OwnershipStamps } from './failover/stamps.js'
import { Snapshotter } from './failover/snapshotter.js'
import { advertisedAddrs, hostAddresses } from './addresses.js'
import { NO_METRICS, type Metrics } from './metrics/sink.js'
import { RelayReservations } from './net/relay-reservations.js'
import { GOTO_VERSION } from '../protocol/version.js'
import { ConfigError, GotoError } from '../protocol/errors.js'
import type { MemberInfo } from '../protocol/messages.js'
import { OrderVerifier } from '../protocol/orders.js'
import { openSpentOrders } from './orders/spent-orders.js'
// The verifying half of certs/ only: the agent never issues, so it does not load node-forge.
import { readBundle, writeCrl } from '../certs/bundle.js'
import { TrustStore, type SignedCrl } from '../certs/verify.js'

interface Part { start: () => Promise<void>, stop: () => Promise<void> }

async function loadSavedCrl (stateDir: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(join(stateDir, 'crl.json'), 'utf8'))
  } catch {
    return undefined
  }
}

async function run (config: AgentConfig): Promise<void> {
  const bundle = await readBundle(config.bundleDir)
  if (bundle.role !== 'agent') throw new ConfigError('--bundle', `${config.bundleDir} holds an ${bundle.role} certificate; an agent needs one issued with --role agent`)
  if (config.name !== undefined && config.name !== bundle.name) {
    throw new ConfigError('--name', `'${config.name}' does not match the certificate's name '${bundle.name}'`)
  }
  try {
    await mkdir(config.stateDir, { recursive: true, mode: 0o700 })
  } catch (err) {
    throw new ConfigError('--state-dir', `cannot create ${config.stateDir}: ${(err as Error).message}`)
  }

  const trust = new TrustStore(bundle.caCertPem, bundle.crl)
  const saved = await loadSavedCrl(config.stateDir)
  if (saved !== undefined) {
    try { trust.adoptCrl(saved) } catch { /* a damaged saved list is replaced by the next valid one */ }
  }
  // Refuse to run on a certificate the mesh would refuse (expired, revoked, not from this CA).
  trust.verify(bundle.certPem, bundle.peerId)

  const log = createRootLogger(config.logLevel, { service: 'goto-agent', name: bundle.name })
  // A bug must not leave a half-working agent in the mesh: log it, stop cleanly, exit non-zero so
  // the supervisor (systemd) restarts us.
  const fatal = new Promise<Error>(resolve => {
    process.once('unhandledRejection', reason => { resolve(reason instanceof Error ? reason : new Error(String(reason))) })
    process.once('uncaughtException', err => { resolve(err) })
  })
  const startedAt = Date.now()
  const { node, auth } = await createGatedNode({
    node: {
      privateKey: bundle.privateKey,
      listen: config.listen.map(a => a.toString()),
      announce: config.announce.map(a => a.toString()),
      isRefused: peerId => trust.isRevoked(peerId.toString()),
      // Reachable agents relay for members behind NAT; a NAT'd agent dials and listens through them.
      relayServe: !config.noInbound
    },
    auth: {
      identity: { certPem: bundle.certPem, trust },
      authTimeoutMs: config.timings.authTimeoutMs,
      log: log.child({ component: 'auth' }),
      // The state directory keeps the newest list under the same name a bundle does.
      saveCrl: async crl => { await writeCrl(config.stateDir, crl) }
    }
  })
  const docker = new DockerodeHost(config.docker, { layerFiles: !config.dockerSaveOnly })
  const monitor = new DockerMonitor(docker, config.timings.dockerRefreshMs, log.child({ component: 'docker' }))
  const table = new PeerTable(bundle.peerId, config.timings)
  const metricsParts: Part[] = []
  let metrics: Metrics = NO_METRICS
  if (config.metricsListen !== undefined) {
    // Loaded only when asked for: prom-client costs memory an agent without metrics should not pay.
    const [{ PrometheusMetrics }, { MetricsServer }] = await Promise.all([import('./metrics/prometheus.js'), import('./metrics/server.js')])
    const prometheus = new PrometheusMetrics({ peerCounts: () => table.counts(), version: GOTO_VERSION, name: bundle.name })
    metrics = prometheus
    metricsParts.push(new MetricsServer(config.metricsListen, prometheus, log.child({ component: 'metrics' })))
  }
  const relays = config.noInbound
    ? new RelayReservations({ node, table, checkMs: config.timings.redialDeadMs, log: log.child({ component: 'relay' }) })
    : undefined
  // Staged layers only bridge a move's retries: valid for this boot, never fsynced (layer-store.ts).
  const store = await LayerStore.open(join(config.stateDir, 'layers'), { durability: 'boot' })
  const snapshots = await SnapshotStore.open(join(config.stateDir, 'snapshots'))
  const failoverState = await FailoverState.open(config.stateDir)
  const stamps = new OwnershipStamps(failoverState)
  const locks = new ContainerLocks()
  const kept = new KeptImages()
  const freezeJournal = await openFreezeJournal(join(config.stateDir, 'frozen'))
  // Extended attributes of synced volumes travel when getfattr/setfattr are installed.
  const xattrs = await attrTools().catch(err => { log.warn('volume rounds copy no extended attributes', { error: (err as Error).message }); return NO_XATTRS })
  const volumeRounds = !config.volumeSpoolOnly
  const linkTable = new LinkTable(config.links)
  // Layers from the member nearest a destination (transfer/holders.ts): asked by sessions, fetched by the destination.
  const holderClient = new HolderClient({ auth, table, docker, selfName: bundle.name, links: linkTable, spoolDir: join(store.dir, 'incoming'), log: log.child({ component: 'holders' }) })
  const sessions: SessionDeps = {
    auth, docker, table, selfName: bundle.name, store, metrics, timings: config.timings, xattrs, volumeRounds,
    layers: new LayerSender({ docker, paths: new SavePathCache(), log: log.child({ component: 'move' }) }),
    journal: freezeJournal, spoolDir: join(config.stateDir, 'spool'), log: log.child({ component: 'move' }),
    links: { table: linkTable, selfLabels: config.labels }, holders: holderClient
  }
  // Operators' signed orders, verified here whatever the peer that forwards them (protocol/orders.ts).
  const spentOrders = await openSpentOrders(join(config.stateDir, 'orders'), log.child({ component: 'orders' }))
  const orders = new OrderVerifier(trust, Date.now, spentOrders.memory, spentOrders.spent)
  const holder = new HolderService({ auth, docker, store, orders, log: log.child({ component: 'holders' }) })
  const failover = new FailoverService({
    auth, docker, table, snapshots, state: failoverState, selfId: bundle.peerId, selfName: bundle.name, orders, trust,
    signer: { certPem: bundle.certPem, sign: async data => await bundle.privateKey.sign(data) },
    snapshotter: new Snapshotter({ docker, sessions, locks, selfId: bundle.peerId, labels: stamps }),
    timings: config.timings, replicas: config.replicas, metrics, log: log.child({ component: 'failover' })
  })
  // What we announce directly is fixed once the node listens; computed on first use, not per
  // heartbeat. Behind NAT we announce only the relayed addresses of the reservations we hold.
  let direct: string[] | undefined
  const self = (): MemberInfo => ({
    name: bundle.name,
    peerId: bundle.peerId,
    addrs: relays?.circuitAddrs() ?? (direct ??= advertisedAddrs(node.getMultiaddrs(), config.announce, hostAddresses())),
    labels: config.labels,
    agentVersion: GOTO_VERSION,
    // The engine's kind line (`docker 28.5.2 containerd-store`), bounded to the field's 64 characters.
    dockerVersion: monitor.kind,
    containers: monitor.containers,
    crlNumber: trust.crlNumber,
    failover: failover.gossip()
  })
  // Whether this host can take part in a live move (CRIU, experimental engine, CPU): asked by both ends.
  const hidden = new Set(config.hideCpuFlags ?? [])
  const live = new LiveCheck({ docker, criu: config.criu, selfName: bundle.name, ...hidden.size === 0 ? {} : { cpuFlags: async () => (await cpuFlags()).filter(f => !hidden.has(f)) } })
  const destination = new DestinationService({
    auth, selfId: bundle.peerId, orders, docker, store, snapshots, metrics, kept, timings: config.timings, xattrs, volumeRounds, live, holders: holderClient,
    journal: await openIncomingJournal(join(config.stateDir, 'incoming')), log: log.child({ component: 'move-in' })
  })
  const recovery = new FreezeRecovery({ auth, docker, table, journal: freezeJournal, locks, timings: config.timings, log: log.child({ component: 'move' }) })
  const moves = new MoveService({ auth, selfId: bundle.peerId, docker, sessions, locks, kept, labels: stamps, timings: config.timings, metrics, live, log: log.child({ component: 'move' }) })
  const locate = new LocateService({ auth, docker, table, self, timings: config.timings })
  const status = new StatusService({ auth, table, docker, self, failover, startedAt, timings: config.timings, live, log: log.child({ component: 'status' }) })
  const membership = new MembershipService({ node, auth, trust, table, self, bootstrap: config.bootstrap, timings: config.timings, alwaysSend: config.noInbound, log: log.child({ component: 'membership' }) })

  const libp2pPart: Part = {
    start: async () => {
      try {
        await node.start()
      } catch (err) {
        throw new ConfigError('--listen', `cannot listen on ${config.listen.map(String).join(', ')}: ${(err as Error).message}`)
      }
    },
    stop: async () => { await node.stop() }
  }
  // The metrics endpoint first: a bad --metrics-listen stops the agent before it joins the mesh.
  // Freeze recovery before moves: a container this agent left frozen when it died runs again (or is
  // let go of) before any new move or snapshot can see it. Kept images stop after the moves.
  const parts: Part[] = [...metricsParts, monitor, auth, status, locate, destination, holder, kept, recovery, moves, failover, libp2pPart, membership, ...relays === undefined ? [] : [relays]]
  const started: Part[] = []
  const stopAll = async (): Promise<void> => {
    for (const p of started.reverse()) await p.stop().catch(err => { log.error('stop failed', { error: (err as Error).message }) })
  }
  try {
    for (const p of parts) { await p.start(); started.push(p) }
  } catch (err) {
    await stopAll()
    throw err
  }
  log.info('agent started', {
    peer: bundle.peerId,
    version: GOTO_VERSION,
    listen: node.getMultiaddrs().map(a => a.toString()),
    announce: self().addrs,
    bootstrap: config.bootstrap.map(a => a.toString()),
    docker: config.docker.url,
    profile: config.profile,
    replicas: config.replicas,
    snapshotIntervalS: config.timings.snapshotIntervalMs / 1000,
    inbound: config.noInbound ? 'none (relayed)' : 'direct; relaying for members'
  })

  const stopSignal = new Promise<string>(resolve => {
    process.once('SIGINT', () => { resolve('SIGINT') })
    process.once('SIGTERM', () => { resolve('SIGTERM') })
  })
  const reason = await Promise.race([stopSignal, fatal])
  if (reason instanceof Error) {
    log.error('internal error, stopping', { error: reason.message, stack: reason.stack })
    await stopAll()
    throw reason
  }
  log.info('stopping', { signal: reason })
  await stopAll()
  log.info('agent stopped')
}

async function main (): Promise<number> {
  let config: AgentConfig
  try {
    config = loadConfig({ argv: process.argv.slice(2), env: process.env })
  } catch (err) {
    if (err instanceof HelpRequested) { process.stdout.write(AGENT_USAGE + '\n'); return 0 }
    if (err instanceof VersionRequested) { process.stdout.write(GOTO_VERSION + '\n'); return 0 }
    if (err instanceof ConfigError) { process.stderr.write(`goto-agent: error: ${err.message}\n`); return 2 }
    throw err
  }
  try {
    await run(config)
    return 0
  } catch (err) {
    if (err instanceof ConfigError) { process.stderr.write(`goto-agent: error: ${err.message}\n`); return 2 }
    if (err instanceof GotoError) { process.stderr.write(`goto-agent: error: ${err.message}\n`); return 1 }
    process.stderr.write(`goto-agent: error: ${(err as Error).message}\n`)
    return 1
  }
}

process.exitCode = await main()
