import type { Attempt, Rejection, UsageRecord } from '@llmproxy/core'
import type { FastifyBaseLogger } from 'fastify'
import type { Registry } from 'prom-client'
import { CounterCollector, type CounterSeries, HistogramCollector, type HistogramSeries } from './collectors.js'
import { LabelIndex, NONE_LABEL, statusLabel } from './labels.js'
import { DEFAULT_DURATION_BUCKETS, DEFAULT_TTFT_BUCKETS, type MetricsOptions } from './options.js'

/** Per model: its single-label series, and the (model, upstream) / (model, key_id) series by the other entry's id. */
interface ModelEntry {
  readonly label: string
  readonly prompt: CounterSeries
  readonly completion: CounterSeries
  readonly estimated: CounterSeries
  readonly clientAborts: CounterSeries
  readonly failovers: CounterSeries
  readonly resumesCompleted: CounterSeries
  readonly resumesFailed: CounterSeries
  /** By upstream entry id (sparse). */
  readonly pairs: (PairEntry | undefined)[]
  /** By key entry id (sparse); only with perKeyLabels. */
  readonly keys: (KeyTokens | undefined)[]
}

/** One (model, upstream): the TTFT series and the few statuses seen (searched linearly). */
interface PairEntry {
  readonly model: string
  readonly upstream: string
  readonly ttft: HistogramSeries
  readonly statuses: StatusEntry[]
}

interface StatusEntry {
  readonly status: string
  readonly requests: CounterSeries
  readonly duration: HistogramSeries
}

interface UpstreamEntry {
  readonly label: string
  readonly id: number
  readonly retries: CounterSeries
  /** Attempt results seen (at most 7; searched linearly). */
  readonly results: ResultEntry[]
}

interface ResultEntry {
  readonly result: string
  readonly attempts: CounterSeries
}

interface KeyEntry {
  readonly label: string
  readonly id: number
}

interface KeyTokens {
  readonly prompt: CounterSeries
  readonly completion: CounterSeries
}

/**
 * Per-request LLM metrics, fed by core's onUsage / onAttempt / onReject hooks.
 *
 * The hot path allocates nothing and builds no strings once the label values have been seen: one Map
 * lookup per raw label value (model, upstream, key), array indexing by entry id for label combinations,
 * a short linear search for the status / attempt result, then plain field updates on cached series.
 */
export class LlmMetrics {
  private readonly perKeyLabels: boolean
  private readonly models: LabelIndex<ModelEntry>
  private readonly upstreams: LabelIndex<UpstreamEntry>
  private readonly keys: LabelIndex<KeyEntry>
  private readonly noUpstream: UpstreamEntry
  private readonly noKey: KeyEntry
  private readonly ttft: HistogramCollector
  private readonly duration: HistogramCollector
  private readonly requests: CounterCollector
  private readonly promptTokens: CounterCollector
  private readonly completionTokens: CounterCollector
  private readonly estimated: CounterCollector
  private readonly clientAborts: CounterCollector
  private readonly failovers: CounterCollector
  private readonly resumes: CounterCollector
  private readonly attempts: CounterCollector
  private readonly retries: CounterCollector
  private readonly rejections: CounterCollector
  private readonly rejectionSeries = new Map<string, CounterSeries>()

  constructor(registry: Registry, opts: MetricsOptions, log: FastifyBaseLogger) {
    const p = opts.prefix
    this.perKeyLabels = opts.perKeyLabels

    this.ttft = new HistogramCollector(
      registry,
      `${p}time_to_first_token_seconds`,
      'Time from the request arrival to the first token sent to the client.',
      opts.buckets?.ttftSeconds ?? DEFAULT_TTFT_BUCKETS,
    )
    this.duration = new HistogramCollector(
      registry,
      `${p}request_duration_seconds`,
      'Time from the request arrival to the end of the response (finished, aborted or failed).',
      opts.buckets?.durationSeconds ?? DEFAULT_DURATION_BUCKETS,
    )
    this.requests = new CounterCollector(
      registry,
      `${p}requests_total`,
      'Routed LLM requests, by the HTTP status the client received (0 when no response was written).',
    )
    this.promptTokens = new CounterCollector(
      registry,
      `${p}prompt_tokens_total`,
      'Prompt (input) tokens, as reported by upstreams or estimated.',
    )
    this.completionTokens = new CounterCollector(
      registry,
      `${p}completion_tokens_total`,
      'Completion (output) tokens, as reported by upstreams or estimated.',
    )
    this.estimated = new CounterCollector(
      registry,
      `${p}estimated_usage_total`,
      'Requests whose token counts were estimated because the upstream reported none.',
    )
    this.clientAborts = new CounterCollector(
      registry,
      `${p}client_aborts_total`,
      'Requests the client abandoned before the response ended.',
    )
    this.failovers = new CounterCollector(registry, `${p}failovers_total`, 'Requests answered by an attempt other than their first.')
    this.resumes = new CounterCollector(
      registry,
      `${p}stream_resumes_total`,
      'Streams cut after their first byte that a continuation took over, by outcome (completed: the client got the whole answer; failed: it ended with an error).',
    )
    this.attempts = new CounterCollector(
      registry,
      `${p}upstream_attempts_total`,
      'Upstream attempts, by result (ok = committed to the client).',
    )
    this.retries = new CounterCollector(
      registry,
      `${p}upstream_retries_total`,
      'Failed upstream attempts (result other than ok and aborted).',
    )
    this.rejections = new CounterCollector(registry, `${p}rejections_total`, 'Requests turned away by auth or a limit before routing.')

    const max = opts.maxLabelValues
    this.models = new LabelIndex<ModelEntry>('model', max, log, (model) => ({
      label: model,
      prompt: this.promptTokens.series({ model }),
      completion: this.completionTokens.series({ model }),
      estimated: this.estimated.series({ model }),
      clientAborts: this.clientAborts.series({ model }),
      failovers: this.failovers.series({ model }),
      resumesCompleted: this.resumes.series({ model, outcome: 'completed' }),
      resumesFailed: this.resumes.series({ model, outcome: 'failed' }),
      pairs: [],
      keys: [],
    }))
    this.upstreams = new LabelIndex<UpstreamEntry>('upstream', max, log, (upstream, id) => ({
      label: upstream,
      id,
      retries: this.retries.series({ upstream }),
      results: [],
    }))
    this.keys = new LabelIndex<KeyEntry>('key_id', max, log, (label, id) => ({ label, id }))
    this.noUpstream = this.upstreams.entry(NONE_LABEL)
    this.noKey = this.keys.entry(NONE_LABEL)
  }

  /**
   * `resumes`: the continuations the request's stream went through (request.llm.resumes). `modelLabel`: the model as
   * configured (request.llm.configuredModel), when the record's is the client's name for it.
   */
  recordUsage(record: UsageRecord, resumes = 0, modelLabel = record.model): void {
    const model = this.models.get(modelLabel)
    const upstream = record.upstream === null ? this.noUpstream : this.upstreams.get(record.upstream)
    const pair = model.pairs[upstream.id] ?? this.newPair(model, upstream)
    const status = statusLabel(record.status)
    const statuses = pair.statuses
    let series: StatusEntry | undefined
    for (let i = 0; i < statuses.length; i++) {
      const s = statuses[i] as StatusEntry
      if (s.status === status) {
        series = s
        break
      }
    }
    if (series === undefined) series = this.newStatus(pair, status)

    this.requests.inc(series.requests, 1)
    this.duration.observe(series.duration, record.durationMs / 1000)
    if (record.ttftMs !== null) this.ttft.observe(pair.ttft, record.ttftMs / 1000)

    let prompt = model.prompt
    let completion = model.completion
    if (this.perKeyLabels) {
      const key = record.keyId === null ? this.noKey : this.keys.get(record.keyId)
      const tokens = model.keys[key.id] ?? this.newKeyTokens(model, key)
      prompt = tokens.prompt
      completion = tokens.completion
    }
    const promptTokens = record.promptTokens
    const completionTokens = record.completionTokens
    if (promptTokens > 0 && promptTokens < Number.POSITIVE_INFINITY) this.promptTokens.inc(prompt, promptTokens)
    if (completionTokens > 0 && completionTokens < Number.POSITIVE_INFINITY) this.completionTokens.inc(completion, completionTokens)
    if (record.estimated) this.estimated.inc(model.estimated, 1)
    if (record.clientAborted) this.clientAborts.inc(model.clientAborts, 1)
    // A 2xx stream can still fail after its headers (an in-band error): that is no answer.
    if (record.attempts > 1 && record.status >= 200 && record.status < 300 && record.error === undefined) {
      this.failovers.inc(model.failovers, 1)
    }
    if (resumes > 0) this.resumes.inc(record.resumed ? model.resumesCompleted : model.resumesFailed, 1)
  }

  recordAttempt(attempt: Attempt): void {
    const upstream = this.upstreams.get(attempt.upstream)
    const result = attempt.result
    const results = upstream.results
    let entry: ResultEntry | undefined
    for (let i = 0; i < results.length; i++) {
      const r = results[i] as ResultEntry
      if (r.result === result) {
        entry = r
        break
      }
    }
    if (entry === undefined) {
      entry = { result, attempts: this.attempts.series({ upstream: upstream.label, result }) }
      results.push(entry)
    }
    this.attempts.inc(entry.attempts, 1)
    // An attempt abandoned for a reason other than the client leaving is what a retry follows.
    if (result !== 'ok' && result !== 'aborted') this.retries.inc(upstream.retries, 1)
  }

  recordRejection(rejection: Rejection): void {
    const reason = rejection.reason
    let series = this.rejectionSeries.get(reason)
    if (series === undefined) {
      series = this.rejections.series({ reason })
      this.rejectionSeries.set(reason, series)
    }
    this.rejections.inc(series, 1)
  }

  private newPair(model: ModelEntry, upstream: UpstreamEntry): PairEntry {
    const pair: PairEntry = {
      model: model.label,
      upstream: upstream.label,
      ttft: this.ttft.series({ model: model.label, upstream: upstream.label }),
      statuses: [],
    }
    model.pairs[upstream.id] = pair
    return pair
  }

  private newStatus(pair: PairEntry, status: string): StatusEntry {
    const labels = { model: pair.model, upstream: pair.upstream, status }
    const entry: StatusEntry = { status, requests: this.requests.series(labels), duration: this.duration.series(labels) }
    pair.statuses.push(entry)
    return entry
  }

  private newKeyTokens(model: ModelEntry, key: KeyEntry): KeyTokens {
    const labels = { model: model.label, key_id: key.label }
    const tokens: KeyTokens = { prompt: this.promptTokens.series(labels), completion: this.completionTokens.series(labels) }
    model.keys[key.id] = tokens
    return tokens
  }
}
