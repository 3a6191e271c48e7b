// A prompt Gemini blocks is answered with promptFeedback.blockReason and no candidates, so no finishReason: a
// complete answer all the same, for Gemini clients and converted ones, and no failure of the upstream's.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { GoogleGenAI } from '@google/genai'
import OpenAI from 'openai'
import { scripted, sse, upstream } from './scripted.js'

const BLOCKED =
  'data: {"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7},"modelVersion":"gemini-2.5-flash"}\r\n\r\n'

test('a streamed blocked prompt from Gemini: the Gemini SDK gets the block, the OpenAI SDK content_filter, the Anthropic SDK refusal; no error, no upstream failure', async () => {
  const g = await scripted(
    [
      upstream('g', 'gemini', (res) => {
        sse(res)
        res.end(BLOCKED)
      }),
    ],
    [{ name: 'gem', upstreams: ['g'] }],
  )
  try {
    const gemini = new GoogleGenAI({ apiKey: 'k', httpOptions: { baseUrl: g.url } })
    const chunks = []
    for await (const chunk of await gemini.models.generateContentStream({ model: 'gem', contents: 'something blocked' })) chunks.push(chunk)
    assert.equal(chunks.length, 1)
    assert.equal(chunks[0]?.promptFeedback?.blockReason, 'PROHIBITED_CONTENT')

    const openai = new OpenAI({ baseURL: `${g.url}/v1`, apiKey: 'k', maxRetries: 0 })
    const finishes = []
    const stream = await openai.chat.completions.create({
      model: 'gem',
      stream: true,
      messages: [{ role: 'user', content: 'something blocked' }],
    })
    for await (const chunk of stream) if (chunk.choices[0]?.finish_reason) finishes.push(chunk.choices[0].finish_reason)
    assert.deepEqual(finishes, ['content_filter'])

    const anthropic = new Anthropic({ baseURL: g.url, apiKey: 'k', maxRetries: 0 })
    const message = await anthropic.messages
      .stream({ model: 'gem', max_tokens: 10, messages: [{ role: 'user', content: 'something blocked' }] })
      .finalMessage()
    assert.equal(message.stop_reason, 'refusal')

    assert.deepEqual(
      g.records.map((record) => [record.status, record.error?.code ?? null, record.promptTokens]),
      [
        [200, null, 7],
        [200, null, 7],
        [200, null, 7],
      ],
    )
    assert.deepEqual(
      g.attempts.map((attempt) => attempt.result),
      ['ok', 'ok', 'ok'],
    )
  } finally {
    await g.close()
  }
})
