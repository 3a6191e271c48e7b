#!/usr/bin/env node
// `pnpm bundle`: the reference server as one JavaScript file with nothing to install next to it — what `pnpm start`,
// the Dockerfile and (sealed into a binary) `pnpm build:binary` run:
//
//   build/llmproxy.cjs               the entry (scripts/launcher.cjs): `node build/llmproxy.cjs --config FILE`
//   build/llmproxy.bundle.cjs        esbuild's bundle of packages/server/src/cli.ts and every dependency
//   build/llmproxy.bundle.cjs.cache  V8's code cache of the bundle, written by a demo start of it (valid for this
//                                    Node.js binary; another one compiles the bundle as usual)
//
// A start then reads two files and compiles almost nothing: measured on 2 cores, the built packages
// (dist/cli.js, ~190 ES modules) took about twice the CPU time to their first answer (docs/benchmarks.md).
import { spawn } from 'node:child_process'
import { copyFileSync, mkdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = fileURLToPath(new URL('..', import.meta.url))
export const BUILD_DIR = join(root, 'build')
export const ENTRY = join(BUILD_DIR, 'llmproxy.cjs')
export const BUNDLE = join(BUILD_DIR, 'llmproxy.bundle.cjs')

// Optional dependencies that are not installed and that their users require inside a try (debug tries
// supports-color). Left as a require(), a SEA warns on every start; bundled as a module that throws, they
// behave as absent, as they are.
const OPTIONAL_ABSENT = ['supports-color']

/**
 * esbuild's options for the server bundle (shared with scripts/build-binary.mjs): the CLI and every dependency,
 * the workspace packages from their TypeScript sources (`llmproxy-source` condition), as one CommonJS file.
 * `import.meta.url` has no meaning in CommonJS: it points at the running file instead (in a SEA, __filename is
 * the executable), so that a dependency that derives paths from it still works.
 */
export function bundleOptions(outfile) {
  return {
    entryPoints: [join(root, 'packages/server/src/cli.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    conditions: ['llmproxy-source'],
    define: { 'import.meta.url': '__llmproxyImportMetaUrl' },
    banner: { js: 'var __llmproxyImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
    legalComments: 'none',
    // 4.4 MB → 2.8 MB to read and deserialize at every start (~40 ms of a start's CPU here); identifiers are kept,
    // so stack traces still name their functions.
    minifyWhitespace: true,
    minifySyntax: true,
    plugins: [optionalModulesAbsent(OPTIONAL_ABSENT)],
    logLevel: 'warning',
    metafile: true,
  }
}

/** Builds build/llmproxy.cjs and the bundle, then its code cache. */
export async function bundleServer() {
  const started = performance.now()
  mkdirSync(BUILD_DIR, { recursive: true })
  rmSync(`${BUNDLE}.cache`, { force: true })
  await build(bundleOptions(BUNDLE))
  copyFileSync(join(root, 'scripts/launcher.cjs'), ENTRY)
  await writeCodeCache()
  const mb = (file) => `${(statSync(file).size / 1024 / 1024).toFixed(1)} MB`
  console.error(
    `${rel(ENTRY)}: bundle ${mb(BUNDLE)}, code cache ${mb(`${BUNDLE}.cache`)} (${((performance.now() - started) / 1000).toFixed(1)} s)`,
  )
}

/**
 * Starts the bundle in demo mode (its own mock upstream, a free port) and stops it once it serves: the launcher
 * then writes the code of everything a start ran (modules, config, plugins, listen) to the cache.
 */
function writeCodeCache() {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, LLMPROXY_WRITE_CODE_CACHE: '1' }
    delete env.LLMPROXY_CONFIG
    const child = spawn(process.execPath, [ENTRY, '--port', '0'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let output = ''
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    const onData = (chunk) => {
      output += chunk
      if (output.includes('demo mode') && child.signalCode === null && !child.killed) child.kill('SIGTERM')
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (code === 0) resolve()
      else reject(new Error(`the bundle's demo start failed (exit ${code}):\n${output}`))
    })
  })
}

function optionalModulesAbsent(names) {
  const filter = new RegExp(`^(${names.map((n) => n.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|')})$`)
  return {
    name: 'optional-modules-absent',
    setup(b) {
      b.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'absent' }))
      b.onLoad({ filter: /.*/, namespace: 'absent' }, (args) => ({
        contents: `throw Object.assign(new Error(${JSON.stringify(`Cannot find module '${args.path}'`)}), { code: 'MODULE_NOT_FOUND' })`,
        loader: 'js',
      }))
    },
  }
}

function rel(path) {
  return path.startsWith(root) ? path.slice(root.length) : path
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await bundleServer().catch((err) => {
    console.error(`bundle: ${err instanceof Error ? err.message : err}`)
    process.exit(1)
  })
}
