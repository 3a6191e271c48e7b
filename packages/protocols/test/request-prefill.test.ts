import assert from 'node:assert/strict'
import { test } from 'node:test'
import { convertRequest, withAssistantPrefill } from '@llmproxy/protocols'
import { anthropicProblems, geminiProblems, OPTS, openaiProblems } from './request-helpers.js'

const openaiClient = { model: 'x', max_tokens: 100, reasoning_effort: 'high', messages: [{ role: 'user', content: 'Write a haiku' }] }

test('Anthropic: a final assistant turn with the text so far, a smaller max_tokens, no thinking; the input is not changed', () => {
  const upstream = convertRequest('openai', 'anthropic', openaiClient, OPTS)
  const before = structuredClone(upstream)
  const out = withAssistantPrefill('anthropic', upstream, 'Autumn moonlight—', { generatedTokens: 30, vllmContinue: false })
  assert.deepEqual(out.messages, [
    { role: 'user', content: [{ type: 'text', text: 'Write a haiku' }] },
    { role: 'assistant', content: 'Autumn moonlight—' },
  ])
  assert.equal(out.max_tokens, 70)
  assert.equal(out.thinking, undefined)
  assert.deepEqual(out.output_config, { effort: 'high' })
  assert.deepEqual(anthropicProblems(out), [])
  assert.deepEqual(upstream, before)
})

test('Anthropic: trailing whitespace is trimmed (Anthropic rejects it); a client prefill is extended, not followed', () => {
  const upstream = {
    model: 'm',
    max_tokens: 50,
    messages: [
      { role: 'user', content: 'Give JSON' },
      { role: 'assistant', content: [{ type: 'text', text: '{' }] },
    ],
  }
  const out = withAssistantPrefill('anthropic', upstream, '"a": 1, \n', { generatedTokens: 5, vllmContinue: false })
  assert.deepEqual((out.messages as unknown[])[1], {
    role: 'assistant',
    content: [
      { type: 'text', text: '{' },
      { type: 'text', text: '"a": 1,' },
    ],
  })
  assert.deepEqual(anthropicProblems(out), [])
})

test('OpenAI-compatible: a final assistant message, vLLM continue flags when asked, both caps reduced', () => {
  const upstream = convertRequest(
    'anthropic',
    'openai',
    { model: 'c', max_tokens: 200, messages: [{ role: 'user', content: 'Count' }] },
    OPTS,
  )
  const vllm = withAssistantPrefill('openai', upstream, 'One, two, ', { generatedTokens: 4, vllmContinue: true })
  assert.deepEqual((vllm.messages as unknown[]).at(-1), { role: 'assistant', content: 'One, two, ' })
  assert.deepEqual([vllm.max_completion_tokens, vllm.continue_final_message, vllm.add_generation_prompt], [196, true, false])
  assert.deepEqual(openaiProblems(vllm), [])
  const plain = withAssistantPrefill('openai', { ...upstream, max_tokens: 3 }, 'One', { generatedTokens: 9, vllmContinue: false })
  assert.deepEqual([plain.max_tokens, 'continue_final_message' in plain], [1, false])
})

test("OpenAI-compatible: a client's final assistant turn is a prefill only with continue_final_message; else the partial answer follows it", () => {
  const messages = [
    { role: 'user', content: 'go on' },
    { role: 'assistant', content: 'x y z' },
  ]
  // vLLM answered it as a new turn (add_generation_prompt defaults to true): the continuation keeps that turn closed.
  const closed = withAssistantPrefill('openai', { model: 'm', messages }, 'lorem ', { generatedTokens: 1, vllmContinue: true })
  assert.deepEqual((closed.messages as unknown[]).slice(1), [
    { role: 'assistant', content: 'x y z' },
    { role: 'assistant', content: 'lorem ' },
  ])
  assert.equal(closed.continue_final_message, true)
  // The client's own prefill: the partial answer extends it.
  const prefill = { model: 'm', messages, continue_final_message: true, add_generation_prompt: false }
  const continued = withAssistantPrefill('openai', prefill, ' lorem', { generatedTokens: 1, vllmContinue: true })
  assert.deepEqual((continued.messages as unknown[]).at(-1), { role: 'assistant', content: 'x y z lorem' })
})

test('Gemini: a final model content; maxOutputTokens reduced when set', () => {
  const upstream = convertRequest('openai', 'gemini', openaiClient, OPTS)
  const out = withAssistantPrefill('gemini', upstream, 'Autumn', { generatedTokens: 10, vllmContinue: false })
  assert.deepEqual((out.contents as unknown[]).at(-1), { role: 'model', parts: [{ text: 'Autumn' }] })
  assert.equal((out.generationConfig as { maxOutputTokens: number }).maxOutputTokens, 90)
  assert.equal((upstream.generationConfig as { maxOutputTokens: number }).maxOutputTokens, 100)
  assert.deepEqual(geminiProblems(out), [])
  const uncapped = withAssistantPrefill('gemini', { contents: [{ role: 'user', parts: [{ text: 'x' }] }] }, 'y', {
    generatedTokens: 3,
    vllmContinue: false,
  })
  assert.equal('generationConfig' in uncapped, false)
})

test('nothing generated yet: the messages stay as they were', () => {
  const upstream = convertRequest('openai', 'anthropic', openaiClient, OPTS)
  const out = withAssistantPrefill('anthropic', upstream, '  ', { generatedTokens: 0, vllmContinue: false })
  assert.deepEqual(out.messages, upstream.messages)
})
