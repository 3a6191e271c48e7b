import type { Fields } from './content.js'
import type { Job } from './job.js'

/** A non-streamed answer format. */
export interface Answer {
  /** The JSON body of the answer. */
  body(job: Job): unknown
}

/** A streamed answer format: each event is written with one `job.write`. */
export interface Wire {
  readonly headers: Readonly<Record<string, string>>
  /** SSE framing (the `lineEnding` behavior applies); false for Gemini's JSON array. */
  readonly sse: boolean
  /** What the `malformed` fault writes. */
  readonly malformed: string
  /** Writes the events due before the first step, and sets `job.prefix` / `job.suffix`. */
  open(job: Job): void
  /** The event that carries text token `i`. */
  token(job: Job, i: number): string
  /** The event that carries reasoning token `i` (formats that reason: chat, Anthropic, Gemini). */
  reasoning?(job: Job, i: number): string
  /** Writes tool call `c` but its last event, and returns that one (formats that call tools: chat, Anthropic, Gemini). */
  toolCall?(job: Job, c: number): string
  /** Writes the events after the last step; `terminate` is false under the `no-done` fault. */
  finish(job: Job, terminate: boolean): void
  /** The in-stream error event of the `error-event` fault (the stream then ends). */
  error(job: Job): string
}

export const SSE_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' }
export const SSE_MALFORMED = 'data: {not json\n\n'

export function sseEvent(name: string, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`
}

export function withUsage(job: Job, body: Fields, usage: () => Fields): Fields {
  if (job.usage) body.usage = usage()
  return body
}
