#!/usr/bin/env node
/**
 * Bundles the operator CLI with esbuild into dist/bin/, from what tsc wrote to dist/:
 * - goto-cli.cjs: control/main.ts and every module it may load, as one script. Loading one file
 *   costs a fraction of loading libp2p's thousand small modules one by one, and a module that a
 *   command reaches only through import() (libp2p, node-forge, the installer) still runs only when
 *   that command needs it: esbuild initialises such modules lazily.
 * - goto.js: the launcher (control/launcher.ts) that runs goto-cli.cjs with a V8 code cache.
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
const common = {
  absWorkingDir: root,
  bundle: true,
  platform: 'node',
  target: 'node20',
  // Smaller files parse faster; names stay so error stacks remain readable.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning'
}
await rm(outdir, { recursive: true, force: true })
await esbuild.build({
  ...common,
  entryPoints: ['dist/control/main.js'],
  outfile: `${outdir}/goto-cli.cjs`,
  format: 'cjs',
  external: ['ssh2'],
  // A script has no import.meta: the bundle's own URL stands in for it (see above).
  define: { 'import.meta.url': '__gotoImportMetaUrl' },
  banner: { js: "const __gotoImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  // import() of a bundled module becomes its lazy initialisation; of ssh2, a require().
  supported: { 'dynamic-import': false }
})
await esbuild.build({
  ...common,
  entryPoints: ['dist/control/launcher.js'],
  outfile: `${outdir}/goto.js`,
  format: 'esm'
})
