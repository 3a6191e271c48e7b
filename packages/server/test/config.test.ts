import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { ConfigError } from '@llmproxy/core'
import Fastify from 'fastify'
import { configJsonSchema, parseConfig } from '../src/index.js'

const minimal = `
upstreams:
  - { name: vllm-a, url: "http://127.0.0.1:8000", protocol: vllm }
models:
  - { name: qwen-7b, aliases: [gpt-4o-mini], upstreams: [vllm-a], upstreamModel: Qwen/Qwen2.5-7B-Instruct }
`

function problemsOf(text: string, env: NodeJS.ProcessEnv = {}): { path: string; message: string }[] {
  try {
    parseConfig(text, 'test.yaml', env)
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err))
    return err.problems
  }
  assert.fail('expected a ConfigError')
}

test('a minimal YAML config is accepted with defaults filled in', () => {
  const config = parseConfig(minimal, 'test.yaml', {})
  assert.equal(config.server.port, 8080)
  assert.deepEqual(config.timeouts, {
    connectMs: 5000,
    firstTokenMs: 300000,
    idleMs: 300000,
    heartbeatMs: 5000,
    responseMs: 600000,
    clientStallMs: 60000,
  })
  assert.equal(config.retry.attempts, 3)
  assert.equal(config.models[0]?.upstreamModel, 'Qwen/Qwen2.5-7B-Instruct')
})

test('JSON is accepted too', () => {
  const config = parseConfig(
    JSON.stringify({ upstreams: [{ name: 'a', url: 'http://x', protocol: 'openai' }], models: [{ name: 'm', upstreams: ['a'] }] }),
    'c.json',
    {},
  )
  assert.equal(config.models[0]?.name, 'm')
})

test('ENV references and defaults are interpolated in values', () => {
  const text = `${minimal}
server: { host: "\${HOST:-127.0.0.1}", port: 9999 }
auth:
  keys:
    - { id: team-a, key: "\${TEAM_A_KEY}" }
`
  const config = parseConfig(text, 'test.yaml', { TEAM_A_KEY: 'sk-team-a-1234567890' })
  assert.equal(config.server.host, '127.0.0.1')
  assert.equal(config.auth?.keys?.[0]?.key, 'sk-team-a-1234567890')
})

test('every problem is listed with its path, including missing env vars and unknown keys', () => {
  const problems = problemsOf(`
server: { port: 99999, colour: blue }
upstreams:
  - { name: a, url: "\${MISSING_URL}", protocol: carrier-pigeon }
models:
  - { name: m, upstreams: [a], strategy: 7 }
timeouts: { firstTokenMs: -1 }
`)
  const paths = problems.map((p) => p.path)
  for (const expected of [
    '/server/port',
    '/server/colour',
    '/upstreams/0/url',
    '/upstreams/0/protocol',
    '/models/0/strategy',
    '/timeouts/firstTokenMs',
  ]) {
    assert.ok(paths.includes(expected), `${expected} missing from ${JSON.stringify(problems)}`)
  }
  assert.match(problems.find((p) => p.path === '/upstreams/0/url')?.message ?? '', /MISSING_URL/)
  assert.equal(problems.find((p) => p.path === '/server/colour')?.message, 'unknown key')
  assert.match(problems.find((p) => p.path === '/upstreams/0/protocol')?.message ?? '', /must be one of "openai", "vllm"/)
})

test('a section is checked to its last key: a misspelt key is refused (rateLimit too), a wrong value named clearly', () => {
  assert.deepEqual(problemsOf(`${minimal}\nrateLimit: { perkey: { rpm: 1 }, global: { rsp: 1 } }\nmetrics: { pathh: /m }\n`), [
    { path: '/rateLimit/perkey', message: 'unknown key' },
    { path: '/rateLimit/global/rsp', message: 'unknown key' },
    { path: '/metrics/pathh', message: 'unknown key' },
  ])
  // A union names what it takes: its literals, and its other members' types.
  assert.deepEqual(problemsOf(`${minimal}\nserver: { workers: many }\nmetrics: true\n`), [
    { path: '/server/workers', message: 'must be an integer or "auto"' },
    { path: '/metrics', message: 'must be an object or false' },
  ])
  // A union of string and number literals names its values, not one member's type ("must be string").
  assert.deepEqual(problemsOf(`${minimal}\nretry: { on: [connect, 418, "500"] }\n`), [
    { path: '/retry/on/1', message: 'must be one of "connect", "timeout", "stall", 429, 500, 502, 503, 504, 529' },
    { path: '/retry/on/2', message: 'must be one of "connect", "timeout", "stall", 429, 500, 502, 503, 504, 529' },
  ])
  // Every object of the schema refuses unknown keys, and every …Ms setting stays within what a timer can hold.
  const visit = (schema: Record<string, unknown>, path: string): void => {
    const properties = schema.properties as Record<string, Record<string, unknown>> | undefined
    if (properties !== undefined) {
      assert.equal(schema.additionalProperties, false, `${path || '/'} accepts unknown keys`)
      for (const [key, inner] of Object.entries(properties)) {
        if (key.endsWith('Ms') && inner.type === 'integer') assert.equal(inner.maximum, 2 ** 31 - 1, `${path}/${key} has no maximum`)
        visit(inner, `${path}/${key}`)
      }
    }
    for (const key of ['items', 'additionalProperties'] as const) {
      if (typeof schema[key] === 'object' && schema[key] !== null) visit(schema[key] as Record<string, unknown>, `${path}/${key}`)
    }
    for (const branch of (schema.anyOf as Record<string, unknown>[] | undefined) ?? []) visit(branch, path)
  }
  visit(configJsonSchema() as Record<string, unknown>, '')
})

test('a missing environment variable is reported once; a timeout longer than a timer holds is refused', () => {
  assert.deepEqual(problemsOf(`${minimal}\nadmin: { token: "\${ADMIN_TOKEN}" }\ntimeouts: { idleMs: 3000000000 }\n`), [
    { path: '/admin/token', message: 'environment variable ADMIN_TOKEN is not set' },
    { path: '/timeouts/idleMs', message: 'must be <= 2147483647' },
  ])
  // Under a misspelt key, the variable is missing and the key unknown: both are said.
  assert.deepEqual(problemsOf(`${minimal}\nadmin: { tokn: "\${ADMIN_TOKEN}" }\n`), [
    { path: '/admin/tokn', message: 'environment variable ADMIN_TOKEN is not set' },
    { path: '/admin', message: 'must have required properties token' },
    { path: '/admin/tokn', message: 'unknown key' },
  ])
})

test('a variable set but empty is named where the value it gave is refused', () => {
  assert.deepEqual(problemsOf(`${minimal}\nadmin: { token: "\${ADMIN_TOKEN}" }\n`, { ADMIN_TOKEN: '' }), [
    { path: '/admin/token', message: `must not have fewer than 16 characters (it comes from \${ADMIN_TOKEN}, which is set but empty)` },
  ])
})

test('a ${ that starts no reference (a typo) is refused at its path, by index, not kept as a literal key', () => {
  const typos = `
upstreams:
  - { name: a, url: "http://127.0.0.1:9", protocol: openai, apiKey: "\${UPSTREAM_KEY" }
models: [{ name: m, upstreams: [a] }]
auth:
  keys:
    - { id: team-a, key: "\${TEAM-A-KEY}" }
    - { id: team-b, key: "sk-team-b-\${TEAM_B_KEY:-\${FALLBACK}}" }
admin: { token: "\${ADMIN_TOKEN_VALUE" }
`
  const syntax = `(write \${NAME} or \${NAME:-default}; a value holding "\${" comes whole from a variable)`
  // Refused with every variable set too: what the file says is not what was meant.
  const env = { UPSTREAM_KEY: 'u', TEAM_A_KEY: 'a', TEAM_B_KEY: 'b', FALLBACK: 'f', ADMIN_TOKEN_VALUE: 't' }
  for (const variables of [{}, env]) {
    assert.deepEqual(problemsOf(typos, variables), [
      { path: '/upstreams/0/apiKey', message: `the "\${" at index 0 is not closed by "}" ${syntax}` },
      {
        path: '/auth/keys/0/key',
        message: `the "\${" at index 0 starts no environment reference: a name is letters, digits and _, not starting with a digit ${syntax}`,
      },
      { path: '/auth/keys/1/key', message: `the "\${" at index 10 has a "\${" in its default, which cannot hold a reference ${syntax}` },
      { path: '/admin/token', message: `the "\${" at index 0 is not closed by "}" ${syntax}` },
    ])
  }
  // A doubled $ is a $ before a reference (no escape that a doubled-$ habit would turn into a literal key); a
  // variable's value is taken as it is, "${" included.
  const config = parseConfig(
    `${minimal}auth:\n  keys:\n    - { id: a, key: "$\${A_KEY}" }\n    - { id: c, key: "\${C_KEY}" }\n`,
    'test.yaml',
    { A_KEY: 'sk-a-0001', C_KEY: 'sk-${c-0003' },
  )
  assert.deepEqual(
    config.auth?.keys?.map((key) => key.key),
    ['$sk-a-0001', `sk-\${c-0003`],
  )
})

test('headers the usage webhook could never send are refused, naming them (not the value)', () => {
  const usage = `usage: { spoolDir: /tmp/llmproxy-spool-test, webhook: { url: "http://127.0.0.1:9/usage", secret: s3cret-0123456789, headers: { "x-team": "a\\u2026" } } }`
  assert.deepEqual(problemsOf(`${minimal}\n${usage}\n`), [
    { path: '/usage/webhook/headers/x-team', message: 'has a character an HTTP header cannot carry (U+2026 at index 1)' },
  ])
  // Credentials in the url were dropped: every delivery went without them (and the value is not repeated).
  assert.deepEqual(
    problemsOf(`${minimal}\n${usage.replace('http://127.0.0.1', 'http://billing:s3cret@127.0.0.1').replace('"a\\u2026"', 'a')}\n`),
    [{ path: '/usage/webhook/url', message: 'must not hold credentials: send them in headers (authorization)' }],
  )
})

test('the admin section is validated: a long enough token, a port with a host, not the server port', () => {
  const config = parseConfig(`${minimal}\nadmin: { token: "\${ADMIN_TOKEN}", port: 9090 }\n`, 'test.yaml', { ADMIN_TOKEN: 'a'.repeat(16) })
  assert.deepEqual(config.admin, { token: 'a'.repeat(16), port: 9090 })
  assert.deepEqual(
    problemsOf(`${minimal}\nadmin: { token: short, colour: red }\n`)
      .map((p) => p.path)
      .sort(),
    ['/admin/colour', '/admin/token'],
  )
  assert.deepEqual(problemsOf(`${minimal}\nadmin: { port: 9090 }\n`), [{ path: '/admin', message: 'must have required properties token' }])
  // A token no client can send as written (a secret file's trailing newline, spaces) would lock the admin API.
  for (const token of ['admin-token-0123456789\n', ' '.repeat(16), 'admin token 0123456789']) {
    assert.deepEqual(problemsOf(`${minimal}\nadmin: { token: "\${ADMIN_TOKEN}" }\n`, { ADMIN_TOKEN: token }), [
      { path: '/admin/token', message: 'must be printable ASCII without spaces (clients send it in an HTTP header)' },
    ])
  }
  assert.deepEqual(
    problemsOf(`${minimal}\nadmin: { token: "${'a'.repeat(16)}", host: 127.0.0.1 }\n`).map((p) => p.path),
    ['/admin/port'],
  )
  assert.deepEqual(
    problemsOf(`${minimal}\nadmin: { token: "${'a'.repeat(16)}", port: 8080 }\n`).map((p) => p.path),
    ['/admin/port'],
  )
})

test('a headers timeout longer than the request timeout is refused (Node would refuse it at start), defaults included', () => {
  assert.deepEqual(problemsOf(`${minimal}\nserver: { headersTimeoutMs: 60000 }\n`), [
    {
      path: '/server/headersTimeoutMs',
      message: 'must be at most server.requestTimeoutMs (30000): the headers are part of the request',
    },
  ])
  assert.deepEqual(
    problemsOf(`${minimal}\nserver: { requestTimeoutMs: 5000 }\n`).map((p) => p.path),
    ['/server/headersTimeoutMs'],
  )
  parseConfig(`${minimal}\nserver: { headersTimeoutMs: 60000, requestTimeoutMs: 60000 }\n`, 'test.yaml', {})
})

test('a connectMs written longer than firstTokenMs or responseMs is refused (it would be lowered to them); the default is not', () => {
  assert.deepEqual(problemsOf(`${minimal}\ntimeouts: { connectMs: 60000, firstTokenMs: 1000 }\n`), [
    { path: '/timeouts/connectMs', message: 'must be at most timeouts.firstTokenMs (1000): a first byte needs its connection' },
  ])
  assert.deepEqual(problemsOf(`${minimal}\ntimeouts: { connectMs: 10000, responseMs: 5000 }\n`), [
    { path: '/timeouts/connectMs', message: 'must be at most timeouts.responseMs (5000): a first byte needs its connection' },
  ])
  // The default connectMs (5000) under a short firstTokenMs: lowered, as documented, and the file is valid.
  assert.equal(parseConfig(`${minimal}\ntimeouts: { firstTokenMs: 1000 }\n`, 'test.yaml', {}).timeouts.connectMs, 5000)
  parseConfig(`${minimal}\ntimeouts: { connectMs: 1000, firstTokenMs: 1000 }\n`, 'test.yaml', {})
})

test('usage delivery: a retry.maxMs below baseMs and a spool.segmentBytes over half of maxBytes are refused, defaults included', () => {
  const usage = (settings: string) =>
    `${minimal}\nusage: { spoolDir: /tmp/llmproxy-spool-test, webhook: { url: "http://127.0.0.1:9/usage" }, ${settings} }\n`
  assert.deepEqual(problemsOf(usage('retry: { baseMs: 60000, maxMs: 10 }')), [
    { path: '/usage/retry/maxMs', message: 'must be >= retry.baseMs (60000)' },
  ])
  // The default baseMs (500) counts.
  assert.deepEqual(
    problemsOf(usage('retry: { maxMs: 100 }')).map((p) => p.path),
    ['/usage/retry/maxMs'],
  )
  assert.deepEqual(problemsOf(usage('spool: { maxBytes: 1000, segmentBytes: 100000000 }')), [
    {
      path: '/usage/spool/segmentBytes',
      message: 'is 100000000, must be at most half of spool.maxBytes (1000): disk space is freed a segment at a time',
    },
  ])
  // The default segmentBytes (4 MiB) counts: under a 1 MiB spool, a spool that fills though the webhook keeps up.
  assert.deepEqual(
    problemsOf(usage('spool: { maxBytes: 1048576 }')).map((p) => p.path),
    ['/usage/spool/segmentBytes'],
  )
  // Half is the bound (a segment just over it was the diff14 case: records refused with the webhook up).
  assert.deepEqual(
    problemsOf(usage('spool: { maxBytes: 1000, segmentBytes: 501 }')).map((p) => p.path),
    ['/usage/spool/segmentBytes'],
  )
  parseConfig(usage('spool: { maxBytes: 1000, segmentBytes: 500 }'), 'test.yaml', {})
  parseConfig(usage('retry: { baseMs: 100, maxMs: 100 }, spool: { maxBytes: 1048576, segmentBytes: 65536 }'), 'test.yaml', {})
})

test('server.trustProxy is checked entry by entry as Fastify reads it (a bad one crashed the start)', () => {
  const accepted = ['true', '10.0.0.0/8', '"10.0.0.1, loopback"', '[uniquelocal, linklocal, "::1", "fd00::/8", "::ffff:10.0.0.1"]', '[]']
  for (const value of accepted) {
    const config = parseConfig(`${minimal}\nserver: { trustProxy: ${value} }\n`, 'test.yaml', {})
    // What the config accepts, Fastify (proxy-addr) takes: it compiles trustProxy when the instance is made.
    Fastify({ trustProxy: config.server.trustProxy })
  }
  assert.deepEqual(problemsOf(`${minimal}\nserver: { trustProxy: ["10.0.0.0/8", "10.1.2.3/40", localhost] }\n`), [
    { path: '/server/trustProxy/1', message: '"10.1.2.3/40": the prefix length must be 0 to 32' },
    {
      path: '/server/trustProxy/2',
      message: '"localhost" is not an IPv4 or IPv6 address or CIDR, nor one of loopback, linklocal, uniquelocal',
    },
  ])
  assert.deepEqual(
    problemsOf(`${minimal}\nserver: { trustProxy: "10.0.0.1, garbage" }\n`).map((p) => p.path),
    ['/server/trustProxy'],
  )
  assert.deepEqual(problemsOf(`${minimal}\nserver: { trustProxy: 0.0.0.0/0 }\n`), [
    { path: '/server/trustProxy', message: `"0.0.0.0/0" is every address: write trustProxy: true to trust any client's header` },
  ])
  // Each refused value is one Fastify throws on.
  for (const value of ['10.1.2.3/40', 'garbage', '0.0.0.0/0']) assert.throws(() => Fastify({ trustProxy: value }), TypeError)
  // A union of types names them all (a hop count is no trustProxy here: Fastify 5 trusts no proxy for a number).
  assert.deepEqual(problemsOf(`${minimal}\nserver: { trustProxy: 1 }\n`), [
    { path: '/server/trustProxy', message: 'must be a boolean, a string or a list' },
  ])
})

test('an upstream apiKey left blank (its secret unset) is refused: the upstream would refuse every request', () => {
  const text = `upstreams:\n  - { name: a, url: "http://x", protocol: openai, apiKey: "\${OPENAI_API_KEY}" }\nmodels: [{ name: m, upstreams: [a] }]\n`
  const blank = 'is empty (is the secret it comes from set?); leave apiKey out if the upstream needs none'
  assert.deepEqual(problemsOf(text, { OPENAI_API_KEY: ' ' }), [{ path: '/upstreams/0/apiKey', message: blank }])
  assert.deepEqual(problemsOf(text, { OPENAI_API_KEY: '' }), [
    { path: '/upstreams/0/apiKey', message: `${blank} (it comes from \${OPENAI_API_KEY}, which is set but empty)` },
  ])
})

test('a redis.url ioredis would throw on, or send Redis a database that is no number, is refused (start crashed)', () => {
  const text = `${minimal}\nauth: { keys: [{ id: k1, key: sk-k1, rateLimit: { rpm: 10 } }] }\nrateLimit: { store: redis }\nredis: { url: "redis://:\${REDIS_PASSWORD}@127.0.0.1:6379/\${REDIS_DB:-0}" }\n`
  assert.deepEqual(
    problemsOf(text, { REDIS_PASSWORD: 'x%zz' }).map((p) => p.path),
    ['/redis/url'],
  )
  assert.match(problemsOf(text, { REDIS_PASSWORD: 'ab/cd+ef==' })[0]?.message ?? '', /percent-encode a user or password/)
  assert.deepEqual(problemsOf(text, { REDIS_PASSWORD: 'pw', REDIS_DB: 'abc' }), [
    { path: '/redis/url', message: 'the database (the path after host:port) must be a number, as in redis://host:6379/0' },
  ])
  parseConfig(text, 'test.yaml', { REDIS_PASSWORD: encodeURIComponent('ab/cd+ef==') })
})

test("an upstream url ending in the API version (an SDK's base URL) is refused: every request went to /v1/v1/…", () => {
  const upstream = (url: string) => `upstreams:\n  - { name: a, url: "${url}", protocol: openai }\nmodels: [{ name: m, upstreams: [a] }]\n`
  assert.deepEqual(problemsOf(upstream('https://api.groq.com/openai/v1')), [
    {
      path: '/upstreams/0/url',
      message: 'must not end in /v1: the gateway appends the API path (/v1/chat/completions, /v1beta/models/…); leave it out',
    },
  ])
  for (const url of ['http://127.0.0.1:8000/v1/', 'https://generativelanguage.googleapis.com/v1beta']) {
    assert.deepEqual(
      problemsOf(upstream(url)).map((p) => p.path),
      ['/upstreams/0/url'],
      url,
    )
  }
  for (const url of ['https://api.groq.com/openai', 'http://host/v1-proxy', 'http://host/v1/openai'])
    parseConfig(upstream(url), 'test.yaml', {})
})

test('YAML merge keys work: one upstream written once, the next ones from it', () => {
  const config = parseConfig(
    `upstreams:\n  - &vllm { name: a, url: "http://127.0.0.1:8000", protocol: vllm, weight: 2 }\n  - { <<: *vllm, name: b, url: "http://127.0.0.1:8001" }\nmodels: [{ name: m, upstreams: [a, b] }]\n`,
    'test.yaml',
    {},
  )
  assert.deepEqual(
    config.upstreams.map((u) => [u.name, u.url, u.protocol, u.weight]),
    [
      ['a', 'http://127.0.0.1:8000', 'vllm', 2],
      ['b', 'http://127.0.0.1:8001', 'vllm', 2],
    ],
  )
})

test('a YAML tag LLMProxy cannot apply is refused at its path and line, never quoting the value', () => {
  const secret = 'sk-tagged-secret-0047'
  const problems = problemsOf(`upstreams:
  - { name: a, url: "http://127.0.0.1:8000", protocol: openai, apiKey: !secret ${secret} }
models: [{ name: m, upstreams: [a] }]
auth:
  keys:
    - id: k
      key: !!int ${secret}
    - { id: l, key: "sk-other-key-0048", metadata: !!set [team] }
`)
  const fix = `write the value without the tag (a secret as "\${NAME}")`
  assert.deepEqual(problems, [
    { path: '/upstreams/0/apiKey', message: `line 2, column 72: Unresolved tag: !secret (TAG_RESOLVE_FAILED): ${fix}` },
    { path: '/auth/keys/0/key', message: `line 7, column 12: Unresolved tag: tag:yaml.org,2002:int (TAG_RESOLVE_FAILED): ${fix}` },
    {
      path: '/auth/keys/1/metadata',
      message: `line 8, column 52: tag:yaml.org,2002:set used for seq collection, but expects map (BAD_COLLECTION_TYPE): ${fix}`,
    },
  ])
  assert.ok(!JSON.stringify(problems).includes(secret), JSON.stringify(problems))
  // The tags the parser applies still work.
  assert.equal(parseConfig(`${minimal}server: { port: !!int "9090", host: !!str 127.0.0.1 }\n`, 'test.yaml', {}).server.port, 9090)
})

test('a mapping or a list as a key is refused, not turned into a string key', () => {
  assert.deepEqual(
    problemsOf(`${minimal}auth:\n  keys:\n    - id: k\n      key: sk-key-0049\n      metadata:\n        ? [team, a]\n        : x\n`),
    [{ path: '/auth/keys/0/metadata', message: 'line 11, column 11: a key must be a name, not a list or a mapping' }],
  )
})

test('a YAML directive the parser does not know is ignored, as YAML says', () => {
  assert.equal(parseConfig(`%UNKNOWN directive\n---\n${minimal}`, 'test.yaml', {}).models[0]?.name, 'qwen-7b')
})

test('invalid YAML and non-mapping documents get a clear error', () => {
  assert.match(problemsOf('upstreams: [')[0]?.message ?? '', /not valid YAML/)
  assert.match(problemsOf('- a\n- b')[0]?.message ?? '', /must be a mapping/)
})

test('the error message names each path and problem', () => {
  assert.throws(
    () => parseConfig('upstreams: []\nmodels: []', 'x.yaml', {}),
    (err: Error) => {
      assert.match(err.message, /Invalid config x\.yaml/)
      assert.match(err.message, /\/upstreams: /)
      assert.match(err.message, /\/models: /)
      return true
    },
  )
})

test('packages/server/schema.json is the JSON Schema the CLI prints (run `pnpm --filter @llmproxy/server schema` to refresh)', () => {
  const committed = JSON.parse(readFileSync(new URL('../schema.json', import.meta.url), 'utf8')) as unknown
  assert.deepEqual(committed, configJsonSchema())
})

test('models are checked against the upstreams and each other', () => {
  const problems = problemsOf(`
upstreams:
  - { name: a, url: "http://x", protocol: openai }
models:
  - { name: m, upstreams: [a, ghost], fallbacks: [nowhere] }
  - { name: n, aliases: [m], upstreams: [a] }
`)
  assert.deepEqual(
    problems.map((p) => p.path),
    ['/models/0/upstreams/1', '/models/1/aliases/0', '/models/0/fallbacks/0'],
  )
  // A key's models are model names or aliases (or "*").
  assert.deepEqual(problemsOf(`${minimal}\nauth: { keys: [{ id: k, key: sk-k, models: [qwen-7b, gpt-4o-mini, "*", qwen7b] }] }\n`), [
    { path: '/auth/keys/0/models/3', message: 'unknown model "qwen7b"' },
  ])
})

test('a pool listing an upstream twice is a config error at its path (the registry would refuse it at start)', () => {
  assert.deepEqual(
    problemsOf(`
upstreams:
  - { name: a, url: "http://x", protocol: openai }
models:
  - { name: m, upstreams: [a, a] }
`),
    [{ path: '/models/0/upstreams/1', message: 'upstream "a" is already in this pool' }],
  )
})

test('a key given a pattern alias is told to list the model it maps to (no request carries the pattern)', () => {
  const config = `
upstreams:
  - { name: vllm-a, url: "http://127.0.0.1:8000", protocol: vllm }
models:
  - { name: claude-sonnet-4-5, aliases: ["claude-*", claude-sonnet-5], upstreams: [vllm-a] }
auth: { keys: [{ id: dev, key: "${'k'.repeat(16)}", models: ["claude-*", claude-sonnet-5] }] }
`
  assert.deepEqual(problemsOf(config), [
    { path: '/auth/keys/0/models/0', message: '"claude-*" is a pattern alias: list the model it maps to ("claude-sonnet-4-5")' },
  ])
})

test('a metrics path the gateway serves itself is a config error (Fastify would refuse the second route at start)', () => {
  for (const path of ['/healthz', '/readyz', '/v1/models', '/v1/models/metrics', '/v1beta/models', '/v1beta/models/x']) {
    assert.deepEqual(
      problemsOf(`${minimal}\nmetrics: { path: ${path} }\n`).map((p) => p.path),
      ['/metrics/path'],
      path,
    )
  }
  const admin = `admin: { token: "${'a'.repeat(16)}" }`
  assert.deepEqual(problemsOf(`${minimal}\n${admin}\nmetrics: { path: /admin/keys }\n`), [
    { path: '/metrics/path', message: '/admin/keys is served by the gateway (the admin API): choose another path' },
  ])
  // With the admin API on its own port, /admin/... on the gateway is free; so are paths that merely start alike.
  parseConfig(`${minimal}\nadmin: { token: "${'a'.repeat(16)}", port: 9091 }\nmetrics: { path: /admin/keys }\n`, 'test.yaml', {})
  parseConfig(`${minimal}\nmetrics: { path: /v1metrics }\n`, 'test.yaml', {})
  // A path no scrape reaches, or a route pattern: `/*` served the metrics without a key on every unmatched GET.
  for (const [path, bad] of [
    ['/metrics?x=1', '?'],
    ['/metrics#a', '#'],
    ['/*', '*'],
    ['/:id', ':'],
    ['"/m etrics"', ' '],
  ]) {
    assert.deepEqual(problemsOf(`${minimal}\nmetrics: { path: ${path} }\n`), [
      { path: '/metrics/path', message: `must be a plain path: ${JSON.stringify(bad)} is a query, fragment, route pattern or space` },
    ])
  }
  // The APIs' other routes are POSTs: a scrape route beside them is fine (and was, before these checks).
  parseConfig(`${minimal}\nmetrics: { path: /v1/metrics }\n`, 'test.yaml', {})
  parseConfig(`${minimal}\nmetrics: { path: /healthz/metrics }\n`, 'test.yaml', {})
})

test('what the plugins would refuse at start is caught by the config check too', () => {
  const problems = problemsOf(`
upstreams:
  - { name: a, url: "http://x", protocol: openai }
  - { name: a, url: "ftp://y", protocol: openai }
models:
  - { name: m, upstreams: [a], strategy: fastest }
auth:
  keys:
    - { id: k, key: "sk-one-1234567890" }
    - { id: k, key: "sk-one-1234567890" }
  ipAllowlist: [not-an-ip]
passiveHealth: { baseEjectionMs: 10000, maxEjectionMs: 5000 }
metrics: { buckets: { ttftSeconds: [1, 0.5] } }
`)
  const paths = problems.map((p) => p.path)
  for (const expected of [
    '/upstreams/1/name',
    '/upstreams/1/url',
    '/models/0/strategy',
    '/auth/keys/1/id',
    '/auth/ipAllowlist/0',
    // Named as in the file, not as the plugins' options (/passive/…, /buckets/…) that a start reported.
    '/passiveHealth/maxEjectionMs',
    '/metrics/buckets/ttftSeconds/1',
  ]) {
    assert.ok(paths.includes(expected), `${expected} missing from ${JSON.stringify(problems)}`)
  }
})
