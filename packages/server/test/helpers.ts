import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import type { TestContext } from 'node:test'
import { type MockUpstream, startMockUpstream } from '@llmproxy/mock-upstream'
import type { FastifyInstance } from 'fastify'
import { buildGateway, parseConfig } from '../src/index.js'

/** A log destination that collects the gateway's log lines (JSON text, one per entry) into `lines`. */
export function logSink(lines: string[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(line)
      callback()
    },
  })
}

/**
 * A directory on a read-only filesystem (a tmpfs mounted `ro`, unmounted after the test), where writing fails with
 * EROFS for root too, as on a container's read-only root filesystem. Null when mounting is not allowed (not root).
 */
export function readOnlyDirectory(t: TestContext): string | null {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-read-only-'))
  if (process.getuid?.() !== 0 || spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', dir]).status !== 0) {
    rmSync(dir, { recursive: true, force: true })
    return null
  }
  t.after(() => {
    spawnSync('umount', [dir])
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

export interface ServerHarness {
  app: FastifyInstance
  url: string
  mock: MockUpstream
  logs: Record<string, unknown>[]
  logText(): string
  close(): Promise<void>
}

/** The reference gateway built from a config (YAML text appended to a base pointing at a mock), on a real socket. */
export async function startServer(options: { server?: string; extraYaml?: string; env?: NodeJS.ProcessEnv } = {}): Promise<ServerHarness> {
  const mock = await startMockUpstream({ defaults: { tokens: 5 } })
  try {
    return await startOn(mock, options)
  } catch (err) {
    await mock.close()
    throw err
  }
}

async function startOn(
  mock: MockUpstream,
  options: { server?: string; extraYaml?: string; env?: NodeJS.ProcessEnv },
): Promise<ServerHarness> {
  const text = `
server: { host: 127.0.0.1, port: 0${options.server ? `, ${options.server}` : ''} }
upstreams:
  - { name: mock, url: "${mock.url}", protocol: openai, apiKey: "sk-upstream-secret-value" }
models:
  - { name: gpt-test, aliases: [alias-test], upstreams: [mock], upstreamModel: mock-model }
healthChecks: { enabled: false }
${options.extraYaml ?? ''}`
  const config = parseConfig(text, 'test', options.env ?? {})
  const logs: Record<string, unknown>[] = []
  const lines: string[] = []
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) {
        if (line === '') continue
        lines.push(line)
        logs.push(JSON.parse(line) as Record<string, unknown>)
      }
      callback()
    },
  })
  const app = await buildGateway(config, { logDestination: destination })
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    app,
    url,
    mock,
    logs,
    logText: () => lines.join('\n'),
    async close() {
      await app.close()
      await mock.close()
    },
  }
}

export { eventually } from '@llmproxy/mock-upstream'
