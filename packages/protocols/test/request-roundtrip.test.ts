/** Converting there and back keeps the meaning of what both formats can express. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { convertRequest } from '@llmproxy/protocols'
import { convertValid, OPTS } from './request-helpers.js'

const schema = { type: 'object', properties: { path: { type: 'string' } }, required: ['path'] }

const openai = {
  model: 'up-model',
  messages: [
    { role: 'system', content: 'You are a file assistant.' },
    {
      role: 'user',
      content: [
        { type: 'text', text: 'Open both files' },
        { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
      ],
    },
    {
      role: 'assistant',
      content: 'Opening them.',
      tool_calls: [
        { id: 'call_1', type: 'function', function: { name: 'open', arguments: '{"path":"a.txt"}' } },
        { id: 'call_2', type: 'function', function: { name: 'open', arguments: '{"path":"b.txt"}' } },
      ],
    },
    { role: 'tool', tool_call_id: 'call_1', content: 'alpha' },
    { role: 'tool', tool_call_id: 'call_2', content: 'beta' },
    { role: 'user', content: 'Now summarise.' },
  ],
  tools: [{ type: 'function', function: { name: 'open', description: 'Open a file', parameters: schema } }],
  tool_choice: 'auto',
  parallel_tool_calls: false,
  max_completion_tokens: 500,
  stop: ['END'],
  user: 'u-7',
  response_format: {
    type: 'json_schema',
    json_schema: { name: 'response', schema: { type: 'object', properties: { s: { type: 'string' } } } },
  },
  reasoning_effort: 'low',
}

test('OpenAI → Anthropic → OpenAI gives back the same request', () => {
  const anthropic = convertValid('openai', 'anthropic', openai)
  const back = convertValid('anthropic', 'openai', anthropic)
  assert.deepEqual(back, openai)
})

test('OpenAI → Gemini → OpenAI keeps everything but the tool-call ids, which still pair calls with results', () => {
  const gemini = convertValid('openai', 'gemini', openai)
  const back = convertValid('gemini', 'openai', gemini)
  const messages = back.messages as { tool_calls?: { id: string }[]; tool_call_id?: string }[]
  const ids = messages[2]?.tool_calls?.map((c) => c.id) ?? []
  assert.deepEqual([messages[3]?.tool_call_id, messages[4]?.tool_call_id], ids)
  const renamed = JSON.parse(
    JSON.stringify(back)
      .replaceAll(ids[0] ?? '', 'call_1')
      .replaceAll(ids[1] ?? '', 'call_2'),
  )
  // Gemini has no parallel_tool_calls switch and no end-user id; its thinking budget comes back as the same effort.
  const { parallel_tool_calls: _p, user: _u, ...expected } = openai
  assert.deepEqual(renamed, expected)
})

test('Anthropic → OpenAI → Anthropic keeps turns, tools, results and limits', () => {
  const anthropic = {
    model: 'up-model',
    max_tokens: 1024,
    stream: false,
    system: 'Be exact.',
    messages: [
      { role: 'user', content: [{ type: 'text', text: 'Read it' }] },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Reading.' },
          { type: 'tool_use', id: 'toolu_1', name: 'Read', input: { path: 'x' } },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'toolu_1', content: 'contents', is_error: true },
          { type: 'text', text: 'Go on' },
        ],
      },
    ],
    tools: [{ name: 'Read', description: 'Read a file', input_schema: schema }],
    tool_choice: { type: 'any', disable_parallel_tool_use: true },
    stop_sequences: ['###'],
    metadata: { user_id: 'u-1' },
  }
  const back = convertRequest('openai', 'anthropic', convertValid('anthropic', 'openai', anthropic), OPTS)
  // is_error travels as an "Error: " prefix: OpenAI tool messages have no error flag.
  const expected = {
    ...anthropic,
    messages: [
      ...anthropic.messages.slice(0, 2),
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'toolu_1', content: 'Error: contents' },
          { type: 'text', text: 'Go on' },
        ],
      },
    ],
  }
  assert.deepEqual(back, expected)
})

test('Gemini → Anthropic → Gemini keeps contents, calls and responses', () => {
  const gemini = {
    systemInstruction: { parts: [{ text: 'Sys' }] },
    contents: [
      { role: 'user', parts: [{ text: 'Q' }] },
      { role: 'model', parts: [{ functionCall: { name: 'f', args: { a: 1 } }, thoughtSignature: 'U0lH' }] },
      { role: 'user', parts: [{ functionResponse: { name: 'f', response: { output: 'done' } } }] },
    ],
    tools: [
      {
        functionDeclarations: [
          { name: 'f', description: 'F', parametersJsonSchema: { type: 'object', properties: { a: { type: 'integer' } } } },
        ],
      },
    ],
    toolConfig: { functionCallingConfig: { mode: 'AUTO' } },
    generationConfig: { maxOutputTokens: 256, stopSequences: ['x'] },
  }
  const anthropic = convertValid('gemini', 'anthropic', gemini)
  const back = convertValid('anthropic', 'gemini', anthropic)
  // Gemini's signature means nothing to Anthropic and is not sent there, so on the way back the placeholder stands in.
  const expected = structuredClone(gemini)
  ;(expected.contents[1]?.parts[0] as { thoughtSignature?: string }).thoughtSignature = 'skip_thought_signature_validator'
  assert.deepEqual(back, expected)
})
