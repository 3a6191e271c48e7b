import assert from 'node:assert/strict'
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { expectedContent, type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { request } from 'undici'
import { loadConfigFile, parseConfig, type ReloadHistory, type RunningGateway, startGateway } from '../src/index.js'
import { planReload } from '../src/reload.js'
import { logSink } from './helpers.js'

const TOKEN = 'reload-admin-token-0123456789'
const ADMIN = { authorization: `Bearer ${TOKEN}` }
const REPO_ROOT = new URL('../../../', import.meta.url).pathname
/** Auth and rate limits of the gateway under reload, as it starts. */
const KEYS_AND_LIMITS = 'auth: { keys: [{ id: k1, key: sk-key-one-0001 }] }\nrateLimit: { perKey: { rpm: 1000 } }'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function chatBody(model: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ model, messages: [{ role: 'user', content: 'Hi' }], ...extra })
}

async function chat(url: string, model: string, key?: string): Promise<{ status: number; code: string | null }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (key !== undefined) headers.authorization = `Bearer ${key}`
  const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers, body: chatBody(model) })
  const body = (await res.body.json()) as { error?: { code: string } }
  return { status: res.statusCode, code: body.error?.code ?? null }
}

interface Answer {
  status: number
  body: { reloaded?: boolean; applied?: string[]; restartRequired?: string[]; problems?: { path: string; message: string }[] }
}

async function reload(url: string): Promise<Answer> {
  const res = await request(`${url}/admin/reload`, { method: 'POST', headers: ADMIN })
  return { status: res.statusCode, body: (await res.body.json()) as Answer['body'] }
}

async function adminGet<T>(url: string, path: string): Promise<T> {
  const res = await request(`${url}${path}`, { headers: ADMIN })
  assert.equal(res.statusCode, 200, path)
  return (await res.body.json()) as T
}

function configText(mocks: { a: MockUpstream; b?: MockUpstream }, models: string, extra = '', port = 0): string {
  return `
server: { host: 127.0.0.1, port: ${port} }
upstreams:
  - { name: a, url: "${mocks.a.url}", protocol: openai }
${mocks.b === undefined ? '' : `  - { name: b, url: "${mocks.b.url}", protocol: openai }\n`}models:
${models}
healthChecks: { enabled: false }
admin: { token: "${TOKEN}" }
${extra}`
}

describe('hot reload through POST /admin/reload', () => {
  let dir: string
  let file: string
  let a: MockUpstream
  let b: MockUpstream
  let gateway: RunningGateway
  const logs: string[] = []
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'llmproxy-reload-'))
    file = join(dir, 'llmproxy.yaml')
    a = await startMockUpstream({ defaults: { tokens: 5 } })
    b = await startMockUpstream({ defaults: { tokens: 5 } })
    writeFileSync(file, configText({ a }, '  - { name: gpt-old, upstreams: [a] }', KEYS_AND_LIMITS))
    gateway = await startGateway(loadConfigFile(file, {}), { configFile: file, logDestination: logSink(logs) })
  })
  after(async () => {
    await gateway?.shutdown('test over')
    await a?.close()
    await b?.close()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  test('a stream in flight completes while a reload changes the models; new requests use the new routes', async () => {
    const url = gateway.url
    assert.deepEqual(await chat(url, 'gpt-old', 'sk-key-one-0001'), { status: 200, code: null })

    // 15 tokens 100 ms apart: about 1.5 s of stream, across the reload.
    const stream = await request(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-key-one-0001' },
      body: chatBody('gpt-old', { stream: true, mock: { tokens: 15, gapMs: 100 } }),
    })
    assert.equal(stream.statusCode, 200)
    const chunks = stream.body[Symbol.asyncIterator]()
    let text = ''
    const first = await chunks.next()
    text += Buffer.from(first.value as Uint8Array).toString()
    assert.ok(!text.includes('[DONE]'), 'still streaming')

    writeFileSync(
      file,
      configText(
        { a, b },
        '  - { name: gpt-new, aliases: [gpt-new-alias], upstreams: [a, b] }',
        `${KEYS_AND_LIMITS}\nretry: { attempts: 2 }`,
      ),
    )
    const reloaded = await reload(url)
    assert.equal(reloaded.status, 200, JSON.stringify(reloaded.body))
    assert.deepEqual(reloaded.body, { reloaded: true, applied: ['upstreams', 'models'], restartRequired: ['retry'] })

    // The upstream that stayed kept its state: the stream still counts as in flight on it.
    const upstreams = await adminGet<{ name: string; inFlight: number }[]>(url, '/admin/upstreams')
    assert.deepEqual(
      upstreams.map((u) => [u.name, u.inFlight]),
      [
        ['a', 1],
        ['b', 0],
      ],
    )

    assert.deepEqual(await chat(url, 'gpt-new', 'sk-key-one-0001'), { status: 200, code: null })
    assert.deepEqual(await chat(url, 'gpt-new-alias', 'sk-key-one-0001'), { status: 200, code: null })
    assert.deepEqual(await chat(url, 'gpt-old', 'sk-key-one-0001'), { status: 404, code: 'model_not_found' })
    const models = await request(`${url}/v1/models`, { headers: { authorization: 'Bearer sk-key-one-0001' } })
    const listed = (await models.body.json()) as { data: { id: string }[] }
    assert.deepEqual(
      listed.data.map((m) => m.id),
      ['gpt-new', 'gpt-new-alias'],
    )

    // The config in force: the new models, the retry settings the gateway started with.
    const inForce = await adminGet<{ models: { name: string }[]; retry: { attempts: number } }>(url, '/admin/config')
    assert.deepEqual(
      inForce.models.map((m) => m.name),
      ['gpt-new'],
    )
    assert.equal(inForce.retry.attempts, 3)

    for (let next = await chunks.next(); next.done !== true; next = await chunks.next()) {
      text += Buffer.from(next.value as Uint8Array).toString()
    }
    assert.ok(text.trimEnd().endsWith('data: [DONE]'), text)
    const content = text
      .split('\n')
      .filter((line) => line.startsWith('data: {'))
      .map((line) => (JSON.parse(line.slice(6)) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '')
      .join('')
    assert.equal(content, expectedContent(15))

    // Reloading the same file again changes nothing live; the restart-only difference is still reported.
    const again = await reload(url)
    assert.deepEqual(again.body, { reloaded: true, applied: [], restartRequired: ['retry'] })
    assert.ok(logs.some((l) => l.includes('config reloaded')))
  })

  test('an invalid file changes nothing and the problems are returned', async () => {
    const url = gateway.url
    const before = JSON.stringify(gateway.app.llmConfig.current())
    const cases: [string, string, RegExp][] = [
      ['upstreams: [', '', /not valid YAML/],
      [configText({ a }, '  - { name: gpt-x, upstreams: [ghost] }'), '/models/0/upstreams/0', /unknown upstream "ghost"/],
      [configText({ a }, '  - { name: gpt-x, upstreams: [a, a] }'), '/models/0/upstreams/1', /upstream "a" is already in this pool/],
      [configText({ a }, '  - { name: gpt-x, upstreams: [a] }', 'metrics: { path: /readyz }'), '/metrics/path', /served by the gateway/],
      [configText({ a }, '  - { name: gpt-x, upstreams: [a] }', 'timeouts: { connectMs: -5 }'), '/timeouts/connectMs', /./],
      [
        configText({ a }, '  - { name: gpt-x, upstreams: [a] }').replace(`url: "${a.url}"`, 'url: "ftp://example.com"'),
        '/upstreams/0/url',
        /http or https/,
      ],
    ]
    for (const [text, path, message] of cases) {
      writeFileSync(file, text)
      const res = await reload(url)
      assert.equal(res.status, 400, text)
      assert.equal(res.body.reloaded, false)
      const problem = res.body.problems?.find((p) => p.path === path)
      assert.ok(problem !== undefined, `${path} missing from ${JSON.stringify(res.body.problems)}`)
      assert.match(problem.message, message)
      assert.equal(JSON.stringify(gateway.app.llmConfig.current()), before)
      assert.deepEqual(await chat(url, 'gpt-new', 'sk-key-one-0001'), { status: 200, code: null })
    }
    rmSync(file)
    const missing = await reload(url)
    assert.equal(missing.status, 400)
    assert.match(missing.body.problems?.[0]?.message ?? '', /cannot read the file: ENOENT/)
    assert.ok(logs.some((l) => l.includes('config reload failed')))
  })

  test('a broken line holding a literal secret: the 400 and the log give the line and the problem, never the secret', async () => {
    const secret = 'sk-literal-secret-on-a-broken-line-0042'
    // An unterminated flow mapping on the upstream line that holds the key.
    writeFileSync(
      file,
      configText({ a }, '  - { name: gpt-x, upstreams: [a] }').replace(
        `  - { name: a, url: "${a.url}", protocol: openai }`,
        `  - { name: a, url: "${a.url}", protocol: openai, apiKey: "${secret}"`,
      ),
    )
    logs.length = 0
    const res = await reload(gateway.url)
    assert.equal(res.status, 400)
    assert.ok(!JSON.stringify(res.body).includes(secret), JSON.stringify(res.body))
    assert.match(res.body.problems?.[0]?.message ?? '', /^not valid YAML or JSON: line \d+, column \d+: .+ \([A-Z_]+\)$/)
    assert.ok(logs.some((l) => l.includes('config reload failed')))
    assert.ok(!logs.join('\n').includes(secret), logs.join('\n'))
  })

  test('a change a plugin refuses is rolled back: upstreams added by the same file are removed again', async () => {
    const url = gateway.url
    const before = JSON.stringify(gateway.app.llmConfig.current())
    // The upstream list is valid, the model names an upstream of it, but its strategy does not exist.
    const c = await startMockUpstream()
    try {
      writeFileSync(
        file,
        configText({ a, b }, '  - { name: gpt-new, upstreams: [a, b, c], strategy: no-such-strategy }').replace(
          'models:',
          `  - { name: c, url: "${c.url}", protocol: openai }\nmodels:`,
        ),
      )
      const res = await reload(url)
      assert.equal(res.status, 400, JSON.stringify(res.body))
      assert.match(res.body.problems?.[0]?.message ?? '', /no-such-strategy/)
      const upstreams = await adminGet<{ name: string }[]>(url, '/admin/upstreams')
      assert.deepEqual(
        upstreams.map((u) => u.name),
        ['a', 'b'],
      )
      assert.equal(JSON.stringify(gateway.app.llmConfig.current()), before)
      assert.deepEqual(await chat(url, 'gpt-new', 'sk-key-one-0001'), { status: 200, code: null })
    } finally {
      await c.close()
    }
  })

  test('auth keys and rate limits change live; sections that need a restart are reported, not applied', async () => {
    const url = gateway.url
    const models = '  - { name: gpt-new, aliases: [gpt-new-alias], upstreams: [a, b] }'
    writeFileSync(
      file,
      configText(
        { a, b },
        models,
        'auth: { keys: [{ id: k2, key: sk-key-two-0002 }], ipAllowlist: [127.0.0.1] }\nretry: { attempts: 2 }\nrateLimit: { global: { rps: 1 }, perKey: { rpm: 1000 } }',
      ),
    )
    const res = await reload(url)
    assert.equal(res.status, 200, JSON.stringify(res.body))
    assert.deepEqual(res.body, {
      reloaded: true,
      applied: ['auth.keys', 'rateLimit.global'],
      restartRequired: ['retry', 'auth.ipAllowlist'],
    })
    assert.deepEqual(await chat(url, 'gpt-new', 'sk-key-one-0001'), { status: 401, code: 'llmproxy_invalid_api_key' })
    const keys = await adminGet<{ id: string }[]>(url, '/admin/keys')
    assert.deepEqual(
      keys.map((k) => k.id),
      ['k2'],
    )
    // 1 request per second for the gateway: of 3 at once (within at most two one-second windows), one is refused.
    const burst = await Promise.all([1, 2, 3].map(() => chat(url, 'gpt-new', 'sk-key-two-0002')))
    assert.ok(
      burst.some((r) => r.status === 429 && r.code === 'llmproxy_rate_limited'),
      JSON.stringify(burst),
    )
    assert.ok(
      burst.some((r) => r.status === 200),
      JSON.stringify(burst),
    )

    // Removing auth and rate limits entirely needs a restart: both keep working as they are.
    writeFileSync(file, configText({ a, b }, models))
    const removed = await reload(url)
    assert.deepEqual(removed.body, { reloaded: true, applied: [], restartRequired: ['auth', 'rateLimit'] })
    assert.deepEqual(await chat(url, 'gpt-new'), { status: 401, code: 'llmproxy_missing_api_key' })
  })
})

test('a reload that gives keys limits while rate limiting is off: named as needing a restart, not shown as in force', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-reload-limits-'))
  const file = join(dir, 'llmproxy.yaml')
  const a = await startMockUpstream({ defaults: { tokens: 2 } })
  const keys = (limits: string) => `auth: { keys: [{ id: k1, key: sk-key-one-0001${limits} }] }`
  writeFileSync(file, configText({ a }, '  - { name: m, upstreams: [a] }', keys('')))
  const gateway = await startGateway(loadConfigFile(file, {}), { configFile: file, logDestination: logSink([]) })
  t.after(async () => {
    await gateway.shutdown('test over')
    await a.close()
    rmSync(dir, { recursive: true, force: true })
  })
  writeFileSync(file, configText({ a }, '  - { name: m, upstreams: [a] }', keys(', rateLimit: { rpm: 1 }')))
  const res = await reload(gateway.url)
  // The file has no rateLimit section: the answer says where it comes from. Nothing changed in force.
  assert.deepEqual(res.body, {
    reloaded: true,
    applied: [],
    restartRequired: ['rateLimit (the keys’ limits turn it on; it was off at start)'],
  })
  // What is in force, everywhere: no limit (the key table, and the config a replacement worker would start from).
  const [key] = await adminGet<{ id: string; limits: unknown }[]>(gateway.url, '/admin/keys')
  assert.deepEqual({ id: key?.id, limits: key?.limits }, { id: 'k1', limits: null })
  const inForce = await adminGet<{ auth: { keys: Record<string, unknown>[] } }>(gateway.url, '/admin/config')
  assert.equal(inForce.auth.keys[0]?.rateLimit, undefined)
  for (let i = 0; i < 2; i++) assert.deepEqual(await chat(gateway.url, 'm', 'sk-key-one-0001'), { status: 200, code: null })
})

test('requests queued for an upstream a reload removes go to the pool in force; a model no longer served gets a 404', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-reload-queue-'))
  const file = join(dir, 'llmproxy.yaml')
  const a = await startMockUpstream({ defaults: { tokens: 2 } })
  const b = await startMockUpstream({ defaults: { tokens: 2 } })
  const config = (upstream: string, models: string) => `
server: { host: 127.0.0.1, port: 0 }
upstreams:
  - ${upstream}
models: ${models}
healthChecks: { enabled: false }
admin: { token: "${TOKEN}" }
`
  writeFileSync(
    file,
    config(
      `{ name: a, url: "${a.url}", protocol: openai, maxConcurrency: 1 }`,
      '[{ name: m1, upstreams: [a] }, { name: m2, upstreams: [a] }]',
    ),
  )
  const gateway = await startGateway(loadConfigFile(file, {}), { configFile: file, logDestination: logSink([]) })
  t.after(async () => {
    await gateway.shutdown('test over')
    await a.close()
    await b.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const send = (model: string, mock: Record<string, unknown> = {}) =>
    request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chatBody(model, { mock }),
    }).then(async (res) => ({ status: res.statusCode, body: (await res.body.json()) as { error?: { code: string } } }))

  // a's one slot is taken for a second; two requests wait in its queue.
  const inFlight = send('m1', { ttftMs: 1000 })
  await a.waitForRequests(1)
  const queuedForM1 = send('m1')
  const queuedForM2 = send('m2')
  await sleep(200)

  writeFileSync(file, config(`{ name: b, url: "${b.url}", protocol: openai }`, '[{ name: m1, upstreams: [b] }]'))
  assert.equal((await reload(gateway.url)).status, 200)

  // Not started, the request for m1 goes to m1's pool in force at once; the one for m2, a model gone, gets its 404.
  const [m1, m2] = await Promise.all([queuedForM1, queuedForM2])
  assert.equal(m1.status, 200, JSON.stringify(m1.body))
  assert.deepEqual({ status: m2.status, code: m2.body.error?.code }, { status: 404, code: 'model_not_found' })
  assert.deepEqual([a.requests.length, b.requests.length], [1, 1], 'a, removed, got only the request it was serving; b the one that waited')
  // The request in flight on the removed upstream finishes there.
  assert.equal((await inFlight).status, 200)
})

test('a pool a reload left without a route is retired: its stream in flight finishes, then only the pool in force reports panic', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-reload-pools-'))
  const file = join(dir, 'llmproxy.yaml')
  const a = await startMockUpstream({ defaults: { tokens: 2 } })
  const b = await startMockUpstream({ defaults: { tokens: 2 } })
  const config = (strategy: string) =>
    `${configText({ a, b }, `  - { name: m, upstreams: [a, b], strategy: ${strategy} }`)}passiveHealth: { failuresToEject: 1 }\n`
  writeFileSync(file, config('round-robin'))
  const logs: string[] = []
  const gateway = await startGateway(loadConfigFile(file, {}), { configFile: file, logDestination: logSink(logs) })
  t.after(async () => {
    await gateway.shutdown('test over')
    await a.close()
    await b.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const send = (mock: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    request(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chatBody('m', { mock, ...extra }),
    })

  // Started on the first pool; every strategy after it makes a new pool of the same upstreams.
  const stream = await send({ tokens: 10, gapMs: 100 }, { stream: true })
  assert.equal(stream.statusCode, 200)
  for (const strategy of ['weighted', 'least-connections', 'p2c', 'latency']) {
    writeFileSync(file, config(strategy))
    const reloaded = await reload(gateway.url)
    assert.deepEqual(reloaded.body.applied, ['models'], JSON.stringify(reloaded.body))
  }
  const text = await stream.body.text()
  assert.ok(text.trimEnd().endsWith('data: [DONE]'), text)

  // Both upstreams fail a request (one failure ejects): every pool of them would be in panic mode.
  const failed = await send({ status: 503 })
  await failed.body.dump()
  assert.equal(failed.statusCode, 503)
  const panics = logs
    .map((line) => JSON.parse(line) as { msg: string; pool?: string[]; strategy?: string })
    .filter((line) => line.msg.startsWith('pool in panic mode'))
  assert.deepEqual(
    panics.map((line) => [line.pool, line.strategy]),
    [[['a', 'b'], 'latency']],
  )
})

/** Starts the CLI on `file` with --port 0; resolves with its url once it listens. */
async function startCli(file: string, onSpawn: (child: ChildProcess) => void): Promise<{ url: string; output(): string }> {
  const env = { ...process.env }
  delete env.NODE_TEST_CONTEXT // the child is a server, not a test runner child
  const child = spawn(
    process.execPath,
    ['--conditions=llmproxy-source', '--import', 'tsx', 'packages/server/src/cli.ts', '--config', file, '--port', '0'],
    { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  onSpawn(child)
  let out = ''
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    out += s
  })
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    out += s
  })
  const deadline = Date.now() + 60_000
  for (;;) {
    const found = /Server listening at (http:\/\/[^"\s]+)/.exec(out)
    if (found?.[1] !== undefined) return { url: found[1], output: () => out }
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the gateway exited before listening:\n${out}`)
    if (Date.now() > deadline) throw new Error(`the gateway did not listen within 60 s:\n${out}`)
    await sleep(50)
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

async function until(check: () => boolean, what: string, output: () => string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${output()}`)
    await sleep(25)
  }
}

/** Runs the CLI from source to its exit, outside the test runner's context (`env`: without LLMPROXY_CONFIG, say). */
function runCli(args: string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const childEnv = { ...env }
  delete childEnv.NODE_TEST_CONTEXT
  return spawnSync(process.execPath, ['--conditions=llmproxy-source', '--import', 'tsx', 'packages/server/src/cli.ts', ...args], {
    cwd: REPO_ROOT,
    env: childEnv,
    encoding: 'utf8',
    timeout: 60_000,
  })
}

/** A reload of the gateway at `url` refused with 400, its problems at `paths`, in order, each matching `expected`. */
async function refusedByReload(url: string, paths: string[], expected: RegExp[]) {
  const res = await reload(url)
  assert.equal(res.status, 400, JSON.stringify(res.body))
  assert.deepEqual(
    res.body.problems?.map((p) => p.path),
    paths,
  )
  for (const [i, p] of (res.body.problems ?? []).entries()) assert.match(`${p.path}: ${p.message}`, expected[i] as RegExp)
  return res
}

/** `check` and a start both refuse `file` (exit 1), each listing every one of `expected`; their outputs. */
function refusedByCli(file: string, expected: RegExp[]): string[] {
  return [
    ['check', '--config', file],
    ['--config', file, '--port', '0'],
  ].map((args) => {
    const run = runCli(args)
    const output = `${run.stdout}${run.stderr}`
    assert.equal(run.status, 1, output)
    for (const problem of expected) assert.match(output, problem)
    return output
  })
}

test('llmproxy check and a failed start print the line and the problem of a broken config, never its secret', () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-check-'))
  try {
    const secret = 'sk-literal-secret-in-check-0043'
    const file = join(dir, 'broken.yaml')
    writeFileSync(file, `upstreams:\n  - { name: a, url: "http://127.0.0.1:9", protocol: openai, apiKey: "${secret}"\nmodels: []\n`)
    for (const args of [
      ['check', '--config', file],
      ['--config', file],
    ]) {
      const run = runCli(args)
      const output = `${run.stdout}${run.stderr}`
      assert.equal(run.status, 1, output)
      assert.match(output, /not valid YAML or JSON: line 3, column 1: .+ \(BAD_INDENT\)/)
      assert.ok(!output.includes(secret), output)
    }
    // Without a file: what to give it, not a stack trace.
    const env = { ...process.env }
    delete env.LLMPROXY_CONFIG
    const bare = runCli(['check'], env)
    assert.equal(bare.status, 2, bare.stderr)
    assert.match(bare.stderr, /^check needs --config FILE \(or LLMPROXY_CONFIG\)\.\nUsage:/)
    assert.doesNotMatch(bare.stderr, /\n\s+at /)
    // An option it does not know (--version): named, then the usage; no stack trace.
    const unknown = runCli(['--version'], env)
    assert.equal(unknown.status, 2, unknown.stderr)
    assert.match(unknown.stderr, /^Unknown option '--version'.*\n(.*\n)*Usage:/)
    assert.doesNotMatch(unknown.stderr, /\n\s+at /)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

test('a YAML tag on a secret (!secret, !vault, !!int): check, start and reload refuse it at its place, and never print the secret', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-tags-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const upstreamKey = 'sk-tagged-upstream-key-0044'
  const clientKey = 'sk-tagged-client-key-0045'
  const secrets = [upstreamKey, clientKey, TOKEN]
  // The yaml library printed each tagged line to stderr (process.emitWarning) and read `!secret x` as "x".
  const config = (tags: [string, string, string]) => `server: { host: 127.0.0.1, port: 0 }
upstreams:
  - name: a
    url: http://127.0.0.1:9
    protocol: openai
    apiKey: ${tags[0]} ${upstreamKey}
models: [{ name: m, upstreams: [a] }]
healthChecks: { enabled: false }
auth:
  keys:
    - { id: team-a, key: ${tags[1]} ${clientKey} }
admin: { token: ${tags[2]} ${TOKEN} }
`
  const expected = [
    /\/upstreams\/0\/apiKey: line 6, column 13: Unresolved tag: !secret \(TAG_RESOLVE_FAILED\)/,
    /\/auth\/keys\/0\/key: line 11, column 26: Unresolved tag: !vault \(TAG_RESOLVE_FAILED\)/,
    /\/admin\/token: line 12, column 17: Unresolved tag: tag:yaml.org,2002:int \(TAG_RESOLVE_FAILED\)/,
  ]
  const file = join(dir, 'tagged.yaml')
  writeFileSync(file, config(['!secret', '!vault', '!!int']))
  for (const output of refusedByCli(file, expected)) {
    assert.deepEqual(
      secrets.filter((secret) => output.includes(secret)),
      [],
      output,
    )
  }

  writeFileSync(file, config(['', '', '']))
  let child: ChildProcess | undefined
  const cli = await startCli(file, (c) => {
    child = c
  })
  t.after(() => stopChild(child as ChildProcess))
  writeFileSync(file, config(['!secret', '!vault', '!!int']))
  const res = await refusedByReload(cli.url, ['/upstreams/0/apiKey', '/auth/keys/0/key', '/admin/token'], expected)
  await until(() => cli.output().includes('config reload failed'), 'the failed reload', cli.output)
  assert.deepEqual(
    secrets.filter((secret) => `${JSON.stringify(res.body)}${cli.output()}`.includes(secret)),
    [],
    cli.output(),
  )
})

test('a mistyped environment reference: check, start and reload refuse it at its place, not taken as a literal key', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-env-refs-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  // The values come from the defaults: the variables are not set, here or in the child.
  const config = (refs: [string, string, string]) => `server: { host: 127.0.0.1, port: 0 }
upstreams:
  - { name: a, url: "http://127.0.0.1:9", protocol: openai, apiKey: "${refs[0]}" }
models: [{ name: m, upstreams: [a] }]
healthChecks: { enabled: false }
auth:
  keys:
    - { id: team-a, key: "${refs[1]}" }
admin: { token: "${refs[2]}" }
`
  const written = config([`\${UPSTREAM_KEY:-sk-upstream-0046}`, `\${TEAM_A_KEY:-sk-team-a-0047}`, `\${ADMIN_TOKEN_VALUE:-${TOKEN}}`])
  // A } left out, a hyphen in the name: each used to be the literal key and token, and `check` said "valid".
  const mistyped = written.replace('-0046}', '-0046').replace('TEAM_A_KEY', 'TEAM-A-KEY').replace(`${TOKEN}}`, TOKEN)
  const expected = [
    /\/upstreams\/0\/apiKey: the "\$\{" at index 0 is not closed by "\}"/,
    /\/auth\/keys\/0\/key: the "\$\{" at index 0 starts no environment reference: a name is letters, digits and _/,
    /\/admin\/token: the "\$\{" at index 0 is not closed by "\}"/,
  ]
  const file = join(dir, 'mistyped.yaml')
  writeFileSync(file, mistyped)
  refusedByCli(file, expected)

  writeFileSync(file, written)
  let child: ChildProcess | undefined
  const cli = await startCli(file, (c) => {
    child = c
  })
  t.after(() => stopChild(child as ChildProcess))
  writeFileSync(file, mistyped)
  await refusedByReload(cli.url, ['/upstreams/0/apiKey', '/auth/keys/0/key', '/admin/token'], expected)
  // The key in force is still the one the valid file gave (it passes auth; port 9 refuses the connection), and the
  // mistyped text is none.
  assert.notEqual((await chat(cli.url, 'm', 'sk-team-a-0047')).status, 401)
  assert.deepEqual(await chat(cli.url, 'm', `\${TEAM-A-KEY:-sk-team-a-0047}`), { status: 401, code: 'llmproxy_invalid_api_key' })
})

describe('SIGHUP', () => {
  let dir: string
  let a: MockUpstream
  let child: ChildProcess | undefined
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'llmproxy-sighup-'))
    a = await startMockUpstream({ defaults: { tokens: 3 } })
  })
  after(async () => {
    if (child !== undefined) await stopChild(child)
    await a?.close()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  test('reloads the config file of a running CLI; an invalid file changes nothing', async () => {
    const file = join(dir, 'llmproxy.yaml')
    // port 9 in the file: --port on the command line must win at start and on reload.
    writeFileSync(file, configText({ a }, '  - { name: before-hup, upstreams: [a] }', '', 9))
    const cli = await startCli(file, (c) => {
      child = c
    })
    assert.deepEqual(await chat(cli.url, 'before-hup'), { status: 200, code: null })
    // What an operator who sent the signal can read back: the last reload, and the counter an alert watches.
    const history = () => adminGet<ReloadHistory>(cli.url, '/admin/reload')
    const reloadCounts = async () => {
      const text = await (await request(`${cli.url}/metrics`)).body.text()
      return ['applied', 'failed'].map((o) =>
        Number(new RegExp(`llmproxy_config_reloads_total\\{outcome="${o}"\\} (\\d+)`).exec(text)?.[1]),
      )
    }
    assert.deepEqual(await history(), { file, last: null })
    assert.deepEqual(await reloadCounts(), [0, 0])

    const reloads = () => (cli.output().match(/"msg":"config reloaded"/g) ?? []).length
    writeFileSync(file, configText({ a }, '  - { name: after-hup, upstreams: [a] }', '', 9))
    child?.kill('SIGHUP')
    await until(() => reloads() === 1, 'the reload', cli.output)
    assert.match(cli.output(), /"applied":\["models"\],"restartRequired":\[\]/)
    assert.deepEqual(await chat(cli.url, 'after-hup'), { status: 200, code: null })
    assert.deepEqual(await chat(cli.url, 'before-hup'), { status: 404, code: 'model_not_found' })
    const applied = (await history()).last
    assert.deepEqual(
      { ...applied, at: undefined },
      { at: undefined, reloaded: true, applied: ['models'], restartRequired: [], problems: [] },
    )
    assert.ok(Math.abs(Date.parse(applied?.at ?? '') - Date.now()) < 60_000, applied?.at)

    writeFileSync(file, 'models: [')
    child?.kill('SIGHUP')
    await until(() => cli.output().includes('config reload failed'), 'the failed reload', cli.output)
    assert.deepEqual(await chat(cli.url, 'after-hup'), { status: 200, code: null })
    const failed = (await history()).last
    assert.equal(failed?.reloaded, false)
    assert.match(failed?.problems[0]?.message ?? '', /not valid YAML or JSON/)
    assert.deepEqual(await reloadCounts(), [1, 1])
    assert.equal(child?.exitCode, null, 'still running')
  })

  for (const workers of [1, 2]) {
    test(`one that comes while the gateway starts is held, then replayed as a reload once it serves (workers: ${workers})`, async (t) => {
      // The start reads the quota state file before it listens: a FIFO holds it there until the test writes to it.
      const fifo = join(dir, `quota-state-${workers}.fifo`)
      execFileSync('mkfifo', [fifo])
      const file = join(dir, `starting-${workers}.yaml`)
      const limits = `auth: { keys: [{ id: k1, key: sk-key-one-0001, quota: { tokens: 1000, per: day } }] }\nrateLimit: { quotaStateFile: "${fifo}" }`
      const write = (model: string) =>
        writeFileSync(
          file,
          configText({ a }, `  - { name: ${model}, upstreams: [a] }`, limits).replace('port: 0 }', `port: 0, workers: ${workers} }`),
        )
      write('before-hup')
      let gateway: ChildProcess | undefined
      const starting = startCli(file, (c) => {
        gateway = c
      })
      // Opens once the gateway opened the file to read it, that is while it starts (or fails if the start failed).
      const opening = open(fifo, 'w')
      try {
        const writer = await Promise.race([opening, starting.then(() => assert.fail('listening without the quota state file'))])
        // A reload tool changed the file after the start read it, and says so.
        write('after-hup')
        gateway?.kill('SIGHUP')
        await sleep(200)
        assert.equal(gateway?.signalCode, null, "SIGHUP's default action ended the starting gateway")
        await writer.writeFile(JSON.stringify({ version: 1, savedAt: new Date().toISOString(), counters: [] }))
        await writer.close()
      } catch (err) {
        if (gateway !== undefined) await stopChild(gateway)
        throw err
      } finally {
        // A start that never read the FIFO leaves the open above waiting: a reader of our own ends it.
        closeSync(openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK))
      }
      const cli = await starting
      t.after(() => stopChild(gateway as ChildProcess))
      // One reload of the file (with workers, each also logs its own, without a file).
      const reloads = () =>
        cli
          .output()
          .split('\n')
          .filter((line) => line.includes(`"file":${JSON.stringify(file)}`) && line.includes('"msg":"config reloaded"'))
      await until(() => reloads().length > 0, 'the reload', cli.output)
      assert.deepEqual(await chat(cli.url, 'after-hup', 'sk-key-one-0001'), { status: 200, code: null })
      assert.equal(reloads().length, 1, cli.output())
    })
  }
})

test('keys added to a gateway started without auth need a restart: reported, and logged as an error, not read as done', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-reload-auth-'))
  const file = join(dir, 'llmproxy.yaml')
  const a = await startMockUpstream({ defaults: { tokens: 2 } })
  const models = '  - { name: m, upstreams: [a] }'
  writeFileSync(file, configText({ a }, models))
  const lines: string[] = []
  const gateway = await startGateway(loadConfigFile(file, {}), { configFile: file, logDestination: logSink(lines) })
  t.after(async () => {
    await gateway.shutdown('test over')
    await a.close()
    rmSync(dir, { recursive: true, force: true })
  })
  writeFileSync(file, configText({ a }, models, 'auth: { keys: [{ id: k1, key: sk-key-one-0001 }] }'))
  const res = await reload(gateway.url)
  assert.deepEqual(res.body, { reloaded: true, applied: [], restartRequired: ['auth'] })
  // Still open until the restart, as the answer says.
  assert.equal((await chat(gateway.url, 'm')).status, 200)
  const logged = () => lines.map((line) => JSON.parse(line) as { level: number; msg: string; restartRequired?: string[] })
  const errors = () => logged().filter((line) => line.level === 50 && /access control/.test(line.msg))
  assert.deepEqual(
    errors().map((line) => line.restartRequired),
    [['auth']],
  )
  // What is no access control, or stricter than the file, is no error: a quota state file, auth taken out again.
  writeFileSync(file, configText({ a }, models, `rateLimit: { global: { rps: 100 }, quotaStateFile: ${join(dir, 'quota.json')} }`))
  assert.deepEqual((await reload(gateway.url)).body.restartRequired, ['rateLimit'])
  assert.deepEqual(
    errors().map((line) => line.restartRequired),
    [['auth'], ['rateLimit']],
  )
})

test('access control a reload cannot put in force is that which loosens the gateway: added, not removed', () => {
  const parsed = (extra: string) =>
    parseConfig(`upstreams: [{ name: a, url: "http://x", protocol: openai }]\nmodels: [{ name: m, upstreams: [a] }]\n${extra}`, 't')
  const open = parsed('')
  const listed = (cidr: string) => parsed(`auth: { keys: [{ id: k, key: sk-key-0001 }], ipAllowlist: ["${cidr}"] }\n`)
  assert.deepEqual(planReload(open, listed('10.0.0.0/8')).notInForce, ['auth'])
  assert.deepEqual(planReload(listed('10.0.0.0/8'), open).notInForce, [])
  assert.deepEqual(planReload(listed('10.0.0.0/8'), listed('10.0.0.0/16')).notInForce, ['auth.ipAllowlist'])
  assert.deepEqual(planReload(open, parsed('rateLimit: { global: { rps: 10 } }\n')).notInForce, ['rateLimit'])
})
