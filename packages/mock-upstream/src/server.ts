import { EventEmitter } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import { ANTHROPIC } from './anthropic.js'
import { assertBehavior, behaviorProblem, type MockBehavior } from './behavior.js'
import { continuationOf, type Fields, isObject, planToolCall, promptTokensFor, textVocabulary, tokenCapOf } from './content.js'
import { ERROR_CODES, type ErrorShape, sendError, sendStatusError } from './errors.js'
import { GEMINI_ARRAY, GEMINI_SSE } from './gemini.js'
import { Job, type JobOwner, MockRequest, MockResponse, type MockUpstreamEvents, type RecordedRequest } from './job.js'
import { CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES } from './openai.js'
import {
  anthropicProblem,
  anthropicTrailing,
  chatProblem,
  chatTrailing,
  geminiProblem,
  geminiTrailing,
  PREFILL_UNSUPPORTED,
  type TrailingReader,
  type Validator,
} from './requests.js'
import { TGI, TGI_CHAT } from './tgi.js'
import type { Answer, Wire } from './wire.js'

export interface MockUpstreamOptions {
  /** Port to listen on (default 0: a free port). */
  port?: number
  /** Host to listen on (default 127.0.0.1). */
  host?: string
  /** Behavior of every request, below program(), the body `mock` field and the `x-mock-behavior` header. */
  defaults?: MockBehavior
  /** Models listed by GET /v1/models (default ['mock-model']); the first is echoed when a request names none. */
  models?: string[]
  /** Keep every request in `requests` (default true). The benchmark sets false to keep memory flat. */
  record?: boolean
}

/** Decides a request's behavior from what it asked (return undefined to keep the defaults). */
export type MockProgram = (req: RecordedRequest) => MockBehavior | undefined

export interface MockUpstream extends EventEmitter<MockUpstreamEvents> {
  readonly url: string
  readonly port: number
  /** The requests received since the start or the last reset() (empty when `record` is false). */
  readonly requests: RecordedRequest[]
  setDefaults(b: MockBehavior): void
  program(fn: MockProgram | null): void
  /** GET /health and GET /v1/models answer 503 when false. */
  setHealthy(ok: boolean): void
  /** Clears requests, program, defaults back to constructor defaults, healthy. */
  reset(): void
  /** Resolves once `n` requests were received since the start or the last reset(); rejects after `timeoutMs` (default 5000). */
  waitForRequests(n: number, timeoutMs?: number): Promise<void>
  /** Closes the server and destroys open sockets. */
  close(): Promise<void>
}

interface Endpoint {
  readonly answer: Answer
  /** The streamed format, or null when the endpoint never streams. */
  readonly wire: Wire | null
  /** Streams whatever the body says (TGI /generate_stream, Gemini :streamGenerateContent). */
  readonly alwaysStream: boolean
  /** The endpoint generates tokens (false: embeddings). */
  readonly generates: boolean
  /** The endpoint answers with reasoning and tool calls too (chat, Anthropic, Gemini). */
  readonly rich: boolean
  readonly idPrefix: string
  /** The error shape of the route. */
  readonly shape: ErrorShape
  /** The real server's request checks, if the mock makes them. */
  readonly validate: Validator | null
  /** Reads the assistant turn a request ends with (prefill), if the format has one. */
  readonly trailing: TrailingReader | null
}

function endpoint(answer: Answer, wire: Wire | null, idPrefix: string, more: Partial<Endpoint> = {}): Endpoint {
  return {
    answer,
    wire,
    idPrefix,
    alwaysStream: false,
    generates: true,
    rich: false,
    shape: 'openai',
    validate: null,
    trailing: null,
    ...more,
  }
}

const CHAT_ENDPOINT = endpoint(CHAT, CHAT, 'chatcmpl-mock-', { rich: true, validate: chatProblem, trailing: chatTrailing })
/** The chat route in the `tgi` dialect: text only, no request checks, no prefill (as the TGI routes). */
const TGI_CHAT_ENDPOINT = endpoint(TGI_CHAT, TGI_CHAT, '')

const POST_ENDPOINTS: ReadonlyMap<string, Endpoint> = new Map([
  ['/v1/chat/completions', CHAT_ENDPOINT],
  ['/v1/completions', endpoint(COMPLETIONS, COMPLETIONS, 'cmpl-mock-')],
  ['/v1/responses', endpoint(RESPONSES, RESPONSES, 'resp_mock_')],
  ['/v1/embeddings', endpoint(EMBEDDINGS, null, '', { generates: false })],
  [
    '/v1/messages',
    endpoint(ANTHROPIC, ANTHROPIC, 'msg_mock_', {
      rich: true,
      shape: 'anthropic',
      validate: anthropicProblem,
      trailing: anthropicTrailing,
    }),
  ],
  ['/generate', endpoint(TGI, null, '')],
  ['/generate_stream', endpoint(TGI, TGI, '', { alwaysStream: true })],
])

const GEMINI_PREFIX = '/v1beta/models/'
const GEMINI = { rich: true, shape: 'gemini', validate: geminiProblem, trailing: geminiTrailing } as const
const GEMINI_GENERATE = endpoint(GEMINI_SSE, null, 'mock-gemini-', GEMINI)
const GEMINI_STREAM_SSE = endpoint(GEMINI_SSE, GEMINI_SSE, 'mock-gemini-', { ...GEMINI, alwaysStream: true })
const GEMINI_STREAM_ARRAY = endpoint(GEMINI_SSE, GEMINI_ARRAY, 'mock-gemini-', { ...GEMINI, alwaysStream: true })

const JSON_TYPE = 'application/json'
const BEHAVIOR_HEADER = 'x-mock-behavior'

function notFound(job: Job): void {
  sendError(job, 404, `Unknown route ${job.rec.method} ${job.rec.path}`, ERROR_CODES.notFound)
}

function sendJson(job: Job, status: number, body: unknown): void {
  job.sendBody(status, JSON_TYPE, JSON.stringify(body))
}

function parseBody(raw: string): unknown {
  if (raw === '') return raw
  try {
    return JSON.parse(raw)
  } catch {
    return raw
  }
}

/** Overlays the fields `b` sets on the job. */
function applyBehavior(job: Job, b: MockBehavior): void {
  if (b.ttftMs !== undefined) job.ttft = b.ttftMs
  if (b.gapMs !== undefined) job.gap = b.gapMs
  if (b.tokens !== undefined) job.tokens = b.tokens
  if (b.text !== undefined) job.text = b.text
  if (b.shift !== undefined) job.shift = b.shift
  if (b.reasoning !== undefined) job.reasoning = b.reasoning
  if (b.redactedThinking !== undefined) job.redactedThinking = b.redactedThinking
  if (b.toolCalls !== undefined) job.calls = b.toolCalls.map((call) => planToolCall(call.name, call.arguments))
  if (b.finish !== undefined) job.forcedFinish = b.finish
  if (b.cachedTokens !== undefined) job.cachedTokens = b.cachedTokens
  if (b.cacheWriteTokens !== undefined) job.cacheWriteTokens = b.cacheWriteTokens
  if (b.rejectPrefill !== undefined) job.rejectPrefill = b.rejectPrefill
  if (b.status !== undefined) job.status = b.status
  if (b.retryAfter !== undefined) job.retryAfter = b.retryAfter
  if (b.errorCode !== undefined) job.errorCode = b.errorCode
  if (b.fault !== undefined) job.fault = b.fault
  if (b.faultAfter !== undefined) job.faultAfter = b.faultAfter
  if (b.usage !== undefined) job.usage = b.usage
  if (b.contentEncoding !== undefined) job.contentEncoding = b.contentEncoding
  if (b.lineEnding !== undefined) job.lineEnding = b.lineEnding
  if (b.dialect !== undefined) job.dialect = b.dialect
}

/**
 * Decides what the answer holds: its text tokens (a continuation starts past the prefix), reasoning and tool
 * calls where the endpoint has them, the cap of the request's max-tokens field, the finish reason.
 */
function planAnswer(job: Job, target: Endpoint, body: Fields, prefix: string | null): void {
  job.promptTokens = Math.max(promptTokensFor(body), job.cachedTokens + job.cacheWriteTokens)
  if (job.text !== null) {
    job.vocab = textVocabulary(job.text)
    job.shift = 0
  }
  const total = !target.generates ? 0 : job.text !== null ? job.vocab.texts.length : job.tokens
  if (!target.rich) {
    job.reasoning = 0
    job.calls = []
  }
  if (prefix !== null) {
    const start = continuationOf(prefix, job.vocab, job.shift, job.text === null)
    job.from = start.from
    job.head = start.head
    job.headJson = start.head === null ? null : JSON.stringify(start.head)
    job.reasoning = 0 // a continuation goes on with the text
  }
  let tokens = Math.max(0, total - job.from)
  let toolTokens = 0
  for (const call of job.calls) toolTokens += call.fragments.length
  let capped = false
  const cap = tokenCapOf(body)
  if (cap !== undefined) {
    // The cap takes the reasoning first, then the text; tool calls come only whole.
    const reasoning = Math.min(job.reasoning, cap)
    const text = Math.min(tokens, cap - reasoning)
    if (reasoning < job.reasoning || text < tokens || toolTokens > cap - reasoning - text) {
      capped = true
      job.reasoning = reasoning
      tokens = text
      job.calls = []
      toolTokens = 0
    }
  }
  job.tokens = tokens
  job.toolTokens = toolTokens
  job.steps = job.reasoning + tokens + job.calls.length
  job.finish = job.forcedFinish ?? (capped ? 'length' : job.calls.length > 0 ? 'tool_calls' : 'stop')
}

function onRequestData(this: MockRequest, chunk: Buffer): void {
  this.job?.chunks.push(chunk)
}

function onRequestEnd(this: MockRequest): void {
  const job = this.job
  if (job !== null) job.owner.requestRead(job)
}

function onResponseClose(this: MockResponse): void {
  this.job?.closed()
}

function checkOptions(opts: MockUpstreamOptions): void {
  const { port, models, record, defaults } = opts
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535))
    throw new TypeError('port must be an integer from 0 to 65535')
  if (models !== undefined && (!Array.isArray(models) || models.length === 0 || models.some((m) => typeof m !== 'string'))) {
    throw new TypeError('models must be a non-empty array of strings')
  }
  if (record !== undefined && typeof record !== 'boolean') throw new TypeError('record must be a boolean')
  if (defaults !== undefined) assertBehavior(defaults, 'defaults')
}

class MockUpstreamServer extends EventEmitter<MockUpstreamEvents> implements MockUpstream, JobOwner {
  readonly requests: RecordedRequest[] = []
  private readonly server: Server<typeof MockRequest, typeof MockResponse>
  private readonly initialDefaults: MockBehavior
  private readonly models: readonly string[]
  private readonly record: boolean
  private defaults: MockBehavior
  private programFn: MockProgram | null = null
  private healthy = true
  private seq = 0
  private received = 0
  private address = { url: '', port: 0 }
  private closing: Promise<void> | null = null

  constructor(opts: MockUpstreamOptions) {
    super()
    checkOptions(opts)
    this.initialDefaults = { ...opts.defaults }
    this.defaults = this.initialDefaults
    this.models = opts.models ?? ['mock-model']
    this.record = opts.record ?? true
    this.server = createServer({ IncomingMessage: MockRequest, ServerResponse: MockResponse, noDelay: true }, (req, res) =>
      this.handle(req, res),
    )
  }

  get url(): string {
    return this.address.url
  }

  get port(): number {
    return this.address.port
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      // A deep accept queue (Node's default is 511): a proxy under test opens its upstream connections in bursts,
      // and an overflowing queue would time them out in SYN retries (latency of the mock, not of the proxy).
      this.server.listen({ port, host, backlog: 4096 }, () => {
        this.server.off('error', reject)
        const bound = (this.server.address() as AddressInfo).port
        this.address = { url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}`, port: bound }
        resolve()
      })
    })
  }

  setDefaults(b: MockBehavior): void {
    assertBehavior(b, 'setDefaults()')
    this.defaults = { ...b }
  }

  program(fn: MockProgram | null): void {
    this.programFn = fn
  }

  setHealthy(ok: boolean): void {
    this.healthy = ok
  }

  reset(): void {
    this.requests.length = 0
    this.programFn = null
    this.defaults = this.initialDefaults
    this.healthy = true
    this.received = 0
  }

  waitForRequests(n: number, timeoutMs = 5000): Promise<void> {
    if (this.received >= n) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const onRequest = (): void => {
        if (this.received < n) return
        clearTimeout(timer)
        this.off('request', onRequest)
        resolve()
      }
      const timer = setTimeout(() => {
        this.off('request', onRequest)
        reject(new Error(`waitForRequests: ${this.received} of ${n} requests after ${timeoutMs} ms`))
      }, timeoutMs)
      this.on('request', onRequest)
    })
  }

  close(): Promise<void> {
    if (this.closing === null) {
      this.closing = new Promise((resolve) => {
        this.server.close(() => resolve())
        this.server.closeAllConnections()
      })
    }
    return this.closing
  }

  private handle(req: MockRequest, res: MockResponse): void {
    const url = req.url ?? '/'
    const query = url.indexOf('?')
    const rec: RecordedRequest = {
      seq: ++this.seq,
      method: req.method ?? 'GET',
      path: query === -1 ? url : url.slice(0, query),
      headers: req.headers,
      body: '',
      receivedAt: performance.now(),
      chunkTimes: [],
      closedAt: null,
      aborted: false,
    }
    const job = new Job(this, req, res, rec)
    req.job = job
    res.job = job
    res.once('close', onResponseClose)
    req.on('data', onRequestData)
    req.once('end', onRequestEnd)
  }

  requestRead(job: Job): void {
    const chunks = job.chunks
    const rec = job.rec
    rec.body = parseBody(chunks.length === 1 ? String(chunks[0]) : Buffer.concat(chunks).toString())
    chunks.length = 0
    if (this.record) this.requests.push(rec)
    this.received++
    this.emit('request', rec)
    this.dispatch(job)
  }

  private dispatch(job: Job): void {
    const { method, path } = job.rec
    if (method === 'POST') {
      const found = POST_ENDPOINTS.get(path)
      if (found !== undefined) this.generate(job, found, null)
      else if (path.startsWith(GEMINI_PREFIX)) this.gemini(job, path)
      else notFound(job)
    } else if (method === 'GET' && path === '/health') {
      this.health(job, { status: 'ok' })
    } else if (method === 'GET' && path === '/v1/models') {
      this.health(job, { object: 'list', data: this.models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'llmproxy-mock' })) })
    } else if (method === 'GET' && path === '/info') {
      sendJson(job, 200, {
        model_id: this.models[0],
        model_dtype: 'float16',
        max_input_tokens: 4096,
        version: 'mock',
        router: 'llmproxy-mock',
      })
    } else {
      notFound(job)
    }
  }

  private health(job: Job, body: unknown): void {
    if (this.healthy) sendJson(job, 200, body)
    else sendError(job, 503, 'mock upstream is unhealthy', ERROR_CODES.unhealthy)
  }

  /** `/v1beta/models/{model}:generateContent` and `:streamGenerateContent[?alt=sse]`. */
  private gemini(job: Job, path: string): void {
    const rest = path.slice(GEMINI_PREFIX.length)
    const colon = rest.lastIndexOf(':')
    const action = rest.slice(colon + 1)
    let model = ''
    try {
      model = decodeURIComponent(rest.slice(0, Math.max(colon, 0)))
    } catch {
      // a malformed escape: no model, so a 404 below
    }
    if (model === '') {
      notFound(job)
    } else if (action === 'generateContent') {
      this.generate(job, GEMINI_GENERATE, model)
    } else if (action === 'streamGenerateContent') {
      const url = job.req.url ?? ''
      const sse = new URLSearchParams(url.slice(url.indexOf('?') + 1)).get('alt') === 'sse'
      this.generate(job, sse ? GEMINI_STREAM_SSE : GEMINI_STREAM_ARRAY, model)
    } else {
      notFound(job)
    }
  }

  /** Resolves the behavior, then answers (error, fault, streamed or not). */
  private generate(job: Job, route: Endpoint, pathModel: string | null): void {
    job.shape = route.shape
    const body = job.rec.body
    if (!isObject(body)) {
      sendError(job, 400, 'The request body must be a JSON object', ERROR_CODES.invalidBody)
      return
    }
    const problem = this.resolveBehavior(job, body)
    if (problem !== null) {
      sendError(job, 400, `Invalid mock behavior: ${problem}`, ERROR_CODES.invalidBehavior)
      return
    }
    const target = job.dialect === 'tgi' && route === CHAT_ENDPOINT ? TGI_CHAT_ENDPOINT : route
    if (job.fault === 'reset-before-headers') {
      job.reset()
      return
    }
    if (job.fault === 'no-response') return
    if (job.status > 0) {
      sendStatusError(job)
      return
    }
    // api.anthropic.com refuses a request without its version header, whatever its body.
    const invalid =
      target.shape === 'anthropic' && job.req.headers['anthropic-version'] === undefined
        ? { message: 'anthropic-version: header is required', param: null }
        : target.validate === null
          ? null
          : target.validate(body)
    if (invalid !== null) {
      sendError(job, 400, invalid.message, null, invalid.param)
      return
    }
    const trailing = target.trailing === null ? null : target.trailing(body)
    if (trailing !== null && job.rejectPrefill) {
      sendError(job, 400, PREFILL_UNSUPPORTED, null, 'messages')
      return
    }

    job.body = body
    const model = pathModel ?? (typeof body.model === 'string' ? body.model : (this.models[0] ?? ''))
    job.model = model
    job.modelJson = JSON.stringify(model)
    job.id = target.idPrefix + job.rec.seq
    job.created = Math.floor(Date.now() / 1000)
    planAnswer(job, target, body, trailing?.prefill === true ? trailing.text : null)
    const wire = target.wire
    if (wire !== null && (target.alwaysStream || body.stream === true)) {
      const streamOptions = body.stream_options
      job.includeUsage = isObject(streamOptions) && streamOptions.include_usage === true
      const fault = job.fault
      if (fault === 'cut' || fault === 'stall' || fault === 'malformed' || fault === 'error-event') {
        job.faultAt = Math.min(job.faultAfter, job.steps)
      }
      job.wire = wire
      job.startStream(wire)
    } else {
      job.answer = target.answer
      job.startAnswer()
    }
  }

  /** Merges, lowest to highest: defaults, program(req), the body's `mock` field, the `x-mock-behavior` header. */
  private resolveBehavior(job: Job, body: Record<string, unknown>): string | null {
    applyBehavior(job, this.defaults)
    if (this.programFn !== null) {
      const programmed = this.programFn(job.rec)
      if (programmed !== undefined) {
        const problem = behaviorProblem(programmed)
        if (problem !== null) return `program(): ${problem}`
        applyBehavior(job, programmed)
      }
    }
    if (body.mock !== undefined) {
      const problem = behaviorProblem(body.mock)
      if (problem !== null) return `body mock: ${problem}`
      applyBehavior(job, body.mock as MockBehavior)
    }
    const header = job.req.headers[BEHAVIOR_HEADER]
    if (typeof header === 'string') {
      let parsed: unknown
      try {
        parsed = JSON.parse(header)
      } catch {
        return `${BEHAVIOR_HEADER} header is not JSON`
      }
      const problem = behaviorProblem(parsed)
      if (problem !== null) return `${BEHAVIOR_HEADER} header: ${problem}`
      applyBehavior(job, parsed as MockBehavior)
    }
    return null
  }
}

/** Starts a mock LLM server; resolves once it listens. */
export async function startMockUpstream(opts: MockUpstreamOptions = {}): Promise<MockUpstream> {
  const mock = new MockUpstreamServer(opts)
  await mock.listen(opts.port ?? 0, opts.host ?? '127.0.0.1')
  return mock
}
