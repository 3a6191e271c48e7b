// Streamed answers as the official SDKs surface them, and the bytes a client received with their arrival times.
import Anthropic from '@anthropic-ai/sdk'
import OpenAI from 'openai'

const question = [{ role: 'user' as const, content: 'hi' }]

/** An OpenAI client's streamed answer: its text, or what it threw. */
export async function openaiStream(url: string, model: string): Promise<string> {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'k', maxRetries: 0 })
  let out = ''
  try {
    const stream = await client.chat.completions.create({ model, stream: true, messages: question })
    for await (const part of stream) out += part.choices[0]?.delta.content ?? ''
  } catch (err) {
    return `${out}<<${(err as Error).message}>>`
  }
  return out
}

/** An Anthropic client's streamed answer (no thinking asked for): its text, or what it threw. */
export async function anthropicStream(url: string, model: string): Promise<string> {
  const client = new Anthropic({ baseURL: url, apiKey: 'k', maxRetries: 0 })
  let out = ''
  try {
    const stream = client.messages.stream({ model, max_tokens: 100, messages: question })
    stream.on('text', (delta) => {
      out += delta
    })
    await stream.finalMessage()
  } catch (err) {
    return `${out}<<${(err as Error).message}>>`
  }
  return out
}

/** A chunk the client received: when, and its bytes (the first entry: the request's start, no bytes). */
export interface Seen {
  at: number
  bytes: string
}

/** A fetch that notes when each chunk of the answer arrives, and its bytes, while the SDK reads it. */
export function timedFetch(seen: Seen[]): typeof fetch {
  return async (input, init) => {
    const sent = performance.now()
    const res = await fetch(input, init)
    const decoder = new TextDecoder()
    seen.push({ at: sent, bytes: '' })
    const timed = new TransformStream<Uint8Array, Uint8Array>({
      transform(part, controller) {
        seen.push({ at: performance.now(), bytes: decoder.decode(part, { stream: true }) })
        controller.enqueue(part)
      },
    })
    return new Response(res.body?.pipeThrough(timed) ?? null, { status: res.status, headers: res.headers })
  }
}
