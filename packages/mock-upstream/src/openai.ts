/** OpenAI-compatible formats: chat completions (vLLM style reasoning), completions, Responses, embeddings. */
import { expectedReasoning, type Fields, reasoningJson } from './content.js'
import { faultError } from './errors.js'
import type { Finish, Job } from './job.js'
import { type Answer, SSE_HEADERS, SSE_MALFORMED, sseEvent, type Wire, withUsage } from './wire.js'

function openaiUsage(job: Job): Fields {
  const completion = job.outputTokens
  return {
    prompt_tokens: job.promptTokens,
    completion_tokens: completion,
    total_tokens: job.promptTokens + completion,
    prompt_tokens_details: { cached_tokens: job.cachedTokens },
    completion_tokens_details: { reasoning_tokens: job.reasoning },
  }
}

const FINISH_REASONS: Readonly<Record<Finish, string>> = {
  stop: 'stop',
  length: 'length',
  tool_calls: 'tool_calls',
  content_filter: 'content_filter',
  stop_sequence: 'stop',
  malformed_function_call: 'stop',
  pause: 'stop',
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
  job.write(`${head}${lastChoice}]${chunkTail(job)}`)
  if (job.includeUsage && job.usage) job.write(`${head}],"usage":${JSON.stringify(openaiUsage(job))}}\n\n`)
  if (terminate) job.write('data: [DONE]\n\n')
}

/** An error inside an OpenAI stream: a `data:` line carrying `{"error":…}`, as OpenAI and vLLM send it. */
function openaiError(job: Job): string {
  return `data: ${JSON.stringify(faultError(job, 'openai').body)}\n\n`
}

export function toolCallId(job: Job, c: number): string {
  return `call_mock_${job.rec.seq}_${c}`
}

function chatDelta(job: Job, delta: string): string {
  return `${chunkHead(job, 'chat.completion.chunk')}{"index":0,"delta":${delta},"logprobs":null,"finish_reason":null}]${chunkTail(job)}`
}

function chatMessage(job: Job): Fields {
  const calls = job.calls
  const message: Fields = { role: 'assistant', content: job.tokens === 0 && calls.length > 0 ? null : job.answerText(), refusal: null }
  if (job.reasoning > 0) message.reasoning_content = expectedReasoning(job.reasoning)
  if (calls.length > 0) {
    message.tool_calls = calls.map((call, c) => ({
      id: toolCallId(job, c),
      type: 'function',
      function: { name: call.name, arguments: call.argsJson },
    }))
  }
  return message
}

export const CHAT: Wire & Answer = {
  headers: SSE_HEADERS,
  sse: true,
  malformed: SSE_MALFORMED,
  open(job) {
    const head = chunkHead(job, 'chat.completion.chunk')
    const tail = chunkTail(job)
    job.prefix = `${head}{"index":0,"delta":{"content":`
    job.suffix = `},"logprobs":null,"finish_reason":null}]${tail}`
    job.write(`${head}{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]${tail}`)
  },
  token(job, i) {
    return job.prefix + job.tokenJson(i) + job.suffix
  },
  reasoning(job, i) {
    return chatDelta(job, `{"reasoning_content":${reasoningJson(i)}}`)
  },
  toolCall(job, c) {
    // As OpenAI streams a call: index, id, type and name with empty arguments first, then the arguments in fragments.
    const call = job.calls[c]
    if (call === undefined) return ''
    job.write(
      chatDelta(
        job,
        `{"tool_calls":[{"index":${c},"id":"${toolCallId(job, c)}","type":"function","function":{"name":${JSON.stringify(call.name)},"arguments":""}}]}`,
      ),
    )
    const fragments = call.fragments
    for (let f = 0; f < fragments.length - 1; f++) {
      job.write(chatDelta(job, `{"tool_calls":[{"index":${c},"function":{"arguments":${JSON.stringify(fragments[f])}}}]}`))
    }
    return chatDelta(job, `{"tool_calls":[{"index":${c},"function":{"arguments":${JSON.stringify(fragments.at(-1))}}}]}`)
  },
  finish(job, terminate) {
    openaiFinish(
      job,
      'chat.completion.chunk',
      `{"index":0,"delta":{},"logprobs":null,"finish_reason":"${FINISH_REASONS[job.finish]}"}`,
      terminate,
    )
  },
  error: openaiError,
  body(job) {
    return withUsage(
      job,
      {
        id: job.id,
        object: 'chat.completion',
        created: job.created,
        model: job.model,
        choices: [{ index: 0, message: chatMessage(job), logprobs: null, finish_reason: FINISH_REASONS[job.finish] }],
      },
      () => openaiUsage(job),
    )
  },
}

export const COMPLETIONS: Wire & Answer = {
  headers: SSE_HEADERS,
  sse: true,
  malformed: SSE_MALFORMED,
  open(job) {
    job.prefix = `${chunkHead(job, 'text_completion')}{"text":`
    job.suffix = `,"index":0,"logprobs":null,"finish_reason":null}]${chunkTail(job)}`
  },
  token(job, i) {
    return job.prefix + job.tokenJson(i) + job.suffix
  },
  finish(job, terminate) {
    openaiFinish(job, 'text_completion', `{"text":"","index":0,"logprobs":null,"finish_reason":"${FINISH_REASONS[job.finish]}"}`, terminate)
  },
  error: openaiError,
  body(job) {
    return withUsage(
      job,
      {
        id: job.id,
        object: 'text_completion',
        created: job.created,
        model: job.model,
        choices: [{ text: job.answerText(), index: 0, logprobs: null, finish_reason: FINISH_REASONS[job.finish] }],
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
    input_tokens_details: { cached_tokens: job.cachedTokens },
    output_tokens: job.outputTokens,
    output_tokens_details: { reasoning_tokens: job.reasoning },
    total_tokens: job.promptTokens + job.outputTokens,
  }
}

function outputText(text: string): Fields {
  return { type: 'output_text', text, annotations: [] }
}

/** Why a Responses answer is `incomplete`, or null when it is `completed`. */
function incompleteReason(job: Job): string | null {
  if (job.finish === 'length') return 'max_output_tokens'
  return job.finish === 'content_filter' ? 'content_filter' : null
}

function responseObject(job: Job, final: boolean): Fields {
  const incomplete = final ? incompleteReason(job) : null
  const base: Fields = {
    id: job.id,
    object: 'response',
    created_at: job.created,
    status: final ? (incomplete !== null ? 'incomplete' : 'completed') : 'in_progress',
    error: null,
    incomplete_details: incomplete !== null ? { reason: incomplete } : null,
    // Echoed from the request in every Response object, as OpenAI does (the client's own text rides in each).
    instructions: job.body.instructions ?? null,
    metadata: job.body.metadata ?? {},
    model: job.model,
    output: final
      ? [{ id: itemId(job), type: 'message', status: 'completed', role: 'assistant', content: [outputText(job.answerText())] }]
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
  sse: true,
  malformed: SSE_MALFORMED,
  open(job) {
    const inProgress = responseObject(job, false)
    const id = itemId(job)
    job.write(responsesEvent(job, 'response.created', { response: inProgress }))
    job.write(responsesEvent(job, 'response.in_progress', { response: inProgress }))
    job.write(
      responsesEvent(job, 'response.output_item.added', {
        output_index: 0,
        item: { id, type: 'message', status: 'in_progress', role: 'assistant', content: [] },
      }),
    )
    job.write(responsesEvent(job, 'response.content_part.added', { item_id: id, output_index: 0, content_index: 0, part: outputText('') }))
    job.prefix = `event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":"${id}","output_index":0,"content_index":0,"delta":`
    job.suffix = ',"logprobs":[],"sequence_number":'
  },
  token(job, i) {
    return `${job.prefix}${job.tokenJson(i)}${job.suffix}${job.eventSeq++}}\n\n`
  },
  finish(job, terminate) {
    const id = itemId(job)
    const text = job.answerText()
    const position = { item_id: id, output_index: 0, content_index: 0 }
    job.write(responsesEvent(job, 'response.output_text.done', { ...position, text, logprobs: [] }))
    job.write(responsesEvent(job, 'response.content_part.done', { ...position, part: outputText(text) }))
    job.write(
      responsesEvent(job, 'response.output_item.done', {
        output_index: 0,
        item: { id, type: 'message', status: 'completed', role: 'assistant', content: [outputText(text)] },
      }),
    )
    if (terminate) {
      const type = incompleteReason(job) !== null ? 'response.incomplete' : 'response.completed'
      job.write(responsesEvent(job, type, { response: responseObject(job, true) }))
    }
  },
  error(job) {
    // The Responses API's error event: `{"type":"error","code","message","param"}`.
    const { error } = faultError(job, 'openai').body as { error: { message: string; code: string | null } }
    return responsesEvent(job, 'error', { code: error.code ?? 'server_error', message: error.message, param: null })
  },
  body(job) {
    return responseObject(job, true)
  },
}
