#!/usr/bin/env node
import { parseArgs } from 'node:util'
import type { MockBehavior } from './behavior.js'
import { startMockUpstream } from './server.js'

const USAGE = `Usage: llmproxy-mock [options]

A mock LLM server (OpenAI, Anthropic, Gemini, TGI wire formats).

Options:
  --port <n>        port to listen on (default 9000; 0 = a free port)
  --host <host>     host to listen on (default 127.0.0.1)
  --ttft <ms>       delay before the first token (default 0)
  --gap <ms>        delay between tokens (default 0)
  --tokens <n>      completion tokens per answer (default 8)
  --models <a,b>    models listed by GET /v1/models (default mock-model)
  -h, --help        show this help
`

function fail(message: string): never {
  process.stderr.write(`llmproxy-mock: ${message}\n\n${USAGE}`)
  process.exit(1)
}

function number(name: string, value: string | undefined, integer: boolean): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) {
    fail(`--${name} must be ${integer ? 'an integer' : 'a number'} >= 0, got ${JSON.stringify(value)}`)
  }
  return n
}

async function main(): Promise<void> {
  let values: ReturnType<typeof parse>['values']
  try {
    values = parse().values
  } catch (err) {
    fail((err as Error).message)
  }
  if (values.help === true) {
    process.stdout.write(USAGE)
    return
  }
  const defaults: MockBehavior = {}
  const ttft = number('ttft', values.ttft, false)
  if (ttft !== undefined) defaults.ttftMs = ttft
  const gap = number('gap', values.gap, false)
  if (gap !== undefined) defaults.gapMs = gap
  const tokens = number('tokens', values.tokens, true)
  if (tokens !== undefined) defaults.tokens = tokens
  const models = values.models
    ?.split(',')
    .map((m) => m.trim())
    .filter((m) => m !== '')

  const mock = await startMockUpstream({
    port: number('port', values.port, true) ?? 9000,
    host: values.host ?? '127.0.0.1',
    defaults,
    models: models !== undefined && models.length > 0 ? models : undefined,
    // A long-running server must not keep every request in memory.
    record: false,
  })
  process.stdout.write(`mock upstream listening on ${mock.url}\n`)

  const stop = (): void => {
    mock.close().then(
      () => process.stdout.write('mock upstream stopped\n'),
      (err: unknown) => {
        process.stderr.write(`llmproxy-mock: ${String(err)}\n`)
        process.exitCode = 1
      },
    )
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

function parse() {
  return parseArgs({
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      ttft: { type: 'string' },
      gap: { type: 'string' },
      tokens: { type: 'string' },
      models: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  })
}

main().catch((err: unknown) => {
  process.stderr.write(`llmproxy-mock: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
