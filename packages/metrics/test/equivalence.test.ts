import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import type { Attempt, Rejection, UsageRecord } from '@llmproxy/core'
import Fastify from 'fastify'
import { Registry } from 'prom-client'
import { LlmMetrics } from '../src/llm-metrics.js'
import { type MetricsOptions, resolveOptions } from '../src/options.js'
import { usageRecord } from './helpers.js'
import { ReferenceLlmMetrics } from './reference-llm-metrics.js'

/** Deterministic pseudo-random numbers (a fixed LCG), so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

type Event =
  | { kind: 'usage'; record: UsageRecord; resumes: number }
  | { kind: 'attempt'; attempt: Attempt }
  | { kind: 'reject'; rejection: Rejection }

/** A mixed stream of usage records, attempts and rejections, including label values named `other` / `none`. */
function events(count: number, seed: number): Event[] {
  const next = rng(seed)
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T
  const models = ['qwen-7b', 'llama', 'mistral', 'other', 'none', 'gemma', 'phi', 'deepseek']
  const upstreams = ['vllm-a', 'vllm-b', 'tgi-c', 'none', 'other', 'vllm-d']
  const keys = ['team-a', 'team-b', 'team-c', 'none', 'k5']
  const statuses = [200, 200, 200, 200, 429, 502, 0, 700, -1, 200.5, 599, 600]
  const results: Attempt['result'][] = ['ok', 'ok', 'ok', 'connect_error', 'timeout', 'stall', 'status', 'error', 'aborted']
  const reasons: Rejection['reason'][] = ['auth', 'ip', 'model_access', 'rate_limit', 'token_limit', 'concurrency', 'quota', 'queue_full']
  const out: Event[] = []
  for (let i = 0; i < count; i++) {
    const r = next()
    if (r < 0.55) {
      out.push({
        kind: 'usage',
        record: usageRecord({
          model: pick(models),
          upstream: next() < 0.1 ? null : pick(upstreams),
          keyId: next() < 0.15 ? null : pick(keys),
          status: pick(statuses),
          durationMs: next() < 0.05 ? 400_000 : next() * 20_000,
          ttftMs: next() < 0.3 ? null : next() < 0.05 ? 0 : next() * 3000,
          promptTokens: next() < 0.1 ? 0 : Math.floor(next() * 4000),
          completionTokens: next() < 0.2 ? 0 : Math.floor(next() * 2000),
          estimated: next() < 0.1,
          clientAborted: next() < 0.05,
          attempts: next() < 0.15 ? 2 + Math.floor(next() * 2) : next() < 0.05 ? 0 : 1,
          resumed: next() < 0.1,
        }),
        resumes: next() < 0.15 ? 1 + Math.floor(next() * 2) : 0,
      })
    } else if (r < 0.9) {
      out.push({
        kind: 'attempt',
        attempt: { upstream: pick(upstreams), upstreamModel: 'm', result: pick(results), durationMs: next() * 100 },
      })
    } else {
      out.push({ kind: 'reject', rejection: { reason: pick(reasons), keyId: null, statusCode: 429 } })
    }
  }
  return out
}

async function compare(options: Partial<MetricsOptions>, seed: number): Promise<string> {
  const opts = resolveOptions(options)
  const log = Fastify().log
  const ours = new Registry()
  const ref = new Registry()
  const fast = new LlmMetrics(ours, opts, log)
  const reference = new ReferenceLlmMetrics(ref, opts)
  for (const e of events(3000, seed)) {
    if (e.kind === 'usage') {
      fast.recordUsage(e.record, e.resumes)
      reference.recordUsage(e.record, e.resumes)
    } else if (e.kind === 'attempt') {
      fast.recordAttempt(e.attempt)
      reference.recordAttempt(e.attempt)
    } else {
      fast.recordRejection(e.rejection)
      reference.recordRejection(e.rejection)
    }
  }
  const text = await ours.metrics()
  assert.equal(text, await ref.metrics())
  return text
}

test('the allocation-free LLM metrics render exactly what the prom-client implementation rendered (defaults)', async () => {
  const text = await compare({}, 1)
  assert.ok(text.split('\n').length > 500, 'a rich exposition was compared')
  assert.match(text, /^llmproxy_requests_total\{model="none",upstream="none",status="other"\} \d+$/m)
  assert.match(text, /^llmproxy_request_duration_seconds_bucket\{le="300",model="qwen-7b",upstream="vllm-a",status="200"\} \d+$/m)
})

test('same exposition with perKeyLabels and label caps (shared upstream cap, `other` overflow)', async () => {
  const text = await compare({ perKeyLabels: true, maxLabelValues: 3 }, 2)
  assert.match(text, /^llmproxy_prompt_tokens_total\{model="other",key_id="other"\} \d+$/m)
  assert.match(text, /^llmproxy_upstream_attempts_total\{upstream="other",result="ok"\} \d+$/m)
})

test('same exposition with a prefix, custom buckets and a cap of one value', async () => {
  const text = await compare({ prefix: 'gw_', maxLabelValues: 1, buckets: { ttftSeconds: [0.5, 1], durationSeconds: [2] } }, 3)
  assert.match(text, /^gw_time_to_first_token_seconds_bucket\{le="0\.5",/m)
  assert.equal(text.includes('llmproxy_'), false)
})
