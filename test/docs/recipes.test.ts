// The README's three recipes run as written: each config passes `llmproxy check`, and the client call the README
// shows works against it, with the upstreams played by the mock (the configs take their URLs from the environment).
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { after, test } from 'node:test'
import { promisify } from 'node:util'
import Anthropic from '@anthropic-ai/sdk'
import { expectedContent, type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import { buildGateway, loadConfigFile } from '@llmproxy/server'
import type { FastifyInstance } from 'fastify'
import OpenAI from 'openai'

const root = new URL('../..', import.meta.url).pathname
const recipe = (name: string) => `${root}examples/recipes/${name}.yaml`
const KEY = 'sk-recipe-key-0123456789'
const mocks: MockUpstream[] = []
const apps: FastifyInstance[] = []

after(async () => {
  await Promise.all(apps.map((app) => app.close()))
  await Promise.all(mocks.map((mock) => mock.close()))
})

async function mock(): Promise<MockUpstream> {
  const started = await startMockUpstream({ defaults: { tokens: 6 } })
  mocks.push(started)
  return started
}

/** `llmproxy check` on the file, as the README tells users to run it. */
async function check(file: string, env: NodeJS.ProcessEnv): Promise<void> {
  const cli = `${root}packages/server/src/cli.ts`
  const run = promisify(execFile)
  const { stdout } = await run(process.execPath, ['--conditions=llmproxy-source', '--import', 'tsx', cli, 'check', '--config', file], {
    cwd: root,
    env: { ...process.env, ...env },
  })
  assert.match(stdout, /valid|ok/i)
}

async function gateway(file: string, env: NodeJS.ProcessEnv): Promise<string> {
  await check(file, env)
  const config = loadConfigFile(file, { ...process.env, ...env })
  config.server.host = '127.0.0.1'
  config.server.port = 0
  config.server.logLevel = 'silent' as typeof config.server.logLevel
  const app = await buildGateway(config)
  apps.push(app)
  return app.listen({ host: '127.0.0.1', port: 0 })
}

test('recipe 1: a vLLM pool with failover to a hosted model', async () => {
  const [a, b, hosted] = [await mock(), await mock(), await mock()]
  const url = await gateway(recipe('vllm-failover'), {
    VLLM_A_URL: a.url,
    VLLM_B_URL: b.url,
    OPENAI_URL: hosted.url,
    OPENAI_API_KEY: 'sk-openai-test',
    TEAM_A_KEY: KEY,
  })
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 })
  const first = await client.chat.completions.create({ model: 'qwen', messages: [{ role: 'user', content: 'Hello' }] })
  assert.equal(first.choices[0]?.message.content, expectedContent(6))
  assert.equal(first.model, 'Qwen/Qwen2.5-7B-Instruct')
  // The whole pool down: the hosted fallback answers.
  a.setDefaults({ status: 503 })
  b.setDefaults({ status: 503 })
  const fallback = await client.chat.completions.create({ model: 'qwen', messages: [{ role: 'user', content: 'Hello' }] })
  assert.equal(fallback.model, 'gpt-4o-mini')
  assert.equal(hosted.requests.filter((r) => r.method === 'POST').at(-1)?.headers.authorization, 'Bearer sk-openai-test')
})

test('recipe 2: Claude Code / the Anthropic SDK on an OpenAI-compatible pool', async () => {
  const vllm = await mock()
  vllm.setDefaults({ tokens: 6, toolCalls: [{ name: 'Read', arguments: { file_path: 'README.md' } }] })
  const url = await gateway(recipe('claude-code-on-vllm'), { VLLM_URL: vllm.url, GATEWAY_KEY: KEY })
  // What `ANTHROPIC_BASE_URL=<gateway> ANTHROPIC_API_KEY=<key> claude` does, through the SDK Claude Code is built on,
  // with the model names Claude Code 2.1 sends.
  const client = new Anthropic({ baseURL: url, apiKey: KEY, maxRetries: 0 })
  for (const model of ['claude-sonnet-5', 'claude-haiku-4-5-20251001']) {
    const answer = await client.messages.create({ model, max_tokens: 16, messages: [{ role: 'user', content: 'Hi' }] })
    assert.equal(answer.type, 'message', model)
  }
  const message = await client.messages
    .stream({
      model: 'claude-opus-4-8',
      max_tokens: 1024,
      tools: [
        { name: 'Read', description: 'Read a file', input_schema: { type: 'object', properties: { file_path: { type: 'string' } } } },
      ],
      messages: [{ role: 'user', content: 'What is in the README?' }],
    })
    .finalMessage()
  assert.equal(message.stop_reason, 'tool_use')
  const call = message.content.find((block) => block.type === 'tool_use')
  assert.deepEqual(call?.type === 'tool_use' ? call.input : null, { file_path: 'README.md' })
  // The last generation request (the pool's health checks are GETs that may come after it).
  const sent = vllm.requests.filter((r) => r.method === 'POST').at(-1)?.body as { model: string; tools: unknown[] }
  assert.equal(sent.model, 'Qwen/Qwen3-Coder-30B-A3B-Instruct')
  assert.equal(sent.tools.length, 1)
})

test('recipe 3: the OpenAI SDK on Claude and on Gemini', async () => {
  const [anthropic, gemini] = [await mock(), await mock()]
  const url = await gateway(recipe('openai-sdk-on-claude'), {
    ANTHROPIC_URL: anthropic.url,
    ANTHROPIC_API_KEY: 'sk-ant-test',
    GEMINI_URL: gemini.url,
    GEMINI_API_KEY: 'gemini-test',
    GATEWAY_KEY: KEY,
  })
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY, maxRetries: 0 })
  for (const [model, upstream, header, secret] of [
    ['claude', anthropic, 'x-api-key', 'sk-ant-test'],
    ['gemini', gemini, 'x-goog-api-key', 'gemini-test'],
  ] as const) {
    const stream = await client.chat.completions.create({ model, stream: true, messages: [{ role: 'user', content: 'Hello' }] })
    let text = ''
    for await (const part of stream) text += part.choices[0]?.delta.content ?? ''
    assert.equal(text, expectedContent(6), model)
    assert.equal(upstream.requests.filter((r) => r.method === 'POST').at(-1)?.headers[header], secret)
  }
})

test('the recipes in the README are these files, as written', () => {
  const readme = readFileSync(`${root}README.md`, 'utf8')
  for (const name of ['vllm-failover', 'claude-code-on-vllm', 'openai-sdk-on-claude']) {
    const file = readFileSync(recipe(name), 'utf8').trim()
    assert.ok(readme.includes(file), `README.md shows examples/recipes/${name}.yaml as it is`)
  }
})
