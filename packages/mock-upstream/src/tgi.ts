/** Hugging Face TGI: /generate and /generate_stream, and its OpenAI-compatible chat route as it writes it. */
import type { Fields } from './content.js'
import type { Job } from './job.js'
import { type Answer, SSE_HEADERS, SSE_MALFORMED, type Wire, withUsage } from './wire.js'

function tgiFinishReason(job: Job): string {
  if (job.finish === 'length') return 'length'
  return job.finish === 'stop_sequence' ? 'stop_sequence' : 'eos_token'
}

function tgiDetails(job: Job): Fields {
  return { finish_reason: tgiFinishReason(job), generated_tokens: job.tokens, seed: null }
}

function tgiEnd(job: Job): string {
  return `,"generated_text":${JSON.stringify(job.answerText())},"details":${job.usage ? JSON.stringify(tgiDetails(job)) : 'null'}}\n\n`
}

export const TGI: Wire & Answer = {
  headers: SSE_HEADERS,
  sse: true,
  malformed: SSE_MALFORMED,
  open() {},
  token(job, i) {
    const head = `data:{"index":${i},"token":{"id":${i},"text":${job.tokenJson(i)},"logprob":-0.1,"special":false}`
    const last = i === job.from + job.tokens - 1 && job.fault !== 'no-done'
    return last ? head + tgiEnd(job) : `${head},"generated_text":null,"details":null}\n\n`
  },
  finish(job, terminate) {
    if (terminate && job.tokens === 0) job.write(`data:{"index":0,"token":{"id":0,"text":"","logprob":0,"special":true}${tgiEnd(job)}`)
  },
  error() {
    // TGI's in-stream error: `{"error": …, "error_type": …}`.
    return 'data:{"error":"Model is overloaded","error_type":"overloaded"}\n\n'
  },
  body(job) {
    const body: Fields = { generated_text: job.answerText() }
    if (job.usage) body.details = tgiDetails(job)
    return body
  },
}

// TGI's /v1/chat/completions (router/src/server.rs, chat.rs): axum's `data:` without a space, an empty id, the role
// in every delta, `"usage":null` on every chunk; the finish on the end-of-sequence token's chunk (empty content);
// with `stream_options.include_usage` a last chunk with `choices: []` and the usage (no cache or reasoning details).

const FINGERPRINT = '3.3.6-native'

/** `data:{"object":…,"id":"",…,"choices":[` */
function chatChunkHead(job: Job): string {
  return `data:{"object":"chat.completion.chunk","id":"","created":${job.created},"model":${job.modelJson},"system_fingerprint":"${FINGERPRINT}","choices":[`
}

function chatFinishReason(job: Job): string {
  // TGI's OpenAI routes say `stop` for its end-of-sequence token and keep its other reasons.
  const reason = tgiFinishReason(job)
  return reason === 'eos_token' ? 'stop' : reason
}

function chatUsage(job: Job): Fields {
  return { prompt_tokens: job.promptTokens, completion_tokens: job.outputTokens, total_tokens: job.promptTokens + job.outputTokens }
}

export const TGI_CHAT: Wire & Answer = {
  headers: SSE_HEADERS,
  sse: true,
  malformed: SSE_MALFORMED,
  open(job) {
    job.prefix = `${chatChunkHead(job)}{"index":0,"delta":{"role":"assistant","content":`
    job.suffix = '},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
  },
  token(job, i) {
    return job.prefix + job.tokenJson(i) + job.suffix
  },
  finish(job, terminate) {
    const head = chatChunkHead(job)
    job.write(
      `${head}{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":"${chatFinishReason(job)}"}],"usage":null}\n\n`,
    )
    if (job.includeUsage && job.usage) job.write(`${head}],"usage":${JSON.stringify(chatUsage(job))}}\n\n`)
    if (terminate) job.write('data:[DONE]\n\n')
  },
  error() {
    // TGI's error inside an OpenAI-compatible stream.
    return 'data:{"error":{"message":"Request failed during generation: Server error: Model is overloaded","http_status_code":422}}\n\n'
  },
  body(job) {
    const body = {
      object: 'chat.completion',
      id: '',
      created: job.created,
      model: job.model,
      system_fingerprint: FINGERPRINT,
      choices: [
        { index: 0, message: { role: 'assistant', content: job.answerText() }, logprobs: null, finish_reason: chatFinishReason(job) },
      ],
    }
    return withUsage(job, body, () => chatUsage(job))
  },
}
