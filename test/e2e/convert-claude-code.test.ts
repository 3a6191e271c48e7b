// The headline case of issue #13: Claude Code's traffic against an OpenAI-compatible (vLLM) pool. A captured Claude
// Code request (system blocks with cache_control, 14 tools with draft 2020-12 schemas, adaptive thinking with an
// effort, metadata.user_id, context_management, a history of parallel tool use with a PDF and a screenshot) is
// replayed with @anthropic-ai/sdk as Claude Code sends it (`client.beta.messages.stream` on `?beta=true`, its beta
// headers), over three streamed turns: the model thinks and calls two tools in parallel, then one more, then
// answers. The SDK's finalMessage() must be what Claude Code needs, and vLLM must receive a valid chat request.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, before, test } from 'node:test'
import type Anthropic from '@anthropic-ai/sdk'
import { expectedContent, expectedReasoning, type MockUpstream, promptTokensFor } from '@llmproxy/mock-upstream'
import { API_KEY, anthropicClient, behave, type ConvertGateway, startConvertGateway, upstreamBody } from './convert-helpers.js'

type BetaParams = Anthropic.Beta.Messages.MessageCreateParamsNonStreaming
type BetaMessage = Anthropic.Beta.Messages.BetaMessage

const fixture = JSON.parse(
  readFileSync(new URL('../../packages/protocols/test/request-fixtures/claude-code.json', import.meta.url), 'utf8'),
) as Record<string, unknown>
const { stream: _stream, ...request } = fixture
const REQUEST = request as unknown as BetaParams
const MODEL = 'claude-opus-4-8'
const UPSTREAM_MODEL = 'Qwen/Qwen3-Coder-30B-A3B-Instruct'
const BETAS = ['claude-code-20250219', 'interleaved-thinking-2025-05-14', 'context-management-2025-06-27']

let gw: ConvertGateway
before(async () => {
  // Claude Code asks for its own model names: the gateway maps them onto the vLLM pool.
  gw = await startConvertGateway({ vllm: { protocol: 'vllm' } }, [{ name: MODEL, upstreams: ['vllm'], upstreamModel: UPSTREAM_MODEL }])
})
after(() => gw.close())

const READ = { name: 'Read', arguments: { file_path: '/home/dev/site/docs/assets/css/_variables.scss' } }
const GREP = { name: 'Grep', arguments: { pattern: '\\$color-', path: 'docs/assets/css', output_mode: 'content' } }
const EDIT = {
  name: 'Edit',
  arguments: {
    file_path: '/home/dev/site/docs/assets/css/_variables.scss',
    old_string: '$accent: #2a7ae2;',
    new_string: '$accent: #e2762a;',
  },
}

/** Output tokens the mock counts for an answer: reasoning and text tokens, one per 8-character argument fragment. */
function outputTokens(reasoning: number, text: number, calls: { arguments: Record<string, unknown> }[]): number {
  return reasoning + text + calls.reduce((n, c) => n + Math.ceil(JSON.stringify(c.arguments).length / 8), 0)
}

/** One streamed Claude Code turn, as Claude Code sends it; records the URL the SDK called. */
async function turn(messages: BetaParams['messages'], behavior: Record<string, unknown>): Promise<{ message: BetaMessage; url: string }> {
  const urls: string[] = []
  const client = anthropicClient(gw.url, {
    fetch: (input, init) => {
      urls.push(String(input instanceof Request ? input.url : input))
      return fetch(input, init)
    },
  })
  const stream = client.beta.messages.stream(
    { ...REQUEST, messages, betas: BETAS },
    // Claude Code calls /v1/messages?beta=true (this SDK version names the operation so but does not send it).
    { headers: { ...behave(behavior), 'x-app': 'cli', 'user-agent': 'claude-cli/2.1.170 (external, cli)' }, query: { beta: 'true' } },
  )
  const message = await stream.finalMessage()
  return { message, url: urls[0] ?? '' }
}

/** The assistant turn as Claude Code sends it back: the content blocks as the SDK gave them. */
function echo(message: BetaMessage): Anthropic.Beta.Messages.BetaMessageParam {
  return { role: 'assistant', content: message.content as Anthropic.Beta.Messages.BetaContentBlockParam[] }
}

function toolResult(id: string, content: string): Anthropic.Beta.Messages.BetaToolResultBlockParam {
  return { type: 'tool_result', tool_use_id: id, content }
}

type ChatMessage = {
  role: string
  content?: unknown
  reasoning_content?: string
  tool_calls?: { id: string; type: string; function: { name: string; arguments: string } }[]
  tool_call_id?: string
}

test('Claude Code on a vLLM pool: thinking, parallel tool use, a tool result, another call, the answer — three streamed turns', async () => {
  gw.reset()
  const vllm = gw.mocks.vllm as MockUpstream
  const history = [...REQUEST.messages]

  // Turn 1: the model thinks, says a little, and calls Read and Grep at once.
  const one = await turn(history, { reasoning: 3, tokens: 4, toolCalls: [READ, GREP], cachedTokens: 512 })
  assert.match(one.url, /\/v1\/messages\?beta=true$/)
  const seq1 = vllm.requests[0]?.seq
  assert.deepEqual(one.message.content, [
    { type: 'thinking', thinking: expectedReasoning(3), signature: '' },
    { type: 'text', text: expectedContent(4) },
    { type: 'tool_use', id: `call_mock_${seq1}_0`, name: 'Read', input: READ.arguments },
    { type: 'tool_use', id: `call_mock_${seq1}_1`, name: 'Grep', input: GREP.arguments },
  ])
  assert.equal(one.message.stop_reason, 'tool_use')
  assert.equal(one.message.model, MODEL)
  const body1 = upstreamBody(vllm, 0) as { messages: ChatMessage[] } & Record<string, unknown>
  const prompt1 = promptTokensFor(body1)
  assert.ok(prompt1 > 512, `prompt tokens ${prompt1}`)
  // Anthropic's input_tokens excludes the cache reads vLLM reported in its prompt tokens.
  assert.deepEqual(one.message.usage, {
    input_tokens: prompt1 - 512,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 512,
    output_tokens: outputTokens(3, 4, [READ, GREP]),
    output_tokens_details: { thinking_tokens: 3 },
  })

  // What vLLM received: a valid chat request keeping what Claude Code said.
  const seen = vllm.requests[0]
  assert.equal(seen?.path, '/v1/chat/completions')
  assert.equal(seen?.headers.authorization, 'Bearer sk-upstream-vllm')
  assert.ok(!JSON.stringify(seen?.headers).includes(API_KEY), "the client's key never reaches the upstream")
  assert.equal(body1.model, UPSTREAM_MODEL)
  assert.equal(body1.stream, true)
  assert.deepEqual(body1.stream_options, { include_usage: true })
  assert.equal(body1.reasoning_effort, 'high')
  assert.equal(body1.user, (REQUEST.metadata as { user_id: string }).user_id)
  assert.equal(body1.max_completion_tokens ?? body1.max_tokens, 32000)
  assert.deepEqual(
    (body1.tools as { type: string; function: { name: string } }[]).map((t) => [t.type, t.function.name]),
    (REQUEST.tools as { name: string }[]).map((t) => ['function', t.name]),
  )
  assert.equal(body1.messages[0]?.role, 'system')
  assert.match(String(body1.messages[0]?.content), /You are Claude Code, Anthropic's official CLI for Claude\./)
  assert.equal(body1.messages.at(-1)?.role, 'user')
  assert.ok(!JSON.stringify(body1).includes('cache_control'), 'Anthropic-only hints are not sent to vLLM')

  // Turn 2: the results go back (Grep's first, as a client may order them); the model calls Edit.
  history.push(echo(one.message), {
    role: 'user',
    content: [
      toolResult(`call_mock_${seq1}_1`, 'docs/assets/css/_variables.scss:3:$accent: #2a7ae2;'),
      toolResult(`call_mock_${seq1}_0`, '     1\t$base: #fdfdfd;\n     2\t$text: #111;\n     3\t$accent: #2a7ae2;'),
    ],
  })
  const two = await turn(history, { tokens: 2, toolCalls: [EDIT] })
  const seq2 = vllm.requests[1]?.seq
  assert.deepEqual(one.message.content.length, 4)
  assert.deepEqual(two.message.content, [
    { type: 'text', text: expectedContent(2) },
    { type: 'tool_use', id: `call_mock_${seq2}_0`, name: 'Edit', input: EDIT.arguments },
  ])
  assert.equal(two.message.stop_reason, 'tool_use')
  const body2 = upstreamBody(vllm, 1) as { messages: ChatMessage[] }
  const tail2 = body2.messages.slice(-3)
  assert.deepEqual(tail2[0], {
    role: 'assistant',
    content: expectedContent(4),
    reasoning_content: expectedReasoning(3),
    tool_calls: [
      { id: `call_mock_${seq1}_0`, type: 'function', function: { name: 'Read', arguments: JSON.stringify(READ.arguments) } },
      { id: `call_mock_${seq1}_1`, type: 'function', function: { name: 'Grep', arguments: JSON.stringify(GREP.arguments) } },
    ],
  })
  assert.deepEqual(
    tail2.slice(1).map((m) => [m.role, m.tool_call_id, typeof m.content === 'string' ? m.content.split('\n')[0] : m.content]),
    [
      ['tool', `call_mock_${seq1}_1`, 'docs/assets/css/_variables.scss:3:$accent: #2a7ae2;'],
      ['tool', `call_mock_${seq1}_0`, '     1\t$base: #fdfdfd;'],
    ],
  )

  // Turn 3: the edit's result goes back with a system reminder beside it; the model answers.
  history.push(echo(two.message), {
    role: 'user',
    content: [
      toolResult(`call_mock_${seq2}_0`, 'The file /home/dev/site/docs/assets/css/_variables.scss has been updated.'),
      { type: 'text', text: '<system-reminder>The TodoWrite tool hasn’t been used recently.</system-reminder>' },
    ],
  })
  const three = await turn(history, { tokens: 6, cachedTokens: 768 })
  assert.deepEqual(three.message.content, [{ type: 'text', text: expectedContent(6) }])
  assert.equal(three.message.stop_reason, 'end_turn')
  const body3 = upstreamBody(vllm, 2) as { messages: ChatMessage[] }
  assert.deepEqual(
    body3.messages.slice(-3).map((m) => [m.role, m.tool_call_id ?? null, m.content]),
    [
      ['assistant', null, expectedContent(2)],
      ['tool', `call_mock_${seq2}_0`, 'The file /home/dev/site/docs/assets/css/_variables.scss has been updated.'],
      ['user', null, '<system-reminder>The TodoWrite tool hasn’t been used recently.</system-reminder>'],
    ],
  )
  const prompt3 = promptTokensFor(body3)
  assert.deepEqual(three.message.usage, {
    input_tokens: prompt3 - 768,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 768,
    output_tokens: 6,
    output_tokens_details: { thinking_tokens: 0 },
  })

  // Three records, metered as vLLM reported, for an Anthropic client.
  assert.equal(gw.records.length, 3)
  for (const record of gw.records) {
    assert.equal(record.clientApi, 'anthropic')
    assert.equal(record.protocol, 'vllm')
    assert.equal(record.model, MODEL)
    assert.equal(record.upstreamModel, UPSTREAM_MODEL)
    assert.equal(record.stream, true)
    assert.equal(record.estimated, false)
  }
  assert.deepEqual(
    gw.records.map((r) => [r.promptTokens, r.cachedTokens, r.completionTokens]),
    [
      [prompt1, 512, outputTokens(3, 4, [READ, GREP])],
      [promptTokensFor(body2), 0, outputTokens(0, 2, [EDIT])],
      [prompt3, 768, 6],
    ],
  )
})

test("a client's prefill (a final assistant turn) is continued on vLLM, as Claude continues it: vLLM is asked to", async () => {
  gw.reset()
  const message = await anthropicClient(gw.url).messages.create(
    {
      model: MODEL,
      max_tokens: 100,
      messages: [
        { role: 'user', content: 'Say it.' },
        { role: 'assistant', content: 'lorem ipsum' },
      ],
    },
    { headers: behave({ tokens: 4 }) },
  )
  const sent = upstreamBody(gw.mocks.vllm as MockUpstream)
  assert.equal(sent.continue_final_message, true)
  assert.equal(sent.add_generation_prompt, false)
  assert.deepEqual((sent.messages as ChatMessage[]).at(-1), { role: 'assistant', content: 'lorem ipsum' })
  // The mock continues a final assistant message only when asked, as vLLM does (unasked, it answers anew: the
  // whole "lorem ipsum dolor sit "): the answer is the rest of the prefilled one.
  assert.equal(message.stop_reason, 'end_turn')
  assert.equal(message.content[0]?.type === 'text' && message.content[0].text, ' dolor sit ')
})

test('a vLLM reasoning model thinks unasked: an Anthropic client that did not turn thinking on gets no thinking block', async () => {
  const client = anthropicClient(gw.url)
  const headers = behave({ tokens: 3, reasoning: 2 })
  const base = { model: MODEL, max_tokens: 2000, messages: [{ role: 'user' as const, content: 'Hi' }] }
  for (const stream of [false, true]) {
    const plain = stream ? await client.messages.stream(base, { headers }).finalMessage() : await client.messages.create(base, { headers })
    // As Claude answers: code reading content[0].text finds the text.
    assert.deepEqual(
      plain.content.map((block) => block.type),
      ['text'],
      `streamed: ${stream}`,
    )
    assert.equal(plain.content[0]?.type === 'text' && plain.content[0].text, expectedContent(3))
    const asked = { ...base, thinking: { type: 'enabled' as const, budget_tokens: 1024 } }
    const thinking = stream
      ? await client.messages.stream(asked, { headers }).finalMessage()
      : await client.messages.create(asked, { headers })
    assert.deepEqual(
      thinking.content.map((block) => block.type),
      ['thinking', 'text'],
      `streamed: ${stream}`,
    )
    assert.equal(thinking.content[0]?.type === 'thinking' && thinking.content[0].thinking, expectedReasoning(2))
  }
})
