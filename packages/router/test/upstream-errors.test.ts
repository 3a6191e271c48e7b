// Errors as real servers report them, byte for byte: inside a 200 stream (vLLM's first-event error and `abort`,
// OpenRouter's error chunk, Anthropic's `event: error`) and in the words each server uses for a prompt too long.
import assert from 'node:assert/strict'
import type { ServerResponse } from 'node:http'
import { test } from 'node:test'
import type { RouterOptions } from '../src/index.js'
import { eventually, parseSse } from './helpers.js'
import { DONE, finish, role, type Scripted, scripted, sleep, sse, text, twoReads, upstream, usageChunk } from './scripted.js'
import { anthropicStream, openaiStream } from './sdk-streams.js'

/** OpenRouter's report of a provider failing mid-generation: a chunk with a top-level `error` and finish_reason error. */
const OPENROUTER_CHUNK = (message: string) =>
  `data: {"id":"gen-1767225600-abc","provider":"Chutes","model":"deepseek/deepseek-r1","object":"chat.completion.chunk","created":1767225600,"error":{"code":502,"message":"${message}"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error","native_finish_reason":"error","logprobs":null}]}\n\n`
/** vLLM's 400 before its first output (json.dumps spacing), as `create_streaming_error_response` writes it. */
const VLLM_FIRST_ERROR = (message: string) =>
  `data: {"error": {"message": "${message}", "type": "BadRequestError", "param": null, "code": 400}}\n\n`
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
const messages = (model: string) => ({ model, stream: true, max_tokens: 100, messages: [{ role: 'user', content: 'hi' }] })

/** The text of an OpenAI stream, whether it reached [DONE], and its in-band error's message (null: none). */
function openAiAnswer(raw: string): { content: string; done: boolean; error: string | null } {
  let content = ''
  let error: string | null = null
  for (const event of parseSse(raw)) {
    if (event.data === '[DONE]') continue
    const data = JSON.parse(event.data) as { error?: { message: string }; choices?: { delta?: { content?: string } }[] }
    if (data.error !== undefined) error = data.error.message
    content += data.choices?.[0]?.delta?.content ?? ''
  }
  return { content, done: raw.includes('data: [DONE]'), error }
}

test("OpenRouter's error chunk as the first event is a failure before the first byte: the next upstream answers", async () => {
  const a = upstream('a', 'openai', (res) => {
    sse(res)
    res.end(OPENROUTER_CHUNK('Provider returned error') + DONE)
  })
  const b = upstream('b', 'openai', (res) => {
    sse(res)
    res.end(role + text('Hi from b.') + finish() + DONE)
  })
  const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }])
  try {
    const res = await post(g, '/v1/chat/completions', chat('m'))
    assert.equal(res.status, 200)
    assert.ok(!res.text.includes('Provider returned error'), res.text)
    assert.deepEqual(openAiAnswer(res.text), { content: 'Hi from b.', done: true, error: null })
    await eventually(() => g.records.length === 1, 2000, 'usage record')
    assert.equal(g.records[0]?.upstream, 'b')
    assert.equal(g.records[0]?.attempts, 2)
    assert.equal(g.records[0]?.resumed, false, 'failed over, not continued: nothing had reached the client')
  } finally {
    await g.close()
  }
})

test("OpenRouter's error chunk mid-stream is not relayed: the answer is continued, or ends with the gateway's error", async () => {
  const a = upstream('a', 'openai', (res) => {
    sse(res)
    res.end(role + text('Partial') + text(' answer') + OPENROUTER_CHUNK('Provider disconnected unexpectedly'))
  })
  const b = upstream('b', 'vllm', (res) => {
    sse(res)
    res.end(role + text(' and more.') + finish() + DONE)
  })
  const resumes = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }])
  try {
    const res = await post(resumes, '/v1/chat/completions', chat('m'))
    assert.ok(!res.text.includes('Provider disconnected'), res.text)
    assert.deepEqual(openAiAnswer(res.text), { content: 'Partial answer and more.', done: true, error: null })
    await eventually(() => resumes.records.length === 1, 2000, 'usage record')
    assert.equal(resumes.records[0]?.resumed, true)
  } finally {
    await resumes.close()
  }
  const alone = await scripted([a], [{ name: 'm', upstreams: ['a'] }])
  try {
    const res = await post(alone, '/v1/chat/completions', chat('m'))
    assert.deepEqual(openAiAnswer(res.text), {
      content: 'Partial answer',
      done: false,
      error: 'The upstream reported an error mid-stream: Provider disconnected unexpectedly',
    })
    assert.ok(!res.text.includes('"finish_reason":"error"'), 'the error chunk itself is not relayed')
    await eventually(() => alone.records.length === 1, 2000, 'usage record')
    assert.equal(alone.records[0]?.error?.code, 'llmproxy_upstream_error')
  } finally {
    await alone.close()
  }
})

test("vLLM's finish_reason abort is the same failure whether the stream is passed through or converted", async () => {
  const a = upstream('a', 'vllm', (res) => {
    sse(res)
    res.end(role + text('Partial') + finish('abort') + usageChunk(20, 1) + DONE)
  })
  // (Not continued: each client's stream ends with the error.)
  const g = await scripted([a], [{ name: 'm', upstreams: ['a'], resume: false }])
  try {
    const same = await post(g, '/v1/chat/completions', chat('m'))
    assert.ok(!same.text.includes('"abort"'), same.text)
    assert.deepEqual(openAiAnswer(same.text), {
      content: 'Partial',
      done: false,
      error: 'The upstream ended the generation with finish_reason abort.',
    })
    const converted = await post(g, '/v1/messages', messages('m'))
    const events = parseSse(converted.text)
    assert.equal(events.at(-1)?.event, 'error', converted.text)
    assert.ok(!events.some((event) => event.event === 'message_stop'))
    await eventually(() => g.records.length === 2, 2000, 'usage records')
    for (const record of g.records) assert.equal(record.error?.code, 'llmproxy_upstream_error', `${record.clientApi} client`)
  } finally {
    await g.close()
  }
})

test('a failed finish or an error event split across two upstream reads is the failure a whole one is: not relayed, recorded as an error', async () => {
  const abort = finish('abort')
  const openRouter = OPENROUTER_CHUNK('Provider disconnected unexpectedly')
  const aborted = 'The upstream ended the generation with finish_reason abort.'
  // vLLM's mid-stream error (an engine failure), as json.dumps spaces it.
  const engineError = VLLM_FIRST_ERROR('EngineCore encountered an issue.').replace('"BadRequestError"', '"InternalServerError"')
  const engineFailed = 'The upstream reported an error mid-stream: EngineCore encountered an issue.'
  // What fails, where the upstream's first read ends in it, and the error the client gets.
  const cases: [string, string, number, string][] = [
    ['vLLM abort, its line end in the next read', abort, abort.length - 2, aborted],
    ['vLLM abort, cut inside finish_reason', abort, abort.indexOf('finish_reason'), aborted],
    ['vLLM abort, cut inside its value', abort, abort.indexOf('abort') + 2, aborted],
    [
      'OpenRouter error chunk, cut before its choices',
      openRouter,
      openRouter.indexOf('"choices"'),
      'The upstream reported an error mid-stream: Provider disconnected unexpectedly',
    ],
    ['vLLM error event, cut inside its message', engineError, engineError.indexOf('EngineCore') + 4, engineFailed],
    ['vLLM error event, cut inside {"error"', engineError, engineError.indexOf('{"error"') + 3, engineFailed],
    ['vLLM error event, its line end in the next read', engineError, engineError.length - 2, engineFailed],
  ]
  for (const [name, failed, cut, error] of cases) {
    const a = twoReads('a', 'vllm', role + text('Partial') + failed.slice(0, cut), failed.slice(cut) + usageChunk(20, 1) + DONE, 50)
    const g = await scripted([a], [{ name: 'm', upstreams: ['a'], resume: false }])
    try {
      const res = await post(g, '/v1/chat/completions', chat('m'))
      assert.doesNotMatch(res.text, /"finish_reason":"(abort|error)"/, name)
      assert.deepEqual(openAiAnswer(res.text), { content: 'Partial', done: false, error }, name)
      await eventually(() => g.records.length === 1, 2000, 'usage record')
      const record = g.records[0]
      assert.equal(record?.error?.code, 'llmproxy_upstream_error', name)
      assert.deepEqual([record?.promptTokens, record?.completionTokens, record?.estimated], [20, 1, false], name)
    } finally {
      await g.close()
    }
  }
})

test("Anthropic's and Gemini's error events split across two upstream reads are the failure a whole one is: not relayed, the next upstream answers or continues", async () => {
  const event = (name: string, data: Record<string, unknown>) => `event: ${name}\ndata: ${JSON.stringify({ type: name, ...data })}\n\n`
  const anthropicText = (t: string) => event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: t } })
  const overloaded = event('error', { error: { type: 'overloaded_error', message: 'Overloaded' } })
  const geminiText = (t: string, last = false) =>
    `data: ${JSON.stringify({
      candidates: [{ content: { role: 'model', parts: [{ text: t }] }, index: 0, ...(last ? { finishReason: 'STOP' } : {}) }],
      usageMetadata: { promptTokenCount: 4, candidatesTokenCount: 2, totalTokenCount: 6 },
    })}\r\n\r\n`
  // Gemini's error inside a stream, spaced as Google's API writes it.
  const unavailable = 'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\r\n\r\n'
  const formats = [
    {
      protocol: 'anthropic' as const,
      path: '/v1/messages',
      body: messages('m'),
      head:
        event('message_start', {
          message: {
            id: 'msg_1',
            type: 'message',
            role: 'assistant',
            model: 'c',
            content: [],
            usage: { input_tokens: 5, output_tokens: 1 },
          },
        }) + event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
      text: anthropicText,
      tail:
        event('content_block_stop', { index: 0 }) +
        event('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 3 } }) +
        event('message_stop', {}),
      failed: overloaded,
      cuts: { 'inside event: error': 'event: err'.length, 'before its line end': 'event: error'.length, 'inside event:': 3 },
      /** The answer's text, and the error events the client got. */
      read: (raw: string) => {
        const events = parseSse(raw)
        const said = events.map((e) => JSON.parse(e.data) as { delta?: { text?: string }; error?: { message: string } })
        return { text: said.map((data) => data.delta?.text ?? '').join(''), errors: said.flatMap((data) => data.error?.message ?? []) }
      },
    },
    {
      protocol: 'gemini' as const,
      path: '/v1beta/models/m:streamGenerateContent?alt=sse',
      body: { contents: [{ role: 'user', parts: [{ text: 'hi' }] }] },
      head: '',
      text: geminiText,
      tail: geminiText('', true),
      failed: unavailable,
      cuts: { 'inside {"error"': 'data: {"err'.length, 'inside data:': 3, 'before its line end': unavailable.length - 4 },
      read: (raw: string) => {
        const said = parseSse(raw).map(
          (e) => JSON.parse(e.data) as { candidates?: { content: { parts: { text: string }[] } }[]; error?: { message: string } },
        )
        return {
          text: said.map((data) => data.candidates?.[0]?.content.parts.map((part) => part.text).join('') ?? '').join(''),
          errors: said.flatMap((data) => data.error?.message ?? []),
        }
      },
    },
  ]
  for (const format of formats) {
    for (const [where, cut] of Object.entries(format.cuts)) {
      for (const midStream of [true, false]) {
        const name = `${format.protocol}, cut ${where}, ${midStream ? 'after text' : 'as the first event'}`
        const before = midStream ? format.head + format.text('Partial') : ''
        const a = twoReads('a', format.protocol, before + format.failed.slice(0, cut), format.failed.slice(cut), 50)
        const b = upstream('b', format.protocol, (res) => {
          sse(res)
          res.end(format.head + format.text(' and more.') + format.tail)
        })
        const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }])
        try {
          const res = await post(g, format.path, format.body)
          // Continued after the text the client has, or answered by b alone: the upstream's error never reaches it.
          assert.deepEqual(format.read(res.text), { text: `${midStream ? 'Partial' : ''} and more.`, errors: [] }, name)
          await eventually(() => g.records.length === 1, 2000, 'usage record')
          const record = g.records[0]
          assert.deepEqual([record?.error, record?.resumed, record?.attempts], [undefined, midStream, 2], name)
        } finally {
          await g.close()
        }
      }
    }
  }
})

test("vLLM's 400 as the first stream event comes back as the 400 it is, in the client's shape, without retries", async () => {
  const a = upstream('a', 'vllm', (res) => {
    sse(res)
    res.end(VLLM_FIRST_ERROR('temperature must be non-negative, got -1.0.') + DONE)
  })
  const b = upstream('b', 'vllm', (res) => {
    sse(res)
    res.end(role + text('unused') + finish() + DONE)
  })
  const models: RouterOptions['models'] = [
    { name: 'm', upstreams: ['a', 'b'], strategy: 'ordered', fallbacks: ['big'] },
    { name: 'big', upstreams: ['b'] },
  ]
  const g = await scripted([a, b], models, { retry: { attempts: 3, backoffMs: 10 } })
  try {
    const same = await post(g, '/v1/chat/completions', chat('m'))
    assert.equal(same.status, 400)
    assert.match(same.type, /application\/json/)
    assert.deepEqual(JSON.parse(same.text), {
      error: { message: 'temperature must be non-negative, got -1.0.', type: 'BadRequestError', param: null, code: 400 },
    })
    const converted = await post(g, '/v1/messages', messages('m'))
    assert.equal(converted.status, 400)
    assert.deepEqual(JSON.parse(converted.text), {
      type: 'error',
      error: { type: 'invalid_request_error', message: 'temperature must be non-negative, got -1.0.' },
    })
    assert.equal(a.bodies.length, 2)
    assert.equal(b.bodies.length, 0, 'not retried, not sent to the fallback')
    await eventually(() => g.records.length === 2, 2000, 'usage records')
    for (const record of g.records) {
      assert.equal(record.status, 400)
      assert.equal(record.attempts, 1)
    }
  } finally {
    await g.close()
  }
})

test('a too-long prompt reported as the first stream event goes to the fallback model, as the same 400 before the stream does', async () => {
  const a = upstream('a', 'vllm', (res) => {
    sse(res)
    res.end(VLLM_FIRST_ERROR(VLLM_TOO_LONG) + DONE)
  })
  const b = upstream('b', 'vllm', (res) => {
    sse(res)
    res.end(role + text('A larger context.') + finish() + DONE)
  })
  const models: RouterOptions['models'] = [
    { name: 'small', upstreams: ['a'], fallbacks: ['big'] },
    { name: 'big', upstreams: ['b'] },
  ]
  const g = await scripted([a, b], models)
  try {
    const res = await post(g, '/v1/chat/completions', chat('small'))
    assert.deepEqual(openAiAnswer(res.text), { content: 'A larger context.', done: true, error: null })
    assert.equal(a.bodies.length, 1)
  } finally {
    await g.close()
  }
})

test("Anthropic's overloaded_error or rate_limit_error as the first event reaches the client as that error, not a mid-stream 502", async () => {
  let kind = ''
  const anthropicError = (res: ServerResponse) => {
    sse(res)
    const message = kind === 'overloaded_error' ? 'Overloaded' : 'Number of requests has exceeded your rate limit.'
    res.end(`event: error\ndata: {"type":"error","error":{"type":"${kind}","message":"${message}"}}\n\n`)
  }
  const a = upstream('a', 'anthropic', anthropicError)
  const b = upstream('b', 'anthropic', anthropicError)
  const g = await scripted([a, b], [{ name: 'm', upstreams: ['a', 'b'], strategy: 'ordered' }], { retry: { attempts: 2, backoffMs: 10 } })
  try {
    for (const [name, status, message] of [
      ['overloaded_error', 529, 'Overloaded'],
      ['rate_limit_error', 429, 'Number of requests has exceeded your rate limit.'],
    ] as const) {
      kind = name
      a.bodies.length = 0
      b.bodies.length = 0
      const same = await post(g, '/v1/messages', messages('m'))
      assert.equal(same.status, status, same.text)
      assert.deepEqual(JSON.parse(same.text), { type: 'error', error: { type: name, message } })
      assert.equal(a.bodies.length + b.bodies.length, 2, 'retried as the same status before the stream is')
      const converted = await post(g, '/v1/chat/completions', chat('m'))
      assert.equal(converted.status, status, converted.text)
      const error = (JSON.parse(converted.text) as { error: { message: string; code: string } }).error
      assert.equal(error.message, message)
      assert.equal(error.code, name)
    }
  } finally {
    await g.close()
  }
})

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

test('the usage an upstream writes apart after a failed first event is read and counted, whether the request is then retried or answered', async () => {
  /** vLLM: headers, then the failing event and its usage chunk as two writes (each of its SSE chunks is its own). */
  const failing = (name: string, first: string) => twoReads(name, 'vllm', first, usageChunk(1005, 0) + DONE, 20)
  const refusing = failing('refusing', VLLM_FIRST_ERROR('temperature must be non-negative, got -1.0.'))
  const aborting = failing('aborting', finish('abort'))
  const healthy = upstream('healthy', 'vllm', (res) => {
    sse(res)
    res.end(role + text('Fine') + finish() + usageChunk(7, 1) + DONE)
  })
  const g = await scripted(
    [refusing, aborting, healthy],
    [
      { name: 'refused', upstreams: ['refusing'] },
      { name: 'retried', upstreams: ['aborting', 'healthy'], strategy: 'ordered' },
    ],
    { retry: { attempts: 2, backoffMs: 10 } },
  )
  try {
    const refused = await post(g, '/v1/chat/completions', chat('refused'))
    assert.equal(refused.status, 400)
    const retried = await post(g, '/v1/chat/completions', chat('retried'))
    assert.equal(retried.status, 200)
    assert.match(retried.text, /"content":"Fine"/)
    await eventually(() => g.records.length === 2, 3000, 'usage records')
    // The refused prefill was spent upstream: its reported prompt counts (0 before: only the failing chunk was read).
    assert.deepEqual(
      g.records.map((r) => [r.status, r.attempts, r.promptTokens, r.completionTokens, r.estimated]),
      [
        [400, 1, 1005, 0, false],
        [200, 2, 1012, 1, false],
      ],
    )
  } finally {
    await g.close()
  }
})

test('while the usage after a failed first event is read, a reset or the first-byte deadline does not change the answer', async () => {
  // The error, its usage, then the connection reset (vLLM's engine dying).
  const resetting = upstream('resetting', 'vllm', async (res) => {
    sse(res)
    res.write(VLLM_FIRST_ERROR('temperature must be non-negative, got -1.0.'))
    await sleep(20)
    res.write(usageChunk(1005, 0))
    await sleep(20)
    res.destroy()
  })
  // The error 300 ms in, then the response kept open past the first-byte deadline (500 ms).
  const lingering = upstream('lingering', 'vllm', async (res) => {
    sse(res)
    res.flushHeaders()
    await sleep(300)
    res.write(VLLM_FIRST_ERROR('max_tokens must be at least 1, got 0.'))
  })
  const g = await scripted(
    [resetting, lingering],
    [
      { name: 'reset', upstreams: ['resetting'] },
      { name: 'lingers', upstreams: ['lingering'] },
    ],
    { retry: { attempts: 3, backoffMs: 10 }, timeouts: { firstTokenMs: 500 } },
  )
  try {
    const [reset, lingers] = await Promise.all([
      post(g, '/v1/chat/completions', chat('reset')),
      post(g, '/v1/chat/completions', chat('lingers')),
    ])
    assert.deepEqual([reset.status, JSON.parse(reset.text).error.message], [400, 'temperature must be non-negative, got -1.0.'])
    assert.deepEqual([lingers.status, JSON.parse(lingers.text).error.message], [400, 'max_tokens must be at least 1, got 0.'])
    assert.deepEqual([resetting.bodies.length, lingering.bodies.length], [1, 1], 'not retried')
    await eventually(() => g.records.length === 2, 3000, 'usage records')
    assert.deepEqual(g.records.map((r) => [r.model, r.status, r.attempts, r.promptTokens]).sort(), [
      ['lingers', 400, 1, 0],
      ['reset', 400, 1, 1005],
    ])
  } finally {
    await g.close()
  }
})

test("a 400 event after the upstream's processing comments is not continued elsewhere: in band once, billed once", async () => {
  // OpenRouter's comments come first: the client's stream is under way when the 400 comes.
  const commenting = twoReads(
    'commenting',
    'openai',
    ': OPENROUTER PROCESSING\n\n',
    VLLM_FIRST_ERROR('temperature must be non-negative, got -1.0.') + usageChunk(1005, 0) + DONE,
  )
  const g = await scripted([commenting], [{ name: 'm', upstreams: ['commenting'] }])
  try {
    const answer = await post(g, '/v1/chat/completions', chat('m'))
    assert.equal(answer.status, 200)
    assert.match(
      answer.text,
      /^: OPENROUTER PROCESSING\n\nevent: error\ndata: \{"error":\{"message":"[^"]*temperature must be non-negative/,
    )
    assert.equal(commenting.bodies.length, 1, 'not continued on another attempt')
    await eventually(() => g.records.length === 1, 3000, 'usage record')
    assert.deepEqual(
      g.records.map((r) => [r.attempts, r.resumed, r.promptTokens]),
      [[1, false, 1005]],
    )
  } finally {
    await g.close()
  }
})

const PROCESSING = ': OPENROUTER PROCESSING\n\n'
/** An OpenAI-compatible provider's error event with a status (OpenRouter's shape). */
const OVERLOADED_EVENT = 'data: {"error":{"message":"Provider overloaded","code":503}}\n\n'

test("the upstream's comments hold the stream open: a 503 event or a lost connection after them is retried, not continued, and the first token is the first event's", async () => {
  const overloaded = twoReads('overloaded', 'openai', PROCESSING, OVERLOADED_EVENT)
  const lost = upstream('lost', 'openai', async (res) => {
    sse(res)
    res.write(PROCESSING)
    await sleep(30)
    res.destroy()
  })
  const healthy = twoReads('healthy', 'openai', PROCESSING, role + text('Hi from healthy.') + finish() + usageChunk(9, 3) + DONE, 200)
  const g = await scripted(
    [overloaded, lost, healthy],
    [
      { name: 'after-503', upstreams: ['overloaded', 'healthy'] },
      { name: 'after-reset', upstreams: ['lost', 'healthy'] },
    ],
    { retry: { attempts: 2, backoffMs: 10 } },
  )
  try {
    for (const model of ['after-503', 'after-reset']) {
      const answer = await post(g, '/v1/chat/completions', chat(model))
      assert.equal(answer.status, 200, model)
      // The comments of both attempts, then the healthy upstream's answer as it sent it (not re-encoded).
      assert.ok(answer.text.startsWith(PROCESSING + PROCESSING + role), `${model}: ${answer.text}`)
      assert.deepEqual(openAiAnswer(answer.text), { content: 'Hi from healthy.', done: true, error: null }, model)
    }
    await eventually(() => g.records.length === 2, 3000, 'usage records')
    assert.deepEqual(
      g.records.map((r) => [r.model, r.upstream, r.attempts, r.resumed, r.promptTokens, r.completionTokens]),
      [
        ['after-503', 'healthy', 2, false, 9, 3],
        ['after-reset', 'healthy', 2, false, 9, 3],
      ],
    )
    // Timed to the first event, 200 ms into the healthy attempt, not to the first comment.
    for (const record of g.records) assert.ok((record.ttftMs ?? 0) >= 200, `${record.model}: ttftMs ${record.ttftMs}`)
  } finally {
    await g.close()
  }
})

test('keep-alives then a clean end, a retry: field then a 503, stray text, or an empty stream: no answer began, the next upstream answers', async () => {
  const thenEnd = twoReads('then-end', 'openai', PROCESSING, '')
  const retryField = twoReads('retry-field', 'openai', 'retry: 3000\n\n', OVERLOADED_EVENT)
  const empty = upstream('empty', 'openai', (res) => {
    sse(res)
    res.end()
  })
  // A proxy's error page in a 200 SSE body: no SSE field (a parser ignores it), no answer.
  const stray = upstream('stray', 'openai', (res) => {
    sse(res)
    res.end('<html><body>502 Bad Gateway</body></html>\n\n')
  })
  const healthy = upstream('healthy', 'openai', (res) => {
    sse(res)
    res.end(role + text('Hi from healthy.') + finish() + usageChunk(9, 3) + DONE)
  })
  const g = await scripted(
    [thenEnd, retryField, empty, stray, healthy],
    [
      { name: 'after-end', upstreams: ['then-end', 'healthy'] },
      { name: 'after-retry-field', upstreams: ['retry-field', 'healthy'] },
      { name: 'after-stray-text', upstreams: ['stray', 'healthy'] },
      { name: 'ends-alone', upstreams: ['then-end'] },
      { name: 'empty-alone', upstreams: ['empty'] },
    ],
    { retry: { attempts: 2, backoffMs: 10 } },
  )
  try {
    for (const model of ['after-end', 'after-retry-field', 'after-stray-text']) {
      const answer = await post(g, '/v1/chat/completions', chat(model))
      assert.equal(answer.status, 200, model)
      // The healthy upstream's answer as it sent it: joined, not continued (re-encoded under a new id).
      assert.match(answer.text, /"id":"up1"/, model)
      assert.deepEqual(openAiAnswer(answer.text), { content: 'Hi from healthy.', done: true, error: null }, model)
    }
    // Held open by the comments: the failure in band. Nothing held: the status.
    const endsAlone = await post(g, '/v1/chat/completions', chat('ends-alone'))
    assert.equal(endsAlone.status, 200)
    assert.match(openAiAnswer(endsAlone.text).error ?? '', /ended its stream before the first token/)
    const emptyAlone = await post(g, '/v1/chat/completions', chat('empty-alone'))
    assert.equal(emptyAlone.status, 502, emptyAlone.text)
    assert.match(emptyAlone.text, /ended its stream before the first token/)
    await eventually(() => g.records.length === 5, 3000, 'usage records')
    assert.deepEqual(
      g.records.map((r) => [r.model, r.attempts, r.resumed, r.promptTokens, r.completionTokens, r.estimated]),
      [
        ['after-end', 2, false, 9, 3, false],
        ['after-retry-field', 2, false, 9, 3, false],
        ['after-stray-text', 2, false, 9, 3, false],
        ['ends-alone', 2, false, 0, 0, false],
        ['empty-alone', 2, false, 0, 0, false],
      ],
    )
  } finally {
    await g.close()
  }
})

test("an Anthropic upstream's pings before its message_start hold the stream: a gateway in front of a gateway fails over whole", async () => {
  // What an LLMProxy in front of a busy upstream sends an Anthropic client: its heartbeat, then the in-band error.
  const pingThenOverloaded = (name: string, ping: string) =>
    twoReads(name, 'anthropic', ping, 'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
  const inner = pingThenOverloaded('inner', 'event: ping\ndata: {"type": "ping"}\n\n')
  // Its fields the other way round (SSE allows any order): not recognised as a keep-alive, it commits the stream.
  const reordered = pingThenOverloaded('reordered', 'data: {"type": "ping"}\nevent: ping\n\n')
  const answering = upstream('answering', 'anthropic', (res) => {
    sse(res)
    res.end(
      [
        [
          'message_start',
          {
            type: 'message_start',
            message: {
              id: 'msg_1',
              type: 'message',
              role: 'assistant',
              model: 'c',
              content: [],
              stop_reason: null,
              usage: { input_tokens: 5, output_tokens: 1 },
            },
          },
        ],
        ['content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }],
        ['content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hi ant.' } }],
        ['content_block_stop', { type: 'content_block_stop', index: 0 }],
        ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 3 } }],
        ['message_stop', { type: 'message_stop' }],
      ]
        .map(([name, data]) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`)
        .join(''),
    )
  })
  const g = await scripted(
    [inner, reordered, answering],
    [
      { name: 'claude', upstreams: ['inner', 'answering'] },
      { name: 'reordered', upstreams: ['reordered', 'answering'] },
    ],
    { retry: { attempts: 2, backoffMs: 10 } },
  )
  try {
    // (Before, the ping committed the stream and the overloaded_error was continued without a message_start: the
    // SDK's stream helper failed with "request ended without sending any chunks".)
    assert.equal(await anthropicStream(g.url, 'claude'), 'Hi ant.')
    // A ping the hold missed is continued from nothing: the continuation opens the message.
    assert.equal(await anthropicStream(g.url, 'reordered'), 'Hi ant.')
    await eventually(() => g.records.length === 2, 3000, 'usage records')
    assert.deepEqual(
      g.records.map((r) => [r.model, r.upstream, r.attempts, r.resumed]),
      [
        ['claude', 'answering', 2, false],
        ['reordered', 'answering', 2, true],
      ],
    )
    assert.deepEqual([g.records[0]?.promptTokens, g.records[0]?.completionTokens, g.records[0]?.estimated], [5, 3, false])
  } finally {
    await g.close()
  }
})

test("comments mid-answer end a silence: a gateway's heartbeat in front of a live answer is not cut at idleMs", async () => {
  // What an LLMProxy sends its converted client while the upstream streams what the client does not see (thinking).
  const heartbeating = upstream('heartbeating', 'openai', async (res) => {
    sse(res)
    res.write(role + text('Thinking done:'))
    for (let i = 0; i < 8; i++) {
      await sleep(150)
      res.write(': keep-alive\n\n')
    }
    res.end(text(' yes.') + finish() + usageChunk(9, 3) + DONE)
  })
  const g = await scripted([heartbeating], [{ name: 'm', upstreams: ['heartbeating'] }], { timeouts: { idleMs: 500 } })
  try {
    const answer = await post(g, '/v1/chat/completions', chat('m'))
    assert.deepEqual(openAiAnswer(answer.text), { content: 'Thinking done: yes.', done: true, error: null })
    await eventually(() => g.records.length === 1, 3000, 'usage record')
    assert.deepEqual(
      g.records.map((r) => [r.attempts, r.resumed, r.promptTokens, r.completionTokens]),
      [[1, false, 9, 3]],
    )
  } finally {
    await g.close()
  }
})

test('comments and no token are a stall at firstTokenMs: the next upstream answers, or the stall ends the stream in band', async () => {
  const commentsOnly = (name: string) =>
    upstream(name, 'openai', (res) => {
      sse(res)
      const beat = setInterval(() => res.write(PROCESSING), 100)
      res.on('close', () => clearInterval(beat))
    })
  const first = commentsOnly('first')
  const only = commentsOnly('only')
  const healthy = upstream('healthy', 'openai', (res) => {
    sse(res)
    res.end(role + text('Hi.') + finish() + DONE)
  })
  const g = await scripted(
    [first, only, healthy],
    [
      { name: 'pool', upstreams: ['first', 'healthy'] },
      { name: 'alone', upstreams: ['only'] },
    ],
    { retry: { attempts: 2, backoffMs: 10 }, timeouts: { firstTokenMs: 600 } },
  )
  try {
    const [pool, alone] = await Promise.all(
      ['pool', 'alone'].map(async (model) => {
        const started = performance.now()
        const res = await fetch(`${g.url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(chat(model)),
          // (Before comments were a hold, they kept such a stream open for good.)
          signal: AbortSignal.timeout(5000),
        })
        return { status: res.status, text: await res.text(), ms: performance.now() - started }
      }),
    )
    assert.equal(pool?.status, 200)
    assert.deepEqual(openAiAnswer(pool?.text ?? ''), { content: 'Hi.', done: true, error: null })
    assert.ok((pool?.ms ?? 0) >= 590, `pool: ${pool?.ms} ms`)
    assert.equal(alone?.status, 200)
    assert.ok(alone?.text.startsWith(PROCESSING), alone?.text)
    assert.match(openAiAnswer(alone?.text ?? '').error ?? '', /stalled before the first token/)
    await eventually(() => g.records.length === 2, 3000, 'usage records')
    // The stalled stream had no answer: nothing billed (the answered one is estimated, its upstream reported none).
    assert.deepEqual(g.records.map((r) => [r.model, r.attempts, r.promptTokens, r.estimated]).sort(), [
      ['alone', 2, 0, false],
      ['pool', 2, 29, true],
    ])
  } finally {
    await g.close()
  }
})

test('a converted stream whose first chunk fails the conversion keeps its failure while its usage is read', async () => {
  const malformed = upstream('malformed', 'vllm', async (res) => {
    sse(res)
    res.flushHeaders()
    await sleep(300)
    // Malformed, then its usage; the response stays open past firstTokenMs.
    res.write(`data: {not json}\n\n${usageChunk(1005, 0)}`)
  })
  const g = await scripted([malformed], [{ name: 'm', upstreams: ['malformed'] }], {
    retry: { attempts: 1 },
    timeouts: { firstTokenMs: 500 },
  })
  try {
    const answer = await post(g, '/v1/messages', messages('m'))
    assert.equal(answer.status, 502)
    assert.match(answer.text, /The upstream sent malformed data/)
  } finally {
    await g.close()
  }
})

test('a stream whose first event is its terminator carries no answer: the next upstream answers, or the client gets the error', async () => {
  // One failing upstream per model: each request's first attempt is on one that has not failed yet.
  const doneOnly = (name: string, done = DONE) =>
    upstream(name, 'openai', (res) => {
      sse(res)
      res.end(done)
    })
  const stopOnly = (name: string) =>
    upstream(name, 'anthropic', (res) => {
      sse(res)
      // After a ping: still no answer.
      res.end(`event: ping\ndata: {"type": "ping"}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n`)
    })
  const healthy = upstream('healthy', 'openai', (res) => {
    sse(res)
    res.end(role + text('Hi from healthy.') + finish() + usageChunk(9, 3) + DONE)
  })
  const g = await scripted(
    [
      doneOnly('done-only'),
      // Keep-alives first, then the terminator: still no answer.
      twoReads('comments-done', 'openai', PROCESSING, DONE),
      doneOnly('done-only-2'),
      stopOnly('stop-only'),
      stopOnly('stop-only-2'),
      doneOnly('done-only-3', 'data: [DONE]'),
      twoReads('comments-done-2', 'openai', PROCESSING, DONE),
      // Its body ends without the event's blank line.
      doneOnly('done-unended', 'data: [DONE]'),
      // Without the space SSE allows after the field name.
      doneOnly('done-no-space', 'data:[DONE]\n\n'),
      // Its usage, then [DONE]: billed with the answer that follows (the client did not ask for usage).
      doneOnly('usage-done', usageChunk(4, 0) + DONE),
      healthy,
    ],
    [
      { name: 'done', upstreams: ['done-only', 'healthy'] },
      { name: 'comments-done', upstreams: ['comments-done', 'healthy'] },
      { name: 'done-converted', upstreams: ['done-only-2', 'healthy'] },
      { name: 'stop-converted', upstreams: ['stop-only', 'healthy'] },
      { name: 'stop', upstreams: ['stop-only-2', 'healthy'] },
      { name: 'done-unended', upstreams: ['done-unended', 'healthy'] },
      { name: 'done-no-space', upstreams: ['done-no-space', 'healthy'] },
      { name: 'usage-done', upstreams: ['usage-done', 'healthy'] },
      { name: 'done-alone', upstreams: ['done-only-3'] },
      { name: 'comments-done-alone', upstreams: ['comments-done-2'] },
    ],
    { retry: { attempts: 2, backoffMs: 10 } },
  )
  try {
    // Same format, then converted both ways: the SDKs read the healthy upstream's answer.
    assert.equal(await openaiStream(g.url, 'done'), 'Hi from healthy.')
    assert.equal(await openaiStream(g.url, 'comments-done'), 'Hi from healthy.')
    assert.equal(await openaiStream(g.url, 'done-unended'), 'Hi from healthy.')
    assert.equal(await openaiStream(g.url, 'done-no-space'), 'Hi from healthy.')
    assert.equal(await openaiStream(g.url, 'usage-done'), 'Hi from healthy.')
    assert.equal(await anthropicStream(g.url, 'done-converted'), 'Hi from healthy.')
    assert.equal(await openaiStream(g.url, 'stop-converted'), 'Hi from healthy.')
    assert.equal(await anthropicStream(g.url, 'stop'), 'Hi from healthy.')
    // Nothing else answers: a 502, or the error in band when comments held the stream open. Never an empty answer.
    const alone = await post(g, '/v1/chat/completions', chat('done-alone'))
    assert.equal(alone.status, 502, alone.text)
    assert.match(alone.text, /ended its stream without an answer/)
    // (Converted, the unended [DONE] is no terminator at all: the stream ended before its first token.)
    assert.match(await anthropicStream(g.url, 'done-alone'), /^<<502 The upstream ended its stream before the first token/)
    const held = await post(g, '/v1/chat/completions', chat('comments-done-alone'))
    assert.equal(held.status, 200)
    const { content, done, error } = openAiAnswer(held.text)
    assert.deepEqual([content, done], ['', false])
    assert.match(error ?? '', /ended its stream without an answer/)
    await eventually(() => g.records.length === 11, 3000, 'usage records')
    assert.deepEqual(
      g.records.map((r) => [r.model, r.upstream, r.attempts, r.resumed, r.promptTokens, r.completionTokens]),
      [
        ['done', 'healthy', 2, false, 9, 3],
        ['comments-done', 'healthy', 2, false, 9, 3],
        ['done-unended', 'healthy', 2, false, 9, 3],
        ['done-no-space', 'healthy', 2, false, 9, 3],
        ['usage-done', 'healthy', 2, false, 13, 3],
        ['done-converted', 'healthy', 2, false, 9, 3],
        ['stop-converted', 'healthy', 2, false, 9, 3],
        ['stop', 'healthy', 2, false, 9, 3],
        ['done-alone', 'done-only-3', 2, false, 0, 0],
        ['done-alone', 'done-only-3', 2, false, 0, 0],
        ['comments-done-alone', 'comments-done-2', 2, false, 0, 0],
      ],
    )
  } finally {
    await g.close()
  }
})

test("a Responses stream whose first event is response.failed is the upstream's answer: relayed, not retried as none", async () => {
  const failed = upstream('failed', 'openai', (res) => {
    sse(res)
    res.end(
      'event: response.failed\ndata: {"type":"response.failed","response":{"id":"resp_1","status":"failed","error":{"code":"invalid_image_url","message":"Error while downloading https://x/img.png."},"output":[],"usage":{"input_tokens":5,"output_tokens":0,"total_tokens":5}}}\n\n',
    )
  })
  const g = await scripted([failed], [{ name: 'r', upstreams: ['failed'] }], { retry: { attempts: 3, backoffMs: 10 } })
  try {
    const answer = await post(g, '/v1/responses', { model: 'r', stream: true, input: 'hi' })
    assert.equal(answer.status, 200)
    assert.match(answer.text, /invalid_image_url/)
    assert.equal(failed.bodies.length, 1)
  } finally {
    await g.close()
  }
})
