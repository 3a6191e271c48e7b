import { performance } from 'node:perf_hooks'
import { type Dispatcher, request } from 'undici'
import type { MockUpstream } from '../src/index.js'
import { parseSse } from '../src/testing.js'

export interface Answer {
  status: number
  headers: Dispatcher.ResponseData['headers']
  text: string
}

/** POSTs JSON and reads the whole answer. */
/** What every client of a route sends: JSON, and Anthropic's version header on its routes (the real API requires it). */
function baseHeaders(path: string): Record<string, string> {
  return path.startsWith('/v1/messages')
    ? { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' }
    : { 'content-type': 'application/json' }
}

export async function post(
  mock: MockUpstream,
  path: string,
  body: unknown,
  headers: Record<string, string | undefined> = {},
): Promise<Answer> {
  const res = await request(`${mock.url}${path}`, {
    method: 'POST',
    headers: { ...baseHeaders(path), ...headers },
    body: JSON.stringify(body),
  })
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
}

export async function get(mock: MockUpstream, path: string): Promise<Answer> {
  const res = await request(`${mock.url}${path}`)
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() }
}

export { parseSse, type SseEvent } from '../src/testing.js'

/** The JSON payloads of an SSE text (`[DONE]` excluded). */
export function sseJson(text: string): Record<string, unknown>[] {
  return parseSse(text)
    .filter((e) => e.data !== '[DONE]')
    .map((e) => JSON.parse(e.data) as Record<string, unknown>)
}

export interface TimedStream {
  status: number
  headersAt: number
  chunks: { at: number; text: string }[]
  text: string
}

/** POSTs JSON and reads the streamed answer, noting when each chunk arrived. */
export async function postTimed(mock: MockUpstream, path: string, body: unknown): Promise<TimedStream> {
  const res = await request(`${mock.url}${path}`, {
    method: 'POST',
    headers: baseHeaders(path),
    body: JSON.stringify(body),
  })
  const headersAt = performance.now()
  const chunks: { at: number; text: string }[] = []
  for await (const chunk of res.body) chunks.push({ at: performance.now(), text: String(chunk) })
  return { status: res.statusCode, headersAt, chunks, text: chunks.map((c) => c.text).join('') }
}

/** A behavior as an `x-mock-behavior` header value: JSON with non-ASCII characters escaped (headers are Latin-1). */
export function behaviorHeader(behavior: object): string {
  return JSON.stringify(behavior).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
