/**
 * The previous, prom-client based implementation of the per-request LLM metrics, kept verbatim as a test
 * oracle: the allocation-free LlmMetrics must render exactly the same exposition for the same records.
 */
import type { Attempt, Rejection, UsageRecord } from '@llmproxy/core'
import { Counter, Histogram, type Registry } from 'prom-client'
import { NONE_LABEL, OVERFLOW_LABEL, statusLabel } from '../src/labels.js'
import { DEFAULT_DURATION_BUCKETS, DEFAULT_TTFT_BUCKETS, type MetricsOptions } from '../src/options.js'

class LabelCap {
  private readonly seen = new Set<string>()
  private readonly max: number

  constructor(max: number) {
    this.max = max
  }

  get(value: string): string {
    if (this.seen.has(value)) return value
    if (this.seen.size >= this.max) return OVERFLOW_LABEL
    this.seen.add(value)
    return value
  }
}

/** Per-request LLM metrics, fed by core's onUsage / onAttempt / onReject hooks. */
export class ReferenceLlmMetrics {
  private readonly perKeyLabels: boolean
  private readonly models: LabelCap
  private readonly upstreams: LabelCap
  private readonly keys: LabelCap
  private readonly ttft: Histogram<'model' | 'upstream'>
  private readonly duration: Histogram<'model' | 'upstream' | 'status'>
  private readonly requests: Counter<'model' | 'upstream' | 'status'>
  private readonly promptTokens: Counter<'model' | 'key_id'>
  private readonly completionTokens: Counter<'model' | 'key_id'>
  private readonly estimated: Counter<'model'>
  private readonly clientAborts: Counter<'model'>
  private readonly failovers: Counter<'model'>
  private readonly resumes: Counter<'model' | 'outcome'>
  private readonly attempts: Counter<'upstream' | 'result'>
  private readonly retries: Counter<'upstream'>
  private readonly rejections: Counter<'reason'>

  constructor(registry: Registry, opts: MetricsOptions) {
    const p = opts.prefix
    const registers = [registry]
    this.perKeyLabels = opts.perKeyLabels
    this.models = new LabelCap(opts.maxLabelValues)
    this.upstreams = new LabelCap(opts.maxLabelValues)
    this.keys = new LabelCap(opts.maxLabelValues)
    const tokenLabels: ('model' | 'key_id')[] = opts.perKeyLabels ? ['model', 'key_id'] : ['model']

    this.ttft = new Histogram({
      name: `${p}time_to_first_token_seconds`,
      help: 'Time from the request arrival to the first token sent to the client.',
      labelNames: ['model', 'upstream'],
      buckets: [...(opts.buckets?.ttftSeconds ?? DEFAULT_TTFT_BUCKETS)],
      registers,
    })
    this.duration = new Histogram({
      name: `${p}request_duration_seconds`,
      help: 'Time from the request arrival to the end of the response (finished, aborted or failed).',
      labelNames: ['model', 'upstream', 'status'],
      buckets: [...(opts.buckets?.durationSeconds ?? DEFAULT_DURATION_BUCKETS)],
      registers,
    })
    this.requests = new Counter({
      name: `${p}requests_total`,
      help: 'Routed LLM requests, by the HTTP status the client received (0 when no response was written).',
      labelNames: ['model', 'upstream', 'status'],
      registers,
    })
    this.promptTokens = new Counter({
      name: `${p}prompt_tokens_total`,
      help: 'Prompt (input) tokens, as reported by upstreams or estimated.',
      labelNames: tokenLabels,
      registers,
    })
    this.completionTokens = new Counter({
      name: `${p}completion_tokens_total`,
      help: 'Completion (output) tokens, as reported by upstreams or estimated.',
      labelNames: tokenLabels,
      registers,
    })
    this.estimated = new Counter({
      name: `${p}estimated_usage_total`,
      help: 'Requests whose token counts were estimated because the upstream reported none.',
      labelNames: ['model'],
      registers,
    })
    this.clientAborts = new Counter({
      name: `${p}client_aborts_total`,
      help: 'Requests the client abandoned before the response ended.',
      labelNames: ['model'],
      registers,
    })
    this.failovers = new Counter({
      name: `${p}failovers_total`,
      help: 'Requests answered by an attempt other than their first.',
      labelNames: ['model'],
      registers,
    })
    this.resumes = new Counter({
      name: `${p}stream_resumes_total`,
      help: 'Streams cut after their first byte that a continuation took over, by outcome (completed: the client got the whole answer; failed: it ended with an error).',
      labelNames: ['model', 'outcome'],
      registers,
    })
    this.attempts = new Counter({
      name: `${p}upstream_attempts_total`,
      help: 'Upstream attempts, by result (ok = committed to the client).',
      labelNames: ['upstream', 'result'],
      registers,
    })
    this.retries = new Counter({
      name: `${p}upstream_retries_total`,
      help: 'Failed upstream attempts (result other than ok and aborted).',
      labelNames: ['upstream'],
      registers,
    })
    this.rejections = new Counter({
      name: `${p}rejections_total`,
      help: 'Requests turned away by auth or a limit before routing.',
      labelNames: ['reason'],
      registers,
    })
  }

  recordUsage(record: UsageRecord, resumes = 0): void {
    const model = this.models.get(record.model)
    const upstream = record.upstream === null ? NONE_LABEL : this.upstreams.get(record.upstream)
    const series = { model, upstream, status: statusLabel(record.status) }
    this.requests.inc(series)
    this.duration.observe(series, record.durationMs / 1000)
    if (record.ttftMs !== null) this.ttft.observe({ model, upstream }, record.ttftMs / 1000)

    const byModel = { model }
    const byToken = this.perKeyLabels ? { model, key_id: record.keyId === null ? NONE_LABEL : this.keys.get(record.keyId) } : byModel
    if (record.promptTokens > 0) this.promptTokens.inc(byToken, record.promptTokens)
    if (record.completionTokens > 0) this.completionTokens.inc(byToken, record.completionTokens)
    if (record.estimated) this.estimated.inc(byModel)
    if (record.clientAborted) this.clientAborts.inc(byModel)
    if (record.attempts > 1 && record.status >= 200 && record.status < 300 && record.error === undefined) this.failovers.inc(byModel)
    if (resumes > 0) this.resumes.inc({ model, outcome: record.resumed ? 'completed' : 'failed' })
  }

  recordAttempt(attempt: Attempt): void {
    const upstream = this.upstreams.get(attempt.upstream)
    this.attempts.inc({ upstream, result: attempt.result })
    // An attempt abandoned for a reason other than the client leaving is what a retry follows.
    if (attempt.result !== 'ok' && attempt.result !== 'aborted') this.retries.inc({ upstream })
  }

  recordRejection(rejection: Rejection): void {
    this.rejections.inc({ reason: rejection.reason })
  }
}
