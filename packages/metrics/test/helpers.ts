import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { llmMetrics, type MetricsOptions } from '../src/index.js'

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** Parses Prometheus text exposition (samples only). */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`unparseable exposition line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1] as string] = l[2] as string
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) })
  }
  return samples
}

/** The value of the sample with exactly these labels, or undefined. */
export function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels)
  return samples.find((s) => s.name === name && Object.keys(s.labels).length === want.length && want.every(([k, v]) => s.labels[k] === v))
    ?.value
}

/** Every sample of a metric name. */
export function series(samples: Sample[], name: string): Sample[] {
  return samples.filter((s) => s.name === name)
}

export { usageRecord, usageStats } from '../../../test/support/usage.js'

export interface TestApp {
  app: FastifyInstance
  /** Runs `fn` inside a request (so core's hooks get a real FastifyRequest). */
  emit(fn: (request: FastifyRequest) => void): Promise<void>
  /** GET the scrape route and parse it. */
  scrape(path?: string): Promise<Sample[]>
}

/**
 * An app with the metrics plugin and a POST /emit route. `before` runs before the plugin is
 * registered (e.g. fake decorators), `after` after it.
 */
export async function buildApp(
  options: Partial<MetricsOptions> = {},
  hooks: { before?: (app: FastifyInstance) => void; after?: (app: FastifyInstance) => void } = {},
): Promise<TestApp> {
  const app = Fastify()
  hooks.before?.(app)
  await app.register(llmMetrics, { defaultMetrics: false, ...options })
  let job: ((request: FastifyRequest) => void) | null = null
  app.post('/emit', async (request) => {
    job?.(request)
    job = null
    return { ok: true }
  })
  hooks.after?.(app)
  await app.ready()
  return {
    app,
    async emit(fn) {
      job = fn
      const res = await app.inject({ method: 'POST', url: '/emit' })
      if (res.statusCode !== 200) throw new Error(`emit failed: ${res.statusCode} ${res.body}`)
    },
    async scrape(path = '/metrics') {
      const res = await app.inject({ method: 'GET', url: path })
      if (res.statusCode !== 200) throw new Error(`scrape failed: ${res.statusCode} ${res.body}`)
      return parseExposition(res.body)
    },
  }
}
