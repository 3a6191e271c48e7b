// Alias patterns: clients whose model names change with each release (Claude Code) reach a pool by a `*` alias.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { type Scripted, scripted, sse, upstream } from './scripted.js'

const answering = (name: string) =>
  upstream(name, 'openai', (res) => {
    sse(res)
    res.end(
      `data: {"id":"c","object":"chat.completion.chunk","model":"${name}","choices":[{"index":0,"delta":{"content":"${name}"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n`,
    )
  })

async function servedBy(g: Scripted, model: string): Promise<string | number> {
  const res = await fetch(`${g.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
  })
  const text = await res.text()
  return res.status === 200 ? (/"content":"(\w+)"/.exec(text)?.[1] ?? text) : res.status
}

test('alias patterns: exact names and aliases first, then the patterns in config order; patterns are not listed', async () => {
  const g = await scripted(
    [answering('a'), answering('b')],
    [
      { name: 'a-model', aliases: ['claude-sonnet-5', 'claude-*', 'gpt-4.1*'], upstreams: ['a'] },
      { name: 'b-model', aliases: ['claude-haiku-*', '*-mini', 'x-*-4-*[1m]'], upstreams: ['b'] },
    ],
  )
  try {
    const cases: [string, string | number][] = [
      ['a-model', 'a'],
      ['b-model', 'b'],
      ['claude-sonnet-5', 'a'],
      // Both patterns match: the first in config order wins.
      ['claude-haiku-4-5-20251001', 'a'],
      ['claude-opus-4-8', 'a'],
      ['o4-mini', 'b'],
      // Every other character stands for itself.
      ['gpt-4.1-nano', 'a'],
      ['gpt-441', 404],
      ['claude', 404],
      // Several stars: each part in order, none overlapping.
      ['x-opus-4-8[1m]', 'b'],
      ['x--4-[1m]', 'b'],
      ['x-4-[1m]', 404],
      ['x-opus-4-8', 404],
      ['x-4[1m]', 404],
      // A long name is a 404 like any other (a backtracking pattern took seconds over 240 KB of it).
      [`x-${'4-'.repeat(120_000)}`, 404],
    ]
    for (const [model, expected] of cases) assert.equal(await servedBy(g, model), expected, model)
    const listed = (await (await fetch(`${g.url}/v1/models`)).json()) as { data: { id: string }[] }
    assert.deepEqual(
      listed.data.map((m) => m.id),
      ['a-model', 'claude-sonnet-5', 'b-model'],
    )
    // The record names the model as the client asked for it.
    assert.equal(g.records.find((r) => r.model === 'claude-opus-4-8')?.upstream, 'a')
  } finally {
    await g.close()
  }
})
