#!/usr/bin/env node
/**
 * What `goto` runs (package.json "bin", the release's /opt/goto/bin/goto): starts the bundled CLI
 * (dist/bin/goto-cli.cjs, control/main.ts and every module it may load, built by
 * install/bundle-cli.mjs) with a V8 code cache, so a command skips compiling the code it ran the
 * time before. Node 20 has no compile cache for ES modules (module.enableCompileCache is Node 22),
 * hence a script run through vm.Script with cachedData.
 *
 * One cache per kind of command (mesh, ca, install, other): each holds the functions its commands run,
 * which V8 compiles lazily. The cache is written beside the bundle after a successful run when
 * there was none or V8 refused it (another Node version, a rebuilt bundle): best effort, a
 * read-only installation just runs without. It sits with the code it caches and is as trusted.
 */
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Script } from 'node:vm'
import { parseCommandLine } from './args.js'

/** The same from dist/bin/goto.js (bundled) and dist/control/launcher.js (as tsc wrote it). */
const BUNDLE = fileURLToPath(new URL('../bin/goto-cli.cjs', import.meta.url))

const GROUPS: Record<string, string> = {
  peers: 'mesh', status: 'mesh', move: 'mesh', drain: 'mesh', protect: 'mesh', unprotect: 'mesh', ca: 'ca', install: 'install', uninstall: 'install', 'cloud-init': 'install'
}

/** Which cache serves this command line: 'other' for help, version and mistakes. */
function cacheGroup (argv: string[]): string {
  try {
    const line = parseCommandLine(argv)
    return (line.kind === 'command' ? GROUPS[line.command] : undefined) ?? 'other'
  } catch {
    return 'other'
  }
}

function readCache (file: string): Buffer | undefined {
  try {
    return readFileSync(file)
  } catch {
    return undefined
  }
}

/** Atomically, so a concurrent goto never reads half a cache; any failure leaves no cache. */
function writeCache (file: string, data: Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`
  try {
    writeFileSync(tmp, data, { mode: 0o644 })
    renameSync(tmp, file)
  } catch {
    rmSync(tmp, { force: true })
  }
}

const group = cacheGroup(process.argv.slice(2))
const cacheFile = BUNDLE.replace(/\.cjs$/, `.${group}.v8cache`)
const cachedData = readCache(cacheFile)
// As Node wraps a CommonJS module; the bundle's own first line is a hashbang.
const source = readFileSync(BUNDLE, 'utf8').replace(/^#!.*/, '')
const script = new Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, { filename: BUNDLE, cachedData })
if (cachedData === undefined || script.cachedDataRejected === true) {
  process.once('exit', code => { if (code === 0) writeCache(cacheFile, script.createCachedData()) })
}
const module = { exports: {} }
;(script.runInThisContext() as (...args: unknown[]) => void)(module.exports, createRequire(BUNDLE), module, BUNDLE, dirname(BUNDLE))
