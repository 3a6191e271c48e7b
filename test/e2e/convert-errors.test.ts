// Errors in the client's own API, whatever the upstream speaks: an upstream's error answer (400, 429 with
// Retry-After, 500, 503, 529) reaches each official SDK as its typed error with the upstream's message; a request the
// upstream's API cannot represent is a 400 in the client's shape naming the field, and the upstream is never asked;
// a failure after the commit point (a cut connection, an in-band error event) surfaces as the SDK's stream error.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import Anthropic from '@anthropic-ai/sdk'
import { ApiError } from '@google/genai'
import { expectedContent, type MockBehavior, type MockUpstream } from '@llmproxy/mock-upstream'
import OpenAI from 'openai'
import {
  anthropicClient,
  ask,
  behave,
  CLIENT_APIS,
  type ClientApi,
  type ConvertGateway,
  geminiClient,
  openaiClient,
  startConvertGateway,
} from './convert-helpers.js'

const MODEL: Record<ClientApi, string> = { openai: 'gpt-4o', anthropic: 'claude-sonnet', gemini: 'gemini-flash' }
const UPSTREAM_MODEL: Record<ClientApi, string> = {
  openai: 'gpt-4o-2024-08-06',
  anthropic: 'claude-sonnet-4-6',
  gemini: 'gemini-2.5-flash',
}

/**
 * The model of one 429 case: a 429 with a Retry-After holds its upstream back for its upstream model (the next request
 * for it gets the gateway's 429 without reaching the upstream), so each case asks for a model of its own.
 */
function rateLimitedModel(client: ClientApi, upstream: ClientApi, stream: boolean): string {
  return `${MODEL[upstream]}-429-${client}-${stream ? 'stream' : 'json'}`
}

let gw: ConvertGateway
before(async () => {
  gw = await startConvertGateway(
    { openai: { protocol: 'openai' }, anthropic: { protocol: 'anthropic' }, gemini: { protocol: 'gemini' } },
    CLIENT_APIS.flatMap((upstream) => [
      { name: MODEL[upstream], upstreams: [upstream], upstreamModel: UPSTREAM_MODEL[upstream] },
      ...CLIENT_APIS.flatMap((client) =>
        [false, true].map((stream) => {
          const name = rateLimitedModel(client, upstream, stream)
          return { name, upstreams: [upstream], upstreamModel: `${UPSTREAM_MODEL[upstream]}-${name}` }
        }),
      ),
    ]),
    // One attempt: the upstream's answer is what the client gets (failover has its own tests).
    { retry: { attempts: 1 } },
  )
})
after(() => gw.close())

/** The SDK error class each client API raises for a status. */
function errorClassFor(client: ClientApi, status: number): new (...args: never[]) => Error {
  switch (client) {
    case 'openai':
      return status === 400 ? OpenAI.BadRequestError : status === 429 ? OpenAI.RateLimitError : OpenAI.InternalServerError
    case 'anthropic':
      if (status === 400) return Anthropic.BadRequestError
      if (status === 429) return Anthropic.RateLimitError
      if (status === 503) return Anthropic.ServiceUnavailableError
      if (status === 529) return Anthropic.OverloadedError
      return Anthropic.InternalServerError
    case 'gemini':
      return ApiError
  }
}

/** The status the SDK error carries. */
function statusOf(err: unknown): number | undefined {
  return (err as { status?: number }).status
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof Error, String(err))
    return err
  }
  assert.fail('expected the request to fail')
}

for (const client of CLIENT_APIS) {
  for (const upstream of CLIENT_APIS) {
    test(`${client} SDK, ${upstream} upstream answers 400, 429 (Retry-After), 500, 503, 529: the SDK's typed error with the upstream's message`, async () => {
      for (const stream of [false, true]) {
        for (const status of [400, 429, 500, 503, 529]) {
          const what = `${stream ? 'streamed' : 'not streamed'}, ${status}`
          gw.reset()
          const behavior: MockBehavior = status === 429 ? { status, retryAfter: 7 } : { status }
          const model = status === 429 ? rateLimitedModel(client, upstream, stream) : MODEL[upstream]
          const err = await rejection(ask(client, gw.url, model, { stream, headers: behave(behavior) }))
          assert.ok(err instanceof errorClassFor(client, status), `${what}: ${err.constructor.name} ${err.message}`)
          assert.equal(statusOf(err), status, what)
          assert.match(err.message, new RegExp(`Mock error \\(status ${status}\\)`), what)
          if (status === 429 && client !== 'gemini') {
            // @google/genai's ApiError has no headers; the other two SDKs expose them.
            const headers = (err as { headers?: Headers }).headers
            assert.equal(headers?.get('retry-after'), '7', what)
          }
          assert.equal(gw.mocks[upstream]?.requests.length, 1, what)
          const record = await gw.record()
          assert.equal(record.status, status, what)
          assert.equal(record.clientApi, client, what)
        }
      }
    })
  }
}

// ── requests the upstream's API cannot represent ────────────────────────────────────────────────

test('OpenAI SDK: n: 2 to an Anthropic model is a 400 naming "n", and Anthropic is never asked', async () => {
  gw.reset()
  const err = await rejection(
    openaiClient(gw.url).chat.completions.create({ model: MODEL.anthropic, n: 2, messages: [{ role: 'user', content: 'Hi' }] }),
  )
  assert.ok(err instanceof OpenAI.BadRequestError, err.message)
  assert.equal(err.param, 'n')
  assert.equal(err.code, 'llmproxy_not_convertible')
  assert.match(err.message, /\bn > 1\b/)
  assert.equal(gw.mocks.anthropic?.requests.length, 0)
})

test("a field of the wrong type in a converted request is the client's own invalid request, not something the upstream lacks", async () => {
  gw.reset()
  const openaiErr = await rejection(
    openaiClient(gw.url).chat.completions.create({
      model: MODEL.anthropic,
      max_tokens: '10' as unknown as number,
      messages: [{ role: 'user', content: 'Hi' }],
    }),
  )
  assert.ok(openaiErr instanceof OpenAI.BadRequestError, openaiErr.message)
  assert.equal(openaiErr.code, 'llmproxy_invalid_request')
  assert.equal(openaiErr.param, 'max_tokens')
  assert.equal(openaiErr.message, '400 max_tokens must be a number.')
  const anthropicErr = await rejection(
    anthropicClient(gw.url).messages.create({
      model: MODEL.openai,
      max_tokens: 10,
      messages: [{ role: 'user', content: 5 as unknown as string }],
    }),
  )
  assert.ok(anthropicErr instanceof Anthropic.BadRequestError, anthropicErr.message)
  const body = anthropicErr.error as { error: { type: string; message: string } }
  assert.equal(body.error.type, 'invalid_request_error')
  assert.equal(body.error.message, 'messages[0].content must be a string or an array.')
  assert.equal(gw.mocks.anthropic?.requests.length, 0)
  assert.equal(gw.mocks.openai?.requests.length, 0)
})

test('OpenAI SDK: an http:// image URL to a Gemini model is a 400 naming the part, and Gemini is never asked', async () => {
  gw.reset()
  const err = await rejection(
    openaiClient(gw.url).chat.completions.create({
      model: MODEL.gemini,
      stream: true,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is in this picture?' },
            { type: 'image_url', image_url: { url: 'http://example.com/cat.png' } },
          ],
        },
      ],
    }),
  )
  assert.ok(err instanceof OpenAI.BadRequestError, err.message)
  assert.equal(err.param, 'messages[0].content[1].image_url')
  assert.match(err.message, /https/)
  assert.equal(gw.mocks.gemini?.requests.length, 0)
})

test('Anthropic SDK: an image by a URL without a media type to a Gemini model is a 400 in Anthropic shape naming the block', async () => {
  gw.reset()
  const err = await rejection(
    anthropicClient(gw.url)
      .messages.stream({
        model: MODEL.gemini,
        max_tokens: 100,
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'Describe it' },
              { type: 'image', source: { type: 'url', url: 'https://example.com/render?id=42' } },
            ],
          },
        ],
      })
      .finalMessage(),
  )
  assert.ok(err instanceof Anthropic.BadRequestError, err.message)
  assert.equal((err.error as { error?: { type?: string } } | undefined)?.error?.type, 'invalid_request_error')
  assert.match(err.message, /messages\[0\]\.content\[1\]/)
  assert.equal(gw.mocks.gemini?.requests.length, 0)
})

test('Gemini SDK: candidateCount 2 to an Anthropic model, responseLogprobs to an OpenAI one: a 400 ApiError naming the field', async () => {
  gw.reset()
  const gemini = geminiClient(gw.url)
  const candidates = await rejection(
    gemini.models.generateContent({ model: MODEL.anthropic, contents: 'Hi', config: { candidateCount: 2 } }),
  )
  assert.ok(candidates instanceof ApiError, candidates.message)
  assert.equal(candidates.status, 400)
  assert.match(candidates.message, /generationConfig\.candidateCount/)
  assert.match(candidates.message, /INVALID_ARGUMENT/)
  const logprobs = await rejection(
    gemini.models.generateContentStream({ model: MODEL.openai, contents: 'Hi', config: { responseLogprobs: true } }),
  )
  assert.ok(logprobs instanceof ApiError, logprobs.message)
  assert.equal(logprobs.status, 400)
  assert.match(logprobs.message, /generationConfig\.responseLogprobs/)
  assert.equal(gw.mocks.anthropic?.requests.length, 0)
  assert.equal(gw.mocks.openai?.requests.length, 0)
})

// ── failures after the commit point ─────────────────────────────────────────────────────────────

/** Streams through the SDK, keeping the text that arrived before the stream failed. */
async function streamUntilError(client: ClientApi, model: string, behavior: MockBehavior): Promise<{ text: string; error: unknown }> {
  const headers = behave(behavior)
  let text = ''
  try {
    switch (client) {
      case 'openai': {
        const stream = await openaiClient(gw.url).chat.completions.create(
          { model, stream: true, messages: [{ role: 'user', content: 'Tell me a story' }] },
          { headers },
        )
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ''
        break
      }
      case 'anthropic': {
        const stream = anthropicClient(gw.url).messages.stream(
          { model, max_tokens: 100, messages: [{ role: 'user', content: 'Tell me a story' }] },
          { headers },
        )
        stream.on('text', (delta) => {
          text += delta
        })
        await stream.finalMessage()
        break
      }
      case 'gemini': {
        const stream = await geminiClient(gw.url).models.generateContentStream({
          model,
          contents: 'Tell me a story',
          config: { httpOptions: { headers } },
        })
        for await (const chunk of stream) text += chunk.candidates?.[0]?.content?.parts?.map((p) => p.text ?? '').join('') ?? ''
        break
      }
    }
  } catch (error) {
    return { text, error }
  }
  return { text, error: undefined }
}

/** The SDK's error class for an error event inside a stream. */
function streamErrorClass(client: ClientApi): new (...args: never[]) => Error {
  return client === 'openai' ? OpenAI.APIError : client === 'anthropic' ? Anthropic.APIError : ApiError
}

const UPSTREAM_EVENT_MESSAGE: Record<ClientApi, string> = {
  openai: 'The server had an error while processing your request. Sorry about that!',
  anthropic: 'Overloaded',
  gemini: 'The model is overloaded. Please try again later.',
}

for (const client of CLIENT_APIS) {
  for (const upstream of CLIENT_APIS) {
    test(`${client} SDK, ${upstream} upstream fails mid-stream (cut, in-band error event): the SDK's stream error, never a complete-looking answer`, async () => {
      for (const fault of ['cut', 'error-event'] as const) {
        gw.reset()
        const { text, error } = await streamUntilError(client, MODEL[upstream], { tokens: 6, fault, faultAfter: 2 })
        assert.ok(error instanceof streamErrorClass(client), `${fault}: ${String(error)}`)
        assert.equal(text, expectedContent(2), fault)
        // The upstream's own words reach the client when it said any.
        if (fault === 'error-event')
          assert.match((error as Error).message, new RegExp(UPSTREAM_EVENT_MESSAGE[upstream].replace(/[.!]/g, '\\$&')), fault)
        const mock = gw.mocks[upstream] as MockUpstream
        assert.equal(mock.requests.length, 1, fault)
        const record = await gw.record()
        assert.equal(record.status, 200, fault)
        assert.equal(record.clientApi, client, fault)
        assert.ok(record.error !== undefined, `${fault}: the record says the stream failed`)
      }
    })
  }
}
