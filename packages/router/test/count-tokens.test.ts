// Gemini's countTokens, as Anthropic's count_tokens: a Gemini model asks its upstream, any other gets an estimate.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { GoogleGenAI } from '@google/genai'
import { scripted, sse, upstream } from './scripted.js'

test("Gemini's countTokens: a Gemini model's upstream counts, another model's count is an estimate, on v1beta and v1", async (t) => {
  const paths: string[] = []
  const gemini = upstream('g', 'gemini', (res, _body, req) => {
    paths.push(req.url ?? '')
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end('{"totalTokens":42}')
  })
  const openai = upstream('o', 'openai', (res) => {
    sse(res)
    res.end()
  })
  const g = await scripted(
    [gemini, openai],
    [
      { name: 'gem', upstreams: ['g'], upstreamModel: 'gemini-2.5-flash' },
      { name: 'gpt', upstreams: ['o'] },
    ],
  )
  t.after(() => g.close())
  for (const apiVersion of ['v1beta', 'v1']) {
    const client = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: g.url, apiVersion } })
    assert.equal((await client.models.countTokens({ model: 'gem', contents: 'hello there' })).totalTokens, 42, apiVersion)
    const estimated = await client.models.countTokens({ model: 'gpt', contents: 'hello there' })
    assert.ok((estimated.totalTokens ?? 0) > 0, apiVersion)
  }
  assert.deepEqual(paths, ['/v1beta/models/gemini-2.5-flash:countTokens', '/v1beta/models/gemini-2.5-flash:countTokens'])
  assert.equal(openai.bodies.length, 0, 'an estimate asks no upstream')
  // Proxied, a count is routed like any request (its record counts no tokens); estimated, it reaches no upstream.
  assert.deepEqual(
    g.records.map((r) => [r.upstream, r.totalTokens]),
    [
      ['g', 0],
      ['g', 0],
    ],
  )
  const raw = await fetch(`${g.url}/v1beta/models/gpt:countTokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hello there' }] }] }),
  })
  assert.equal(raw.headers.get('x-llmproxy-estimated'), 'true')
})
