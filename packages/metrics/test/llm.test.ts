import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { buildApp, series, usageRecord, value } from './helpers.js'

test('usage records give exact request counts, duration and TTFT histograms, tokens and flags', async (t) => {
  const { app, emit, scrape } = await buildApp()
  t.after(() => app.close())
  await emit((req) => {
    app.llm.emitUsage(usageRecord({ durationMs: 1000, ttftMs: 150, promptTokens: 10, completionTokens: 20 }), req)
    app.llm.emitUsage(usageRecord({ durationMs: 3000, ttftMs: 600, promptTokens: 5, completionTokens: 7, attempts: 2 }), req)
    app.llm.emitUsage(
      usageRecord({ status: 502, durationMs: 200, ttftMs: null, promptTokens: 4, completionTokens: 0, estimated: true, attempts: 3 }),
      req,
    )
    app.llm.emitUsage(
      usageRecord({ model: 'llama', upstream: null, status: 0, durationMs: 50, ttftMs: null, promptTokens: 0, completionTokens: 0 }),
      req,
    )
    app.llm.emitUsage(usageRecord({ model: 'llama', upstream: 'vllm-b', clientAborted: true, ttftMs: 2500, durationMs: 4000 }), req)
  })
  const s = await scrape()
  const ok = { model: 'qwen-7b', upstream: 'vllm-a', status: '200' }
  assert.equal(value(s, 'llmproxy_requests_total', ok), 2)
  assert.equal(value(s, 'llmproxy_requests_total', { ...ok, status: '502' }), 1)
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'llama', upstream: 'none', status: '0' }), 1)
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'llama', upstream: 'vllm-b', status: '200' }), 1)
  assert.equal(series(s, 'llmproxy_requests_total').length, 4)

  assert.equal(value(s, 'llmproxy_request_duration_seconds_count', ok), 2)
  assert.equal(value(s, 'llmproxy_request_duration_seconds_sum', ok), 4)
  assert.equal(value(s, 'llmproxy_request_duration_seconds_bucket', { ...ok, le: '1' }), 1)
  assert.equal(value(s, 'llmproxy_request_duration_seconds_bucket', { ...ok, le: '2.5' }), 1)
  assert.equal(value(s, 'llmproxy_request_duration_seconds_bucket', { ...ok, le: '5' }), 2)
  assert.equal(value(s, 'llmproxy_request_duration_seconds_count', { ...ok, status: '502' }), 1)
  assert.equal(value(s, 'llmproxy_request_duration_seconds_sum', { ...ok, status: '502' }), 0.2)

  // TTFT only for records that have one; no status label
  const qa = { model: 'qwen-7b', upstream: 'vllm-a' }
  assert.equal(value(s, 'llmproxy_time_to_first_token_seconds_count', qa), 2)
  assert.equal(value(s, 'llmproxy_time_to_first_token_seconds_sum', qa), 0.75)
  assert.equal(value(s, 'llmproxy_time_to_first_token_seconds_bucket', { ...qa, le: '0.25' }), 1)
  assert.equal(value(s, 'llmproxy_time_to_first_token_seconds_bucket', { ...qa, le: '1' }), 2)
  assert.equal(value(s, 'llmproxy_time_to_first_token_seconds_count', { model: 'llama', upstream: 'vllm-b' }), 1)
  assert.equal(value(s, 'llmproxy_time_to_first_token_seconds_count', { model: 'llama', upstream: 'none' }), undefined)

  assert.equal(value(s, 'llmproxy_prompt_tokens_total', { model: 'qwen-7b' }), 19)
  assert.equal(value(s, 'llmproxy_completion_tokens_total', { model: 'qwen-7b' }), 27)
  assert.equal(value(s, 'llmproxy_prompt_tokens_total', { model: 'llama' }), 10)
  assert.equal(value(s, 'llmproxy_estimated_usage_total', { model: 'qwen-7b' }), 1)
  assert.equal(value(s, 'llmproxy_estimated_usage_total', { model: 'llama' }), undefined)
  // The 200 after two attempts; not the 502 after three (never answered).
  assert.equal(value(s, 'llmproxy_failovers_total', { model: 'qwen-7b' }), 1)
  assert.equal(value(s, 'llmproxy_failovers_total', { model: 'llama' }), undefined)
  assert.equal(value(s, 'llmproxy_client_aborts_total', { model: 'llama' }), 1)
  assert.equal(value(s, 'llmproxy_client_aborts_total', { model: 'qwen-7b' }), undefined)
})

test('streams taken over by a continuation count by outcome: completed when the record says resumed, failed otherwise (no failover)', async (t) => {
  const { app, emit, scrape } = await buildApp()
  t.after(() => app.close())
  await emit((req) => {
    app.llm.emitUsage(usageRecord({ attempts: 2 }), req) // a failover before the first byte: no continuation
    req.llm.resumes = 1
    app.llm.emitUsage(usageRecord({ attempts: 2, resumed: true }), req)
    app.llm.emitUsage(usageRecord({ attempts: 3, resumed: true }), req)
    req.llm.resumes = 2
    app.llm.emitUsage(usageRecord({ attempts: 3, resumed: false, error: { code: 'llmproxy_upstream_stream_cut', message: 'cut' } }), req)
  })
  const s = await scrape()
  assert.equal(value(s, 'llmproxy_stream_resumes_total', { model: 'qwen-7b', outcome: 'completed' }), 2)
  assert.equal(value(s, 'llmproxy_stream_resumes_total', { model: 'qwen-7b', outcome: 'failed' }), 1)
  // The stream whose continuation failed got a 200 and an in-band error: no failover answered it.
  assert.equal(value(s, 'llmproxy_failovers_total', { model: 'qwen-7b' }), 3)
})

test('attempts count by result, failed (not client-aborted) attempts count as retries, rejections by reason', async (t) => {
  const { app, emit, scrape } = await buildApp()
  t.after(() => app.close())
  await emit((req) => {
    const base = { upstreamModel: 'm', durationMs: 10 }
    app.llm.emitAttempt({ ...base, upstream: 'vllm-a', result: 'connect_error' }, req)
    app.llm.emitAttempt({ ...base, upstream: 'vllm-a', result: 'status', status: 503 }, req)
    app.llm.emitAttempt({ ...base, upstream: 'vllm-b', result: 'ok', status: 200, ttftMs: 5 }, req)
    app.llm.emitAttempt({ ...base, upstream: 'vllm-b', result: 'ok', status: 200 }, req)
    app.llm.emitAttempt({ ...base, upstream: 'vllm-b', result: 'timeout' }, req)
    app.llm.emitAttempt({ ...base, upstream: 'vllm-b', result: 'aborted' }, req)
    app.llm.emitReject({ reason: 'auth', keyId: null, statusCode: 401 }, req)
    app.llm.emitReject({ reason: 'rate_limit', keyId: 'team-a', statusCode: 429 }, req)
    app.llm.emitReject({ reason: 'rate_limit', keyId: 'team-b', statusCode: 429 }, req)
  })
  const s = await scrape()
  assert.equal(value(s, 'llmproxy_upstream_attempts_total', { upstream: 'vllm-a', result: 'connect_error' }), 1)
  assert.equal(value(s, 'llmproxy_upstream_attempts_total', { upstream: 'vllm-a', result: 'status' }), 1)
  assert.equal(value(s, 'llmproxy_upstream_attempts_total', { upstream: 'vllm-b', result: 'ok' }), 2)
  assert.equal(value(s, 'llmproxy_upstream_attempts_total', { upstream: 'vllm-b', result: 'timeout' }), 1)
  assert.equal(value(s, 'llmproxy_upstream_attempts_total', { upstream: 'vllm-b', result: 'aborted' }), 1)
  assert.equal(value(s, 'llmproxy_upstream_retries_total', { upstream: 'vllm-a' }), 2)
  assert.equal(value(s, 'llmproxy_upstream_retries_total', { upstream: 'vllm-b' }), 1)
  assert.equal(value(s, 'llmproxy_rejections_total', { reason: 'auth' }), 1)
  assert.equal(value(s, 'llmproxy_rejections_total', { reason: 'rate_limit' }), 2)
})

test('perKeyLabels off (default): token counters have only the model label', async (t) => {
  const { app, emit, scrape } = await buildApp()
  t.after(() => app.close())
  await emit((req) => app.llm.emitUsage(usageRecord({ keyId: 'team-a' }), req))
  const s = await scrape()
  const prompt = series(s, 'llmproxy_prompt_tokens_total')
  assert.deepEqual(prompt, [{ name: 'llmproxy_prompt_tokens_total', labels: { model: 'qwen-7b' }, value: 10 }])
  assert.equal(
    s.some((x) => 'key_id' in x.labels),
    false,
  )
})

test('perKeyLabels on: token counters split by key_id, a keyless request counts as "none"', async (t) => {
  const { app, emit, scrape } = await buildApp({ perKeyLabels: true })
  t.after(() => app.close())
  await emit((req) => {
    app.llm.emitUsage(usageRecord({ keyId: 'team-a', promptTokens: 3, completionTokens: 4 }), req)
    app.llm.emitUsage(usageRecord({ keyId: 'team-a', promptTokens: 5, completionTokens: 6 }), req)
    app.llm.emitUsage(usageRecord({ keyId: 'team-b', promptTokens: 7, completionTokens: 8 }), req)
    app.llm.emitUsage(usageRecord({ keyId: null, promptTokens: 1, completionTokens: 2 }), req)
  })
  const s = await scrape()
  assert.equal(value(s, 'llmproxy_prompt_tokens_total', { model: 'qwen-7b', key_id: 'team-a' }), 8)
  assert.equal(value(s, 'llmproxy_completion_tokens_total', { model: 'qwen-7b', key_id: 'team-a' }), 10)
  assert.equal(value(s, 'llmproxy_prompt_tokens_total', { model: 'qwen-7b', key_id: 'team-b' }), 7)
  assert.equal(value(s, 'llmproxy_completion_tokens_total', { model: 'qwen-7b', key_id: 'none' }), 2)
  assert.equal(series(s, 'llmproxy_prompt_tokens_total').length, 3)
  // only the token counters carry key_id
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'qwen-7b', upstream: 'vllm-a', status: '200' }), 4)
})

test('label values are capped at 1000 per label by default; later values become "other"', async (t) => {
  const { app, emit, scrape } = await buildApp()
  t.after(() => app.close())
  await emit((req) => {
    for (let i = 0; i < 1005; i++) app.llm.emitUsage(usageRecord({ model: `m${i}`, ttftMs: null }), req)
    // a model seen before the cap keeps its own series
    app.llm.emitUsage(usageRecord({ model: 'm0', ttftMs: null }), req)
  })
  const s = await scrape()
  const requests = series(s, 'llmproxy_requests_total')
  assert.equal(requests.length, 1001)
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'other', upstream: 'vllm-a', status: '200' }), 5)
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'm999', upstream: 'vllm-a', status: '200' }), 1)
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'm1000', upstream: 'vllm-a', status: '200' }), undefined)
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'm0', upstream: 'vllm-a', status: '200' }), 2)
  assert.equal(value(s, 'llmproxy_prompt_tokens_total', { model: 'other' }), 50)
})

test('maxLabelValues caps upstream and key_id labels too; statuses outside 0-599 become "other"', async (t) => {
  const { app, emit, scrape } = await buildApp({ maxLabelValues: 2, perKeyLabels: true })
  t.after(() => app.close())
  await emit((req) => {
    for (const upstream of ['u1', 'u2', 'u3', 'u4']) {
      app.llm.emitAttempt({ upstream, upstreamModel: 'm', result: 'ok', durationMs: 1 }, req)
    }
    for (const keyId of ['k1', 'k2', 'k3']) app.llm.emitUsage(usageRecord({ keyId, status: 700 }), req)
  })
  const s = await scrape()
  assert.deepEqual(
    series(s, 'llmproxy_upstream_attempts_total').map((x) => [x.labels.upstream, x.value]),
    [
      ['u1', 1],
      ['u2', 1],
      ['other', 2],
    ],
  )
  assert.equal(value(s, 'llmproxy_prompt_tokens_total', { model: 'qwen-7b', key_id: 'other' }), 10)
  assert.equal(value(s, 'llmproxy_prompt_tokens_total', { model: 'qwen-7b', key_id: 'k2' }), 10)
  // the upstream cap is shared by attempts and usage records: vllm-a came third
  assert.equal(value(s, 'llmproxy_requests_total', { model: 'qwen-7b', upstream: 'other', status: 'other' }), 3)
})

test('prefix and bucket options shape the LLM metrics', async (t) => {
  const { app, emit, scrape } = await buildApp({ prefix: 'gw_', buckets: { ttftSeconds: [0.5, 1], durationSeconds: [2] } })
  t.after(() => app.close())
  await emit((req) => app.llm.emitUsage(usageRecord({ ttftMs: 700, durationMs: 1500 }), req))
  const s = await scrape()
  const qa = { model: 'qwen-7b', upstream: 'vllm-a' }
  assert.deepEqual(
    series(s, 'gw_time_to_first_token_seconds_bucket').map((x) => [x.labels.le, x.value]),
    [
      ['0.5', 0],
      ['1', 1],
      ['+Inf', 1],
    ],
  )
  assert.deepEqual(
    series(s, 'gw_request_duration_seconds_bucket').map((x) => [x.labels.le, x.value]),
    [
      ['2', 1],
      ['+Inf', 1],
    ],
  )
  assert.equal(value(s, 'gw_requests_total', { ...qa, status: '200' }), 1)
  assert.equal(
    s.some((x) => x.name.startsWith('llmproxy_')),
    false,
  )
})
