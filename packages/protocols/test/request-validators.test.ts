/** The upstream rule checks the conversion tests rely on do catch what the real APIs reject. */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { anthropicProblems, geminiProblems, openaiProblems } from './request-helpers.js'

const has = (problems: string[], pattern: RegExp) =>
  assert.ok(
    problems.some((p) => pattern.test(p)),
    `expected ${pattern} in ${JSON.stringify(problems)}`,
  )

test('Anthropic rules: alternation, tool_result placement and pairing, empty text, thinking, sampling parameters', () => {
  const call = { type: 'tool_use', id: 'toolu_1', name: 'f', input: {} }
  has(
    anthropicProblems({
      model: 'm',
      max_tokens: 1,
      messages: [
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
      ],
    }),
    /repeats the role/,
  )
  has(
    anthropicProblems({
      model: 'm',
      max_tokens: 1,
      messages: [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: [call] },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'x' },
            { type: 'tool_result', tool_use_id: 'toolu_1' },
          ],
        },
      ],
    }),
    /must come first/,
  )
  has(
    anthropicProblems({
      model: 'm',
      max_tokens: 1,
      messages: [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: [call] },
        { role: 'user', content: 'b' },
      ],
    }),
    /has no tool_result/,
  )
  has(anthropicProblems({ model: 'm', max_tokens: 1, messages: [{ role: 'user', content: [{ type: 'text', text: '' }] }] }), /non-empty/)
  has(anthropicProblems({ model: 'm', max_tokens: 1, temperature: 1, messages: [{ role: 'user', content: 'a' }] }), /temperature/)
  has(
    anthropicProblems({
      model: 'm',
      max_tokens: 1,
      thinking: { type: 'adaptive' },
      messages: [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: [call] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1' }] },
      ],
    }),
    /start with a thinking block/,
  )
  has(
    anthropicProblems({
      model: 'm',
      max_tokens: 1,
      messages: [
        { role: 'user', content: 'a' },
        { role: 'assistant', content: 'b ' },
      ],
    }),
    /whitespace/,
  )
})

test('OpenAI rules: tool messages answer pending calls, before anything else', () => {
  const calls = { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] }
  has(openaiProblems({ model: 'm', messages: [{ role: 'user', content: 'a' }, calls, { role: 'user', content: 'b' }] }), /no tool message/)
  has(
    openaiProblems({
      model: 'm',
      messages: [
        { role: 'user', content: 'a' },
        { role: 'tool', tool_call_id: 'c9', content: 'x' },
      ],
    }),
    /does not answer/,
  )
  has(openaiProblems({ model: 'm', messages: [{ role: 'user', content: 'a' }], tools: [] }), /empty array/)
})

test('Gemini rules: data parts, responses matching calls, signatures of the current turn, schemas', () => {
  const call = { role: 'model', parts: [{ functionCall: { name: 'f', args: {} } }] }
  has(geminiProblems({ contents: [{ role: 'user', parts: [{ text: '' }] }] }), /empty text/)
  has(geminiProblems({ contents: [{ role: 'user', parts: [{ text: 'a' }] }, call] }), /0 responses|needs a thoughtSignature/)
  has(
    geminiProblems({
      contents: [
        { role: 'user', parts: [{ text: 'a' }] },
        call,
        { role: 'user', parts: [{ functionResponse: { name: 'f', response: {} } }, { text: 'b' }] },
      ],
    }),
    /sibling parts/,
  )
  has(
    geminiProblems({
      contents: [{ role: 'user', parts: [{ text: 'a' }] }],
      tools: [{ functionDeclarations: [{ name: 'f', parametersJsonSchema: { $schema: 'x', type: 'object' } }] }],
    }),
    /\$schema/,
  )
  has(geminiProblems({ model: 'x', contents: [{ role: 'user', parts: [{ text: 'a' }] }] }), /URL/)
})
