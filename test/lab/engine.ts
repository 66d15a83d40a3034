/**
 * One Docker Engine per simulated host: dockerd started inside the host's network namespace with
 * its own data root, exec root, socket and pidfile; and the offline base image `gotolab/base:latest`
 * (Debian's static busybox and its applet links) imported into every engine from one tarball.
 */
import { copyFile, mkdir, readFile, symlink, writeFile } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import { dirname, join } from 'node:path'
import Docker from 'dockerode'
import { run, inNetns, spawnDetached, labPath } from './sys.js'
import { isAlive, type ProcRecord } from './procs.js'
import { waitFor } from './wait.js'
import { LabError, LabProcessExitedError } from './errors.js'

export const BASE_IMAGE = 'gotolab/base:latest'
/** dockerd here is ready in well under a second; allow for a loaded 2-core CI machine. */
export const ENGINE_READY_TIMEOUT_MS = 30_000

export interface EngineSpec {
  netns: string
  dataRoot: string
  execRoot: string
  socket: string
  pidfile: string
  logFile: string
  /** Path of the dockerd binary (Debian's engine 20.10). */
  dockerd: string
}

export function dockerdArgv (e: EngineSpec): string[] {
  return [e.dockerd, '--data-root', e.dataRoot, '--exec-root', e.execRoot, '-H', `unix://${e.socket}`, '--pidfile', e.pidfile]
}

export async function startEngine (e: EngineSpec): Promise<ProcRecord> {
  await mkdir(e.dataRoot, { recursive: true })
  await mkdir(e.execRoot, { recursive: true })
  await mkdir(dirname(e.logFile), { recursive: true })
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: labPath() }
  delete env.DOCKER_HOST
  return await spawnDetached(inNetns(e.netns, []), dockerdArgv(e), e.logFile, env)
}

/** A dockerode client for an engine's socket; `timeoutMs` bounds each request (for pings). */
export function engineClient (socket: string, timeoutMs?: number): Docker {
  return new Docker({ socketPath: socket, timeout: timeoutMs })
}

export async function logTail (file: string, lines = 15): Promise<string> {
  try {
    const text = await readFile(file, 'utf8')
    return text.trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return '(no log)'
  }
}

/** Polls `/_ping` until the engine answers; fails at once if dockerd exits. */
export async function waitEngineReady (name: string, e: EngineSpec, proc: ProcRecord, signal?: AbortSignal, timeoutMs = ENGINE_READY_TIMEOUT_MS): Promise<void> {
  const docker = engineClient(e.socket, 2000)
  await waitFor(async () => {
    if (!await isAlive(proc.pid)) {
      throw new LabProcessExitedError(`dockerd of ${name} exited while starting; last lines of ${e.logFile}:\n${await logTail(e.logFile)}`)
    }
    try {
      await docker.ping()
      return true
    } catch {
      return false
    }
  }, { timeoutMs, intervalMs: 50, what: `the engine of ${name} to answer /_ping on ${e.socket}`, signal })
}

/**
 * Writes the base image's root filesystem as a tar file: /bin/busybox plus one symlink per applet
 * (`busybox --list-full`), a few directories and a passwd file. The tar is deterministic (sorted,
 * fixed owner and mtime), so every engine records the same layer diff ID for it.
 */
export async function buildBaseTar (workDir: string, busybox: string): Promise<string> {
  const rootfs = join(workDir, 'rootfs')
  const tar = join(workDir, 'base.tar')
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'root', 'tmp', 'var', 'proc', 'sys', 'dev']) {
    await mkdir(join(rootfs, d), { recursive: true })
  }
  await run(['chmod', '1777', join(rootfs, 'tmp')])
  await copyFile(busybox, join(rootfs, 'bin/busybox'))
  await run(['chmod', '0755', join(rootfs, 'bin/busybox')])
  const list = (await run([busybox, '--list-full'])).stdout.split('\n').map(l => l.trim()).filter(l => l !== '')
  for (const applet of list) {
    if (applet === 'bin/busybox' || applet.includes('..')) continue
    await mkdir(join(rootfs, dirname(applet)), { recursive: true })
    await symlink('/bin/busybox', join(rootfs, applet))
  }
  await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n')
  await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n')
  await run(['tar', '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', rootfs, '-cf', tar, '.'])
  return tar
}

/** `docker import` of the tar as BASE_IMAGE, reading the whole progress stream for errors. */
export async function importBase (docker: Docker, tar: string): Promise<void> {
  const [repo, tag] = BASE_IMAGE.split(':')
  const stream = await docker.importImage(createReadStream(tar), { repo, tag })
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, events: Array<{ error?: string, errorDetail?: { message?: string } }>) => {
      if (err !== null) { reject(err); return }
      const bad = events.find(e => e.error !== undefined || e.errorDetail !== undefined)
      if (bad !== undefined) reject(new LabError(`docker import of ${BASE_IMAGE} failed: ${bad.error ?? bad.errorDetail?.message}`))
      else resolve()
    })
  })
  await docker.getImage(BASE_IMAGE).inspect()
}
