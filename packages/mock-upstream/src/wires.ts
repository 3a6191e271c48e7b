import { expectedContent, type Fields, tokenJson } from './content.js'
import type { Job } from './job.js'

/** A non-streamed answer format. */
export interface Answer {
  /** The JSON body of the answer. */
  body(job: Job): unknown
}

/** A streamed answer format: each event is written with one `res.write`. */
export interface Wire {
  readonly headers: Readonly<Record<string, string>>
  /** What the `malformed` fault writes. */
  readonly malformed: string
  /** Writes the events due before the first token, and sets `job.prefix` / `job.suffix`. */
  open(job: Job): void
  /** The event that carries token `i`. */
  token(job: Job, i: number): string
  /** Writes the events after the last token; `terminate` is false under the `no-done` fault. */
  finish(job: Job, terminate: boolean): void
}

const SSE_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' }
const SSE_MALFORMED = 'data: {not json\n\n'

function sseEvent(name: string, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`
}

function write(job: Job, event: string): void {
  job.res.write(event)
}

// OpenAI chat completions and completions

function openaiUsage(job: Job): Fields {
  return {
    prompt_tokens: job.promptTokens,
    completion_tokens: job.tokens,
    total_tokens: job.promptTokens + job.tokens,
    prompt_tokens_details: { cached_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0 },
  }
}

function finishReason(job: Job): string {
  return job.capped ? 'length' : 'stop'
}

/** `data: {"id":…,"object":…,"created":…,"model":…,"choices":[` */
function chunkHead(job: Job, object: string): string {
  return `data: {"id":"${job.id}","object":"${object}","created":${job.created},"model":${job.modelJson},"choices":[`
}

/** What closes every chunk: `"usage":null` when the client asked for a usage chunk (as OpenAI does). */
function chunkTail(job: Job): string {
  return job.includeUsage && job.usage ? ',"usage":null}\n\n' : '}\n\n'
}

/** Writes the last choice chunk, the usage chunk when asked for, and `[DONE]`. */
function openaiFinish(job: Job, object: string, lastChoice: string, terminate: boolean): void {
  const head = chunkHead(job, object)
  write(job, `${head}${lastChoice}]${chunkTail(job)}`)
  if (job.includeUsage && job.usage) write(job, `${head}],"usage":${JSON.stringify(openaiUsage(job))}}\n\n`)
  if (terminate) write(job, 'data: [DONE]\n\n')
}

function withUsage(job: Job, body: Fields, usage: () => Fields): Fields {
  if (job.usage) body.usage = usage()
  return body
}

export const CHAT: Wire & Answer = {
  headers: SSE_HEADERS,
  malformed: SSE_MALFORMED,
  open(job) {
    const head = chunkHead(job, 'chat.completion.chunk')
    const tail = chunkTail(job)
    job.prefix = `${head}{"index":0,"delta":{"content":`
    job.suffix = `},"logprobs":null,"finish_reason":null}]${tail}`
    write(job, `${head}{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]${tail}`)
  },
  token(job, i) {
    return job.prefix + tokenJson(i) + job.suffix
  },
  finish(job, terminate) {
    openaiFinish(job, 'chat.completion.chunk', `{"index":0,"delta":{},"logprobs":null,"finish_reason":"${finishReason(job)}"}`, terminate)
  },
  body(job) {
    return withUsage(
      job,
      {
        id: job.id,
        object: 'chat.completion',
        created: job.created,
        model: job.model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: expectedContent(job.tokens), refusal: null },
            logprobs: null,
            finish_reason: finishReason(job),
          },
        ],
      },
      () => openaiUsage(job),
    )
  },
}

export const COMPLETIONS: Wire & Answer = {
  headers: SSE_HEADERS,
  malformed: SSE_MALFORMED,
  open(job) {
    job.prefix = `${chunkHead(job, 'text_completion')}{"text":`
    job.suffix = `,"index":0,"logprobs":null,"finish_reason":null}]${chunkTail(job)}`
  },
  token(job, i) {
    return job.prefix + tokenJson(i) + job.suffix
  },
  finish(job, terminate) {
    openaiFinish(job, 'text_completion', `{"text":"","index":0,"logprobs":null,"finish_reason":"${finishReason(job)}"}`, terminate)
  },
  body(job) {
    return withUsage(
      job,
      {
        id: job.id,
        object: 'text_completion',
        created: job.created,
        model: job.model,
        choices: [{ text: expectedContent(job.tokens), index: 0, logprobs: null, finish_reason: finishReason(job) }],
      },
      () => openaiUsage(job),
    )
  },
}

// OpenAI embeddings

function embeddingInputs(input: unknown): unknown[] {
  if (Array.isArray(input) && input.length > 0 && typeof input[0] !== 'number') return input
  return [input]
}

/** A deterministic vector for input `index`: a function of the input's JSON length, its index and the dimension. */
function embedding(input: unknown, index: number, dims: number): number[] {
  const seed = (JSON.stringify(input) ?? '').length + index * 7
  const vector = new Array<number>(dims)
  for (let j = 0; j < dims; j++) vector[j] = Math.round(Math.sin(seed + j) * 1e6) / 1e6
  return vector
}

export const EMBEDDINGS: Answer = {
  body(job) {
    const dimensions = job.body.dimensions
    const dims = typeof dimensions === 'number' && Number.isInteger(dimensions) && dimensions > 0 ? dimensions : 8
    const data = embeddingInputs(job.body.input).map((input, index) => ({
      object: 'embedding',
      index,
      embedding: embedding(input, index, dims),
    }))
    return withUsage(job, { object: 'list', data, model: job.model }, () => ({
      prompt_tokens: job.promptTokens,
      total_tokens: job.promptTokens,
    }))
  },
}

// OpenAI Responses

function itemId(job: Job): string {
  return `msg_mock_${job.rec.seq}`
}

function responsesUsage(job: Job): Fields {
  return {
    input_tokens: job.promptTokens,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: job.tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: job.promptTokens + job.tokens,
  }
}

function outputText(text: string): Fields {
  return { type: 'output_text', text, annotations: [] }
}

function responseObject(job: Job, final: boolean): Fields {
  const base: Fields = {
    id: job.id,
    object: 'response',
    created_at: job.created,
    status: final ? (job.capped ? 'incomplete' : 'completed') : 'in_progress',
    error: null,
    incomplete_details: final && job.capped ? { reason: 'max_output_tokens' } : null,
    model: job.model,
    output: final
      ? [
          {
            id: itemId(job),
            type: 'message',
            status: 'completed',
            role: 'assistant',
            content: [outputText(expectedContent(job.tokens))],
          },
        ]
      : [],
  }
  if (final) return withUsage(job, base, () => responsesUsage(job))
  base.usage = null
  return base
}

function responsesEvent(job: Job, type: string, fields: Fields): string {
  return sseEvent(type, { type, sequence_number: job.eventSeq++, ...fields })
}

export const RESPONSES: Wire & Answer = {
  headers: SSE_HEADERS,
  malformed: SSE_MALFORMED,
  open(job) {
    const inProgress = responseObject(job, false)
    const id = itemId(job)
    write(job, responsesEvent(job, 'response.created', { response: inProgress }))
    write(job, responsesEvent(job, 'response.in_progress', { response: inProgress }))
    write(
      job,
      responsesEvent(job, 'response.output_item.added', {
        output_index: 0,
        item: { id, type: 'message', status: 'in_progress', role: 'assistant', content: [] },
      }),
    )
    write(job, responsesEvent(job, 'response.content_part.added', { item_id: id, output_index: 0, content_index: 0, part: outputText('') }))
    job.prefix = `event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"${id}","output_index":0,"content_index":0,"delta":`
    job.suffix = ',"logprobs":[],"sequence_number":'
  },
  token(job, i) {
    return `${job.prefix}${tokenJson(i)}${job.suffix}${job.eventSeq++}}\n\n`
  },
  finish(job, terminate) {
    const id = itemId(job)
    const text = expectedContent(job.tokens)
    const position = { item_id: id, output_index: 0, content_index: 0 }
    write(job, responsesEvent(job, 'response.output_text.done', { ...position, text, logprobs: [] }))
    write(job, responsesEvent(job, 'response.content_part.done', { ...position, part: outputText(text) }))
    write(
      job,
      responsesEvent(job, 'response.output_item.done', {
        output_index: 0,
        item: { id, type: 'message', status: 'completed', role: 'assistant', content: [outputText(text)] },
      }),
    )
    if (terminate) {
      write(job, responsesEvent(job, job.capped ? 'response.incomplete' : 'response.completed', { response: responseObject(job, true) }))
    }
  },
  body(job) {
    return responseObject(job, true)
  },
}

// Anthropic Messages

function stopReason(job: Job): string {
  return job.capped ? 'max_tokens' : 'end_turn'
}

function anthropicUsage(job: Job, outputTokens: number): Fields {
  return { input_tokens: job.promptTokens, output_tokens: outputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 }
}

const ANTHROPIC_DELTA = 'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'

export const ANTHROPIC: Wire & Answer = {
  headers: SSE_HEADERS,
  malformed: SSE_MALFORMED,
  open(job) {
    const message: Fields = {
      id: job.id,
      type: 'message',
      role: 'assistant',
      model: job.model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
    }
    if (job.usage) message.usage = anthropicUsage(job, 1)
    write(job, sseEvent('message_start', { type: 'message_start', message }))
    write(job, sseEvent('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }))
    write(job, 'event: ping\ndata: {"type":"ping"}\n\n')
  },
  token(_job, i) {
    return `${ANTHROPIC_DELTA}${tokenJson(i)}}}\n\n`
  },
  finish(job, terminate) {
    write(job, 'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n')
    const delta: Fields = { type: 'message_delta', delta: { stop_reason: stopReason(job), stop_sequence: null } }
    if (job.usage) delta.usage = { output_tokens: job.tokens }
    write(job, sseEvent('message_delta', delta))
    if (terminate) write(job, 'event: message_stop\ndata: {"type":"message_stop"}\n\n')
  },
  body(job) {
    return withUsage(
      job,
      {
        id: job.id,
        type: 'message',
        role: 'assistant',
        model: job.model,
        content: [{ type: 'text', text: expectedContent(job.tokens) }],
        stop_reason: stopReason(job),
        stop_sequence: null,
      },
      () => anthropicUsage(job, job.tokens),
    )
  },
}

// Gemini

function geminiCandidate(job: Job, text: string, last: boolean): Fields {
  const candidate: Fields = { content: { parts: [{ text }], role: 'model' }, index: 0 }
  if (last) candidate.finishReason = job.capped ? 'MAX_TOKENS' : 'STOP'
  return candidate
}

function geminiObject(job: Job, text: string, last: boolean, completion: number): Fields {
  const chunk: Fields = { candidates: [geminiCandidate(job, text, last)], modelVersion: job.model }
  if (job.usage) {
    chunk.usageMetadata = {
      promptTokenCount: job.promptTokens,
      candidatesTokenCount: completion,
      totalTokenCount: job.promptTokens + completion,
    }
  }
  return chunk
}

function geminiLast(job: Job): string {
  return JSON.stringify(geminiObject(job, '', true, job.tokens))
}

/** The token chunk: `{"candidates":[…text…],"modelVersion":…,"usageMetadata":{…cumulative…}}`. */
function geminiOpen(job: Job): void {
  job.prefix = '{"candidates":[{"content":{"parts":[{"text":'
  job.suffix = job.usage
    ? `}],"role":"model"},"index":0}],"modelVersion":${job.modelJson},"usageMetadata":{"promptTokenCount":${job.promptTokens},"candidatesTokenCount":`
    : `}],"role":"model"},"index":0}],"modelVersion":${job.modelJson}}`
}

function geminiToken(job: Job, i: number): string {
  const head = job.prefix + tokenJson(i) + job.suffix
  return job.usage ? `${head}${i + 1},"totalTokenCount":${job.promptTokens + i + 1}}}` : head
}

export const GEMINI_SSE: Wire & Answer = {
  headers: SSE_HEADERS,
  malformed: SSE_MALFORMED,
  open: geminiOpen,
  token(job, i) {
    return `data: ${geminiToken(job, i)}\r\n\r\n`
  },
  finish(job, terminate) {
    if (terminate) write(job, `data: ${geminiLast(job)}\r\n\r\n`)
  },
  body(job) {
    return geminiObject(job, expectedContent(job.tokens), true, job.tokens)
  },
}

/** `:streamGenerateContent` without `alt=sse`: a JSON array written element by element. */
export const GEMINI_ARRAY: Wire = {
  headers: { 'content-type': 'application/json' },
  malformed: ',\r\n{not json',
  open: geminiOpen,
  token(job, i) {
    return (i === 0 ? '[' : ',\r\n') + geminiToken(job, i)
  },
  finish(job, terminate) {
    if (terminate) write(job, `${job.tokens === 0 ? '[' : ',\r\n'}${geminiLast(job)}]`)
  },
}

// Hugging Face TGI

function tgiDetails(job: Job): Fields {
  return { finish_reason: job.capped ? 'length' : 'eos_token', generated_tokens: job.tokens, seed: null }
}

function tgiEnd(job: Job): string {
  return `,"generated_text":${JSON.stringify(expectedContent(job.tokens))},"details":${job.usage ? JSON.stringify(tgiDetails(job)) : 'null'}}\n\n`
}

export const TGI: Wire & Answer = {
  headers: SSE_HEADERS,
  malformed: SSE_MALFORMED,
  open() {},
  token(job, i) {
    const head = `data:{"index":${i},"token":{"id":${i},"text":${tokenJson(i)},"logprob":-0.1,"special":false}`
    return i === job.tokens - 1 && job.fault !== 'no-done' ? head + tgiEnd(job) : `${head},"generated_text":null,"details":null}\n\n`
  },
  finish(job, terminate) {
    if (terminate && job.tokens === 0) write(job, `data:{"index":0,"token":{"id":0,"text":"","logprob":0,"special":true}${tgiEnd(job)}`)
  },
  body(job) {
    const body: Fields = { generated_text: expectedContent(job.tokens) }
    if (job.usage) body.details = tgiDetails(job)
    return body
  },
}
