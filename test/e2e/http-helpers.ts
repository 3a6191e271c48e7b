// Small HTTP and polling helpers shared by the access and multi-instance e2e tests.

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Polls `probe` until `accept` holds for its value; the error names the last value seen. */
export async function pollUntil<T>(probe: () => Promise<T>, accept: (value: T) => boolean, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (accept(value)) return value
    if (Date.now() > deadline) {
      const last = JSON.stringify(value) ?? String(value)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}; last value: ${last.length > 300 ? `${last.slice(0, 300)}…` : last}`,
      )
    }
    await sleep(25)
  }
}

export interface HttpResult {
  status: number
  headers: Headers
  body: unknown
  text: string
}

/** A JSON POST; the body is sent exactly as given (its byte length is the content-length). */
export async function postJson(url: string, body: string, headers: Record<string, string> = {}): Promise<HttpResult> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
  const text = await res.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, headers: res.headers, body: parsed, text }
}

/** `body.error` of an OpenAI-shaped error, asserting the shape loosely (callers check the values). */
export function errorOf(result: HttpResult): { message: unknown; type: unknown; code: unknown } {
  const body = result.body
  if (body === null || typeof body !== 'object' || !('error' in body)) throw new Error(`not an error body: ${result.text}`)
  const error = (body as { error: unknown }).error
  if (error === null || typeof error !== 'object') throw new Error(`not an error body: ${result.text}`)
  const e = error as Record<string, unknown>
  return { message: e.message, type: e.type, code: e.code }
}
