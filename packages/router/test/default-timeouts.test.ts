// The timeouts a gateway has when its config sets none. Reasoning models and long prompts on a busy server send
// nothing for minutes, before their first token and between two events: a default bound of 30 s failed them where a
// direct connection answers. Meanwhile the client gets its heartbeat (every 5 s by default), so that a proxy in front
// does not cut the wait. Real sockets; the clock (timers and performance.now) is moved by hand, so that minutes pass in
// milliseconds.
import assert from 'node:assert/strict'
import { type TestContext, test } from 'node:test'
import { DONE, finish, role, scripted, sse, text, upstream } from './scripted.js'

/** A promise and the function that settles it. */
function gate(): { opened: Promise<void>; open(): void } {
  let open = () => {}
  const opened = new Promise<void>((resolve) => {
    open = resolve
  })
  return { opened, open }
}

/** Real time, while the clock is under the test's hand: for the sockets to carry what was sent. */
const realSetTimeout = setTimeout
const settle = () => new Promise((resolve) => realSetTimeout(resolve, 100))

/** Timers and performance.now() under the test's hand: the function returned moves both. */
function handClock(t: TestContext): (ms: number) => void {
  const now = performance.now.bind(performance)
  let skipped = 0
  t.mock.timers.enable({ apis: ['setTimeout'] })
  t.mock.method(performance, 'now', () => now() + skipped)
  return (ms) => {
    skipped += ms
    t.mock.timers.tick(ms)
  }
}

test('no timeouts configured: a first token 31 s after the headers, then 31 s of silence, are waited for with heartbeats; 300 s without a first token is a stall', async (t) => {
  const asked = gate()
  const firstToken = gate()
  const rest = gate()
  const silentAsked = gate()
  const g = await scripted(
    [
      upstream('thinking', 'openai', async (res) => {
        sse(res)
        res.flushHeaders()
        asked.open()
        await firstToken.opened
        res.write(role + text('Thought'))
        await rest.opened
        res.end(text(' it over.') + finish() + DONE)
      }),
      upstream('silent', 'openai', (res) => {
        sse(res)
        res.flushHeaders()
        silentAsked.open()
      }),
    ],
    [
      { name: 'thinking', upstreams: ['thinking'] },
      { name: 'silent', upstreams: ['silent'] },
    ],
    { retry: { attempts: 1 } },
  )
  const advance = handClock(t)
  const streamed = (model: string) =>
    fetch(`${g.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    })
  try {
    const response = streamed('thinking')
    await asked.opened
    await settle()
    advance(31_000)
    firstToken.open()
    const res = await response
    assert.equal(res.status, 200)
    const reader = (res.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream()).getReader()
    let answer = ''
    while (!answer.includes('Thought')) answer += (await reader.read()).value ?? ''
    // Its stream opened 5 s after the request, with a heartbeat (the clock moved once: one beat).
    assert.ok(answer.startsWith(': keep-alive\n\ndata: '), answer)
    advance(31_000)
    rest.open()
    for (let part = await reader.read(); !part.done; part = await reader.read()) answer += part.value
    assert.ok(answer.includes('"content":" it over."') && answer.endsWith(DONE), answer)
    assert.ok(!answer.includes('event: error'), answer)

    // The bound is still there: 300 s.
    const stalled = streamed('silent')
    await silentAsked.opened
    await settle()
    advance(299_000)
    await settle()
    assert.equal(g.records.length, 1, 'no stall before 300 s')
    advance(1_000)
    // Held open since 5 s: the stall is an in-band error.
    const failed = await stalled
    assert.equal(failed.status, 200)
    const body = await failed.text()
    assert.ok(body.startsWith(': keep-alive\n\n') && body.endsWith('\n\n'), body)
    assert.match(body, /event: error\ndata: \{"error":\{[^\n]*"code":"llmproxy_upstream_timeout"/)
    assert.equal(g.records[1]?.error?.code, 'llmproxy_upstream_timeout')
  } finally {
    t.mock.timers.reset()
    await g.close()
  }
})
