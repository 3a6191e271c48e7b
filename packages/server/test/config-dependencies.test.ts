// Settings that only work with another section are made to work or refused with their path: nothing a config
// file declares is silently ignored.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ConfigError } from '@llmproxy/core'
import { parseConfig } from '../src/index.js'
import { planReload } from '../src/reload.js'

const base = {
  upstreams: [{ name: 'a', url: 'http://127.0.0.1:8000', protocol: 'openai' }],
  models: [{ name: 'm', upstreams: ['a'] }],
}

function parse(extra: Record<string, unknown>) {
  return parseConfig(JSON.stringify({ ...base, ...extra }), 'test.json', {})
}

function problemsOf(extra: Record<string, unknown>): string[] {
  try {
    parse(extra)
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.problems.map((p) => `${p.path}: ${p.message}`)
  }
  return []
}

const limitedKey = { id: 'b', key: 'sk-b-0000000000000000', rateLimit: { rps: 5 } }

test('a key’s rateLimit or quota turns rate limiting on without a rateLimit section (memory store, defaults)', () => {
  for (const key of [limitedKey, { id: 'q', key: 'sk-q-0000000000000000', quota: { tokens: 1000, per: 'day' } }]) {
    const config = parse({ auth: { keys: [key] } })
    assert.deepEqual(config.rateLimit, { store: 'memory', global: {}, perKey: {}, reserveTokens: 256 })
  }
  assert.equal(parse({ auth: { keys: [{ id: 'plain', key: 'sk-plain-000000000000000' }] } }).rateLimit, undefined)
  // A reload that gives keys limits while rate limiting is off says it needs a restart (not silently ignored).
  const off = parse({ auth: { keys: [{ id: 'b', key: 'sk-b-0000000000000000' }] } })
  const plan = planReload(off, parse({ auth: { keys: [limitedKey] } }))
  assert.deepEqual(plan.restartRequired, ['rateLimit (the keys’ limits turn it on; it was off at start)'])
  // Not in force until then: the keys stay as they were (no change to apply).
  assert.deepEqual({ applied: plan.applied, keys: plan.inForce.auth?.keys }, { applied: [], keys: off.auth?.keys })
  // And the other way: limits removed from the keys of a gateway that started with them (no rateLimit section either).
  assert.deepEqual(planReload(parse({ auth: { keys: [limitedKey] } }), off).restartRequired, [
    'rateLimit (on at start for the keys’ limits)',
  ])
})

test('redis and rate limiting: each needs the other, the quota state file is for the memory store', () => {
  const url = 'redis://127.0.0.1:6379'
  assert.deepEqual(problemsOf({ redis: { url } }), [
    '/redis: set, but nothing uses it: rate limiting is off (add rateLimit: { store: redis })',
  ])
  assert.deepEqual(problemsOf({ rateLimit: {}, redis: { url } }), [
    '/redis: set, but store is "memory": nothing would use it (set store: redis)',
  ])
  assert.deepEqual(problemsOf({ rateLimit: { store: 'redis' } }), [
    '/redis: required when store is "redis" (redis: { url: "redis://host:6379" })',
  ])
  assert.deepEqual(problemsOf({ rateLimit: { store: 'redis', quotaStateFile: './q.json' }, redis: { url } }), [
    '/rateLimit/quotaStateFile: only used with store "memory": with Redis, quotas live in Redis and survive restarts',
  ])
  // A key's limits with Redis: the section is needed to say so.
  assert.deepEqual(problemsOf({ auth: { keys: [limitedKey] }, redis: { url } }), [
    '/redis: set, but store is "memory": nothing would use it (set store: redis)',
  ])
  assert.equal(parse({ auth: { keys: [limitedKey] }, rateLimit: { store: 'redis' }, redis: { url } }).redis?.url, url)
})

test('redis modes: exactly one of url, sentinels, cluster; each setting with its mode; errors name the field', () => {
  const rateLimit = { store: 'redis' }
  const sentinels = [{ host: '10.0.0.1', port: 26379 }]
  const cluster = [{ host: '10.0.0.2', port: 7000 }]
  const sentinel = parse({ rateLimit, redis: { sentinels, name: 'mymaster', sentinelPassword: 's3cret', password: 'p' } })
  assert.deepEqual(sentinel.redis?.sentinels, sentinels)
  assert.deepEqual(parse({ rateLimit, redis: { cluster, password: 'p' } }).redis?.cluster, cluster)
  assert.deepEqual(problemsOf({ rateLimit, redis: { keyPrefix: 'x:' } }), [
    '/redis: set one of url (a single node), sentinels (Redis Sentinel) or cluster (Redis Cluster)',
  ])
  assert.deepEqual(problemsOf({ rateLimit, redis: { url: 'redis://a:1', sentinels, name: 'm', cluster } }), [
    '/redis/sentinels: conflicts with url: set exactly one of url, sentinels, cluster',
    '/redis/cluster: conflicts with url: set exactly one of url, sentinels, cluster',
  ])
  assert.deepEqual(problemsOf({ rateLimit, redis: { sentinels } }), [
    '/redis/name: required with sentinels: the master group name (as in sentinel monitor <name> …)',
  ])
  assert.deepEqual(problemsOf({ rateLimit, redis: { cluster, sentinelPassword: 'x' } }), [
    '/redis/sentinelPassword: only used with sentinels, not with cluster',
  ])
  assert.deepEqual(problemsOf({ rateLimit, redis: { cluster: [{ host: 'h', port: 'x' }] } }).length, 1)
})

test('usage: the webhook needs spoolDir, and the delivery settings need the webhook', () => {
  assert.deepEqual(problemsOf({ usage: { webhook: { url: 'https://billing.example/usage' } } }), [
    '/usage/spoolDir: required when usage.webhook is set (records wait there until delivered)',
  ])
  assert.deepEqual(problemsOf({ usage: { spoolDir: './spool', batch: { maxRecords: 10 } } }), [
    '/usage/spoolDir: only used with usage.webhook (the webhook delivery), which is not set',
    '/usage/batch: only used with usage.webhook (the webhook delivery), which is not set',
  ])
  assert.deepEqual(problemsOf({ usage: {} }), [])
  // What the usage plugin refuses at start is refused by the check too, with its path in the file.
  assert.deepEqual(problemsOf({ usage: { webhook: { url: 'ftp://billing.example/usage' }, spoolDir: './spool' } }), [
    '/usage/webhook/url: must be an http or https URL',
  ])
})

test('auth without keys is refused: its IP lists alone let no request through (every one got 401)', () => {
  const refused = [
    '/auth: has no keys: every request would get 401 (the IP lists only narrow who may present a key); add auth.keys, or write keys: [] to refuse every request',
  ]
  assert.deepEqual(problemsOf({ auth: { ipAllowlist: ['127.0.0.1', '::1'] } }), refused)
  assert.deepEqual(problemsOf({ auth: { ipDenylist: ['10.0.0.0/8'] } }), refused)
  assert.deepEqual(problemsOf({ auth: { keys: [], ipAllowlist: ['127.0.0.1'] } }), [])
})

test('upstream checks with active checks off, a queue no upstream uses, an auth cache nothing fills: refused', () => {
  const checked = { ...base.upstreams[0], healthCheck: { path: '/health' } }
  assert.deepEqual(problemsOf({ upstreams: [checked], healthChecks: { enabled: false } }), [
    '/upstreams/0/healthCheck: active health checks are off (healthChecks.enabled: false), so this check would never run',
  ])
  assert.deepEqual(problemsOf({ upstreams: [{ ...checked, healthCheck: { enabled: false } }], healthChecks: { enabled: false } }), [])
  assert.deepEqual(problemsOf({ queue: { maxWaiting: 10 } }), ['/queue: only used by upstreams with maxConcurrency, and none has one'])
  assert.deepEqual(problemsOf({ queue: { maxWaiting: 10 }, upstreams: [{ ...base.upstreams[0], maxConcurrency: 4 }] }), [])
  assert.deepEqual(problemsOf({ auth: { keys: [], cache: { ttlMs: 1000 } } }), [
    '/auth/cache: caches keys found by a resolveKey callback, which a config file cannot set (its keys are auth.keys)',
  ])
})
