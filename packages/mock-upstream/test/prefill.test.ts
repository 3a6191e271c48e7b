/** Prefill (continuation): a request ending with the assistant's text gets only the rest, so the splice is exact. */
import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, test } from 'node:test'
import { expectedContent, type MockBehavior, type MockUpstream, startMockUpstream } from '../src/index.js'
import { parseSse, post } from './helpers.js'

const user = { role: 'user', content: 'Tell me a story' }

interface Format {
  name: string
  /** Streams a request that ends with the assistant text `prefix`; resolves with the continuation text and its completion tokens. */
  continue(
    mock: MockUpstream,
    prefix: string,
    behavior?: MockBehavior,
    extra?: Record<string, unknown>,
  ): Promise<{ text: string; tokens: number }>
}

function json(data: string): Record<string, never> | null {
  try {
    return JSON.parse(data)
  } catch {
    return null
  }
}

const FORMATS: Format[] = [
  {
    name: 'OpenAI chat (vLLM continue_final_message)',
    async continue(mock, prefix, behavior = {}, extra = {}) {
      const body = {
        messages: [user, { role: 'assistant', content: prefix }],
        continue_final_message: true,
        add_generation_prompt: false,
        stream: true,
        stream_options: { include_usage: true },
        mock: behavior,
        ...extra,
      }
      const res = await post(mock, '/v1/chat/completions', body)
      assert.equal(res.status, 200, res.text)
      let text = ''
      let tokens = -1
      for (const e of parseSse(res.text)) {
        const chunk = json(e.data) as { choices?: { delta?: { content?: string } }[]; usage?: { completion_tokens: number } } | null
        text += chunk?.choices?.[0]?.delta?.content ?? ''
        if (chunk?.usage) tokens = chunk.usage.completion_tokens
      }
      return { text, tokens }
    },
  },
  {
    name: 'Anthropic (final assistant message)',
    async continue(mock, prefix, behavior = {}, extra = {}) {
      // The real API refuses a final assistant text ending with whitespace: send it trimmed, as a gateway must.
      const trimmed = prefix.trimEnd()
      const body = { max_tokens: 1000, messages: [user, { role: 'assistant', content: trimmed }], stream: true, mock: behavior, ...extra }
      const res = await post(mock, '/v1/messages', body)
      assert.equal(res.status, 200, res.text)
      let text = ''
      let tokens = -1
      for (const e of parseSse(res.text)) {
        const data = json(e.data) as { delta?: { text?: string }; usage?: { output_tokens: number } } | null
        if (e.event === 'content_block_delta') text += data?.delta?.text ?? ''
        if (e.event === 'message_delta') tokens = data?.usage?.output_tokens ?? -1
      }
      // What the client sees is the trimmed prefix followed by this text: give back the text after the untrimmed prefix.
      return { text: (trimmed + text).slice(prefix.length), tokens }
    },
  },
  {
    name: 'Gemini (final model content)',
    async continue(mock, prefix, behavior = {}, extra = {}) {
      const body = {
        contents: [
          { role: 'user', parts: [{ text: 'Tell me a story' }] },
          { role: 'model', parts: [{ text: prefix }] },
        ],
        mock: behavior,
        ...extra,
      }
      const res = await post(mock, '/v1beta/models/g:streamGenerateContent?alt=sse', body)
      assert.equal(res.status, 200, res.text)
      let text = ''
      let tokens = -1
      for (const e of parseSse(res.text)) {
        const chunk = json(e.data) as {
          candidates?: { content: { parts: { text?: string }[] } }[]
          usageMetadata?: { candidatesTokenCount: number }
        } | null
        text += chunk?.candidates?.[0]?.content.parts[0]?.text ?? ''
        if (chunk?.usageMetadata) tokens = chunk.usageMetadata.candidatesTokenCount
      }
      return { text, tokens }
    },
  },
]

describe('prefill', () => {
  let mock: MockUpstream
  before(async () => {
    mock = await startMockUpstream()
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  for (const format of FORMATS) {
    describe(format.name, () => {
      test('a clean prefix of k tokens: the answer is tokens k … n−1, the splice is expectedContent(n)', async () => {
        for (const k of [0, 1, 5, 7]) {
          const prefix = expectedContent(k)
          const { text } = await format.continue(mock, prefix)
          assert.equal(prefix + text, expectedContent(8), `k = ${k}`)
        }
        const done = await format.continue(mock, expectedContent(8))
        assert.equal(done.text, '', 'a prefix of the whole answer leaves nothing to say')
      })

      test('with shift: the prefix of that upstream text continues it', async () => {
        const prefix = expectedContent(3, 5)
        const { text } = await format.continue(mock, prefix, { shift: 5 })
        assert.equal(prefix + text, expectedContent(8, 5))
      })

      test('max tokens count only the new tokens', async () => {
        const cap = format.name.startsWith('Gemini') ? { generationConfig: { maxOutputTokens: 2 } } : { max_tokens: 2 }
        const prefix = expectedContent(3)
        const { text } = await format.continue(mock, prefix, {}, cap)
        assert.equal(prefix + text, expectedContent(5))
      })

      test('a literal text continues the same way', async () => {
        const { text } = await format.continue(mock, 'Once upon a ', { text: 'Once upon a time, there was a mock.' })
        assert.equal(text, 'time, there was a mock.')
      })

      test('a prefix that is not the mock text: the words are counted, and kept apart by a space', async () => {
        const { text } = await format.continue(mock, 'alpha beta gamma', { tokens: 5 })
        assert.equal(text, ` ${expectedContent(5).slice(expectedContent(3).length)}`)
      })
    })
  }

  test('the usage of a continuation counts the new tokens; a prefix ending inside a token continues from its rest', async () => {
    const chat = FORMATS[0] as Format
    const clean = await chat.continue(mock, expectedContent(3))
    assert.equal(clean.tokens, 5)
    const midWord = await chat.continue(mock, 'lorem ipsum do')
    assert.equal(midWord.text, expectedContent(8).slice('lorem ipsum do'.length))
    assert.equal(midWord.tokens, 6, 'tokens 2 (its rest, "lor ") to 7')
    const anthropic = FORMATS[1] as Format
    const trimmed = await anthropic.continue(mock, expectedContent(3))
    assert.equal(trimmed.tokens, 5, 'a prefix missing only its trailing space counts as its whole tokens')
    const gemini = FORMATS[2] as Format
    assert.equal((await gemini.continue(mock, expectedContent(6))).tokens, 2)
  })

  test('reasoning is skipped in a continuation; tool calls still follow the text', async () => {
    const res = await post(mock, '/v1/messages', {
      max_tokens: 100,
      messages: [user, { role: 'assistant', content: 'lorem ipsum' }],
      mock: { reasoning: 4, tokens: 4, toolCalls: [{ name: 'f', arguments: {} }] },
    })
    const body = JSON.parse(res.text)
    assert.deepEqual(
      body.content.map((b: { type: string }) => b.type),
      ['text', 'tool_use'],
    )
    assert.equal(body.content[0].text, ' dolor sit ')
  })

  test('OpenAI: a trailing assistant message without vLLM flags is answered afresh; a half-set flag is a 400', async () => {
    const messages = [user, { role: 'assistant', content: expectedContent(3) }]
    const fresh = JSON.parse((await post(mock, '/v1/chat/completions', { messages })).text)
    assert.equal(fresh.choices[0].message.content, expectedContent(8))
    const half = await post(mock, '/v1/chat/completions', { messages, continue_final_message: true })
    assert.equal(half.status, 400)
    assert.match(JSON.parse(half.text).error.message, /Cannot set both `continue_final_message` and `add_generation_prompt` to True/)
  })

  test('rejectPrefill: a request ending with an assistant/model turn gets a 400 in the format shape', async () => {
    const mockField = { rejectPrefill: true }
    const chat = await post(mock, '/v1/chat/completions', { messages: [user, { role: 'assistant', content: 'Hi' }], mock: mockField })
    assert.equal(chat.status, 400)
    assert.equal(JSON.parse(chat.text).error.type, 'invalid_request_error')
    assert.match(JSON.parse(chat.text).error.message, /does not support assistant message prefill/)

    const anthropic = await post(mock, '/v1/messages', {
      max_tokens: 9,
      messages: [user, { role: 'assistant', content: 'Hi' }],
      mock: mockField,
    })
    assert.equal(anthropic.status, 400)
    const anthropicError = JSON.parse(anthropic.text)
    assert.equal(anthropicError.type, 'error')
    assert.deepEqual(anthropicError.error, {
      type: 'invalid_request_error',
      message: 'This model does not support assistant message prefill. The conversation must end with a user message.',
    })

    const contents = [
      { role: 'user', parts: [{ text: 'Hi' }] },
      { role: 'model', parts: [{ text: 'Hello' }] },
    ]
    const gemini = await post(mock, '/v1beta/models/g:generateContent', { contents, mock: mockField })
    assert.equal(gemini.status, 400)
    assert.equal(JSON.parse(gemini.text).error.status, 'INVALID_ARGUMENT')

    // A conversation that ends with the user is answered.
    assert.equal((await post(mock, '/v1/messages', { max_tokens: 9, messages: [user], mock: mockField })).status, 200)
  })

  test('shift: another upstream says other words; the same request to the same mock says the same words', async () => {
    const body = { messages: [user], mock: { shift: 3 } }
    const one = JSON.parse((await post(mock, '/v1/chat/completions', body)).text).choices[0].message.content
    const two = JSON.parse((await post(mock, '/v1/chat/completions', body)).text).choices[0].message.content
    assert.equal(one, expectedContent(8, 3))
    assert.equal(one, two)
    assert.notEqual(one, expectedContent(8))
    assert.ok(one.startsWith('sit amet '))
  })
})
