/** Anthropic Messages: thinking, text and tool_use content blocks, streamed and not. */
import { expectedReasoning, type Fields, REDACTED_THINKING_DATA, reasoningJson, signatureFor } from './content.js'
import { faultError } from './errors.js'
import type { Finish, Job } from './job.js'
import { type Answer, SSE_HEADERS, sseEvent, type Wire, withUsage } from './wire.js'

const STOP_REASONS: Readonly<Record<Finish, string>> = {
  stop: 'end_turn',
  length: 'max_tokens',
  tool_calls: 'tool_use',
  content_filter: 'refusal',
  stop_sequence: 'stop_sequence',
  malformed_function_call: 'end_turn',
  pause: 'pause_turn',
}

/** The content block open in a stream (`job.block`). */
const NO_BLOCK = 0
const THINKING = 1
const TEXT = 2

/** The stop sequence that "matched": the request's first `stop_sequences` entry, when the finish is `stop_sequence`. */
function stopSequence(job: Job): string | null {
  if (job.finish !== 'stop_sequence') return null
  const sequences = job.body.stop_sequences
  const first: unknown = Array.isArray(sequences) ? sequences[0] : undefined
  return typeof first === 'string' ? first : null
}

function stopDetails(job: Job): Fields | null {
  return job.finish === 'content_filter' ? { type: 'refusal', category: null, explanation: null } : null
}

/** Anthropic's usage: `input_tokens` excludes the cache reads and writes (never more than `promptTokens`). */
function anthropicUsage(job: Job, outputTokens: number): Fields {
  return {
    input_tokens: job.promptTokens - job.cachedTokens - job.cacheWriteTokens,
    output_tokens: outputTokens,
    cache_creation_input_tokens: job.cacheWriteTokens,
    cache_read_input_tokens: job.cachedTokens,
  }
}

export function toolUseId(job: Job, c: number): string {
  return `toolu_mock_${job.rec.seq}_${c}`
}

/** A text block exists when there is text, or when there is nothing else to say. */
function hasTextBlock(job: Job): boolean {
  return job.tokens > 0 || (job.reasoning === 0 && job.calls.length === 0)
}

function startBlock(job: Job, kind: number): void {
  const index = job.blockIndex
  const block = kind === THINKING ? { type: 'thinking', thinking: '', signature: '' } : { type: 'text', text: '' }
  job.write(sseEvent('content_block_start', { type: 'content_block_start', index, content_block: block }))
  job.block = kind
  if (kind === TEXT) {
    job.prefix = `event: content_block_delta\ndata: {"type":"content_block_delta","index":${index},"delta":{"type":"text_delta","text":`
  }
}

/**
 * Closes the open block (a thinking block gets its signature first, as Anthropic sends it). A redacted_thinking block
 * follows a thinking block when asked: Anthropic streams it whole in its `content_block_start`.
 */
function closeBlock(job: Job): void {
  if (job.block === NO_BLOCK) return
  const index = job.blockIndex
  if (job.block === THINKING) {
    const delta = { type: 'signature_delta', signature: signatureFor(job.reasoning, job.redactedThinking) }
    job.write(sseEvent('content_block_delta', { type: 'content_block_delta', index, delta }))
  }
  job.write(`event: content_block_stop\ndata: {"type":"content_block_stop","index":${index}}\n\n`)
  if (job.block === THINKING && job.redactedThinking) {
    const redacted = index + 1
    const block = { type: 'redacted_thinking', data: REDACTED_THINKING_DATA }
    job.write(sseEvent('content_block_start', { type: 'content_block_start', index: redacted, content_block: block }))
    job.write(`event: content_block_stop\ndata: {"type":"content_block_stop","index":${redacted}}\n\n`)
    job.blockIndex++
  }
  job.block = NO_BLOCK
  job.blockIndex++
}

function message(job: Job, content: Fields[], final: boolean): Fields {
  return {
    id: job.id,
    type: 'message',
    role: 'assistant',
    model: job.model,
    content,
    stop_reason: final ? STOP_REASONS[job.finish] : null,
    stop_sequence: final ? stopSequence(job) : null,
    stop_details: final ? stopDetails(job) : null,
  }
}

export const ANTHROPIC: Wire & Answer = {
  headers: SSE_HEADERS,
  sse: true,
  malformed: 'event: content_block_delta\ndata: {not json\n\n',
  open(job) {
    const start = message(job, [], false)
    if (job.usage) start.usage = anthropicUsage(job, 1)
    job.write(sseEvent('message_start', { type: 'message_start', message: start }))
    if (job.reasoning > 0) startBlock(job, THINKING)
    else if (hasTextBlock(job)) startBlock(job, TEXT)
    job.write('event: ping\ndata: {"type":"ping"}\n\n')
  },
  reasoning(job, i) {
    return `event: content_block_delta\ndata: {"type":"content_block_delta","index":${job.blockIndex},"delta":{"type":"thinking_delta","thinking":${reasoningJson(i)}}}\n\n`
  },
  token(job, i) {
    if (job.block !== TEXT) {
      closeBlock(job)
      startBlock(job, TEXT)
    }
    return `${job.prefix}${job.tokenJson(i)}}}\n\n`
  },
  toolCall(job, c) {
    const call = job.calls[c]
    if (call === undefined) return ''
    closeBlock(job)
    const index = job.blockIndex
    const block = { type: 'tool_use', id: toolUseId(job, c), name: call.name, input: {} }
    job.write(sseEvent('content_block_start', { type: 'content_block_start', index, content_block: block }))
    for (const fragment of call.fragments) {
      job.write(
        sseEvent('content_block_delta', {
          type: 'content_block_delta',
          index,
          delta: { type: 'input_json_delta', partial_json: fragment },
        }),
      )
    }
    job.blockIndex++
    return `event: content_block_stop\ndata: {"type":"content_block_stop","index":${index}}\n\n`
  },
  finish(job, terminate) {
    closeBlock(job)
    const delta: Fields = {
      type: 'message_delta',
      delta: { stop_reason: STOP_REASONS[job.finish], stop_sequence: stopSequence(job), stop_details: stopDetails(job) },
    }
    if (job.usage) delta.usage = { output_tokens: job.outputTokens }
    job.write(sseEvent('message_delta', delta))
    if (terminate) job.write('event: message_stop\ndata: {"type":"message_stop"}\n\n')
  },
  error(job) {
    return sseEvent('error', faultError(job, 'anthropic').body)
  },
  body(job) {
    const content: Fields[] = []
    if (job.reasoning > 0) {
      const signature = signatureFor(job.reasoning, job.redactedThinking)
      content.push({ type: 'thinking', thinking: expectedReasoning(job.reasoning), signature })
      if (job.redactedThinking) content.push({ type: 'redacted_thinking', data: REDACTED_THINKING_DATA })
    }
    if (hasTextBlock(job)) content.push({ type: 'text', text: job.answerText() })
    job.calls.forEach((call, c) => {
      content.push({ type: 'tool_use', id: toolUseId(job, c), name: call.name, input: call.args })
    })
    return withUsage(job, message(job, content, true), () => anthropicUsage(job, job.outputTokens))
  },
}
