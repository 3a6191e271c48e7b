#!/usr/bin/env node
// `pnpm build:binary`: one self-contained executable, build/llmproxy, that runs the reference server
// (packages/server/src/cli.ts) with no Node.js installed and nothing downloaded, at build or run time.
//
//   1. esbuild bundles the CLI and every dependency (the workspace packages from their TypeScript sources
//      through the `llmproxy-source` condition) into one CommonJS file, build/sea/llmproxy.cjs, as `pnpm bundle`
//      does (scripts/bundle.mjs);
//   2. node --experimental-sea-config turns it into a Single Executable Application blob;
//   3. a copy of this very node binary (process.execPath) gets the blob injected by postject.
//
// Node 20 SEA: the main script's `require` loads built-in modules only, hence one bundle with nothing
// external. The binary is for the platform and the Node version that build it (run this on the target OS).
import { spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { bundleOptions } from './bundle.mjs'

const require = createRequire(import.meta.url)
const root = fileURLToPath(new URL('..', import.meta.url))
const outDir = join(root, 'build')
const workDir = join(outDir, 'sea')
const bundle = join(workDir, 'llmproxy.cjs')
const blob = join(workDir, 'llmproxy.blob')
const seaConfig = join(workDir, 'sea-config.json')
const binary = join(outDir, process.platform === 'win32' ? 'llmproxy.exe' : 'llmproxy')
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'

const started = performance.now()
const [major = 0] = process.versions.node.split('.').map(Number)
if (major < 20) fail(`Node ${process.versions.node} has no single executable applications; use Node 20 or newer`)

rmSync(workDir, { recursive: true, force: true })
mkdirSync(workDir, { recursive: true })

// 1. The bundle.
const result = await build(bundleOptions(bundle)).catch(() => fail('esbuild could not bundle the CLI (errors above)'))
const inputs = Object.keys(result.metafile.inputs).length
console.log(`bundled ${inputs} modules into ${rel(bundle)} (${mb(statSync(bundle).size)})`)

// The bundle must start before it is sealed into a binary: a missing module or a top-level error would
// otherwise only show as a binary that dies at once.
const smoke = spawnSync(process.execPath, [bundle, 'schema'], { encoding: 'utf8', cwd: workDir, maxBuffer: 16 * 1024 * 1024 })
if (smoke.status !== 0 || !smoke.stdout.trimStart().startsWith('{')) {
  fail(`the bundle does not start (exit ${smoke.status}):\n${smoke.stderr || smoke.stdout}`)
}

// 2. The SEA blob. The code cache (V8 compiled once, here) makes the binary start faster; it is tied to
// this node binary, which is exactly the one the blob goes into.
const seaBlob = (useCodeCache) => {
  writeFileSync(
    seaConfig,
    `${JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useCodeCache }, null, 2)}\n`,
  )
  return spawnSync(process.execPath, ['--experimental-sea-config', seaConfig], { encoding: 'utf8', cwd: workDir })
}
// `--no-code-cache`: V8 rejects the cache (warning "Code cache data rejected", slower start) when the binary
// runs with V8 flags it was not built with, e.g. NODE_OPTIONS=--max-old-space-size=….
let useCodeCache = !process.argv.includes('--no-code-cache')
let sea = seaBlob(useCodeCache)
if (sea.status !== 0 && useCodeCache) {
  console.warn(`sea blob with code cache failed, retrying without:\n${sea.stderr}`)
  useCodeCache = false
  sea = seaBlob(false)
}
if (sea.status !== 0) fail(`node --experimental-sea-config failed:\n${sea.stderr || sea.stdout}`)

// 3. A copy of node with the blob in it. postject flips the fuse that makes node run the blob.
rmSync(binary, { force: true })
copyFileSync(process.execPath, binary)
chmodSync(binary, 0o755)
const { inject } = require('postject')
await inject(binary, 'NODE_SEA_BLOB', readFileSync(blob), {
  sentinelFuse: FUSE,
  ...(process.platform === 'darwin' ? { machoSegmentName: 'NODE_SEA' } : {}),
})
chmodSync(binary, 0o755)

// The binary must start too.
const check = spawnSync(binary, ['--help'], { encoding: 'utf8', cwd: workDir })
if (check.status !== 0 || !check.stdout.includes('llmproxy')) {
  fail(`${rel(binary)} does not start (exit ${check.status}):\n${check.stderr || check.stdout}`)
}

const seconds = ((performance.now() - started) / 1000).toFixed(1)
console.log(
  `${binary} (${mb(statSync(binary).size)}, node ${process.versions.node} ${process.platform}-${process.arch}, code cache ${useCodeCache ? 'on' : 'off'}, ${seconds} s)`,
)

function rel(path) {
  return path.startsWith(root) ? path.slice(root.length) : path
}

function mb(bytes) {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`
}

function fail(message) {
  console.error(`build-binary: ${message}`)
  process.exit(1)
}
