import { strict as assert } from 'node:assert'
import { test } from 'node:test'
import { Counter, Histogram, Registry } from 'prom-client'
import { CounterCollector, HistogramCollector } from '../src/collectors.js'

/** Values that hit every corner of the bucket search: below, on and between bounds, above the last one. */
const VALUES = [0, 0.05, 0.051, 0.1, 0.3, 1, 1.0000001, 2.5, 7, 10, 10.5, 300, 1e6, -1, 0.1 + 0.2, 1 / 3]
const BOUNDS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const LABEL_SETS = [
  { model: 'qwen-7b', upstream: 'vllm-a', status: '200' },
  { model: 'llama', upstream: 'none', status: '0' },
  { model: 'qwen-7b', upstream: 'vllm-b', status: '502' },
  // values a label must escape in the exposition
  { model: 'we"ird\\name\nx', upstream: 'vllm-a', status: 'other' },
]

/** A prom-client registry and one of ours, fed the same observations through each API. */
function pair() {
  const ref = new Registry()
  const ours = new Registry()
  const refHist = new Histogram({
    name: 'h_seconds',
    help: 'A histogram.',
    labelNames: ['model', 'upstream', 'status'],
    buckets: BOUNDS,
    registers: [ref],
  })
  const refCounter = new Counter({ name: 'c_total', help: 'A counter.', labelNames: ['model', 'upstream', 'status'], registers: [ref] })
  const hist = new HistogramCollector(ours, 'h_seconds', 'A histogram.', BOUNDS)
  const counter = new CounterCollector(ours, 'c_total', 'A counter.')
  const histSeries = LABEL_SETS.map((l) => hist.series(l))
  const counterSeries = LABEL_SETS.map((l) => counter.series(l))
  const observe = (i: number, value: number): void => {
    refHist.observe({ ...(LABEL_SETS[i] as Record<string, string>) }, value)
    hist.observe(histSeries[i] as ReturnType<typeof hist.series>, value)
    refCounter.inc({ ...(LABEL_SETS[i] as Record<string, string>) }, Math.abs(value))
    counter.inc(counterSeries[i] as ReturnType<typeof counter.series>, Math.abs(value))
  }
  return { ref, ours, observe }
}

function feed(observe: (i: number, value: number) => void, rounds: number): void {
  // series first seen in the order 2, 0, 3, 1: exposition keeps first-observation order
  const order = [2, 0, 3, 1]
  for (let r = 0; r < rounds; r++) {
    for (let v = 0; v < VALUES.length; v++) observe(order[(r + v) % order.length] as number, VALUES[v] as number)
  }
}

test('counter and histogram collectors render exactly what prom-client renders for the same observations', async () => {
  const { ref, ours, observe } = pair()
  assert.equal(await ours.metrics(), await ref.metrics(), 'no observation yet: HELP/TYPE only')
  feed(observe, 7)
  const text = await ours.metrics()
  assert.equal(text, await ref.metrics())
  // the structure is what was meant (not two identical empty outputs)
  assert.match(
    text,
    /^# HELP h_seconds A histogram\.\n# TYPE h_seconds histogram\nh_seconds_bucket\{le="0\.05",model="qwen-7b",upstream="vllm-b",status="502"\} \d+$/m,
  )
  assert.match(text, /^h_seconds_bucket\{le="\+Inf",model="qwen-7b",upstream="vllm-a",status="200"\} 28$/m)
  assert.match(text, /^h_seconds_count\{model="llama",upstream="none",status="0"\} 28$/m)
  assert.match(text, /^c_total\{model="we\\"ird\\\\name\\nx",upstream="vllm-a",status="other"\} /m)
})

test('JSON form, default labels, single-metric rendering and reset match prom-client', async () => {
  const { ref, ours, observe } = pair()
  feed(observe, 3)
  const simplify = (metrics: Awaited<ReturnType<Registry['getMetricsAsJSON']>>) =>
    metrics.map((m) => ({
      name: m.name,
      help: m.help,
      type: m.type,
      aggregator: m.aggregator,
      values: m.values.map((v) => ({ value: v.value, labels: { ...v.labels }, metricName: 'metricName' in v ? v.metricName : undefined })),
    }))
  assert.deepEqual(simplify(await ours.getMetricsAsJSON()), simplify(await ref.getMetricsAsJSON()))

  assert.equal(await ours.getSingleMetricAsString('h_seconds'), await ref.getSingleMetricAsString('h_seconds'))

  ref.setDefaultLabels({ instance: 'gw-1', model: 'default-model' })
  ours.setDefaultLabels({ instance: 'gw-1', model: 'default-model' })
  assert.equal(await ours.metrics(), await ref.metrics())

  // reset: every series disappears; later observations reappear in their new first-observation order
  ref.resetMetrics()
  ours.resetMetrics()
  assert.equal(await ours.metrics(), await ref.metrics())
  observe(3, 0.2)
  observe(0, 4)
  observe(3, 20)
  const text = await ours.metrics()
  assert.equal(text, await ref.metrics())
  assert.match(text, /h_seconds_sum\{instance="gw-1",model="we\\"ird\\\\name\\nx",upstream="vllm-a",status="other"\} 20\.2/)
})

test('a histogram ignores non-finite values (prom-client would throw from the request path)', async () => {
  const registry = new Registry()
  const hist = new HistogramCollector(registry, 'h', 'h', [1])
  const s = hist.series({ a: 'x' })
  hist.observe(s, Number.NaN)
  hist.observe(s, Number.POSITIVE_INFINITY)
  assert.equal(await registry.metrics(), '# HELP h h\n# TYPE h histogram\n')
  hist.observe(s, 0.5)
  assert.equal(
    await registry.metrics(),
    '# HELP h h\n# TYPE h histogram\nh_bucket{le="1",a="x"} 1\nh_bucket{le="+Inf",a="x"} 1\nh_sum{a="x"} 0.5\nh_count{a="x"} 1\n',
  )
})

test('a collector name already taken in the registry is refused, as for prom-client metrics', () => {
  const registry = new Registry()
  new Counter({ name: 'taken_total', help: 'x', registers: [registry] })
  assert.throws(() => new CounterCollector(registry, 'taken_total', 'y'), /already been registered/)
  assert.throws(() => new HistogramCollector(registry, 'taken_total', 'y', [1]), /already been registered/)
})
