/** The request checks of the real servers: a conversion bug gets the 400 a real server would give, in its shape. */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { expectedReasoning, type MockUpstream, REDACTED_THINKING_DATA, signatureFor, startMockUpstream } from '../src/index.js'
import { post } from './helpers.js'

const user = { role: 'user', content: 'Hi' }

describe('request checks', () => {
  let mock: MockUpstream
  before(async () => {
    mock = await startMockUpstream({ defaults: { tokens: 1 } })
  })
  after(() => mock.close())

  async function rejected(path: string, body: unknown): Promise<Record<string, unknown>> {
    const res = await post(mock, path, body)
    assert.equal(res.status, 400, `${JSON.stringify(body)} should be rejected, got ${res.text}`)
    return JSON.parse(res.text)
  }

  async function accepted(path: string, body: unknown): Promise<void> {
    const res = await post(mock, path, body)
    assert.equal(res.status, 200, `${JSON.stringify(body)} should pass: ${res.text}`)
  }

  test('OpenAI chat: messages, roles, content parts, tool_calls and their tool messages, vLLM prefill flags', async () => {
    const path = '/v1/chat/completions'
    const call = { id: 'call_1', type: 'function', function: { name: 'f', arguments: '{}' } }
    const cases: [unknown, RegExp, string][] = [
      [{ model: 'm' }, /^Missing required parameter: 'messages'\.$/, 'messages'],
      [{ messages: 'hi' }, /Invalid type for 'messages'/, 'messages'],
      [{ messages: [{ role: 'human', content: 'x' }] }, /Invalid value: 'human'\. Supported values are/, 'messages[0].role'],
      [
        { messages: [{ role: 'user', content: [{ type: 'input_text', text: 'x' }] }] },
        /Invalid value: 'input_text'/,
        'messages[0].content[0].type',
      ],
      [
        { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: 'x' }] }] },
        /image_url\.url/,
        'messages[0].content[0].image_url.url',
      ],
      [
        { messages: [user, { role: 'tool', tool_call_id: 'call_1', content: 'x' }] },
        /must be a response to a preceeding message with 'tool_calls'/,
        'messages.[1].role',
      ],
      [
        { messages: [user, { role: 'assistant', tool_calls: [call] }, user] },
        /did not have response messages: call_1/,
        'messages.[1].role',
      ],
      [{ messages: [user, { role: 'assistant', tool_calls: [call] }] }, /did not have response messages: call_1/, 'messages.[1].role'],
      [
        {
          messages: [
            user,
            { role: 'assistant', tool_calls: [{ ...call, function: { name: 'f', arguments: {} } }] },
            { role: 'tool', tool_call_id: 'call_1', content: 'x' },
          ],
        },
        /expected a string, but got object instead/,
        'messages[1].tool_calls[0].function.arguments',
      ],
      [
        { messages: [user, { role: 'assistant', content: 'a' }], continue_final_message: true, add_generation_prompt: true },
        /Cannot set both/,
        'continue_final_message',
      ],
    ]
    for (const [body, message, param] of cases) {
      const { error } = (await rejected(path, body)) as { error: { message: string; type: string; param: string } }
      assert.match(error.message, message)
      assert.equal(error.type, 'invalid_request_error')
      assert.equal(error.param, param)
    }
    await accepted(path, { messages: [] }) // as vLLM
    await accepted(path, {
      messages: [
        { role: 'system', content: 's' },
        user,
        { role: 'assistant', content: null, tool_calls: [call, { ...call, id: 'call_2' }] },
        { role: 'tool', tool_call_id: 'call_2', content: 'b' },
        { role: 'tool', tool_call_id: 'call_1', content: 'a' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'and' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,AA' } },
          ],
        },
      ],
    })
  })

  test('a value that String() cannot print (an object with a toString key) gets its 400, and the mock goes on serving', async () => {
    const odd = { toString: 1 }
    await rejected('/v1/chat/completions', { model: 'm', messages: [{ role: odd, content: 'Hi' }] })
    await rejected('/v1/chat/completions', { model: 'm', messages: [{ role: 'user', content: [{ type: odd }] }] })
    await rejected('/v1/messages', {
      model: 'm',
      max_tokens: 5,
      messages: [{ role: 'user', content: [{ type: 'image', source: { type: odd } }] }],
    })
    await accepted('/v1/chat/completions', { model: 'm', messages: [user] })
  })

  test('Anthropic: max_tokens, messages, roles, blocks, tool_use/tool_result pairing, images, thinking, tools', async () => {
    const path = '/v1/messages'
    const base = { model: 'c', max_tokens: 2000 }
    const use = { type: 'tool_use', id: 'toolu_1', name: 'f', input: {} }
    const result = { type: 'tool_result', tool_use_id: 'toolu_1', content: 'ok' }
    const cases: [unknown, RegExp][] = [
      [{ model: 'c', messages: [user] }, /^max_tokens: Field required$/],
      [{ ...base, max_tokens: 'many', messages: [user] }, /max_tokens: Input should be a valid integer/],
      [{ ...base }, /^messages: Field required$/],
      [{ ...base, messages: [] }, /at least one message is required/],
      [{ ...base, messages: [{ role: 'system', content: 's' }, user] }, /Unexpected role "system"/],
      [{ ...base, messages: [{ role: 'tool', content: 's' }] }, /messages\.0\.role: Input should be 'user' or 'assistant'/],
      [{ ...base, messages: [{ role: 'user', content: '' }] }, /all messages must have non-empty content/],
      [{ ...base, messages: [{ role: 'user', content: [{ type: 'text', text: '' }] }] }, /text content blocks must be non-empty/],
      [
        { ...base, messages: [{ role: 'user', content: [{ type: 'input_text', text: 'x' }] }] },
        /Input tag 'input_text' found using 'type'/,
      ],
      [{ ...base, messages: [{ role: 'user', content: [use] }] }, /`tool_use` blocks can only be in `assistant` messages/],
      [
        { ...base, messages: [user, { role: 'assistant', content: [use] }, { role: 'user', content: 'no result' }] },
        /ids were found without `tool_result` blocks immediately after: toolu_1/,
      ],
      [
        { ...base, messages: [user, { role: 'assistant', content: 'hm' }, { role: 'user', content: [result] }] },
        /unexpected `tool_use_id` found in `tool_result` blocks: toolu_1/,
      ],
      [
        { ...base, messages: [user, { role: 'assistant', content: [{ ...use, input: '{}' }] }] },
        /tool_use\.input: Input should be a valid dictionary/,
      ],
      [
        { ...base, messages: [user, { role: 'assistant', content: [{ type: 'thinking', thinking: 'hm' }] }] },
        /thinking\.signature: Field required/,
      ],
      [
        {
          ...base,
          messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/bmp', data: 'AA' } }] }],
        },
        /media_type: Input should be 'image\/jpeg'/,
      ],
      [
        { ...base, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'path', path: '/x' } }] }] },
        /expected tags: 'base64', 'url', 'file'/,
      ],
      [{ ...base, messages: [user, { role: 'assistant', content: 'So ' }] }, /final assistant content cannot end with trailing whitespace/],
      [{ ...base, system: [{ type: 'image' }], messages: [user] }, /system\.0/],
      [
        { ...base, thinking: { type: 'enabled', budget_tokens: 100 }, messages: [user] },
        /budget_tokens: Input should be greater than or equal to 1024/,
      ],
      [
        { ...base, max_tokens: 1024, thinking: { type: 'enabled', budget_tokens: 1024 }, messages: [user] },
        /`max_tokens` must be greater than `thinking.budget_tokens`/,
      ],
      [{ ...base, tools: [{ name: 'f', parameters: {} }], messages: [user] }, /tools\.0\.custom\.input_schema: Field required/],
      [{ ...base, tool_choice: { type: 'required' }, messages: [user] }, /tool_choice/],
    ]
    const unversioned = await post(mock, path, { ...base, messages: [user] }, { 'anthropic-version': undefined })
    assert.equal(unversioned.status, 400)
    assert.match(unversioned.text, /anthropic-version: header is required/)
    for (const [body, message] of cases) {
      const error = await rejected(path, body)
      assert.equal(error.type, 'error')
      assert.equal((error.error as { type: string }).type, 'invalid_request_error')
      assert.match((error.error as { message: string }).message, message)
    }
    await accepted(path, {
      ...base,
      system: [{ type: 'text', text: 'be brief' }],
      thinking: { type: 'enabled', budget_tokens: 1024 },
      tools: [
        { name: 'f', input_schema: { type: 'object' } },
        { type: 'web_search_20250305', name: 'web_search' },
      ],
      tool_choice: { type: 'tool', name: 'f' },
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'look' },
            { type: 'image', source: { type: 'url', url: 'https://x.test/a.png' } },
          ],
        },
        { role: 'assistant', content: [{ type: 'thinking', thinking: 'hm', signature: 'sig' }, use] },
        { role: 'user', content: [result, { type: 'text', text: 'go on' }] },
        { role: 'assistant', content: [] },
      ],
    })
  })

  test('Anthropic: the thinking blocks of the latest assistant message come back with the redacted_thinking block that followed', async () => {
    const path = '/v1/messages'
    const thinking = { type: 'thinking', thinking: expectedReasoning(2), signature: signatureFor(2, true) }
    const redacted = { type: 'redacted_thinking', data: REDACTED_THINKING_DATA }
    const use = { type: 'tool_use', id: 'toolu_1', name: 'f', input: {} }
    const result = { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'ok' }] }
    const loop = (assistant: unknown[]) => ({
      model: 'c',
      max_tokens: 2000,
      messages: [user, { role: 'assistant', content: assistant }, result],
    })
    const modified = /^messages\.1\.content\.0: `thinking` or `redacted_thinking` blocks in the latest assistant message cannot be modified/
    for (const assistant of [
      [thinking, use],
      [{ ...thinking, thinking: 'edited' }, redacted, use],
      [thinking, { ...redacted, data: 'other' }, use],
    ]) {
      const error = (await rejected(path, loop(assistant))).error as { type: string; message: string }
      assert.equal(error.type, 'invalid_request_error')
      assert.match(error.message, modified)
    }
    await accepted(path, loop([thinking, redacted, use]))
    // Without thinking blocks (or with other signatures) there is nothing to check.
    await accepted(path, loop([use]))
    await accepted(path, loop([{ ...thinking, signature: signatureFor(2) }, use]))
    // Only the latest assistant message is checked.
    const later = loop([thinking, use]).messages.concat([{ role: 'assistant', content: [{ type: 'text', text: 'done' }] }, user])
    await accepted(path, { model: 'c', max_tokens: 2000, messages: later })
  })

  test('Gemini: contents, roles, parts, function call/response turns, systemInstruction, tools, unknown fields', async () => {
    const path = '/v1beta/models/g:generateContent'
    const ask = { role: 'user', parts: [{ text: 'Hi' }] }
    const callTurn = { role: 'model', parts: [{ functionCall: { name: 'f', args: {} } }, { functionCall: { name: 'g', args: {} } }] }
    const answer = (n: number) => ({
      role: 'user',
      parts: Array.from({ length: n }, () => ({ functionResponse: { name: 'f', response: { ok: true } } })),
    })
    const cases: [unknown, RegExp, string][] = [
      [{}, /contents is not specified/, 'INVALID_ARGUMENT'],
      [{ contents: [] }, /contents is not specified/, 'INVALID_ARGUMENT'],
      [{ contents: [ask], messages: [] }, /Unknown name "messages": Cannot find field/, 'INVALID_ARGUMENT'],
      [{ contents: [{ role: 'assistant', parts: [{ text: 'x' }] }] }, /Please use a valid role: user, model\./, 'INVALID_ARGUMENT'],
      [{ contents: [{ role: 'user', parts: [] }] }, /contents\.parts must not be empty/, 'INVALID_ARGUMENT'],
      [
        { contents: [{ role: 'user', parts: [{ type: 'text', text: 'x' }] }] },
        /Unknown name "type" at 'contents\[0\]\.parts\[0\]'/,
        'INVALID_ARGUMENT',
      ],
      [
        { contents: [ask, callTurn, answer(1)] },
        /number of function response parts is equal to the number of function call parts/,
        'INVALID_ARGUMENT',
      ],
      [{ contents: [ask, answer(1)] }, /function response turn comes immediately after a function call turn/, 'INVALID_ARGUMENT'],
      [{ contents: [callTurn] }, /function call turn comes immediately after a user turn/, 'INVALID_ARGUMENT'],
      [
        { contents: [ask, { role: 'model', parts: [{ functionCall: { name: '' } }] }] },
        /function_call\.name: Name cannot be empty/,
        'INVALID_ARGUMENT',
      ],
      [
        {
          contents: [
            ask,
            callTurn,
            {
              role: 'user',
              parts: [{ functionResponse: { name: 'f', response: '18' } }, { functionResponse: { name: 'g', response: {} } }],
            },
          ],
        },
        /protobuf\.Struct/,
        'INVALID_ARGUMENT',
      ],
      [{ contents: [ask], systemInstruction: 'be brief' }, /Invalid value at 'system_instruction'/, 'INVALID_ARGUMENT'],
      [
        { contents: [ask], tools: [{ type: 'function', function: { name: 'f' } }] },
        /Unknown name "type" at 'tools\[0\]'/,
        'INVALID_ARGUMENT',
      ],
      [{ contents: [ask], tools: [{ functionDeclarations: [{ name: '1 bad name' }] }] }, /Invalid function name/, 'INVALID_ARGUMENT'],
    ]
    for (const [body, message, status] of cases) {
      const { error } = (await rejected(path, body)) as { error: { code: number; message: string; status: string } }
      assert.equal(error.code, 400)
      assert.equal(error.status, status)
      assert.match(error.message, message)
    }
    await accepted(path, {
      contents: [
        ask,
        callTurn,
        answer(2),
        { role: 'model', parts: [{ text: 'ok', thoughtSignature: 'c2ln' }] },
        { parts: [{ text: 'more' }] },
      ],
      system_instruction: { parts: [{ text: 'be brief' }] },
      tools: [{ functionDeclarations: [{ name: 'get.weather_v2', parameters: { type: 'OBJECT' } }] }, { googleSearch: {} }],
      generationConfig: { maxOutputTokens: 5 },
    })
  })

  test("the checks run on the generation routes only, after the mock's own faults and statuses", async () => {
    assert.equal((await post(mock, '/v1/messages', { messages: [user], mock: { status: 503 } })).status, 503)
    assert.equal((await post(mock, '/v1/completions', { prompt: 'no messages needed' })).status, 200)
    assert.equal((await post(mock, '/v1/responses', { input: 'x' })).status, 200)
  })
})
