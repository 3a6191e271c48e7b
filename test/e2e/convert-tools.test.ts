// Tools and reasoning across APIs, through the official SDKs: tool definitions and tool_choice reach the upstream
// in its own format; parallel tool calls come back to each SDK with parsed arguments and the ids the upstream gave
// (a Gemini thought signature riding in the id); the second turn's tool results reach the upstream in its format,
// matched to the right calls (sent in reverse order on purpose), with the signatures restored. Reasoning reaches the
// upstream as its own setting and comes back as each client's reasoning field, signatures included.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type Anthropic from '@anthropic-ai/sdk'
import { type Content, FunctionCallingConfigMode, type FunctionDeclaration, type Part, type ToolConfig } from '@google/genai'
import { expectedContent, expectedReasoning, type MockUpstream, signatureFor } from '@llmproxy/mock-upstream'
import type OpenAI from 'openai'
import {
  anthropicClient,
  ask,
  askAnthropic,
  askGemini,
  askOpenAI,
  behave,
  CLIENT_APIS,
  type ClientApi,
  type ConvertGateway,
  FINISH,
  geminiClient,
  openaiClient,
  type SdkAnswer,
  startConvertGateway,
  upstreamBody,
} from './convert-helpers.js'

const MODEL: Record<ClientApi, string> = { openai: 'gpt-4o', anthropic: 'claude-sonnet', gemini: 'gemini-flash' }

let gw: ConvertGateway
before(async () => {
  gw = await startConvertGateway({ openai: { protocol: 'openai' }, anthropic: { protocol: 'anthropic' }, gemini: { protocol: 'gemini' } }, [
    { name: MODEL.openai, upstreams: ['openai'], upstreamModel: 'gpt-4o-2024-08-06' },
    { name: MODEL.anthropic, upstreams: ['anthropic'], upstreamModel: 'claude-sonnet-4-6' },
    { name: MODEL.gemini, upstreams: ['gemini'], upstreamModel: 'gemini-2.5-flash' },
  ])
})
after(() => gw.close())

// ── the tools, in each API's terms ─────────────────────────────────────────────────────────────

const TOOLS = [
  {
    name: 'get_weather',
    description: 'The current weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
      required: ['city'],
    },
  },
  {
    name: 'get_time',
    description: 'The local time in a timezone',
    parameters: { type: 'object', properties: { timezone: { type: 'string' } }, required: ['timezone'] },
  },
]

const CALLS = [
  { name: 'get_weather', arguments: { city: 'Paris', unit: 'celsius' } },
  { name: 'get_time', arguments: { timezone: 'Europe/Paris' } },
]
const RESULTS: Record<string, string> = { get_weather: '18°C and sunny', get_time: '14:05' }
const QUESTION = 'What is the weather and the time in Paris?'

/** `named`: force get_weather; `any`: some tool (OpenAI `required`, Anthropic `any`, Gemini `ANY`); `auto`: the model decides. */
type Choice = 'auto' | 'any' | 'named'

function openaiTools(): OpenAI.Chat.ChatCompletionTool[] {
  return TOOLS.map((t) => ({ type: 'function', function: { name: t.name, description: t.description, parameters: t.parameters } }))
}
function openaiChoice(choice: Choice): OpenAI.Chat.ChatCompletionToolChoiceOption {
  if (choice === 'auto') return 'auto'
  return choice === 'any' ? 'required' : { type: 'function', function: { name: 'get_weather' } }
}
function anthropicTools(): Anthropic.Tool[] {
  return TOOLS.map((t) => ({ name: t.name, description: t.description, input_schema: t.parameters as Anthropic.Tool.InputSchema }))
}
function anthropicChoice(choice: Choice): Anthropic.ToolChoice {
  if (choice === 'auto') return { type: 'auto' }
  return choice === 'any' ? { type: 'any' } : { type: 'tool', name: 'get_weather' }
}
function geminiDeclarations(): FunctionDeclaration[] {
  return TOOLS.map((t) => ({ name: t.name, description: t.description, parametersJsonSchema: t.parameters }))
}
function geminiToolConfig(choice: Choice): ToolConfig {
  if (choice === 'auto') return { functionCallingConfig: { mode: FunctionCallingConfigMode.AUTO } }
  if (choice === 'any') return { functionCallingConfig: { mode: FunctionCallingConfigMode.ANY } }
  return { functionCallingConfig: { mode: FunctionCallingConfigMode.ANY, allowedFunctionNames: ['get_weather'] } }
}

/** What the upstream must have received for the tools and the choice, in its own format. */
function assertToolsUpstream(upstream: ClientApi, body: Record<string, unknown>, choice: Choice, what: string): void {
  switch (upstream) {
    case 'openai':
      assert.deepEqual(body.tools, openaiTools(), what)
      assert.deepEqual(body.tool_choice, openaiChoice(choice), what)
      break
    case 'anthropic':
      assert.deepEqual(body.tools, anthropicTools(), what)
      assert.deepEqual(body.tool_choice, anthropicChoice(choice), what)
      break
    case 'gemini':
      assert.deepEqual(body.tools, [{ functionDeclarations: geminiDeclarations() }], what)
      assert.deepEqual(body.toolConfig, geminiToolConfig(choice), what)
      break
  }
}

// ── one tool round trip per client ─────────────────────────────────────────────────────────────

interface RoundTrip {
  first: SdkAnswer
  second: SdkAnswer
}

/**
 * Turn 1 asks with the tools (the mock calls both, with some text and reasoning first); turn 2 sends the
 * assistant turn back as the SDK gave it, with the results in reverse order of the calls.
 */
async function roundTrip(
  client: ClientApi,
  upstream: ClientApi,
  choice: Choice,
  stream: boolean,
  reasoning: boolean,
  redactedThinking = false,
): Promise<RoundTrip> {
  const model = MODEL[upstream]
  const calling = behave({ tokens: 2, reasoning: reasoning ? 2 : 0, toolCalls: CALLS, redactedThinking })
  const answering = behave({ tokens: 5 })
  switch (client) {
    case 'openai': {
      const sdk = openaiClient(gw.url)
      const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [{ role: 'user', content: QUESTION }]
      const base = {
        model,
        tools: openaiTools(),
        tool_choice: openaiChoice(choice),
        ...(reasoning ? { reasoning_effort: 'low' as const } : {}),
      }
      const first = await askOpenAI(sdk, { ...base, messages }, stream, calling)
      // The assistant message as a client sends it back: its content, its reasoning (vLLM/DeepSeek-style), its calls.
      const assistant = {
        role: 'assistant' as const,
        content: first.text,
        ...(first.reasoning === '' ? {} : { reasoning_content: first.reasoning }),
        tool_calls: first.toolCalls.map((c) => ({
          id: c.id,
          type: 'function' as const,
          function: { name: c.name, arguments: JSON.stringify(c.args) },
        })),
      }
      const results = [...first.toolCalls]
        .reverse()
        .map((c) => ({ role: 'tool' as const, tool_call_id: c.id, content: RESULTS[c.name] ?? '' }))
      const second = await askOpenAI(
        sdk,
        { ...base, tool_choice: 'auto', messages: [...messages, assistant, ...results] },
        stream,
        answering,
      )
      return { first, second }
    }
    case 'anthropic': {
      const sdk = anthropicClient(gw.url)
      const messages: Anthropic.MessageParam[] = [{ role: 'user', content: QUESTION }]
      const base = {
        model,
        max_tokens: 4096,
        tools: anthropicTools(),
        tool_choice: anthropicChoice(choice),
        ...(reasoning ? { thinking: { type: 'enabled' as const, budget_tokens: 2048 } } : {}),
      }
      const first = await askAnthropic(sdk, { ...base, messages }, stream, calling)
      const content: Anthropic.ContentBlockParam[] = []
      if (first.reasoning !== '') content.push({ type: 'thinking', thinking: first.reasoning, signature: first.signatures[0] ?? '' })
      if (first.text !== '') content.push({ type: 'text', text: first.text })
      for (const c of first.toolCalls) content.push({ type: 'tool_use', id: c.id, name: c.name, input: c.args })
      const results: Anthropic.ToolResultBlockParam[] = [...first.toolCalls]
        .reverse()
        .map((c) => ({ type: 'tool_result', tool_use_id: c.id, content: RESULTS[c.name] ?? '' }))
      const second = await askAnthropic(
        sdk,
        {
          ...base,
          tool_choice: { type: 'auto' },
          messages: [...messages, { role: 'assistant', content }, { role: 'user', content: results }],
        },
        stream,
        answering,
      )
      return { first, second }
    }
    case 'gemini': {
      const sdk = geminiClient(gw.url)
      const contents: Content[] = [{ role: 'user', parts: [{ text: QUESTION }] }]
      const config = {
        tools: [{ functionDeclarations: geminiDeclarations() }],
        toolConfig: geminiToolConfig(choice),
        ...(reasoning ? { thinkingConfig: { thinkingBudget: 2048, includeThoughts: true } } : {}),
      }
      const first = await askGemini(sdk, { model, contents, config }, stream, calling)
      const parts: Part[] = []
      if (first.reasoning !== '') {
        const thought: Part = { text: first.reasoning, thought: true }
        if (first.signatures[0] !== undefined) thought.thoughtSignature = first.signatures[0]
        parts.push(thought)
      }
      if (first.text !== '') parts.push({ text: first.text })
      for (const c of first.toolCalls) {
        const part: Part = { functionCall: { id: c.id, name: c.name, args: c.args as Record<string, unknown> } }
        if (c.signature !== undefined) part.thoughtSignature = c.signature
        parts.push(part)
      }
      const responses: Part[] = [...first.toolCalls]
        .reverse()
        .map((c) => ({ functionResponse: { id: c.id, name: c.name, response: { output: RESULTS[c.name] ?? '' } } }))
      const second = await askGemini(
        sdk,
        {
          model,
          contents: [...contents, { role: 'model', parts }, { role: 'user', parts: responses }],
          config: { ...config, toolConfig: geminiToolConfig('auto') },
        },
        stream,
        answering,
      )
      return { first, second }
    }
  }
}

/** The ids the upstream gave its calls (Gemini gives none: the gateway makes them). */
function upstreamIds(upstream: ClientApi, mock: MockUpstream): (string | RegExp)[] {
  const seq = mock.requests[0]?.seq
  if (upstream === 'openai') return [`call_mock_${seq}_0`, `call_mock_${seq}_1`]
  if (upstream === 'anthropic') return [`toolu_mock_${seq}_0`, `toolu_mock_${seq}_1`]
  return [/^call_[0-9a-f]{24}$/, /^call_[0-9a-f]{24}$/]
}

/** The tool results of turn 2 as the upstream got them: call id (or Gemini name) → text. */
function resultsUpstream(
  upstream: ClientApi,
  body: Record<string, unknown>,
): { calls: { id?: string; name: string; args: unknown; signature?: string }[]; results: Record<string, string> } {
  const calls: { id?: string; name: string; args: unknown; signature?: string }[] = []
  const results: Record<string, string> = {}
  switch (upstream) {
    case 'openai':
      for (const m of body.messages as {
        role: string
        tool_calls?: { id: string; function: { name: string; arguments: string } }[]
        tool_call_id?: string
        content: string
      }[]) {
        for (const c of m.tool_calls ?? []) calls.push({ id: c.id, name: c.function.name, args: JSON.parse(c.function.arguments) })
        if (m.role === 'tool') results[m.tool_call_id ?? ''] = m.content
      }
      break
    case 'anthropic':
      for (const m of body.messages as { role: string; content: string | Record<string, unknown>[] }[]) {
        if (typeof m.content === 'string') continue
        for (const block of m.content) {
          if (block.type === 'tool_use') calls.push({ id: String(block.id), name: String(block.name), args: block.input })
          if (block.type === 'tool_result') {
            const content = block.content as string | { type: string; text: string }[]
            results[String(block.tool_use_id)] = typeof content === 'string' ? content : content.map((c) => c.text).join('')
          }
        }
      }
      break
    case 'gemini': {
      let order = 0
      for (const c of body.contents as { role: string; parts: Record<string, unknown>[] }[]) {
        for (const part of c.parts) {
          const call = part.functionCall as { name: string; args: unknown } | undefined
          if (call !== undefined) {
            const entry: (typeof calls)[number] = { name: call.name, args: call.args }
            if (typeof part.thoughtSignature === 'string') entry.signature = part.thoughtSignature
            calls.push(entry)
          }
          const response = part.functionResponse as { name: string; response: { output: string } } | undefined
          // Gemini pairs responses with calls by position: key them by the call they answer.
          if (response !== undefined) results[`${order++}:${response.name}`] = response.response.output
        }
      }
      break
    }
  }
  return { calls, results }
}

for (const client of CLIENT_APIS) {
  for (const upstream of CLIENT_APIS) {
    if (client === upstream) continue
    test(`tools: ${client} SDK → ${upstream} upstream: definitions and choice upstream, parallel calls back, results matched on turn 2`, async () => {
      for (const stream of [false, true]) {
        for (const choice of ['any', 'named'] as const) {
          const what = `${stream ? 'streamed' : 'not streamed'}, tool_choice ${choice}`
          gw.reset()
          const mock = gw.mocks[upstream] as MockUpstream
          const { first, second } = await roundTrip(client, upstream, choice, stream, false)
          assertToolsUpstream(upstream, upstreamBody(mock, 0), choice, what)

          // Turn 1: both calls, in order, with parsed arguments and the upstream's ids.
          assert.equal(first.text, expectedContent(2), what)
          assert.equal(first.finish, FINISH.tool_calls[client], what)
          assert.deepEqual(
            first.toolCalls.map((c) => [c.name, c.args]),
            CALLS.map((c) => [c.name, c.arguments]),
            what,
          )
          const ids = upstreamIds(upstream, mock)
          const signature = signatureFor(0)
          first.toolCalls.forEach((call, i) => {
            const expected = ids[i] as string | RegExp
            // Gemini's first call carries the thought signature: a Gemini client gets it on the part, others in the id.
            const id = upstream === 'gemini' && i === 0 && client !== 'gemini' ? call.id.replace(`__sig__${signature}`, '') : call.id
            if (typeof expected === 'string') assert.equal(id, expected, what)
            else assert.match(id, expected, what)
            if (upstream === 'gemini' && i === 0 && client !== 'gemini')
              assert.ok(call.id.endsWith(`__sig__${signature}`), `${what}: ${call.id}`)
          })
          assert.notEqual(first.toolCalls[0]?.id, first.toolCalls[1]?.id, what)

          // Turn 2: the results, matched to their calls, in the upstream's format; the signature restored.
          const { calls, results } = resultsUpstream(upstream, upstreamBody(mock, 1))
          assert.deepEqual(
            calls.map((c) => [c.name, c.args]),
            CALLS.map((c) => [c.name, c.arguments]),
            what,
          )
          if (upstream === 'gemini') {
            assert.equal(calls[0]?.signature, signature, `${what}: the first call's thought signature goes back to Gemini`)
            assert.deepEqual(results, { '0:get_weather': RESULTS.get_weather, '1:get_time': RESULTS.get_time }, what)
          } else {
            assert.deepEqual(
              calls.map((c) => c.id),
              ids,
              what,
            )
            assert.deepEqual(results, { [ids[0] as string]: RESULTS.get_weather, [ids[1] as string]: RESULTS.get_time }, what)
          }
          assert.equal(second.text, expectedContent(5), what)
          assert.equal(second.finish, FINISH.stop[client], what)
        }
      }
    })
  }
}

test('tools: a @google/genai chat session (one model content per streamed chunk) sends parallel calls back valid to OpenAI and Anthropic', async () => {
  for (const upstream of ['openai', 'anthropic'] as const) {
    gw.reset()
    const mock = gw.mocks[upstream] as MockUpstream
    // A chat's per-message config replaces its own: each message carries the tools and the mock's behavior.
    const config = (behavior: Record<string, unknown>) => ({
      tools: [{ functionDeclarations: geminiDeclarations() }],
      thinkingConfig: { thinkingBudget: 2048, includeThoughts: true },
      httpOptions: { headers: behave(behavior) },
    })
    const chat = geminiClient(gw.url).chats.create({ model: MODEL[upstream] })
    const calls: { id?: string; name?: string }[] = []
    for await (const chunk of await chat.sendMessageStream({
      message: QUESTION,
      config: config({ tokens: 2, reasoning: 2, toolCalls: CALLS }),
    }))
      calls.push(...(chunk.functionCalls ?? []))
    assert.deepEqual(
      calls.map((c) => c.name),
      ['get_weather', 'get_time'],
      upstream,
    )
    let text = ''
    const responses = calls.map((c) => ({ functionResponse: { id: c.id, name: c.name, response: { output: RESULTS[c.name ?? ''] } } }))
    for await (const chunk of await chat.sendMessageStream({ message: responses, config: config({ tokens: 4 }) })) text += chunk.text ?? ''
    assert.equal(text, expectedContent(4), upstream)
    // The streamed model turn went back as one assistant turn holding its reasoning, its text and both calls.
    const { calls: sent, results } = resultsUpstream(upstream, upstreamBody(mock, 1))
    assert.deepEqual(
      sent.map((c) => [c.id, c.name, c.args]),
      CALLS.map((c, i) => [calls[i]?.id, c.name, c.arguments]),
      upstream,
    )
    assert.deepEqual(results, { [calls[0]?.id ?? '']: RESULTS.get_weather, [calls[1]?.id ?? '']: RESULTS.get_time }, upstream)
    const assistants = (upstreamBody(mock, 1).messages as { role: string; content: unknown; reasoning_content?: string }[]).filter(
      (m) => m.role === 'assistant',
    )
    assert.equal(assistants.length, 1, `${upstream}: one assistant message`)
    const assistant = assistants[0] as { content: unknown; reasoning_content?: string }
    if (upstream === 'anthropic') {
      // The thought streamed in pieces goes back whole, with the signature that closed it.
      const blocks = assistant.content as Record<string, unknown>[]
      assert.deepEqual(blocks[0], { type: 'thinking', thinking: expectedReasoning(2), signature: signatureFor(2) })
    } else {
      assert.equal(assistant.content, expectedContent(2))
      assert.equal(assistant.reasoning_content, expectedReasoning(2))
    }
  }
})

test('tools: arguments with braces and quotes in strings, escapes, nested objects and non-BMP characters cross every pair whole', async () => {
  // The mock streams arguments in 8-character fragments: escapes, surrogate pairs and closing braces inside strings
  // fall across fragments, where a converter that finds the end of a call's JSON could be fooled.
  const args = [
    { code: 'if (a) { b("}") } else {}', path: 'C:\\dir\\"x"\\', text: '🎉 ü 日本語', nested: { list: [1, { '}': '{' }], empty: {} } },
    {},
  ]
  const calls = args.map((a, i) => ({ name: `tool_${i}`, arguments: a }))
  for (const client of CLIENT_APIS) {
    for (const upstream of CLIENT_APIS) {
      if (client === upstream) continue
      for (const stream of [false, true]) {
        const what = `${client} SDK on ${upstream}, ${stream ? 'streamed' : 'not streamed'}`
        const answer = await ask(client, gw.url, MODEL[upstream], {
          stream,
          headers: behave({ text: 'héllo wörld 🎉 ', toolCalls: calls }),
        })
        assert.equal(answer.text, 'héllo wörld 🎉 ', what)
        assert.deepEqual(
          answer.toolCalls.map((c) => [c.name, c.args]),
          calls.map((c) => [c.name, c.arguments]),
          what,
        )
      }
    }
  }
})

// ── reasoning ───────────────────────────────────────────────────────────────────────────────────

/** The client's reasoning setting as the upstream must have received it. */
const REASONING_UPSTREAM: Record<ClientApi, Record<ClientApi, (body: Record<string, unknown>) => unknown>> = {
  // OpenAI reasoning_effort: low
  openai: {
    openai: (b) => b.reasoning_effort,
    anthropic: (b) => [b.thinking, (b.output_config as { effort?: string } | undefined)?.effort],
    gemini: (b) => (b.generationConfig as { thinkingConfig?: unknown } | undefined)?.thinkingConfig,
  },
  // Anthropic thinking enabled, budget 2048
  anthropic: {
    openai: (b) => b.reasoning_effort,
    anthropic: (b) => b.thinking,
    gemini: (b) => (b.generationConfig as { thinkingConfig?: unknown } | undefined)?.thinkingConfig,
  },
  // Gemini thinkingBudget 2048, includeThoughts
  gemini: {
    openai: (b) => b.reasoning_effort,
    anthropic: (b) => [b.thinking, (b.output_config as { effort?: string } | undefined)?.effort],
    gemini: (b) => (b.generationConfig as { thinkingConfig?: unknown } | undefined)?.thinkingConfig,
  },
}
const REASONING_EXPECTED: Record<ClientApi, Record<ClientApi, unknown>> = {
  openai: {
    openai: 'low',
    anthropic: [{ type: 'adaptive' }, 'low'],
    gemini: { thinkingBudget: 2048, includeThoughts: true },
  },
  anthropic: {
    openai: 'low',
    anthropic: { type: 'enabled', budget_tokens: 2048 },
    gemini: { thinkingBudget: 2048, includeThoughts: true },
  },
  gemini: {
    openai: 'low',
    anthropic: [{ type: 'adaptive', display: 'summarized' }, 'low'],
    gemini: { thinkingBudget: 2048, includeThoughts: true },
  },
}

for (const client of CLIENT_APIS) {
  for (const upstream of CLIENT_APIS) {
    if (client === upstream) continue
    test(`reasoning: ${client} SDK → ${upstream} upstream: the setting in the upstream's terms, the reasoning in the client's, signatures kept across turns`, async () => {
      for (const stream of [false, true]) {
        const what = stream ? 'streamed' : 'not streamed'
        gw.reset()
        const mock = gw.mocks[upstream] as MockUpstream
        // The model chooses: Anthropic takes no thinking with a forced tool (the converter leaves it out then).
        const { first, second } = await roundTrip(client, upstream, 'auto', stream, true)
        assert.deepEqual(REASONING_UPSTREAM[client][upstream](upstreamBody(mock, 0)), REASONING_EXPECTED[client][upstream], what)
        assert.equal(first.reasoning, expectedReasoning(2), what)
        assert.equal(first.text, expectedContent(2), what)
        // The upstream's signature reaches the client where it has a place for it (OpenAI: in the next call's id).
        const signature = signatureFor(2)
        if (upstream !== 'openai') {
          if (client === 'openai') assert.ok(first.toolCalls[0]?.id.endsWith(`__sig__${signature}`), `${what}: ${first.toolCalls[0]?.id}`)
          else assert.deepEqual(first.signatures, [signature], what)
        }
        // Reasoning tokens are part of the output, and broken out where the upstream reports them.
        const usage = first.usage
        if (client === 'openai' && upstream === 'gemini')
          assert.equal((usage.completion_tokens_details as { reasoning_tokens?: number } | undefined)?.reasoning_tokens, 2, what)
        if (client === 'gemini' && upstream === 'openai') assert.equal(usage.thoughtsTokenCount, 2, what)

        // Turn 2: the reasoning (with its signature) goes back to the upstream that needs it.
        const turn2 = upstreamBody(mock, 1)
        if (upstream === 'anthropic') {
          const assistant = (turn2.messages as { role: string; content: Record<string, unknown>[] }[])[1]
          assert.deepEqual(assistant?.content[0], { type: 'thinking', thinking: expectedReasoning(2), signature }, what)
        } else if (upstream === 'gemini') {
          const model = (turn2.contents as { role: string; parts: Record<string, unknown>[] }[])[1]
          const firstCall = model?.parts.find((p) => p.functionCall !== undefined)
          assert.equal(firstCall?.thoughtSignature, signature, what)
        } else {
          const assistant = (turn2.messages as { role: string; reasoning_content?: string }[])[1]
          assert.equal(assistant?.reasoning_content, expectedReasoning(2), what)
        }
        assert.equal(second.text, expectedContent(5), what)
      }
    })
  }
}

for (const client of ['openai', 'gemini'] as const) {
  test(`reasoning: ${client} SDK → Anthropic upstream: a tool-call turn with redacted thinking goes back without thinking, not as a partial signed sequence (a 400)`, async () => {
    for (const stream of [false, true]) {
      const what = stream ? 'streamed' : 'not streamed'
      gw.reset()
      const mock = gw.mocks.anthropic as MockUpstream
      const { first, second } = await roundTrip(client, 'anthropic', 'auto', stream, true, true)
      // The reasoning text still reaches the client; the signature, without the redacted block it cannot carry, does not.
      assert.equal(first.reasoning, expectedReasoning(2), what)
      assert.deepEqual(first.signatures, [], what)
      for (const call of first.toolCalls) assert.ok(!call.id.includes('__sig__'), `${what}: ${call.id}`)
      // Turn 2: the assistant turn has no thinking block, so thinking is off for the request (Claude requires a
      // thinking turn to come back whole, with its redacted block).
      const turn2 = upstreamBody(mock, 1)
      const assistant = (turn2.messages as { role: string; content: { type: string }[] }[])[1]
      assert.deepEqual(
        assistant?.content.map((block) => block.type),
        ['text', 'tool_use', 'tool_use'],
        what,
      )
      assert.equal(turn2.thinking, undefined, what)
      assert.equal(second.text, expectedContent(5), what)
    }
  })
}
