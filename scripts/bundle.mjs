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
import { copyFileSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build, stop } from 'esbuild'

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
    plugins: [optionalModulesAbsent(OPTIONAL_ABSENT), undiciDispatchersFirst()],
    logLevel: 'warning',
    metafile: true,
  }
}

/** Builds build/llmproxy.cjs and the bundle, then its code cache. */
export async function bundleServer() {
  const started = performance.now()
  mkdirSync(BUILD_DIR, { recursive: true })
  rmSync(`${BUNDLE}.cache`, { force: true })
  // esbuild's service process would otherwise live as long as this one: the whole life of a gateway `pnpm start` built.
  await build(bundleOptions(BUNDLE)).finally(stop)
  // The launcher reads the bundle as latin1, which is only right for ASCII (esbuild's default charset).
  const nonAscii = readFileSync(BUNDLE).findIndex((byte) => byte > 0x7f)
  if (nonAscii !== -1) throw new Error(`${rel(BUNDLE)}: a non-ASCII byte at offset ${nonAscii}; the launcher reads it as latin1`)
  copyFileSync(join(root, 'scripts/launcher.cjs'), ENTRY)
  await writeCodeCache()
  const mb = (file) => `${(statSync(file).size / 1024 / 1024).toFixed(1)} MB`
  console.error(
    `${rel(ENTRY)}: bundle ${mb(BUNDLE)}, code cache ${mb(`${BUNDLE}.cache`)} (${((performance.now() - started) / 1000).toFixed(1)} s)`,
  )
}

/**
 * Starts the bundle in demo mode (its own mock upstream, a free port), has it answer a few requests and stops it:
 * the launcher then writes the code of everything the process ran (modules, config, plugins, listen, and the
 * request path) to the cache, so that neither the start nor the first requests compile it.
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
    let serving = false
    let failed = null
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    const onData = (chunk) => {
      output += chunk
      const url = /"url":"([^"]+)","msg":"demo mode/.exec(output)?.[1]
      if (url === undefined || serving) return
      serving = true
      demoRequests(url)
        .catch((err) => {
          failed = err
        })
        .finally(() => child.kill('SIGTERM'))
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (code === 0 && failed === null) resolve()
      else reject(new Error(`the bundle's demo start failed (exit ${code}${failed ? `, ${failed.message}` : ''}):\n${output}`))
    })
  })
}

/** What users send most: chat completions streamed and not, in the OpenAI and the Anthropic API (converted). */
async function demoRequests(url) {
  const messages = [{ role: 'user', content: 'Hello' }]
  const requests = [
    ['/v1/chat/completions', { model: 'demo', stream: true, stream_options: { include_usage: true }, messages }],
    ['/v1/chat/completions', { model: 'demo', messages }],
    ['/v1/messages', { model: 'demo', max_tokens: 64, stream: true, messages }],
    ['/v1/messages', { model: 'demo', max_tokens: 64, messages }],
  ]
  for (const [path, body] of requests) {
    const res = await fetch(`${url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    await res.arrayBuffer()
    if (res.status !== 200) throw new Error(`POST ${path} answered ${res.status}`)
  }
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

/**
 * `require('undici')` loads all of undici: fetch, WebSocket, EventSource, cookies, caches and the Web Streams
 * behind them, ~30 ms of every start, though the gateway (and @fastify/reply-from) use only its dispatchers. In
 * the bundle, `undici` is a module with the same exports in which the dispatchers, their request API, the errors
 * and util come from their own files, and any other export loads the whole package on first use (the same module
 * instances: classes stay identical). Each importer gets the undici it resolves.
 */
function undiciDispatchersFirst() {
  // Export name → where undici's index.js takes it from: a file of the package, and the property of it (none: the
  // file's exports).
  const own = {
    Dispatcher: ['lib/dispatcher/dispatcher'],
    Client: ['lib/dispatcher/client'],
    Pool: ['lib/dispatcher/pool'],
    BalancedPool: ['lib/dispatcher/balanced-pool'],
    Agent: ['lib/dispatcher/agent'],
    // Loaded only when an egress proxy is configured (HTTPS_PROXY, HTTP_PROXY).
    EnvHttpProxyAgent: ['lib/dispatcher/env-http-proxy-agent'],
    errors: ['lib/core/errors'],
    // index.js exports two functions of it (parseHeaders, headerNameToString) as `util`: the module holds both.
    util: ['lib/core/util'],
    getGlobalDispatcher: ['lib/global', 'getGlobalDispatcher'],
    setGlobalDispatcher: ['lib/global', 'setGlobalDispatcher'],
  }
  const moduleFor = (index) => {
    // esbuild bundles only require() calls of literal paths.
    const load = (file) => `require(${JSON.stringify(join(dirname(index), file))})`
    return [
      "'use strict'",
      // What undici's index does to the Dispatcher class: its request API (request, stream, pipeline...).
      `Object.assign(${load(own.Dispatcher[0])}.prototype, ${load('lib/api')})`,
      'let all',
      `const whole = () => (all ??= ${load('index.js')})`,
      ...Object.keys(createRequire(index)(index)).map((name) => {
        const [file, property] = own[name] ?? []
        const get = file === undefined ? `whole().${name}` : `${load(file)}${property === undefined ? '' : `.${property}`}`
        return `Object.defineProperty(exports, ${JSON.stringify(name)}, { enumerable: true, get: () => ${get} })`
      }),
    ].join('\n')
  }
  return {
    name: 'undici-dispatchers-first',
    setup(b) {
      // The path relative to the repository: the bundle names its modules so, with no path of the build machine.
      b.onResolve({ filter: /^undici$/ }, (args) => ({
        path: relative(root, createRequire(join(args.resolveDir, 'importer.js')).resolve('undici')),
        namespace: 'undici-dispatchers-first',
      }))
      b.onLoad({ filter: /.*/, namespace: 'undici-dispatchers-first' }, (args) => ({
        contents: moduleFor(join(root, args.path)),
        loader: 'js',
        resolveDir: dirname(join(root, args.path)),
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
