import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { toolCallIdWithSignature } from '@llmproxy/protocols'
import { type AnthropicBody, convertValid, type GeminiBody, type VllmAssistantMessage } from './request-helpers.js'

const claudeHistory = {
  model: 'claude-x',
  max_tokens: 2000,
  messages: [
    { role: 'user', content: 'List the files' },
    {
      role: 'assistant',
      content: [
        { type: 'thinking', thinking: 'I should run ls.', signature: 'R2VtaW5pU2ln' },
        { type: 'redacted_thinking', data: 'opaque' },
        { type: 'text', text: 'Running ls.' },
        { type: 'tool_use', id: 'toolu_1', name: 'Bash', input: { command: 'ls' } },
      ],
    },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'a.txt' }] },
  ],
  tools: [{ name: 'Bash', input_schema: { type: 'object', properties: { command: { type: 'string' } } } }],
}

describe('reasoning in the history', () => {
  test('Anthropic thinking → OpenAI reasoning_content (vLLM, DeepSeek); signatures and redacted thinking are dropped', () => {
    const out = convertValid('anthropic', 'openai', claudeHistory)
    const expected: VllmAssistantMessage = {
      role: 'assistant',
      content: 'Running ls.',
      reasoning_content: 'I should run ls.',
      tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'Bash', arguments: '{"command":"ls"}' } }],
    }
    assert.deepEqual((out.messages as unknown[])[1], expected)
  })

  test('Anthropic thinking → Gemini thought parts with their signature; unsigned thinking is left out', () => {
    const out = convertValid('anthropic', 'gemini', claudeHistory)
    assert.deepEqual((out.contents as GeminiBody['contents'])[1], {
      role: 'model',
      parts: [
        { text: 'I should run ls.', thought: true, thoughtSignature: 'R2VtaW5pU2ln' },
        { text: 'Running ls.' },
        { functionCall: { name: 'Bash', args: { command: 'ls' } }, thoughtSignature: 'skip_thought_signature_validator' },
      ],
    })
    const unsigned = structuredClone(claudeHistory)
    unsigned.messages[1] = {
      role: 'assistant',
      content: [
        { type: 'thinking', thinking: 'hmm', signature: '' },
        { type: 'text', text: 'ok' },
      ],
    }
    unsigned.messages.pop()
    const parts = (convertValid('anthropic', 'gemini', unsigned).contents as GeminiBody['contents'])[1]?.parts
    assert.deepEqual(parts, [{ text: 'ok' }])
  })

  test('OpenAI reasoning_content + the signature its tool-call id carries → a signed Anthropic thinking block, so thinking stays on', () => {
    const id = toolCallIdWithSignature('toolu_9', 'QW50aHJvcGljU2ln')
    const out = convertValid('openai', 'anthropic', {
      model: 'gpt-x',
      reasoning_effort: 'high',
      messages: [
        { role: 'user', content: 'ls' },
        {
          role: 'assistant',
          content: null,
          reasoning_content: 'Use Bash.',
          tool_calls: [{ id, type: 'function', function: { name: 'Bash', arguments: '{}' } }],
        },
        { role: 'tool', tool_call_id: id, content: 'a.txt' },
      ],
      tools: [{ type: 'function', function: { name: 'Bash', parameters: { type: 'object', properties: {} } } }],
    })
    assert.deepEqual((out.messages as AnthropicBody['messages'])[1], {
      role: 'assistant',
      content: [
        { type: 'thinking', thinking: 'Use Bash.', signature: 'QW50aHJvcGljU2ln' },
        { type: 'tool_use', id: 'toolu_9', name: 'Bash', input: {} },
      ],
    })
    assert.deepEqual(out.thinking, { type: 'adaptive' })
    assert.deepEqual(out.output_config, { effort: 'high' })
  })

  test('without signed thinking in the tool loop, Anthropic thinking is turned off for that request (the effort stays)', () => {
    const out = convertValid('openai', 'anthropic', {
      model: 'gpt-x',
      reasoning_effort: 'medium',
      messages: [
        { role: 'user', content: 'ls' },
        {
          role: 'assistant',
          content: null,
          reasoning_content: 'unsigned',
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'Bash', arguments: '{}' } }],
        },
        { role: 'tool', tool_call_id: 'c1', content: 'a.txt' },
      ],
      tools: [{ type: 'function', function: { name: 'Bash', parameters: { type: 'object', properties: {} } } }],
    })
    assert.equal(out.thinking, undefined)
    assert.deepEqual(out.output_config, { effort: 'medium' })
    assert.deepEqual((out.messages as AnthropicBody['messages'])[1]?.content, [{ type: 'tool_use', id: 'c1', name: 'Bash', input: {} }])
  })

  test('Gemini thought parts → OpenAI reasoning_content and signed Anthropic thinking', () => {
    const gemini = {
      contents: [
        { role: 'user', parts: [{ text: 'Why?' }] },
        {
          role: 'model',
          parts: [
            { text: 'Thinking it over.', thought: true, thoughtSignature: 'U0lH' },
            { text: 'Because.', thoughtSignature: 'TEFTVA==' },
          ],
        },
        { role: 'user', parts: [{ text: 'More?' }] },
      ],
    }
    const openai = convertValid('gemini', 'openai', gemini)
    assert.deepEqual((openai.messages as unknown[])[1], { role: 'assistant', content: 'Because.', reasoning_content: 'Thinking it over.' })
    const anthropic = convertValid('gemini', 'anthropic', gemini)
    assert.deepEqual((anthropic.messages as AnthropicBody['messages'])[1]?.content, [
      { type: 'thinking', thinking: 'Thinking it over.', signature: 'U0lH' },
      { type: 'text', text: 'Because.' },
    ])
  })
})

describe('reasoning options', () => {
  const ask = (extra: Record<string, unknown>) => ({
    model: 'c',
    max_tokens: 32000,
    messages: [{ role: 'user', content: 'think' }],
    ...extra,
  })

  test('Anthropic thinking → OpenAI reasoning_effort: a budget by size, adaptive by output_config.effort, disabled → none sent', () => {
    const effort = (extra: Record<string, unknown>) => convertValid('anthropic', 'openai', ask(extra)).reasoning_effort
    assert.equal(effort({ thinking: { type: 'enabled', budget_tokens: 1024 } }), 'low')
    assert.equal(effort({ thinking: { type: 'enabled', budget_tokens: 10000 } }), 'medium')
    assert.equal(effort({ thinking: { type: 'enabled', budget_tokens: 31999 } }), 'high')
    assert.equal(effort({ thinking: { type: 'adaptive' }, output_config: { effort: 'xhigh' } }), 'xhigh')
    assert.equal(effort({ thinking: { type: 'adaptive' } }), undefined)
    assert.equal(effort({ thinking: { type: 'disabled' } }), undefined)
  })

  test('Anthropic thinking → Gemini thinkingConfig: the budget (capped), -1 for adaptive, includeThoughts from display', () => {
    const config = (extra: Record<string, unknown>) =>
      (convertValid('anthropic', 'gemini', ask(extra)).generationConfig as GeminiBody['generationConfig'])?.thinkingConfig
    assert.deepEqual(config({ thinking: { type: 'enabled', budget_tokens: 10000 } }), { thinkingBudget: 10000, includeThoughts: true })
    assert.deepEqual(config({ thinking: { type: 'enabled', budget_tokens: 31999 } }), { thinkingBudget: 24576, includeThoughts: true })
    assert.deepEqual(config({ thinking: { type: 'adaptive', display: 'omitted' } }), { thinkingBudget: -1, includeThoughts: false })
    assert.deepEqual(config({ thinking: { type: 'adaptive' }, output_config: { effort: 'low' } }), {
      thinkingBudget: 2048,
      includeThoughts: true,
    })
    assert.equal(config({ thinking: { type: 'disabled' } }), undefined)
  })

  test('OpenAI reasoning_effort → Anthropic adaptive thinking with output_config.effort; → Gemini thinkingBudget', () => {
    const body = (effort: string) => ({ model: 'gpt-x', reasoning_effort: effort, messages: [{ role: 'user', content: 'x' }] })
    const anthropic = convertValid('openai', 'anthropic', body('minimal'))
    assert.deepEqual([anthropic.thinking, anthropic.output_config], [{ type: 'adaptive' }, { effort: 'low' }])
    const none = convertValid('openai', 'anthropic', body('none'))
    assert.deepEqual([none.thinking, none.output_config], [undefined, undefined])
    const budgets = ['minimal', 'low', 'medium', 'high', 'xhigh'].map(
      (e) => (convertValid('openai', 'gemini', body(e)).generationConfig as GeminiBody['generationConfig'])?.thinkingConfig?.thinkingBudget,
    )
    assert.deepEqual(budgets, [512, 2048, 8192, 16384, 24576])
    assert.equal(convertValid('openai', 'gemini', body('none')).generationConfig, undefined)
  })

  test('Gemini thinkingConfig → OpenAI and Anthropic', () => {
    const body = (thinkingConfig: Record<string, unknown>) => ({
      contents: [{ parts: [{ text: 'x' }] }],
      generationConfig: { thinkingConfig },
    })
    assert.equal(convertValid('gemini', 'openai', body({ thinkingBudget: 20000 })).reasoning_effort, 'high')
    assert.equal(convertValid('gemini', 'openai', body({ thinkingLevel: 'LOW' })).reasoning_effort, 'low')
    assert.equal(convertValid('gemini', 'openai', body({ thinkingBudget: 0 })).reasoning_effort, undefined)
    const anthropic = convertValid('gemini', 'anthropic', body({ thinkingBudget: 2000, includeThoughts: false }))
    assert.deepEqual([anthropic.thinking, anthropic.output_config], [{ type: 'adaptive', display: 'omitted' }, { effort: 'low' }])
  })

  test('a forced tool or a final assistant prefill turns Anthropic thinking off (Anthropic rejects either with it)', () => {
    const forced = convertValid('openai', 'anthropic', {
      model: 'gpt-x',
      reasoning_effort: 'high',
      messages: [{ role: 'user', content: 'x' }],
      tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }],
      tool_choice: 'required',
    })
    assert.equal(forced.thinking, undefined)
    const prefill = convertValid('gemini', 'anthropic', {
      contents: [
        { role: 'user', parts: [{ text: 'x' }] },
        { role: 'model', parts: [{ text: 'Sure' }] },
      ],
      generationConfig: { thinkingConfig: { thinkingBudget: -1 } },
    })
    assert.equal(prefill.thinking, undefined)
  })
})
