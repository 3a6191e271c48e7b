/** Hugging Face TGI: /generate and /generate_stream. */
import type { Fields } from './content.js'
import type { Job } from './job.js'
import { type Answer, SSE_HEADERS, SSE_MALFORMED, type Wire } from './wire.js'

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
