// Errors as real servers report them, byte for byte: in the words each server uses for a prompt too long.
import assert from 'node:assert/strict'
import type { ServerResponse } from 'node:http'
import { test } from 'node:test'
import type { RouterOptions } from '../src/index.js'
import { DONE, finish, role, type Scripted, scripted, sse, text, upstream } from './scripted.js'

const VLLM_TOO_LONG =
  "This model's maximum context length is 4096 tokens. However, your request has 5021 input tokens. Please reduce the length of the input messages."

async function post(g: Scripted, path: string, body: Record<string, unknown>): Promise<{ status: number; type: string; text: string }> {
  const res = await fetch(`${g.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() }
}

const chat = (model: string) => ({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] })

test('a too-long prompt goes to the fallback model as each server words it; other 4xx come back as they are', async () => {
  let answer = { status: 400, body: '' }
  const refusing = (res: ServerResponse) => {
    res.writeHead(answer.status, { 'content-type': 'application/json' })
    res.end(answer.body)
  }
  const ups = (['vllm', 'tgi', 'anthropic', 'gemini'] as const).map((protocol) => upstream(protocol, protocol, refusing))
  const big = upstream('big', 'vllm', (res) => {
    sse(res)
    res.end(role + text('A larger context.') + finish() + DONE)
  })
  const models: RouterOptions['models'] = [
    ...ups.map((up) => ({ name: up.name, upstreams: [up.name], fallbacks: ['big'] })),
    { name: 'big', upstreams: ['big'] },
  ]
  const g = await scripted([...ups, big], models)
  const cases: [string, number, string, boolean][] = [
    ['vllm', 400, `{"error":{"message":"${VLLM_TOO_LONG}","type":"BadRequestError","param":"input_tokens","code":400}}`, true],
    [
      'vllm',
      400,
      `{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5021 tokens (4997 in the messages, 24 in the completion). Please reduce the length of the messages or completion.","type":"BadRequestError","param":null,"code":400}`,
      true,
    ],
    [
      'tgi',
      422,
      '{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 5000 `inputs` tokens and 100 `max_new_tokens`","error_type":"validation"}',
      true,
    ],
    [
      'tgi',
      422,
      '{"error":"Input validation error: `inputs` must have less than 1024 tokens. Given: 2000","error_type":"validation"}',
      true,
    ],
    [
      'anthropic',
      400,
      '{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208656 tokens > 200000 maximum"},"request_id":"req_011CWdepJvA2D819tdYYq4h7"}',
      true,
    ],
    [
      'gemini',
      400,
      '{"error":{"code":400,"message":"The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}',
      true,
    ],
    [
      'vllm',
      400,
      '{"error":{"message":"temperature must be non-negative, got -1.0.","type":"BadRequestError","param":"temperature","code":400}}',
      false,
    ],
    ['tgi', 422, '{"error":"Input validation error: `max_new_tokens` must be <= 4096. Given: 5000","error_type":"validation"}', false],
  ]
  try {
    for (const [model, status, body, tooLong] of cases) {
      answer = { status, body }
      const served = big.bodies.length
      const res = await post(g, '/v1/chat/completions', { ...chat(model), stream: false })
      assert.equal(big.bodies.length - served, tooLong ? 1 : 0, `${model}: ${body}`)
      assert.equal(res.status, tooLong ? 200 : status, `${model}: ${res.text}`)
    }
  } finally {
    await g.close()
  }
})
