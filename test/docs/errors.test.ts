// docs/errors.md lists every error code the gateway can answer with: generated from the one catalogue in code.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CATALOGUE, errors } from '@llmproxy/core'
import { buildGateway, parseConfig } from '@llmproxy/server'
import { errorTable, normalizeTable, readSection } from '../../scripts/readme-sections.mjs'

const root = new URL('../..', import.meta.url).pathname

test('docs/errors.md is generated from the error catalogue (run `pnpm run docs`)', () => {
  const doc = readFileSync(join(root, 'docs/errors.md'), 'utf8')
  assert.equal(normalizeTable(readSection(doc, 'error-catalogue') ?? ''), normalizeTable(errorTable(CATALOGUE)))
})

function sources(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (name === 'node_modules' || name === 'dist' || name === 'test') continue
    if (statSync(path).isDirectory()) sources(path, out)
    else if (name.endsWith('.ts')) out.push(path)
  }
  return out
}

test('no package source builds an error with a code of its own: every error comes from the catalogue', () => {
  const offenders: string[] = []
  for (const file of sources(join(root, 'packages'))) {
    if (file.includes('/mock-upstream/') || file.endsWith('core/src/errors.ts')) continue
    if (readFileSync(file, 'utf8').includes('new LlmProxyError(')) offenders.push(file.slice(root.length))
  }
  assert.deepEqual(offenders, [])
  // And every code string a source names is in the catalogue.
  const unknown = new Set<string>()
  for (const file of sources(join(root, 'packages'))) {
    if (file.includes('/mock-upstream/')) continue
    for (const match of readFileSync(file, 'utf8').matchAll(/'(llmproxy_[a-z_]+)'/g)) {
      if (!((match[1] as string) in CATALOGUE)) unknown.add(`${match[1]} (${file.slice(root.length)})`)
    }
  }
  assert.deepEqual([...unknown], [])
})

test('llmproxy_forbidden, which the gateway never answers on its own, is what a custom rule throws (auth README)', async () => {
  const readme = readFileSync(join(root, 'packages/auth/README.md'), 'utf8')
  assert.ok(readme.includes('### Custom access rules') && readme.includes('throw errors.forbidden('))
  const config = parseConfig(
    `
upstreams: [{ name: a, url: "http://127.0.0.1:9", protocol: openai }]
models: [{ name: m, upstreams: [a] }]
healthChecks: { enabled: false }
server: { logLevel: silent }
auth: { keys: [{ id: interns, key: sk-interns-0123456789 }] }
`,
    'errors test',
    {},
  )
  const app = await buildGateway(config)
  try {
    app.addHook('preHandler', async (request) => {
      if (request.llm.keyId === 'interns') throw errors.forbidden('This key may not be used after 20:00.')
    })
    const headers = { authorization: 'Bearer sk-interns-0123456789', 'content-type': 'application/json' }
    const openai = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers, payload: { model: 'm', messages: [] } })
    assert.equal(openai.statusCode, 403)
    assert.deepEqual(openai.json().error, {
      message: 'This key may not be used after 20:00.',
      type: 'permission_error',
      param: null,
      code: 'llmproxy_forbidden',
    })
    const anthropic = await app.inject({
      method: 'POST',
      url: '/v1/messages',
      headers,
      payload: { model: 'm', max_tokens: 1, messages: [] },
    })
    assert.equal(anthropic.json().error.code, 'llmproxy_forbidden')
  } finally {
    await app.close()
  }
})
