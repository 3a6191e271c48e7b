// The bundle's `undici` (scripts/bundle.mjs, undiciDispatchersFirst): the dispatchers load without the rest of
// undici (fetch, WebSocket, the Web Streams behind them: ~30 ms of every start), and every other export still
// works, from the same module instances.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { build } from 'esbuild'
// @ts-expect-error: a JavaScript build script without types
import { bundleOptions } from '../../scripts/bundle.mjs'

const root = fileURLToPath(new URL('../..', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'llmproxy-bundle-undici-'))
after(() => rmSync(dir, { recursive: true, force: true }))

// What the web parts of undici load and its dispatchers do not.
const WEB_MODULES = ['NativeModule internal/webstreams/readablestream', 'NativeModule internal/deps/undici/undici']

/** Bundles `source` (CommonJS, resolved from the repository root) with the server bundle's options and runs it. */
async function runBundled(source: string, env: Record<string, string> = {}): Promise<Record<string, unknown>> {
  const outfile = join(dir, 'out.cjs')
  const { entryPoints: _, ...options } = bundleOptions(outfile)
  await build({ ...options, stdin: { contents: source, resolveDir: root, loader: 'js' }, logLevel: 'error' })
  const { stdout } = await promisify(execFile)(process.execPath, [outfile], { env: { ...process.env, ...env }, timeout: 20_000 })
  return JSON.parse(stdout) as Record<string, unknown>
}

test('the dispatchers and util load without the web parts of undici, and proxy a request', async () => {
  const server = createServer((_req, res) => res.end('pong')).listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  after(() => server.close())
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const out = await runBundled(
    `const { Agent, Pool, util } = require('undici')
const web = ${JSON.stringify(WEB_MODULES)}
const loaded = () => web.filter((m) => process.moduleLoadList.includes(m))
;(async () => {
  const pool = new Pool(process.env.URL)
  const res = await pool.request({ method: 'GET', path: '/' })
  let body = ''
  for await (const chunk of res.body) body += chunk
  await pool.close()
  const headers = util.parseHeaders([Buffer.from('Content-Type'), Buffer.from('text/plain')])
  const before = loaded()
  const viaAgent = await (await fetchLike()).text()
  process.stdout.write(JSON.stringify({ body, headers, before, agent: typeof Agent, after: loaded(), viaAgent }))
})()
async function fetchLike() {
  // fetch is one of the exports that load the whole package, on first use
  return require('undici').fetch(process.env.URL)
}`,
    { URL: url },
  )
  assert.equal(out.body, 'pong')
  assert.deepEqual(out.headers, { 'content-type': 'text/plain' })
  assert.equal(out.agent, 'function')
  assert.deepEqual(out.before, [], 'no web module loaded by the dispatchers or util')
  assert.equal(out.viaAgent, 'pong', 'fetch works, loaded on first use')
  assert.deepEqual(out.after, WEB_MODULES, 'fetch loaded the web parts then')
})

test('every export of undici is there, and the dispatcher classes are the package’s own', async () => {
  const out = await runBundled(
    `const undici = require('undici')
const names = Object.keys(undici)
const { Pool, Client, Agent, errors } = undici
const pool = new Pool('http://127.0.0.1:9')
process.stdout.write(JSON.stringify({
  names,
  missing: names.filter((name) => undici[name] === undefined),
  dispatcher: pool instanceof undici.Dispatcher && new Agent() instanceof undici.Dispatcher,
  api: typeof pool.request === 'function' && typeof Client.prototype.stream === 'function',
  errors: new errors.RequestAbortedError() instanceof errors.UndiciError,
  sameAfterWhole: typeof undici.WebSocket === 'function' && undici.Pool === Pool,
}))`,
  )
  const { createRequire } = await import('node:module')
  const expected = Object.keys(createRequire(join(root, 'packages/router/package.json'))('undici'))
  assert.deepEqual(out.names, expected)
  assert.deepEqual(out.missing, [])
  assert.equal(out.dispatcher, true)
  assert.equal(out.api, true)
  assert.equal(out.errors, true)
  assert.equal(out.sameAfterWhole, true)
})
