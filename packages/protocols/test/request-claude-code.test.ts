/**
 * Claude Code is the headline client: system as cache-controlled blocks, many tools with large draft 2020-12 schemas,
 * adaptive thinking with an effort, metadata.user_id, parallel tool use over several turns, tool results as content
 * arrays with a PDF and a screenshot, system reminders beside tool results. The fixture follows captured traffic (the
 * `?beta=true` query and the beta headers are the router's business; the body is the same).
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, test } from 'node:test'
import { convertValid, type GeminiBody, STREAM } from './request-helpers.js'

const fixture = JSON.parse(readFileSync(new URL('./request-fixtures/claude-code.json', import.meta.url), 'utf8')) as Record<string, unknown>
const tools = fixture.tools as { name: string; input_schema: Record<string, unknown> }[]

type Message = {
  role: string
  content?: unknown
  tool_calls?: { id: string; function: { name: string; arguments: string } }[]
  tool_call_id?: string
  reasoning_content?: string
}

describe('a Claude Code request', () => {
  test('→ a valid OpenAI/vLLM request that keeps system, tools, thinking, tool results and the user id', () => {
    const out = convertValid('anthropic', 'openai', fixture, STREAM)
    const messages = out.messages as Message[]
    assert.deepEqual(
      messages.map((m) => m.role),
      [
        'system',
        'user',
        'assistant',
        'tool',
        'tool',
        'assistant',
        'tool',
        'tool',
        'user',
        'assistant',
        'tool',
        'user',
        'assistant',
        'user',
      ],
    )
    assert.match(String(messages[0]?.content), /^x-anthropic-billing-header.*\n\nYou are Claude Code.*\n\nYou are an interactive CLI tool/s)
    assert.equal(messages[2]?.reasoning_content, 'The user wants warm colors. Let me get the browser context and read the stylesheet.')
    assert.deepEqual(
      messages[2]?.tool_calls?.map((c) => [c.id, c.function.name, JSON.parse(c.function.arguments)]),
      [
        ['toolu_017viwBiQ8hoe3PX8oQ1bFeM', 'mcp__claude-in-chrome__tabs_context_mcp', { createIfEmpty: true }],
        ['toolu_01METmvTdfcqW1Ckfp47x1YL', 'Read', { file_path: '/home/dev/site/docs/assets/css/style.scss' }],
      ],
    )
    // A content array of two texts joins into the tool message; the PDF the Read tool returned follows as a file part.
    assert.match(String(messages[3]?.content), /^\{"availableTabs".*\n\n\nTab Context:/s)
    assert.deepEqual(messages[8], {
      role: 'user',
      content: [{ type: 'file', file: { file_data: `data:application/pdf;base64,${PDF_DATA}`, filename: 'document.pdf' } }],
    })
    assert.deepEqual(messages[11]?.content, [
      { type: 'image_url', image_url: { url: `data:image/png;base64,${PNG_DATA}` } },
      { type: 'text', text: "<system-reminder>\nThe TodoWrite tool hasn't been used recently.\n</system-reminder>" },
    ])
    const outTools = out.tools as { function: { name: string; parameters: unknown } }[]
    assert.deepEqual(
      outTools.map((t) => [t.function.name, t.function.parameters]),
      tools.map((t) => [t.name, t.input_schema]),
    )
    assert.deepEqual(
      [out.stream, out.stream_options, out.max_completion_tokens, out.reasoning_effort, out.user],
      [true, { include_usage: true }, 32000, 'high', (fixture.metadata as { user_id: string }).user_id],
    )
    const json = JSON.stringify(out)
    assert.equal(json.includes('cache_control') || json.includes('context_management') || json.includes('signature'), false)
  })

  test('→ a valid Gemini request: schemas Gemini takes, responses paired with calls, thinking as a budget', () => {
    const out = convertValid('anthropic', 'gemini', fixture, STREAM)
    const contents = out.contents as GeminiBody['contents']
    assert.deepEqual(
      contents.map((c) => [c.role, c.parts?.map((p) => Object.keys(p).filter((k) => k !== 'thought' && k !== 'thoughtSignature')[0])]),
      [
        ['user', ['text', 'text']],
        ['model', ['text', 'text', 'functionCall', 'functionCall']],
        ['user', ['functionResponse', 'functionResponse']],
        ['model', ['text', 'functionCall', 'functionCall']],
        ['user', ['functionResponse', 'functionResponse']],
        ['user', ['inlineData']],
        ['model', ['text', 'functionCall']],
        ['user', ['functionResponse']],
        ['user', ['inlineData', 'text']],
        ['model', ['text']],
        ['user', ['text']],
      ],
    )
    assert.deepEqual(contents[4]?.parts?.[0], {
      functionResponse: { name: 'Edit', response: { output: 'The file /home/dev/site/docs/assets/css/style.scss has been updated.' } },
    })
    const declarations = (out.tools as GeminiBody['tools'])?.[0]?.functionDeclarations ?? []
    assert.deepEqual(
      declarations.map((d) => d.name),
      tools.map((t) => t.name),
    )
    const todo = declarations.find((d) => d.name === 'TodoWrite')?.parametersJsonSchema as { properties: { todos: { items: unknown } } }
    assert.deepEqual(todo.properties.todos.items, {
      type: 'object',
      properties: {
        content: { type: 'string', minLength: 1 },
        status: { type: 'string', enum: ['pending', 'in_progress', 'completed'] },
        activeForm: { type: 'string', minLength: 1 },
      },
      required: ['content', 'status', 'activeForm'],
      additionalProperties: false,
    })
    assert.deepEqual(out.generationConfig, { maxOutputTokens: 32000, thinkingConfig: { thinkingBudget: 16384, includeThoughts: true } })
    assert.equal((out.systemInstruction as GeminiBody['systemInstruction'])?.parts?.length, 3)
    assert.equal(JSON.stringify(out).includes('cache_control'), false)
  })
})

const PNG_DATA = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=='
const PDF_DATA = 'JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCmVuZHN0cmVhbQplbmRvYmoKdHJhaWxlcgo8PD4+CiUlRU9GCg=='
