import type { Registry } from 'prom-client'

/**
 * Allocation-free counters and histograms, registered on a prom-client Registry as custom collectors.
 *
 * prom-client's `inc()` / `observe()` validate the label object, build a hash string from it and (for
 * histograms) allocate a closure on every call. Here a caller resolves a *series handle* once (e.g. cached
 * per model / upstream) and an observation is a few field updates on it. At scrape time `get()` /
 * `getForPromString()` return the MetricObject shape prom-client's Registry renders, so the exposition text
 * is byte-for-byte what a prom-client Counter / Histogram fed the same observations produces: same
 * HELP/TYPE lines, series in first-observation order, `_bucket{le=...}` (le first, then the series labels in
 * their declared order), `+Inf`, `_sum`, `_count`.
 */

/** Label values of one series, keys in the metric's label order (the order they are rendered in). */
export type SeriesLabels = Readonly<Record<string, string>>

export interface CounterSeries {
  readonly labels: SeriesLabels
  value: number
  /** In the collector's series list (false until the first increment, and again after a reset). */
  listed: boolean
}

export interface HistogramSeries {
  readonly labels: SeriesLabels
  /** Observations per bucket (not cumulative); values above the last bound only count in `count`. */
  readonly buckets: Float64Array
  sum: number
  count: number
  listed: boolean
}

/** One sample as prom-client's Registry reads it (`sharedLabels` only in the prom-string form). */
interface Sample {
  value: number
  labels: Readonly<Record<string, string | number>>
  sharedLabels?: SeriesLabels
  metricName?: string
}

interface MetricObject {
  name: string
  help: string
  type: 'counter' | 'histogram'
  values: Sample[]
  aggregator: 'sum'
}

/**
 * `registry.registerMetric` is typed for prom-client's own metric classes; the Registry itself only uses
 * `name`, `get()` / `getForPromString()`, `reset()` and `type`, which these collectors implement.
 */
function register(registry: Registry, metric: CounterCollector | HistogramCollector): void {
  Reflect.apply(registry.registerMetric, registry, [metric])
}

export class CounterCollector {
  readonly type = 'counter'
  readonly aggregator = 'sum'
  /** Mutable: prom-client renames counters in place for OpenMetrics registries. */
  name: string
  readonly help: string
  private list: CounterSeries[] = []

  constructor(registry: Registry, name: string, help: string) {
    this.name = name
    this.help = help
    register(registry, this)
  }

  /** A handle for one label set; it shows in the exposition once incremented. Create it once, keep it. */
  series(labels: SeriesLabels): CounterSeries {
    return { labels: Object.freeze({ ...labels }), value: 0, listed: false }
  }

  inc(series: CounterSeries, value: number): void {
    if (!series.listed) {
      series.listed = true
      this.list.push(series)
    }
    series.value += value
  }

  async get(): Promise<MetricObject> {
    const values: Sample[] = new Array(this.list.length)
    for (let i = 0; i < this.list.length; i++) {
      const s = this.list[i] as CounterSeries
      values[i] = { value: s.value, labels: s.labels }
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
  }

  /** Like prom-client's `reset()`: every series disappears until incremented again. */
  reset(): void {
    for (const s of this.list) {
      s.value = 0
      s.listed = false
    }
    this.list = []
  }
}

export class HistogramCollector {
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  name: string
  readonly help: string
  readonly upperBounds: readonly number[]
  private readonly bounds: Float64Array
  /** `{ le }` label objects of the prom-string form, shared by every series (the Registry does not mutate them). */
  private readonly leLabels: readonly Readonly<Record<string, string | number>>[]
  private list: HistogramSeries[] = []

  constructor(registry: Registry, name: string, help: string, upperBounds: readonly number[]) {
    this.name = name
    this.help = help
    this.upperBounds = Object.freeze([...upperBounds])
    this.bounds = Float64Array.from(upperBounds)
    this.leLabels = Object.freeze([...upperBounds.map((le) => Object.freeze({ le })), Object.freeze({ le: '+Inf' })])
    register(registry, this)
  }

  series(labels: SeriesLabels): HistogramSeries {
    return { labels: Object.freeze({ ...labels }), buckets: new Float64Array(this.bounds.length), sum: 0, count: 0, listed: false }
  }

  /** Records one value. Non-finite values are ignored (prom-client throws on them). */
  observe(series: HistogramSeries, value: number): void {
    if (!Number.isFinite(value)) return
    if (!series.listed) {
      series.listed = true
      this.list.push(series)
    }
    const bounds = this.bounds
    const n = bounds.length
    // same rule as prom-client: the first bucket whose upper bound is >= value
    let i = 0
    while (i < n && value > (bounds[i] as number)) i++
    if (i < n) series.buckets[i] = (series.buckets[i] as number) + 1
    series.sum += value
    series.count += 1
  }

  /** What the Registry renders (`le` label plus the series labels as shared labels), as prom-client does. */
  async getForPromString(): Promise<MetricObject> {
    const bucketName = `${this.name}_bucket`
    const sumName = `${this.name}_sum`
    const countName = `${this.name}_count`
    const n = this.bounds.length
    const values: Sample[] = []
    for (const s of this.list) {
      let acc = 0
      for (let i = 0; i < n; i++) {
        acc += s.buckets[i] as number
        values.push({ labels: this.leLabels[i] as Sample['labels'], sharedLabels: s.labels, value: acc, metricName: bucketName })
      }
      values.push(
        { labels: this.leLabels[n] as Sample['labels'], sharedLabels: s.labels, value: s.count, metricName: bucketName },
        { labels: {}, sharedLabels: s.labels, value: s.sum, metricName: sumName },
        { labels: {}, sharedLabels: s.labels, value: s.count, metricName: countName },
      )
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
  }

  /** The JSON form (`registry.getMetricsAsJSON()`): labels flattened, `le` first, as prom-client's `get()`. */
  async get(): Promise<MetricObject> {
    const data = await this.getForPromString()
    data.values = data.values.map((v) => ({ value: v.value, metricName: v.metricName, labels: { ...v.labels, ...v.sharedLabels } }))
    return data
  }

  reset(): void {
    for (const s of this.list) {
      s.buckets.fill(0)
      s.sum = 0
      s.count = 0
      s.listed = false
    }
    this.list = []
  }
}
