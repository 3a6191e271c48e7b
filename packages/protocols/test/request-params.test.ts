import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type AnthropicBody, assertRefused, convertValid, type GeminiBody, type OpenAIBody } from './request-helpers.js'

const schema = { type: 'object', properties: { answer: { type: 'string' } }, required: ['answer'], additionalProperties: false }

describe('generation parameters', () => {
  const openai = {
    model: 'gpt-x',
    messages: [{ role: 'user', content: 'x' }],
    max_tokens: 300,
    temperature: 0.2,
    top_p: 0.9,
    stop: 'END',
    seed: 7,
    presence_penalty: 0.5,
    frequency_penalty: 0.25,
    user: 'user-42',
    store: true,
    metadata: { app: 'a' },
    service_tier: 'flex',
    prompt_cache_key: 'k',
    n: 1,
  }

  test('OpenAI → Anthropic: max_tokens, stop_sequences, metadata.user_id; sampling and OpenAI-only hints are not sent', () => {
    const out = convertValid('openai', 'anthropic', openai)
    const expected: AnthropicBody = {
      model: 'up-model',
      max_tokens: 300,
      stream: false,
      messages: [{ role: 'user', content: [{ type: 'text', text: 'x' }] }],
      stop_sequences: ['END'],
      metadata: { user_id: 'user-42' },
    }
    assert.deepEqual(out, expected)
    assert.equal(convertValid('openai', 'anthropic', { ...openai, max_tokens: undefined, max_completion_tokens: 99 }).max_tokens, 99)
  })

  test('OpenAI → Gemini: generationConfig', () => {
    const out = convertValid('openai', 'gemini', openai)
    const expected: GeminiBody['generationConfig'] = {
      maxOutputTokens: 300,
      temperature: 0.2,
      topP: 0.9,
      stopSequences: ['END'],
      seed: 7,
      presencePenalty: 0.5,
      frequencyPenalty: 0.25,
    }
    assert.deepEqual(out.generationConfig, expected)
  })

  test('Anthropic → OpenAI: max_completion_tokens, sampling, stop, user (top_k for vLLM)', () => {
    const out = convertValid('anthropic', 'openai', {
      model: 'c',
      max_tokens: 1000,
      temperature: 1,
      top_p: 0.95,
      top_k: 40,
      stop_sequences: ['</answer>'],
      metadata: { user_id: 'u-1' },
      service_tier: 'auto',
      messages: [{ role: 'user', content: 'x' }],
    })
    const expected: OpenAIBody & { top_k?: number } = {
      model: 'up-model',
      messages: [{ role: 'user', content: 'x' }],
      max_completion_tokens: 1000,
      temperature: 1,
      top_p: 0.95,
      top_k: 40,
      stop: ['</answer>'],
      user: 'u-1',
    }
    assert.deepEqual(out, expected)
  })

  test('Anthropic → Gemini and Gemini → Anthropic', () => {
    const gemini = convertValid('anthropic', 'gemini', {
      model: 'c',
      max_tokens: 64,
      temperature: 0.1,
      top_k: 3,
      stop_sequences: ['x'],
      messages: [{ role: 'user', content: 'x' }],
    })
    assert.deepEqual(gemini.generationConfig, { maxOutputTokens: 64, temperature: 0.1, topK: 3, stopSequences: ['x'] })
    const anthropic = convertValid('gemini', 'anthropic', {
      contents: [{ parts: [{ text: 'x' }] }],
      generationConfig: { maxOutputTokens: '77', temperature: 0.3, stopSequences: ['STOP'], candidateCount: 1 },
      safetySettings: [{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_NONE' }],
    })
    assert.deepEqual([anthropic.max_tokens, anthropic.stop_sequences, 'temperature' in anthropic], [77, ['STOP'], false])
  })

  test('a whitespace stop sequence cannot go to Anthropic', () => {
    assertRefused('openai', 'anthropic', { ...openai, stop: ['\n'] }, 'stop', /non-whitespace/)
    assertRefused(
      'gemini',
      'anthropic',
      { contents: [{ parts: [{ text: 'x' }] }], generationConfig: { stopSequences: [' '] } },
      'generationConfig.stopSequences',
    )
  })
})

describe('structured output', () => {
  test('OpenAI json_schema → Anthropic output_config.format and Gemini responseJsonSchema; json_object → Gemini JSON mode', () => {
    const body = {
      model: 'gpt-x',
      messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_schema', json_schema: { name: 'answer', schema, strict: true } },
    }
    assert.deepEqual(convertValid('openai', 'anthropic', body).output_config, { format: { type: 'json_schema', schema } })
    assert.deepEqual(convertValid('openai', 'gemini', body).generationConfig, {
      responseMimeType: 'application/json',
      responseJsonSchema: schema,
    })
    const jsonMode = { ...body, response_format: { type: 'json_object' } }
    assert.deepEqual(convertValid('openai', 'gemini', jsonMode).generationConfig, { responseMimeType: 'application/json' })
    assert.equal(convertValid('openai', 'anthropic', { ...body, response_format: { type: 'text' } }).output_config, undefined)
  })

  test('Anthropic has no free-form JSON mode: json_object is refused, not silently dropped', () => {
    assertRefused(
      'openai',
      'anthropic',
      { model: 'x', messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_object' } },
      'response_format',
      /json_schema/,
    )
    assertRefused(
      'gemini',
      'anthropic',
      { contents: [{ parts: [{ text: 'x' }] }], generationConfig: { responseMimeType: 'application/json' } },
      'generationConfig.responseMimeType',
    )
  })

  test('Anthropic output_config.format → OpenAI response_format; Gemini responseSchema (OpenAPI) → JSON Schema', () => {
    const fromAnthropic = convertValid('anthropic', 'openai', {
      model: 'c',
      max_tokens: 5,
      messages: [{ role: 'user', content: 'x' }],
      output_config: { format: { type: 'json_schema', schema } },
    })
    assert.deepEqual(fromAnthropic.response_format, { type: 'json_schema', json_schema: { name: 'response', schema } })
    const fromGemini = convertValid('gemini', 'openai', {
      contents: [{ parts: [{ text: 'x' }] }],
      generationConfig: {
        responseMimeType: 'application/json',
        responseSchema: { type: 'OBJECT', properties: { answer: { type: 'STRING' } } },
      },
    })
    assert.deepEqual(fromGemini.response_format, {
      type: 'json_schema',
      json_schema: { name: 'response', schema: { type: 'object', properties: { answer: { type: 'string' } } } },
    })
  })
})

describe('what no other format can carry is refused with the field', () => {
  const base = { model: 'gpt-x', messages: [{ role: 'user', content: 'x' }] }
  const cases: [Record<string, unknown>, string][] = [
    [{ n: 2 }, 'n'],
    [{ logprobs: true }, 'logprobs'],
    [{ top_logprobs: 3 }, 'top_logprobs'],
    [{ logit_bias: { '50256': -100 } }, 'logit_bias'],
    [{ functions: [{ name: 'f' }] }, 'functions'],
    [{ modalities: ['text', 'audio'], audio: { voice: 'alloy', format: 'wav' } }, 'audio'],
    [{ web_search_options: {} }, 'web_search_options'],
    [{ tools: [{ type: 'custom', custom: { name: 'grammar' } }] }, 'tools[0]'],
    [{ reasoning_effort: 'extreme' }, 'reasoning_effort'],
  ]
  for (const [extra, param] of cases) {
    test(`OpenAI ${param}`, () => {
      for (const to of ['anthropic', 'gemini'] as const) assertRefused('openai', to, { ...base, ...extra }, param)
    })
  }

  test('Gemini candidateCount > 1, logprobs, non-text output, enum MIME type, cached content', () => {
    const base = { contents: [{ parts: [{ text: 'x' }] }] }
    assertRefused('gemini', 'openai', { ...base, generationConfig: { candidateCount: 2 } }, 'generationConfig.candidateCount')
    assertRefused('gemini', 'openai', { ...base, generation_config: { candidate_count: 2 } }, 'generation_config.candidate_count')
    assertRefused('gemini', 'anthropic', { ...base, generationConfig: { responseLogprobs: true } }, 'generationConfig.responseLogprobs')
    assertRefused(
      'gemini',
      'openai',
      { ...base, generationConfig: { responseModalities: ['AUDIO'] } },
      'generationConfig.responseModalities',
    )
    assertRefused(
      'gemini',
      'openai',
      { ...base, generationConfig: { responseMimeType: 'text/x.enum' } },
      'generationConfig.responseMimeType',
    )
    assertRefused('gemini', 'openai', { ...base, cachedContent: 'cachedContents/abc' }, 'cachedContent')
  })

  test('Anthropic MCP servers, Files API sources and unknown blocks', () => {
    const base = { model: 'c', max_tokens: 5 }
    assertRefused(
      'anthropic',
      'openai',
      { ...base, messages: [{ role: 'user', content: 'x' }], mcp_servers: [{ type: 'url', url: 'https://m', name: 'm' }] },
      'mcp_servers',
    )
    assertRefused(
      'anthropic',
      'gemini',
      { ...base, messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'file', file_id: 'file_1' } }] }] },
      'messages[0].content[0].source',
    )
    assertRefused(
      'anthropic',
      'openai',
      { ...base, messages: [{ role: 'user', content: [{ type: 'search_result', source: 's', title: 't', content: [] }] }] },
      'messages[0].content[0]',
    )
  })

  test('malformed bodies get a ConversionError naming the field, not a crash', () => {
    assertRefused('openai', 'anthropic', { model: 'x' }, 'messages')
    assertRefused('anthropic', 'openai', { model: 'x', max_tokens: 1, messages: [{ role: 'user', content: 5 }] }, 'messages[0].content')
    assertRefused('gemini', 'openai', { contents: [{ role: 'user', parts: 'x' }] }, 'contents[0].parts')
    assertRefused('openai', 'gemini', { model: 'x', messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role')
    // Fields of the wrong shape are refused, not ignored (a request that went out without its tools, or its stops).
    const user = [{ role: 'user', content: 'x' }]
    assertRefused('openai', 'anthropic', { model: 'x', messages: user, tools: { type: 'function' } }, 'tools')
    assertRefused('openai', 'anthropic', { model: 'x', messages: user, stop: 5 }, 'stop')
    assertRefused('openai', 'anthropic', { model: 'x', messages: user, parallel_tool_calls: 'no' }, 'parallel_tool_calls')
    assertRefused(
      'openai',
      'anthropic',
      { model: 'x', messages: [...user, { role: 'assistant', tool_calls: { id: 'c' } }] },
      'messages[1].tool_calls',
    )
    const contents = [{ role: 'user', parts: [{ text: 'x' }] }]
    assertRefused(
      'gemini',
      'openai',
      { contents, tools: [{ functionDeclarations: [{ name: 'f', parameters: 'x' }] }] },
      'tools[0].functionDeclarations[0].parameters',
    )
    assertRefused(
      'gemini',
      'openai',
      { contents, generationConfig: { responseMimeType: 'application/json', responseSchema: 'x' } },
      'generationConfig.responseSchema',
    )
  })
})
