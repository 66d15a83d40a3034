#!/usr/bin/env node
/**
 * Bundles the operator CLI (dist/control/main.js, as tsc wrote it) with esbuild into dist/bin/:
 * goto.js and the chunks it imports when a command needs them. Loading a few large files costs a
 * fraction of loading the thousand small modules of libp2p one by one, and each command still loads
 * only its own chunks (the import() calls in control/main.ts and certs/ are kept as split points).
 * `npm run build` runs this after tsc; package.json's "bin" and the release point at dist/bin/goto.js.
 *
 * dist/bin/ sits at the same depth as dist/control/, so the paths the code resolves against
 * import.meta.url (../../package.json for the version, ../../install/ for the installer) hold in the
 * bundle too. ssh2 stays outside: it loads native add-ons by path, and only `goto install` uses it.
 */
import { rm } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

let esbuild
try {
  esbuild = await import('esbuild')
} catch (err) {
  console.error(`bundle-cli: cannot load esbuild (a devDependency; run npm install): ${err.message}`)
  process.exit(1)
}

const root = fileURLToPath(new URL('..', import.meta.url))
const outdir = `${root}dist/bin`
await rm(outdir, { recursive: true, force: true })
await esbuild.build({
  absWorkingDir: root,
  entryPoints: { goto: 'dist/control/main.js' },
  outdir,
  chunkNames: 'goto-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Smaller files parse faster; names stay so error stacks remain readable.
  minifyWhitespace: true,
  minifySyntax: true,
  external: ['ssh2'],
  // Some dependencies are CommonJS and call require(); an ES module has none of its own.
  banner: { js: "import { createRequire as __gotoCreateRequire } from 'node:module'; const require = __gotoCreateRequire(import.meta.url);" },
  logLevel: 'warning'
})
