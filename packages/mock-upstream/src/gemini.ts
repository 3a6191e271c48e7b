/** Gemini generateContent / streamGenerateContent (SSE or a JSON array): thought, text and functionCall parts. */
import { expectedReasoning, type Fields, reasoningToken, signatureFor } from './content.js'
import { faultError } from './errors.js'
import type { Finish, Job } from './job.js'
import { type Answer, SSE_HEADERS, SSE_MALFORMED, type Wire } from './wire.js'

const FINISH_REASONS: Readonly<Record<Finish, string>> = {
  stop: 'STOP',
  length: 'MAX_TOKENS',
  tool_calls: 'STOP',
  content_filter: 'SAFETY',
  stop_sequence: 'STOP',
  malformed_function_call: 'MALFORMED_FUNCTION_CALL',
  pause: 'STOP',
}

/**
 * Gemini's usage: `candidatesTokenCount` excludes the thoughts (`thoughtsTokenCount`), `promptTokenCount` includes
 * the cached part (`cachedContentTokenCount`); the optional counts appear only when not zero, as Gemini does.
 */
function geminiUsage(job: Job, candidates: number, thoughts: number): Fields {
  const usage: Fields = {
    promptTokenCount: job.promptTokens,
    candidatesTokenCount: candidates,
    totalTokenCount: job.promptTokens + candidates + thoughts,
  }
  if (thoughts > 0) usage.thoughtsTokenCount = thoughts
  if (job.cachedTokens > 0) usage.cachedContentTokenCount = job.cachedTokens
  return usage
}

/** A response chunk (or the whole answer) carrying `parts`; `last` adds the finish reason. */
function geminiObject(job: Job, parts: Fields[], last: boolean, candidates: number, thoughts: number): Fields {
  const candidate: Fields = { content: { parts, role: 'model' }, index: 0 }
  if (last) {
    candidate.finishReason = FINISH_REASONS[job.finish]
    if (job.finish === 'malformed_function_call')
      candidate.finishMessage = 'Malformed function call: the mock upstream was asked to produce one.'
  }
  const chunk: Fields = { candidates: [candidate] }
  if (job.usage) chunk.usageMetadata = geminiUsage(job, candidates, thoughts)
  chunk.modelVersion = job.model
  chunk.responseId = job.id
  return chunk
}

/** Candidate tokens up to and including tool call `c`: the text and the arguments of the calls so far. */
function candidatesThrough(job: Job, c: number): number {
  let count = job.tokens
  for (let k = 0; k <= c; k++) count += job.calls[k]?.fragments.length ?? 0
  return count
}

function functionCallPart(job: Job, c: number): Fields | null {
  const call = job.calls[c]
  if (call === undefined) return null
  const part: Fields = { functionCall: { name: call.name, args: call.args } }
  // As Gemini does: the first function call of a turn carries the thought signature.
  if (c === 0) part.thoughtSignature = signatureFor(job.reasoning)
  return part
}

/** The token chunk: prefix, token, suffix, text tokens so far, total, tail. */
function geminiOpen(job: Job): void {
  const ids = `"modelVersion":${job.modelJson},"responseId":"${job.id}"}`
  job.prefix = '{"candidates":[{"content":{"parts":[{"text":'
  if (!job.usage) {
    job.suffix = `}],"role":"model"},"index":0}],${ids}`
    return
  }
  job.suffix = `}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":${job.promptTokens},"candidatesTokenCount":`
  const thoughts = job.reasoning > 0 ? `,"thoughtsTokenCount":${job.reasoning}` : ''
  const cached = job.cachedTokens > 0 ? `,"cachedContentTokenCount":${job.cachedTokens}` : ''
  job.tail = `${thoughts}${cached}},${ids}`
}

function geminiToken(job: Job, i: number): string {
  const head = job.prefix + job.tokenJson(i) + job.suffix
  if (!job.usage) return head
  const count = i - job.from + 1
  return `${head}${count},"totalTokenCount":${job.promptTokens + job.reasoning + count}${job.tail}`
}

function geminiReasoning(job: Job, i: number): string {
  const part: Fields = { text: reasoningToken(i), thought: true }
  if (i === job.reasoning - 1) part.thoughtSignature = signatureFor(job.reasoning)
  return JSON.stringify(geminiObject(job, [part], false, 0, i + 1))
}

function geminiToolCall(job: Job, c: number): string {
  const part = functionCallPart(job, c)
  return part === null ? '' : JSON.stringify(geminiObject(job, [part], false, candidatesThrough(job, c), job.reasoning))
}

function geminiLast(job: Job): string {
  return JSON.stringify(geminiObject(job, [{ text: '' }], true, job.tokens + job.toolTokens, job.reasoning))
}

function geminiError(job: Job): string {
  return JSON.stringify(faultError(job, 'gemini').body)
}

function sse(json: string): string {
  return `data: ${json}\r\n\r\n`
}

export const GEMINI_SSE: Wire & Answer = {
  headers: SSE_HEADERS,
  sse: true,
  malformed: SSE_MALFORMED,
  open: geminiOpen,
  token(job, i) {
    return sse(geminiToken(job, i))
  },
  reasoning(job, i) {
    return sse(geminiReasoning(job, i))
  },
  toolCall(job, c) {
    return sse(geminiToolCall(job, c))
  },
  finish(job, terminate) {
    if (terminate) job.write(sse(geminiLast(job)))
  },
  error(job) {
    return sse(geminiError(job))
  },
  body(job) {
    const parts: Fields[] = []
    if (job.reasoning > 0)
      parts.push({ text: expectedReasoning(job.reasoning), thought: true, thoughtSignature: signatureFor(job.reasoning) })
    if (job.tokens > 0 || (job.reasoning === 0 && job.calls.length === 0)) parts.push({ text: job.answerText() })
    for (let c = 0; c < job.calls.length; c++) {
      const part = functionCallPart(job, c)
      if (part !== null) parts.push(part)
    }
    return geminiObject(job, parts, true, job.tokens + job.toolTokens, job.reasoning)
  },
}

/** The separator before the next element of the JSON array. */
function element(job: Job): string {
  return job.eventSeq++ === 0 ? '[' : ',\r\n'
}

/** `:streamGenerateContent` without `alt=sse`: a JSON array written element by element. */
export const GEMINI_ARRAY: Wire = {
  headers: { 'content-type': 'application/json' },
  sse: false,
  malformed: ',\r\n{not json',
  open: geminiOpen,
  token(job, i) {
    return element(job) + geminiToken(job, i)
  },
  reasoning(job, i) {
    return element(job) + geminiReasoning(job, i)
  },
  toolCall(job, c) {
    return element(job) + geminiToolCall(job, c)
  },
  finish(job, terminate) {
    if (terminate) job.write(`${element(job)}${geminiLast(job)}]`)
  },
  error(job) {
    return `${element(job)}${geminiError(job)}]`
  },
}
