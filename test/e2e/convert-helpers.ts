// Shared by the convert-*.test.ts files: the reference gateway in front of one mock per upstream protocol, the
// three official SDKs pointed at it, the usage records it emits, and a recorder of the exact bytes a client or an
// upstream sent.
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http'
import Anthropic from '@anthropic-ai/sdk'
import { type GenerateContentConfig, type GenerateContentParameters, type GenerateContentResponse, GoogleGenAI } from '@google/genai'
import type { Protocol, UsageRecord } from '@llmproxy/core'
import { eventually, type MockBehavior, type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { buildGateway, parseConfig } from '@llmproxy/server'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'

export const API_KEY = 'sk-convert-e2e-client-key-0001'

/** One upstream of the gateway: a mock (5 tokens an answer unless told otherwise) speaking `protocol`, with its own credential. */
export interface UpstreamSpec {
  protocol: Protocol
  /** Put a recorder of the upstream's response bytes between the gateway and the mock. */
  recorded?: boolean
  /** Point the upstream here instead of at its mock (a stand-in for what the mock does not serve). */
  url?: string
}

export interface ConvertGateway {
  app: FastifyInstance
  url: string
  /** The mock behind each upstream, by upstream name. */
  mocks: Record<string, MockUpstream>
  /** The recorders of the upstreams that have one, by upstream name. */
  recorders: Record<string, UpstreamRecorder>
  /** Every usage record, in emission order. */
  records: UsageRecord[]
  /** Clears every mock's requests and the records. */
  reset(): void
  /** The one record of the request just made (waits for it). */
  record(): Promise<UsageRecord>
  close(): Promise<void>
}

/** The reference gateway (quiet logs) in front of one mock per upstream, with `models` and extra config sections. */
export async function startConvertGateway(
  upstreams: Record<string, UpstreamSpec>,
  models: Record<string, unknown>[],
  extra: Record<string, unknown> = {},
): Promise<ConvertGateway> {
  const mocks: Record<string, MockUpstream> = {}
  const recorders: Record<string, UpstreamRecorder> = {}
  const closeMocks = () => Promise.all([...Object.values(recorders), ...Object.values(mocks)].map((m) => m.close()))
  try {
    for (const [name, spec] of Object.entries(upstreams)) {
      const mock = await startMockUpstream({ defaults: { tokens: 5 } })
      mocks[name] = mock
      if (spec.recorded) recorders[name] = await recordUpstream(mock.url)
    }
    const config = parseConfig(
      JSON.stringify({
        server: { host: '127.0.0.1', port: 0, logLevel: 'silent' },
        upstreams: Object.entries(upstreams).map(([name, spec]) => {
          const url = spec.url ?? recorders[name]?.url ?? (mocks[name] as MockUpstream).url
          return { name, url, protocol: spec.protocol, apiKey: `sk-upstream-${name}` }
        }),
        models,
        healthChecks: { enabled: false },
        passiveHealth: { failuresToEject: 1000 },
        ...extra,
      }),
      'convert-e2e',
    )
    const app = await buildGateway(config)
    const records: UsageRecord[] = []
    app.llm.addHook('onUsage', (record) => {
      records.push(record)
    })
    const url = await app.listen({ port: 0, host: '127.0.0.1' })
    return {
      app,
      url,
      mocks,
      recorders,
      records,
      reset() {
        for (const mock of Object.values(mocks)) mock.reset()
        for (const recorder of Object.values(recorders)) recorder.bodies.length = 0
        records.length = 0
      },
      async record() {
        await eventually(() => records.length >= 1, 3000, 'a usage record')
        if (records.length !== 1) throw new Error(`expected one usage record, got ${records.length}`)
        return records[0] as UsageRecord
      },
      async close() {
        await app.close()
        await closeMocks()
      },
    }
  } catch (err) {
    await closeMocks()
    throw err
  }
}

/** The three APIs a client speaks. */
export type ClientApi = 'openai' | 'anthropic' | 'gemini'
export const CLIENT_APIS: readonly ClientApi[] = ['openai', 'anthropic', 'gemini']

export function openaiClient(url: string, opts: { apiKey?: string; fetch?: typeof fetch } = {}): OpenAI {
  return new OpenAI({ baseURL: `${url}/v1`, apiKey: opts.apiKey ?? API_KEY, maxRetries: 0, ...(opts.fetch ? { fetch: opts.fetch } : {}) })
}

export function anthropicClient(url: string, opts: { apiKey?: string; fetch?: typeof fetch } = {}): Anthropic {
  return new Anthropic({ baseURL: url, apiKey: opts.apiKey ?? API_KEY, maxRetries: 0, ...(opts.fetch ? { fetch: opts.fetch } : {}) })
}

/** `apiVersion: 'v1'`: Gemini's stable version (the SDK's default is v1beta). */
export function geminiClient(url: string, opts: { apiKey?: string; fetch?: typeof fetch; apiVersion?: 'v1' } = {}): GoogleGenAI {
  return new GoogleGenAI({
    apiKey: opts.apiKey ?? API_KEY,
    httpOptions: {
      baseUrl: url,
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      ...(opts.apiVersion ? { apiVersion: opts.apiVersion } : {}),
    },
  })
}

/**
 * Request headers that program the mock for one request (the gateway passes them upstream unchanged). Headers are
 * Latin-1: characters beyond ASCII go as JSON \u escapes.
 */
export function behave(behavior: MockBehavior): Record<string, string> {
  const json = JSON.stringify(behavior).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
  return { 'x-mock-behavior': json }
}

/** A `fetch` that records each response body exactly as the client received it (the SDK reads the other branch of a tee). */
export function recordingFetch(): { fetch: typeof fetch; bodies: Promise<string>[] } {
  const bodies: Promise<string>[] = []
  const recording: typeof fetch = async (input, init) => {
    const res = await fetch(input, init)
    if (res.body === null) return res
    const [mine, theirs] = res.body.tee()
    bodies.push(new Response(mine).text())
    return new Response(theirs, { status: res.status, statusText: res.statusText, headers: res.headers })
  }
  return { fetch: recording, bodies }
}

/** An HTTP server in front of `target` that records each response body exactly as the upstream sent it. */
export interface UpstreamRecorder {
  url: string
  /** Response bodies, in the order the requests came. */
  bodies: Promise<string>[]
  close(): Promise<void>
}

export async function recordUpstream(target: string): Promise<UpstreamRecorder> {
  const bodies: Promise<string>[] = []
  const server: Server = createServer((req, res) => {
    const upstream = new URL(req.url ?? '/', target)
    const forward = httpRequest(
      upstream,
      { method: req.method, headers: { ...req.headers, host: upstream.host } },
      (answer: IncomingMessage) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers)
        const chunks: Buffer[] = []
        bodies.push(
          new Promise((resolve) => {
            answer.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
            answer.on('error', () => resolve(Buffer.concat(chunks).toString('utf8')))
          }),
        )
        answer.on('data', (chunk: Buffer) => {
          chunks.push(chunk)
          res.write(chunk)
        })
        answer.on('end', () => res.end())
        answer.on('error', () => res.destroy())
      },
    )
    forward.on('error', () => res.destroy())
    req.pipe(forward)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return {
    url: `http://127.0.0.1:${address.port}`,
    bodies,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** Drains an async iterable, returning what it yielded. */
export async function drain<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = []
  for await (const item of iterable) items.push(item)
  return items
}

/** The body a mock received (its `index`th request), as an object. */
export function upstreamBody(mock: MockUpstream, index = 0): Record<string, unknown> {
  const body = mock.requests[index]?.body
  if (body === null || typeof body !== 'object') throw new Error(`the upstream got no JSON body (request ${index})`)
  return body as Record<string, unknown>
}

// ── What each SDK surfaces, in one shape ─────────────────────────────────────────────────────────

/** What an SDK surfaced of one answer; `finish`, `usage` and tool-call ids in the client's own API terms. */
export interface SdkAnswer {
  text: string
  reasoning: string
  /** Reasoning signatures as the client got them (Anthropic `signature`, Gemini `thoughtSignature` on a thought). */
  signatures: string[]
  toolCalls: { id: string; name: string; args: unknown; signature?: string }[]
  finish: string | null
  model: string
  usage: Record<string, unknown>
  /** Arrival time (performance.now()) of each text delta (streamed answers). */
  textTimes: number[]
}

function emptyAnswer(): SdkAnswer {
  return { text: '', reasoning: '', signatures: [], toolCalls: [], finish: null, model: '', usage: {}, textTimes: [] }
}

type OpenAIBody = Omit<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming, 'stream'>

/** An OpenAI chat completion through the `openai` SDK; streamed ones ask for the usage chunk. */
export async function askOpenAI(
  client: OpenAI,
  body: OpenAIBody,
  stream: boolean,
  headers: Record<string, string> = {},
): Promise<SdkAnswer> {
  const out = emptyAnswer()
  if (!stream) {
    const completion = await client.chat.completions.create(body, { headers })
    const choice = completion.choices[0]
    const message = choice?.message as (OpenAI.Chat.ChatCompletionMessage & { reasoning_content?: string }) | undefined
    out.text = message?.content ?? ''
    out.reasoning = message?.reasoning_content ?? ''
    for (const call of message?.tool_calls ?? []) {
      if (call.type === 'function') out.toolCalls.push({ id: call.id, name: call.function.name, args: JSON.parse(call.function.arguments) })
    }
    out.finish = choice?.finish_reason ?? null
    out.model = completion.model
    out.usage = (completion.usage ?? {}) as unknown as Record<string, unknown>
    return out
  }
  const chunks = await client.chat.completions.create(
    { ...body, stream: true, stream_options: { include_usage: true, ...body.stream_options } },
    { headers },
  )
  const args: string[] = []
  for await (const chunk of chunks) {
    out.model = chunk.model
    if (chunk.usage) out.usage = chunk.usage as unknown as Record<string, unknown>
    const choice = chunk.choices[0]
    if (choice === undefined) continue
    const delta = choice.delta as OpenAI.Chat.ChatCompletionChunk.Choice.Delta & { reasoning_content?: string }
    if (delta.content) {
      out.text += delta.content
      out.textTimes.push(performance.now())
    }
    if (delta.reasoning_content) out.reasoning += delta.reasoning_content
    for (const call of delta.tool_calls ?? []) {
      if (call.id !== undefined) out.toolCalls[call.index] = { id: call.id, name: call.function?.name ?? '', args: undefined }
      args[call.index] = (args[call.index] ?? '') + (call.function?.arguments ?? '')
    }
    if (choice.finish_reason) out.finish = choice.finish_reason
  }
  out.toolCalls.forEach((call, i) => {
    call.args = JSON.parse(args[i] ?? '')
  })
  return out
}

type AnthropicBody = Omit<Anthropic.MessageCreateParamsNonStreaming, 'stream'>

function fromAnthropicMessage(message: Anthropic.Message, out: SdkAnswer): SdkAnswer {
  for (const block of message.content) {
    if (block.type === 'text') out.text += block.text
    else if (block.type === 'thinking') {
      out.reasoning += block.thinking
      out.signatures.push(block.signature)
    } else if (block.type === 'tool_use') out.toolCalls.push({ id: block.id, name: block.name, args: block.input })
  }
  out.finish = message.stop_reason
  out.model = message.model
  out.usage = message.usage as unknown as Record<string, unknown>
  return out
}

/** An Anthropic message through `@anthropic-ai/sdk` (streamed: `messages.stream(…).finalMessage()`). */
export async function askAnthropic(
  client: Anthropic,
  body: AnthropicBody,
  stream: boolean,
  headers: Record<string, string> = {},
): Promise<SdkAnswer> {
  const out = emptyAnswer()
  if (!stream) return fromAnthropicMessage(await client.messages.create(body, { headers }), out)
  const messages = client.messages.stream(body, { headers })
  messages.on('text', () => {
    out.textTimes.push(performance.now())
  })
  return fromAnthropicMessage(await messages.finalMessage(), out)
}

type GeminiParams = Omit<GenerateContentParameters, 'config'> & { config?: GenerateContentConfig }

function addGeminiResponse(response: GenerateContentResponse, out: SdkAnswer, now: number): void {
  if (response.modelVersion !== undefined) out.model = response.modelVersion
  if (response.usageMetadata !== undefined) out.usage = response.usageMetadata as Record<string, unknown>
  const candidate = response.candidates?.[0]
  if (candidate?.finishReason !== undefined) out.finish = candidate.finishReason
  for (const part of candidate?.content?.parts ?? []) {
    if (part.thought === true) {
      out.reasoning += part.text ?? ''
      if (part.thoughtSignature !== undefined) out.signatures.push(part.thoughtSignature)
    } else if (part.functionCall !== undefined) {
      const call: SdkAnswer['toolCalls'][number] = {
        id: part.functionCall.id ?? '',
        name: part.functionCall.name ?? '',
        args: part.functionCall.args,
      }
      if (part.thoughtSignature !== undefined) call.signature = part.thoughtSignature
      out.toolCalls.push(call)
    } else if (typeof part.text === 'string' && part.text !== '') {
      out.text += part.text
      out.textTimes.push(now)
    }
  }
}

/** A Gemini answer through `@google/genai` (streamed: `generateContentStream`, which asks for `alt=sse`). */
export async function askGemini(
  client: GoogleGenAI,
  params: GeminiParams,
  stream: boolean,
  headers: Record<string, string> = {},
): Promise<SdkAnswer> {
  const out = emptyAnswer()
  const config = { ...params.config, httpOptions: { headers } }
  if (!stream) {
    addGeminiResponse(await client.models.generateContent({ ...params, config }), out, performance.now())
    return out
  }
  for await (const chunk of await client.models.generateContentStream({ ...params, config }))
    addGeminiResponse(chunk, out, performance.now())
  return out
}

/**
 * A plain question ("Tell me a story") to `model` in the client's API, with an output cap when given. `thinking`:
 * an Anthropic client turns thinking on (without it, a converted answer's reasoning is left out, as Claude's is).
 */
export function ask(
  api: ClientApi,
  url: string,
  model: string,
  opts: { stream: boolean; cap?: number; headers?: Record<string, string>; fetch?: typeof fetch; thinking?: boolean },
): Promise<SdkAnswer> {
  const clientOpts = opts.fetch ? { fetch: opts.fetch } : {}
  const prompt = 'Tell me a story'
  switch (api) {
    case 'openai':
      return askOpenAI(
        openaiClient(url, clientOpts),
        { model, messages: [{ role: 'user', content: prompt }], ...(opts.cap === undefined ? {} : { max_tokens: opts.cap }) },
        opts.stream,
        opts.headers,
      )
    case 'anthropic':
      return askAnthropic(
        anthropicClient(url, clientOpts),
        {
          model,
          max_tokens: opts.cap ?? 2000,
          messages: [{ role: 'user', content: prompt }],
          ...(opts.thinking === true ? { thinking: { type: 'enabled' as const, budget_tokens: 1024 } } : {}),
        },
        opts.stream,
        opts.headers,
      )
    case 'gemini':
      return askGemini(
        geminiClient(url, clientOpts),
        { model, contents: prompt, ...(opts.cap === undefined ? {} : { config: { maxOutputTokens: opts.cap } }) },
        opts.stream,
        opts.headers,
      )
  }
}

/**
 * Usage as the upstream reported it (prompt `P` including cache reads `c` and writes `w`, output `O` including
 * reasoning `r`), in the client's API semantics.
 */
export function usageFor(api: ClientApi, u: { prompt: number; cacheRead: number; cacheWrite: number; output: number; reasoning: number }) {
  switch (api) {
    case 'openai':
      return {
        prompt_tokens: u.prompt,
        completion_tokens: u.output,
        total_tokens: u.prompt + u.output,
        cached_tokens: u.cacheRead,
      }
    case 'anthropic':
      return {
        input_tokens: u.prompt - u.cacheRead - u.cacheWrite,
        cache_read_input_tokens: u.cacheRead,
        cache_creation_input_tokens: u.cacheWrite,
        output_tokens: u.output,
      }
    case 'gemini':
      return {
        promptTokenCount: u.prompt,
        candidatesTokenCount: u.output - u.reasoning,
        totalTokenCount: u.prompt + u.output,
        cachedContentTokenCount: u.cacheRead === 0 ? undefined : u.cacheRead,
        thoughtsTokenCount: u.reasoning === 0 ? undefined : u.reasoning,
      }
  }
}

/** The client's usage reduced to the fields {@link usageFor} names (OpenAI's cached tokens lifted out of details). */
export function usageSeen(api: ClientApi, usage: Record<string, unknown>): Record<string, unknown> {
  switch (api) {
    case 'openai':
      return {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
        cached_tokens: (usage.prompt_tokens_details as { cached_tokens?: number } | undefined)?.cached_tokens,
      }
    case 'anthropic':
      return {
        input_tokens: usage.input_tokens,
        cache_read_input_tokens: usage.cache_read_input_tokens,
        cache_creation_input_tokens: usage.cache_creation_input_tokens,
        output_tokens: usage.output_tokens,
      }
    case 'gemini':
      return {
        promptTokenCount: usage.promptTokenCount,
        candidatesTokenCount: usage.candidatesTokenCount,
        totalTokenCount: usage.totalTokenCount,
        cachedContentTokenCount: usage.cachedContentTokenCount,
        thoughtsTokenCount: usage.thoughtsTokenCount,
      }
  }
}

/** Each API's name for a finish reason. */
export const FINISH: Record<'stop' | 'length' | 'tool_calls' | 'content_filter', Record<ClientApi, string>> = {
  stop: { openai: 'stop', anthropic: 'end_turn', gemini: 'STOP' },
  length: { openai: 'length', anthropic: 'max_tokens', gemini: 'MAX_TOKENS' },
  tool_calls: { openai: 'tool_calls', anthropic: 'tool_use', gemini: 'STOP' },
  content_filter: { openai: 'content_filter', anthropic: 'refusal', gemini: 'SAFETY' },
}
