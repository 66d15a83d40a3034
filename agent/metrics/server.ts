/**
 * The metrics endpoint: a part (start/stop) serving GET /metrics on one TCP address, 404 on every
 * other path, 405 for other methods. It has no authentication and no TLS — which is why
 * --metrics-listen binds to loopback unless the operator names another address — so it is kept
 * cheap to refuse: few connections, short timeouts, nothing read from a request but its line.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { MetricsListen } from '../config.js'
import type { Logger } from '../log.js'
import { ConfigError } from '../../protocol/errors.js'

/** A Prometheus server or two and an operator's curl; connections beyond this are closed at once. */
export const METRICS_MAX_CONNECTIONS = 16
/** A scrape request's headers arrive at once; a slow or silent client is cut off after this. */
export const METRICS_REQUEST_TIMEOUT_MS = 5_000
/** Prometheus scrapes every 15-60 s and keeps its connection; an idle one is closed after this. */
export const METRICS_KEEP_ALIVE_MS = 65_000

export interface MetricsSource {
  registry: { contentType: string, metrics: () => Promise<string> }
}

export class MetricsServer {
  private server: Server | undefined
  /** The address actually bound (port 0 becomes the port chosen). */
  address: MetricsListen | undefined

  constructor (private readonly listen: MetricsListen, private readonly source: MetricsSource, private readonly log: Logger) {}

  async start (): Promise<void> {
    const server = createServer((req, res) => { void this.serve(req, res) })
    server.maxConnections = METRICS_MAX_CONNECTIONS
    server.requestTimeout = METRICS_REQUEST_TIMEOUT_MS
    server.headersTimeout = METRICS_REQUEST_TIMEOUT_MS
    server.keepAliveTimeout = METRICS_KEEP_ALIVE_MS
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen({ host: this.listen.host, port: this.listen.port }, () => { server.off('error', reject); resolve() })
      })
    } catch (err) {
      throw new ConfigError('--metrics-listen', `cannot listen on ${hostPort(this.listen)}: ${(err as Error).message}`)
    }
    this.server = server
    const a = server.address() as AddressInfo
    this.address = { host: a.address, port: a.port }
    const url = `http://${hostPort(this.address)}/metrics`
    if (isLoopback(a.address)) this.log.info('serving metrics', { url })
    else this.log.warn('serving metrics on a non-loopback address; the endpoint has no authentication', { url })
  }

  async stop (): Promise<void> {
    const server = this.server
    if (server === undefined) return
    this.server = undefined
    await new Promise<void>(resolve => {
      server.close(() => { resolve() })
      server.closeAllConnections()
    })
  }

  private async serve (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0]
    if (path !== '/metrics') { reply(res, 404, 'not found: metrics are at /metrics\n'); return }
    if (req.method !== 'GET' && req.method !== 'HEAD') { res.setHeader('Allow', 'GET, HEAD'); reply(res, 405, 'method not allowed\n'); return }
    let body: string
    try {
      body = await this.source.registry.metrics()
    } catch (err) {
      this.log.error('metrics collection failed', { error: (err as Error).message })
      reply(res, 500, 'metrics collection failed\n')
      return
    }
    res.writeHead(200, { 'Content-Type': this.source.registry.contentType, 'Content-Length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  }
}

function reply (res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) })
  res.end(text)
}

export function hostPort (a: MetricsListen): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`
}

export function isLoopback (host: string): boolean {
  return /^127\./.test(host) || host === '::1' || host === '::ffff:127.0.0.1'
}
