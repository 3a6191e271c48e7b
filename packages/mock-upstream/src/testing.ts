import { connect } from 'node:net'

/** Polls `check` until it holds, or rejects after `timeoutMs` naming `what` (tests: never a fixed sleep). */
export async function eventually(check: () => boolean, timeoutMs = 2000, what = 'condition'): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/**
 * Sends raw bytes to a server and resolves with everything it answers until it closes the connection:
 * for tests that need a request exactly as written (HTTP clients rewrite some headers themselves).
 */
export function rawExchange(url: string, payload: string | Buffer, timeoutMs = 5000): Promise<string> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname)
    let out = ''
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`no close within ${timeoutMs} ms; got: ${out}`)))
    socket.on('data', (data: Buffer) => {
      out += data.toString()
    })
    socket.once('error', reject)
    socket.once('close', () => resolve(out))
    socket.write(payload)
  })
}

export interface SseEvent {
  event: string | null
  data: string
}

/**
 * Splits an SSE text into its events (`event:` and `data:` lines). Lines end with CRLF, LF or CR, as the SSE spec
 * allows; a blank line ends an event (a last event without one is kept).
 */
export function parseSse(text: string): SseEvent[] {
  const events: SseEvent[] = []
  let event: string | null = null
  let data: string[] = []
  let pending = false
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === '') {
      if (pending) events.push({ event, data: data.join('\n') })
      event = null
      data = []
      pending = false
    } else if (line.startsWith('event:')) {
      event = line.slice(6).trim()
      pending = true
    } else if (line.startsWith('data:')) {
      data.push(line.slice(5).replace(/^ /, ''))
      pending = true
    }
  }
  if (pending) events.push({ event, data: data.join('\n') })
  return events
}
