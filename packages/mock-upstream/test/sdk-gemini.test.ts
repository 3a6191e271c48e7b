/** The official `@google/genai` SDK pointed directly at the mock reads every shape it produces. */
import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, test } from 'node:test'
import { ApiError, type Content, FinishReason, type GenerateContentResponse, GoogleGenAI } from '@google/genai'
import {
  expectedContent,
  expectedReasoning,
  type MockBehavior,
  type MockUpstream,
  promptTokensFor,
  signatureFor,
  startMockUpstream,
} from '../src/index.js'
import { behaviorHeader } from './helpers.js'

const contents: Content[] = [{ role: 'user', parts: [{ text: 'What is the weather in Paris and in Rome?' }] }]
const calls = [
  { name: 'get_weather', arguments: { city: 'Paris' } },
  { name: 'get_weather', arguments: { city: 'Rome', days: [1, 2, 3] } },
]
const model = 'gemini-x'

/** Per-request config that sets the mock's behavior through its header. */
function behave(b: MockBehavior): { httpOptions: { headers: Record<string, string> } } {
  return { httpOptions: { headers: { 'x-mock-behavior': behaviorHeader(b) } } }
}

/** The text of the non-thought parts, and of the thought parts, of responses. */
function texts(responses: GenerateContentResponse[]): { answer: string; thoughts: string } {
  let answer = ''
  let thoughts = ''
  for (const res of responses) {
    for (const part of res.candidates?.[0]?.content?.parts ?? []) {
      if (part.thought === true) thoughts += part.text ?? ''
      else answer += part.text ?? ''
    }
  }
  return { answer, thoughts }
}

describe('@google/genai SDK against the mock', () => {
  let mock: MockUpstream
  let ai: GoogleGenAI
  before(async () => {
    mock = await startMockUpstream()
    ai = new GoogleGenAI({ apiKey: 'gm-test', httpOptions: { baseUrl: mock.url } })
  })
  beforeEach(() => mock.reset())
  after(() => mock.close())

  const rich: MockBehavior = { tokens: 3, reasoning: 2, toolCalls: calls, cachedTokens: 4 }
  const argumentTokens = calls.reduce((sum, c) => sum + Math.ceil(JSON.stringify(c.arguments).length / 8), 0)

  test('generateContent: thought, text and functionCall parts, usageMetadata, modelVersion, responseId', async () => {
    const res = await ai.models.generateContent({ model, contents, config: behave(rich) })
    assert.equal(mock.requests[0]?.path, `/v1beta/models/${model}:generateContent`)
    assert.deepEqual(texts([res]), { answer: expectedContent(3), thoughts: expectedReasoning(2) })
    assert.deepEqual(
      res.functionCalls?.map((c) => [c.name, c.args]),
      calls.map((c) => [c.name, c.arguments]),
    )
    const parts = res.candidates?.[0]?.content?.parts ?? []
    const signed = parts.filter((p) => p.thoughtSignature !== undefined)
    assert.deepEqual(
      signed.map((p) => [p.thought === true ? 'thought' : (p.functionCall?.name ?? 'text'), p.thoughtSignature]),
      [
        ['thought', signatureFor(2)],
        ['get_weather', signatureFor(2)],
      ],
      'the thought part and the first function call carry the signature',
    )
    assert.equal(res.candidates?.[0]?.finishReason, FinishReason.STOP)
    const prompt = promptTokensFor({ contents })
    assert.deepEqual(res.usageMetadata, {
      promptTokenCount: prompt,
      candidatesTokenCount: 3 + argumentTokens,
      thoughtsTokenCount: 2,
      cachedContentTokenCount: 4,
      totalTokenCount: prompt + 2 + 3 + argumentTokens,
    })
    assert.equal(res.modelVersion, model)
    assert.equal(typeof res.responseId, 'string')
  })

  test('generateContentStream: chunks that assemble into the same answer, usage cumulative', async () => {
    const chunks: GenerateContentResponse[] = []
    for await (const chunk of await ai.models.generateContentStream({ model, contents, config: behave(rich) })) chunks.push(chunk)
    assert.equal(mock.requests[0]?.path, `/v1beta/models/${model}:streamGenerateContent`)
    assert.deepEqual(texts(chunks), { answer: expectedContent(3), thoughts: expectedReasoning(2) })
    assert.deepEqual(
      chunks.flatMap((c) => c.functionCalls ?? []).map((c) => [c.name, c.args]),
      calls.map((c) => [c.name, c.arguments]),
    )
    const last = chunks.at(-1)
    assert.equal(last?.candidates?.[0]?.finishReason, FinishReason.STOP)
    assert.equal(last?.usageMetadata?.candidatesTokenCount, 3 + argumentTokens)
    assert.equal(last?.usageMetadata?.thoughtsTokenCount, 2)
    const counts = chunks.map((c) => c.usageMetadata?.totalTokenCount ?? 0)
    assert.deepEqual(
      counts,
      [...counts].sort((a, b) => a - b),
      'cumulative',
    )
    assert.ok(chunks.every((c) => c.responseId === chunks[0]?.responseId))
  })

  test('finish reasons: MAX_TOKENS from maxOutputTokens, SAFETY, MALFORMED_FUNCTION_CALL', async () => {
    const capped = await ai.models.generateContent({ model, contents, config: { maxOutputTokens: 2 } })
    assert.equal(capped.candidates?.[0]?.finishReason, FinishReason.MAX_TOKENS)
    assert.equal(capped.text, expectedContent(2))
    const unsafe = await ai.models.generateContent({ model, contents, config: behave({ finish: 'content_filter' }) })
    assert.equal(unsafe.candidates?.[0]?.finishReason, FinishReason.SAFETY)
    const chunks: GenerateContentResponse[] = []
    for await (const chunk of await ai.models.generateContentStream({
      model,
      contents,
      config: behave({ finish: 'malformed_function_call' }),
    })) {
      chunks.push(chunk)
    }
    assert.equal(chunks.at(-1)?.candidates?.[0]?.finishReason, FinishReason.MALFORMED_FUNCTION_CALL)
  })

  test('errors in Gemini shape: ApiError with the status; 429 carries RetryInfo; request checks; an in-stream error', async () => {
    const limited = await ai.models
      .generateContent({ model, contents, config: behave({ status: 429, retryAfter: 7 }) })
      .catch((e: unknown) => e)
    assert.ok(limited instanceof ApiError)
    assert.equal(limited.status, 429)
    const body = JSON.parse(limited.message)
    assert.equal(body.error.code, 429)
    assert.equal(body.error.status, 'RESOURCE_EXHAUSTED')
    assert.deepEqual(body.error.details, [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '7s' }])

    for (const [status, name] of [
      [401, 'UNAUTHENTICATED'],
      [403, 'PERMISSION_DENIED'],
      [404, 'NOT_FOUND'],
      [500, 'INTERNAL'],
      [503, 'UNAVAILABLE'],
    ] as const) {
      const error = await ai.models.generateContent({ model, contents, config: behave({ status }) }).catch((e: unknown) => e)
      assert.ok(error instanceof ApiError)
      assert.equal(error.status, status)
      assert.equal(JSON.parse(error.message).error.status, name)
    }

    const wrongRole = await ai.models
      .generateContent({ model, contents: [{ role: 'assistant', parts: [{ text: 'hi' }] }] })
      .catch((e: unknown) => e)
    assert.ok(wrongRole instanceof ApiError)
    assert.equal(wrongRole.status, 400)
    assert.deepEqual(JSON.parse(wrongRole.message).error, {
      code: 400,
      message: 'Please use a valid role: user, model.',
      status: 'INVALID_ARGUMENT',
    })

    const orphan: Content[] = [...contents, { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { c: 18 } } }] }]
    const orphaned = await ai.models.generateContent({ model, contents: orphan }).catch((e: unknown) => e)
    assert.ok(orphaned instanceof ApiError)
    assert.match(orphaned.message, /function response turn comes immediately after a function call turn/)

    const stream = await ai.models.generateContentStream({ model, contents, config: behave({ fault: 'error-event', faultAfter: 2 }) })
    const seen: GenerateContentResponse[] = []
    const failure = await (async () => {
      for await (const chunk of stream) seen.push(chunk)
    })().catch((e: unknown) => e)
    assert.ok(failure instanceof ApiError)
    assert.equal(failure.status, 503)
    assert.equal(texts(seen).answer, expectedContent(2))
  })

  test('a function call round trip passes the request checks', async () => {
    const history: Content[] = [
      ...contents,
      { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: { city: 'Paris' } }, thoughtSignature: signatureFor(0) }] },
      { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { celsius: 18 } } }] },
    ]
    const res = await ai.models.generateContent({
      model,
      contents: history,
      config: {
        systemInstruction: 'Be brief.',
        tools: [{ functionDeclarations: [{ name: 'get_weather', parameters: { type: 'object' } as never }] }],
      },
    })
    assert.equal(res.text, expectedContent(8))
  })

  test('prefill: a final model turn is continued', async () => {
    const prefix = expectedContent(5)
    const res = await ai.models.generateContent({ model, contents: [...contents, { role: 'model', parts: [{ text: prefix }] }] })
    assert.equal(prefix + res.text, expectedContent(8))
    assert.equal(res.usageMetadata?.candidatesTokenCount, 3)
    const refused = await ai.models
      .generateContent({
        model,
        contents: [...contents, { role: 'model', parts: [{ text: prefix }] }],
        config: behave({ rejectPrefill: true }),
      })
      .catch((e: unknown) => e)
    assert.ok(refused instanceof ApiError)
    assert.equal(refused.status, 400)
  })

  test('a gzip-compressed stream with CR line endings reads the same', async () => {
    for (const lineEnding of ['cr', 'crlf', 'lf'] as const) {
      const chunks: GenerateContentResponse[] = []
      for await (const chunk of await ai.models.generateContentStream({
        model,
        contents,
        config: behave({ ...rich, contentEncoding: 'gzip', lineEnding }),
      })) {
        chunks.push(chunk)
      }
      assert.deepEqual(texts(chunks), { answer: expectedContent(3), thoughts: expectedReasoning(2) }, lineEnding)
    }
  })
})
