import { strict as assert } from 'node:assert'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import fastifyRateLimit from '@fastify/rate-limit'
import { buildUsageRecord, ConfigError, llmCore } from '@llmproxy/core'
import Fastify, { type FastifyInstance } from 'fastify'
import { Agent, request } from 'undici'
import { RATE_LIMIT_CODES, rateLimit } from '../src/index.js'
import { awayFromMinuteBoundary, build, chat, settle, until } from './helpers.js'

interface ErrorShape {
  error: { message: string; type: string; code: string }
}

function assertError(body: string, code: string): ErrorShape {
  const parsed = JSON.parse(body) as ErrorShape
  assert.deepEqual(Object.keys(parsed), ['error'])
  assert.equal(parsed.error.type, 'rate_limit_error')
  assert.equal(parsed.error.code, code)
  assert.equal(typeof parsed.error.message, 'string')
  return parsed
}

test('global limit: the gateway-wide rpm applies across keys, answers 429 in the OpenAI shape, skips opted-out routes', async (t) => {
  const h = await build({ global: { rpm: 3 } })
  t.after(() => h.app.close())
  assert.equal((await chat(h.app, 'a')).statusCode, 200)
  assert.equal((await chat(h.app, 'b')).statusCode, 200)
  assert.equal((await chat(h.app, null)).statusCode, 200)
  const limited = await chat(h.app, 'c')
  assert.equal(limited.statusCode, 429)
  assertError(limited.body, RATE_LIMIT_CODES.requests)
  assert.match(limited.headers['content-type'] as string, /application\/json/)
  assert.equal(limited.headers['x-ratelimit-limit-requests'], '3')
  assert.equal(limited.headers['x-ratelimit-remaining-requests'], '0')
  assert.match(limited.headers['x-ratelimit-reset-requests'] as string, /^(\d+s|\d+ms|1m0s)$/)
  const retryAfter = Number(limited.headers['retry-after'])
  assert.ok(retryAfter >= 1 && retryAfter <= 60, `retry-after ${retryAfter}`)
  assert.deepEqual(h.rejections, [{ reason: 'rate_limit', keyId: 'c', statusCode: 429 }])
  const health = await h.app.inject('/health')
  assert.equal(health.statusCode, 200)
})

test('a key refused by its own limit does not spend the gateway-wide budget of the other keys', async (t) => {
  await awayFromMinuteBoundary()
  const h = await build({ global: { rpm: 5 } }, { greedy: { rpm: 1 }, other: null })
  t.after(() => h.app.close())
  const greedy = []
  for (let i = 0; i < 6; i++) greedy.push((await chat(h.app, 'greedy')).statusCode)
  assert.deepEqual(greedy, [200, 429, 429, 429, 429, 429])
  // One of the gateway's five went to the greedy key; the other key has the four left.
  for (let i = 0; i < 4; i++) assert.equal((await chat(h.app, 'other')).statusCode, 200, `other ${i}`)
  const spent = await chat(h.app, 'other')
  assert.equal(spent.statusCode, 429)
  assert.match(spent.json().error.message, /gateway/)
})

test('global rps limit counts per second', async (t) => {
  const h = await build({ global: { rps: 2 } })
  t.after(() => h.app.close())
  const codes = []
  for (let i = 0; i < 3; i++) codes.push((await chat(h.app, null)).statusCode)
  // Three sequential injects fit in one second on any machine; tolerate a window boundary in between.
  assert.ok(codes.filter((c) => c === 429).length <= 1)
  const burst = await Promise.all([chat(h.app, null), chat(h.app, null), chat(h.app, null)])
  assert.ok(burst.some((r) => r.statusCode === 429))
})

test('per-key rpm: default for every key, a key’s own limit overrides it, headers on success and on 429', async (t) => {
  const h = await build({ perKey: { rpm: 2 } }, { big: { rpm: 4 }, small: null })
  t.after(() => h.app.close())
  const first = await chat(h.app, 'small')
  assert.equal(first.statusCode, 200)
  assert.equal(first.headers['x-ratelimit-limit-requests'], '2')
  assert.equal(first.headers['x-ratelimit-remaining-requests'], '1')
  assert.match(first.headers['x-ratelimit-reset-requests'] as string, /^(\d+s|\d+ms|1m0s)$/)
  assert.equal((await chat(h.app, 'small')).headers['x-ratelimit-remaining-requests'], '0')
  const limited = await chat(h.app, 'small')
  assert.equal(limited.statusCode, 429)
  const body = assertError(limited.body, 'llmproxy_rate_limited')
  assert.match(body.error.message, /2 requests per minute/)
  assert.ok(Number(limited.headers['retry-after']) >= 1)

  for (let i = 0; i < 4; i++) {
    const res = await chat(h.app, 'big')
    assert.equal(res.statusCode, 200)
    assert.equal(res.headers['x-ratelimit-limit-requests'], '4')
  }
  assert.equal((await chat(h.app, 'big')).statusCode, 429)
  // Without auth the client IP is the subject.
  assert.equal((await chat(h.app, null)).statusCode, 200)
  assert.equal((await chat(h.app, null)).statusCode, 200)
  assert.equal((await chat(h.app, null)).statusCode, 429)
  assert.deepEqual(
    h.rejections.map((r) => [r.reason, r.keyId]),
    [
      ['rate_limit', 'small'],
      ['rate_limit', 'big'],
      ['rate_limit', null],
    ],
  )
  // No per-key limit header on an opted-out route.
  assert.equal((await h.app.inject('/health')).headers['x-ratelimit-limit-requests'], undefined)
})

test('tpm: reserves max_tokens plus a prompt estimate, reconciles to the usage record, rejects what would exceed', async (t) => {
  await awayFromMinuteBoundary()
  const h = await build({ perKey: { tpm: 1000 } })
  t.after(() => h.app.close())
  const payload = JSON.stringify({ model: 'm', max_tokens: 300, use: 50 })
  const reserved = 300 + Math.ceil(Buffer.byteLength(payload) / 4)
  const res = await chat(h.app, 'k', { max_tokens: 300, use: 50 })
  assert.equal(res.statusCode, 200)
  // While the request ran, its reservation was held.
  assert.equal(res.json().during.tpm.used, reserved)
  assert.equal(res.headers['x-ratelimit-limit-tokens'], '1000')
  assert.equal(res.headers['x-ratelimit-remaining-tokens'], `${1000 - reserved}`)
  assert.ok(res.headers['x-ratelimit-reset-tokens'])
  await settle()
  const after = await h.app.rateLimits.usage('k')
  assert.equal(after.tpm?.used, 50)
  assert.equal(after.tpm?.limit, 1000)
  assert.ok(after.tpm !== null && after.tpm.resetMs > 0 && after.tpm.resetMs <= 60_000)

  // Without max_tokens, reserveTokens (256) is reserved.
  const dflt = await chat(h.app, 'k', { use: 0 })
  assert.ok(dflt.json().during.tpm.used >= 256)

  const big = await chat(h.app, 'k', { max_tokens: 2000 })
  assert.equal(big.statusCode, 429)
  assertError(big.body, RATE_LIMIT_CODES.tokens)
  assert.match(big.json().error.message, /more than this key's limit/)
  assert.equal(big.headers['x-ratelimit-limit-tokens'], '1000')
  // It can never pass: no retry-after, and the SDKs are told not to retry it.
  assert.equal(big.headers['retry-after'], undefined)
  assert.equal(big.headers['x-should-retry'], 'false')
  assert.equal(h.rejections.at(-1)?.reason, 'token_limit')
  await settle()
  const end = await h.app.rateLimits.usage('k')
  assert.ok(end.tpm !== null && end.tpm.used <= 50, 'a rejected reservation is not charged')
})

test('tpm: usage records charge the window; a key at its limit is refused until the window resets', async (t) => {
  await awayFromMinuteBoundary()
  const h = await build({ perKey: { tpm: 1000 } }, { small: { tpm: 400 } })
  t.after(() => h.app.close())
  assert.equal((await chat(h.app, 'small', { max_tokens: 10, use: 390 })).statusCode, 200)
  await settle()
  const refused = await chat(h.app, 'small', { max_tokens: 10 })
  assert.equal(refused.statusCode, 429)
  assertError(refused.body, 'llmproxy_token_limit')
  assert.equal(refused.headers['x-ratelimit-limit-tokens'], '400')
  // Other keys are not affected.
  assert.equal((await chat(h.app, 'other', { max_tokens: 10 })).statusCode, 200)
})

test('reservation released when a request is rejected before routing (no usage record)', async (t) => {
  await awayFromMinuteBoundary()
  const h = await build({ perKey: { tpm: 1000 } }, { q: { quota: { tokens: 10_000, per: 'month' } } })
  t.after(() => h.app.close())
  for (let i = 0; i < 5; i++) {
    const res = await chat(h.app, 'q', { max_tokens: 500 }, '/v1/refused')
    assert.equal(res.statusCode, 400)
  }
  await settle()
  const usage = await h.app.rateLimits.usage('q')
  assert.equal(usage.tpm?.used, 0)
  assert.equal(usage.quota?.used, 0)
  // Without the give-back, 5 × 500 reserved tokens would now block this one.
  assert.equal((await chat(h.app, 'q', { max_tokens: 900 })).statusCode, 200)
})

test('concurrency: requests held open count against the key; the slot comes back on finish and on client abort', async (t) => {
  const h = await build({ perKey: { concurrency: 2 } })
  // Our own client, closed with the test: the global one may keep a spare socket open that delays the server's close.
  const agent = new Agent()
  t.after(async () => {
    h.releaseHeld()
    await agent.close()
    await h.app.close()
  })
  await h.app.listen({ port: 0, host: '127.0.0.1' })
  const address = h.app.server.address()
  assert.ok(address !== null && typeof address === 'object')
  const url = `http://127.0.0.1:${address.port}`
  const send = (path: string, signal?: AbortSignal) =>
    request(`${url}${path}`, {
      method: 'POST',
      headers: { 'x-key': 'c', 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'm' }),
      signal,
      dispatcher: agent,
    })
  const first = send('/v1/hold')
  const second = send('/v1/hold')
  await until(() => h.held() === 2)
  assert.deepEqual((await h.app.rateLimits.usage('c')).concurrency, { limit: 2, inFlight: 2 })

  const third = await send('/v1/chat')
  assert.equal(third.statusCode, 429)
  assertError(await third.body.text(), RATE_LIMIT_CODES.concurrency)
  assert.equal(third.headers['retry-after'], '1')
  assert.equal(h.rejections.at(-1)?.reason, 'concurrency')

  h.releaseHeld()
  for (const res of await Promise.all([first, second])) {
    assert.equal(res.statusCode, 200)
    await res.body.text()
  }
  await until(async () => (await h.app.rateLimits.usage('c')).concurrency?.inFlight === 0)
  const fourth = await send('/v1/chat')
  assert.equal(fourth.statusCode, 200)
  await fourth.body.text()

  // A client that goes away while its request is held gives its slot back.
  const controller = new AbortController()
  const aborted = send('/v1/hold', controller.signal).catch((err: unknown) => err)
  await until(() => h.held() === 1)
  assert.equal((await h.app.rateLimits.usage('c')).concurrency?.inFlight, 1)
  controller.abort()
  await aborted
  await until(async () => (await h.app.rateLimits.usage('c')).concurrency?.inFlight === 0)
})

test('quota: tokens per day are charged from usage records; a request that would exceed gets quota_exceeded', async (t) => {
  const h = await build({}, { q: { quota: { tokens: 1000, per: 'day' } } })
  t.after(() => h.app.close())
  assert.equal((await chat(h.app, 'q', { max_tokens: 100, use: 800 })).statusCode, 200)
  await settle()
  const usage = await h.app.rateLimits.usage('q')
  assert.ok(usage.quota !== null)
  assert.equal(usage.quota.used, 800)
  assert.equal(usage.quota.remaining, 200)
  assert.equal(usage.quota.period, 'day')
  const resetAt = new Date(usage.quota.resetAt)
  assert.equal(resetAt.getUTCHours(), 0)
  assert.ok(resetAt.getTime() > Date.now() && resetAt.getTime() <= Date.now() + 24 * 3600_000)
  assert.equal(usage.tpm, null)
  assert.equal(usage.concurrency, null)

  const refused = await chat(h.app, 'q', { max_tokens: 300 })
  assert.equal(refused.statusCode, 429)
  const body = assertError(refused.body, 'quota_exceeded')
  assert.match(body.error.message, /1000 tokens per day/)
  const retryAfter = Number(refused.headers['retry-after'])
  assert.ok(retryAfter >= 1 && retryAfter <= 24 * 3600)
  assert.deepEqual(h.rejections.at(-1), { reason: 'quota', keyId: 'q', statusCode: 429 })
  assert.match(body.error.message, /The quota resets in \d+ s\./)
  // One that needs more than the whole quota can never pass: it says so (no "resets in undefined s").
  const never = await chat(h.app, 'q', { max_tokens: 2000 })
  assert.equal(never.statusCode, 429)
  assert.match(assertError(never.body, 'quota_exceeded').error.message, /more than this key's whole quota of 1000 tokens per day/)
  assert.equal(never.headers['x-should-retry'], 'false')
  // A small request still fits.
  assert.equal((await chat(h.app, 'q', { max_tokens: 50, use: 60 })).statusCode, 200)
})

test('quota: counters are saved to quotaStateFile and reloaded after a restart', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'llmproxy-rl-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'state', 'quota.json')
  const keys = { q: { quota: { tokens: 1000, per: 'month' as const } } }
  const first = await build({ quotaStateFile: file }, keys)
  assert.equal((await chat(first.app, 'q', { max_tokens: 10, use: 700 })).statusCode, 200)
  await settle()
  await first.app.close()
  const saved = JSON.parse(await readFile(file, 'utf8')) as { version: number; counters: Array<[string, number, number]> }
  assert.equal(saved.version, 1)
  assert.equal(saved.counters.length, 1)
  assert.match(saved.counters[0]?.[0] ?? '', /^q:\{key:q\}:\d{4}-\d{2}$/)
  assert.equal(saved.counters[0]?.[1], 700)

  const second = await build({ quotaStateFile: file }, keys)
  t.after(() => second.app.close())
  assert.equal((await second.app.rateLimits.usage('q', keys.q)).quota?.used, 700)
  const refused = await chat(second.app, 'q', { max_tokens: 400 })
  assert.equal(refused.statusCode, 429)
  assertError(refused.body, 'quota_exceeded')
})

test('a quota state file written before keys had hash tags still loads', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'llmproxy-rl-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'quota.json')
  const { writeFile } = await import('node:fs/promises')
  const month = new Date().toISOString().slice(0, 7)
  const end = Date.now() + 3600_000
  await writeFile(file, JSON.stringify({ version: 1, savedAt: new Date().toISOString(), counters: [[`q:${month}:key:old`, 640, end]] }))
  const limits = { quota: { tokens: 1000, per: 'month' as const } }
  const h = await build({ quotaStateFile: file }, { old: limits })
  t.after(() => h.app.close())
  assert.equal((await h.app.rateLimits.usage('old', limits)).quota?.used, 640)
  assert.equal((await chat(h.app, 'old', { max_tokens: 400 })).statusCode, 429)
})

test('a corrupt quota state file is reported and quotas start from zero', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'llmproxy-rl-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'quota.json')
  const { writeFile } = await import('node:fs/promises')
  await writeFile(file, '{"version": 1, "counters": [')
  const limits = { quota: { tokens: 100, per: 'day' as const } }
  const h = await build({ quotaStateFile: file }, { q: limits })
  t.after(() => h.app.close())
  assert.equal((await h.app.rateLimits.usage('q', limits)).quota?.used, 0)
  assert.ok(h.logs.some((l) => l.level === 50 && /quota state file is not valid/.test(l.msg)))
})

test('options are validated, every problem listed', async () => {
  await assert.rejects(
    build({ store: 'redis' }),
    (err: unknown) => err instanceof ConfigError && err.problems.some((p) => p.path === '/redis'),
  )
  await assert.rejects(
    // @ts-expect-error invalid on purpose
    build({ store: 'disk', perKey: { rpm: -1, tpm: 'many' }, extra: true }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError)
      const paths = err.problems.map((p) => p.path).sort()
      assert.deepEqual(paths, ['/extra', '/perKey/rpm', '/perKey/tpm', '/store'])
      return true
    },
  )
})

test('update() hot-reloads limits; store settings are kept', async (t) => {
  const h = await build({ perKey: { rpm: 1 } })
  t.after(() => h.app.close())
  assert.equal((await chat(h.app, 'u')).statusCode, 200)
  assert.equal((await chat(h.app, 'u')).statusCode, 429)
  h.app.rateLimits.update({ perKey: { rpm: 5 }, global: { rps: 1000 } })
  assert.equal((await chat(h.app, 'u')).statusCode, 200)
  assert.equal((await chat(h.app, 'u')).headers['x-ratelimit-limit-requests'], '5')
  assert.throws(() => h.app.rateLimits.update({ perKey: { rpm: -5 } }), ConfigError)
  h.app.rateLimits.update({ store: 'redis', redis: { url: 'redis://127.0.0.1:1' } })
  assert.ok(h.logs.some((l) => l.level === 40 && /after a restart/.test(l.msg)))
  assert.equal(h.app.rateLimits.redisHealthy, null, 'no Redis in use')
  assert.equal(h.app.rateLimits.fallbacks, 0)
})

test('the memory store never loads ioredis (about 10 MB of RSS a process would carry for nothing)', async (t) => {
  const h = await build({ perKey: { rpm: 5 } })
  t.after(() => h.app.close())
  assert.equal((await chat(h.app, 'u')).statusCode, 200)
  const loaded = Object.keys(createRequire(import.meta.url).cache).filter((path) => path.includes('/ioredis/'))
  assert.deepEqual(loaded, [])
})

for (const order of ['before', 'after'] as const) {
  test(`coexists with the app's own @fastify/rate-limit registered ${order} it: each limit keeps its own settings and counters`, async (t) => {
    const app = Fastify()
    t.after(() => app.close())
    // The app's own limiter: 3 per minute per IP on its own route, nothing on the others (its global: false).
    const own = async (): Promise<void> => {
      await app.register(fastifyRateLimit, { global: false })
    }
    if (order === 'before') await own()
    await app.register(llmCore)
    app.addHook('onRequest', async (request) => {
      if (request.headers['x-key'] === 'k') {
        request.llm.keyId = 'k'
        request.llm.keyLimits = { rpm: 2 }
      }
    })
    await app.register(rateLimit, {})
    if (order === 'after') await own()
    app.get('/own', { config: { rateLimit: { max: 3, timeWindow: 60_000 } } }, async () => ({ ok: true }))
    app.post('/v1/chat', async () => ({ ok: true }))

    const gateway = () => app.inject({ method: 'POST', url: '/v1/chat', headers: { 'x-key': 'k' }, payload: {} })
    for (let i = 0; i < 2; i++) {
      const res = await gateway()
      assert.equal(res.statusCode, 200)
      assert.equal(res.headers['x-ratelimit-limit-requests'], '2')
      assert.equal(res.headers['x-ratelimit-limit'], undefined, 'the app’s limiter does not count gateway routes')
    }
    const limited = await gateway()
    assert.equal(limited.statusCode, 429)
    assertError(limited.body, RATE_LIMIT_CODES.requests)

    // The app's route: its own limit (3), its own headers, unaffected by the key's exhausted rpm.
    for (let i = 0; i < 3; i++) {
      const res = await app.inject('/own')
      assert.equal(res.statusCode, 200)
      assert.equal(res.headers['x-ratelimit-limit'], '3')
      assert.equal(res.headers['x-ratelimit-limit-requests'], undefined)
    }
    const ownLimited = await app.inject('/own')
    assert.equal(ownLimited.statusCode, 429)
    assert.match(ownLimited.json().message, /Rate limit exceeded/)
  })
}

/** An app logging warn and above into `lines`. */
function loggingApp(lines: string[]) {
  return Fastify({ logger: { level: 'warn', stream: { write: (line: string) => lines.push(line) } } })
}

test('records of requests outside the plugin’s context (and records the app emits) are no error', async (t) => {
  const lines: string[] = []
  const app = loggingApp(lines)
  t.after(() => app.close())
  await app.register(llmCore)
  // Limited routes in their own context; an unlimited route beside them emits its own usage record.
  await app.register(async (limited) => {
    await limited.register(rateLimit, { perKey: { tpm: 1000 } })
    limited.post('/limited', async () => ({ ok: true }))
  })
  app.post('/own', async (request) => {
    app.llm.emitUsage({ totalTokens: 5 } as never, request)
    return { ok: true }
  })
  assert.equal((await app.inject({ method: 'POST', url: '/own', payload: {} })).statusCode, 200)
  assert.deepEqual(lines, [])
})

test('registered before @llmproxy/auth, or around its context: says at start that the keys’ own limits do not apply', async (t) => {
  const { auth } = await import('@llmproxy/auth')
  const lines: string[] = []
  const app = loggingApp(lines)
  t.after(() => app.close())
  await app.register(rateLimit, {})
  await app.register(auth, { keys: [{ id: 'a', key: 'sk-a-0000000000000000', rateLimit: { rpm: 1 } }] })
  await app.ready()
  assert.ok(
    lines.some((line) => line.includes('registered before @llmproxy/auth')),
    lines.join('\n'),
  )

  // An app-wide limit at the root, auth in the gateway's own context (registered before or after): the root's hook
  // runs first, too.
  for (const gatewayFirst of [false, true]) {
    const around: string[] = []
    const root = loggingApp(around)
    t.after(() => root.close())
    const gateway = async (scope: FastifyInstance) => {
      await scope.register(auth, { keys: [{ id: 'a', key: 'sk-a-0000000000000000', rateLimit: { rpm: 1 } }] })
    }
    if (gatewayFirst) await root.register(gateway)
    await root.register(rateLimit, {})
    if (!gatewayFirst) await root.register(gateway)
    await root.ready()
    assert.ok(
      around.some((line) => line.includes('or around the context auth is in')),
      around.join('\n'),
    )
  }

  const ordered: string[] = []
  const right = loggingApp(ordered)
  t.after(() => right.close())
  await right.register(auth, { keys: [{ id: 'a', key: 'sk-a-0000000000000000', rateLimit: { rpm: 1 } }] })
  await right.register(rateLimit, {})
  await right.ready()
  assert.deepEqual(ordered, [])
})

test('two gateways in sibling contexts, core at the root: each request is counted by its own context’s limits only', async (t) => {
  const app = Fastify({ logger: false })
  t.after(() => app.close())
  // Core at the root (as examples/existing-app): both contexts' records reach one registry, and both engines hear them.
  await app.register(llmCore)
  const engines: Record<string, FastifyInstance> = {}
  for (const name of ['a', 'b']) {
    await app.register(
      async (tenant) => {
        tenant.addHook('onRequest', async (request) => {
          request.llm.keyId = 'k'
          request.llm.keyLimits = { tpm: 100_000 }
        })
        await tenant.register(rateLimit, {})
        tenant.post('/chat', async (request) => {
          const use = (request.body as { use: number }).use
          request.llm.usage = { promptTokens: 0, completionTokens: use, totalTokens: use }
          tenant.llm.emitUsage(buildUsageRecord(request.llm, 200), request)
          return { ok: true }
        })
        engines[name] = tenant
      },
      { prefix: `/${name}` },
    )
  }
  await app.inject({ method: 'POST', url: '/a/chat', payload: { max_tokens: 1000, messages: [], use: 500 } })
  await app.inject({ method: 'POST', url: '/b/chat', payload: { max_tokens: 100, messages: [], use: 5 } })
  const used = async (name: string) => (await (engines[name] as FastifyInstance).rateLimits.usage('k', { tpm: 100_000 })).tpm?.used
  // Settled by another context's engine, /b's request lowered /a's count and kept its own reservation (108).
  assert.deepEqual({ a: await used('a'), b: await used('b') }, { a: 500, b: 5 })
})
