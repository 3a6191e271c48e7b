// A 200 whose body is no JSON document, from an upstream of the client's own API (a JSON body relayed as it arrives,
// never parsed whole): a proxy's page behind a JSON content type, broken JSON, an empty body, an answer cut short that
// still ends cleanly. Read by the openai SDK, with a healthy second upstream in the pool.
import assert from 'node:assert/strict'
import type { ServerResponse } from 'node:http'
import { after, before, test } from 'node:test'
import OpenAI from 'openai'
import { eventually } from './helpers.js'
import { type Scripted, type ScriptedUpstream, scripted, sleep, upstream } from './scripted.js'

const answer = (content: string) =>
  JSON.stringify({
    id: 'chatcmpl-1',
    object: 'chat.completion',
    created: 1,
    model: 'm',
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 },
  })

/** A 200 with a JSON content type; with its content-length (whole in one read) or chunked. */
function json(res: ServerResponse, body: string, withLength: boolean): void {
  res.writeHead(200, { 'content-type': 'application/json', ...(withLength ? { 'content-length': Buffer.byteLength(body) } : {}) })
  res.end(body)
}

let script: (res: ServerResponse) => void | Promise<void> = (res) => json(res, answer('Hi from a.'), true)
let a: ScriptedUpstream
let b: ScriptedUpstream
let gateway: Scripted

before(async () => {
  a = upstream('a', 'openai', (res) => script(res))
  b = upstream('b', 'openai', (res) => json(res, answer('Hi from b.'), true))
  gateway = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }])
})

after(() => gateway.close())

const client = () => new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'k', maxRetries: 0 })
const ask = () => client().chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hi' }] })
/** Passive health's count of a's failed requests in a row. */
const failuresOfA = () => gateway.app.upstreams.snapshot().find((up) => up.name === 'a')?.consecutiveFailures ?? -1

async function lastRecord(count: number) {
  await eventually(() => gateway.records.length === count, 2000, 'the usage record')
  return gateway.records[count - 1] as (typeof gateway.records)[number]
}

test('a 200 that cannot be an answer from its first read fails over before the first byte: the pool’s other upstream answers', async () => {
  const cases: [string, (res: ServerResponse) => void][] = [
    ['a plain-text page, chunked', (res) => json(res, 'Bad gateway: the origin did not answer in time.', false)],
    ['an HTML page after blank lines', (res) => json(res, '\n\n<!DOCTYPE html><html><body>Service unavailable</body></html>', true)],
    ["broken JSON, whole in one read (the mock's `malformed`)", (res) => json(res, '{not json', true)],
    ['a JSON answer cut short, whole in one read', (res) => json(res, answer('Hi from a.').slice(0, 60), true)],
    ['an empty body', (res) => json(res, '', true)],
  ]
  for (const [name, send] of cases) {
    script = send
    const records = gateway.records.length
    const failures = failuresOfA()
    const completion = await ask()
    assert.equal(completion.choices[0]?.message.content, 'Hi from b.', name)
    const record = await lastRecord(records + 1)
    assert.equal(record.upstream, 'b', name)
    assert.equal(record.attempts, 2, name)
    assert.equal(record.error, undefined, name)
    assert.equal(record.completionTokens, 4, name)
    assert.equal(record.estimated, false, name)
    assert.deepEqual(
      gateway.attempts.slice(-2).map((attempt) => [attempt.upstream, attempt.result]),
      [
        ['a', 'error'],
        ['b', 'ok'],
      ],
      name,
    )
    assert.equal(failuresOfA(), failures + 1, `${name}: passive health counts the failure`)
  }
})

test('a 200 found not to be JSON after its first byte went out: the connection is cut, the record says the upstream failed', async () => {
  const cases: [string, (res: ServerResponse) => Promise<void>][] = [
    [
      'an answer cut short that ends cleanly (chunked)',
      async (res) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write(answer('Hi from a.').slice(0, 60))
        await sleep(30)
        res.end()
      },
    ],
    [
      'a keep-alive line end, then a plain-text page',
      async (res) => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('\n')
        await sleep(30)
        res.end('upstream request timeout')
      },
    ],
  ]
  for (const [name, send] of cases) {
    script = send
    const records = gateway.records.length
    const failures = failuresOfA()
    const asked = b.bodies.length
    const error = await ask().then(
      () => assert.fail(`${name}: answered as a success`),
      (err: unknown) => err,
    )
    // A transfer that failed, not a 200 that arrived whole and then would not parse.
    assert.ok(!(error instanceof SyntaxError), `${name}: ${String(error)}`)
    const record = await lastRecord(records + 1)
    assert.equal(record.status, 200, name)
    assert.equal(record.error?.code, 'llmproxy_upstream_error', name)
    assert.match(record.error?.message ?? '', /not a JSON document/, name)
    assert.equal(record.estimated, true, `${name}: its tokens can only be estimated, and the record says so`)
    assert.equal(b.bodies.length, asked, `${name}: committed, nothing else can answer`)
    assert.deepEqual(gateway.attempts.at(-1)?.result, 'error', name)
    assert.equal(failuresOfA(), failures + 1, `${name}: passive health counts the failure`)
  }
})

test('blank lines before a JSON answer (a server keeping a slow answer’s connection open) are relayed: a success', async () => {
  script = async (res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write('\n')
    await sleep(30)
    res.end(answer('Hi from a.'))
  }
  const records = gateway.records.length
  const completion = await ask()
  assert.equal(completion.choices[0]?.message.content, 'Hi from a.')
  const record = await lastRecord(records + 1)
  assert.equal(record.upstream, 'a')
  assert.equal(record.error, undefined)
  assert.equal(record.completionTokens, 4)
})
