// The README is the front door: its generated parts must match the code, and what it shows must run.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { test } from 'node:test'
import { configReference, loadConfigFile } from '@llmproxy/server'
import { normalizeTable, readSection } from '../../scripts/readme-sections.mjs'

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')

test('the config reference in docs/configuration.md is generated from the current schema (run `pnpm run docs`)', () => {
  const reference = readFileSync(new URL('../../docs/configuration.md', import.meta.url), 'utf8')
  assert.equal(normalizeTable(readSection(reference, 'config-reference') ?? ''), normalizeTable(configReference()))
})

test('the README states the two commands, and .ci/run calls the test command', () => {
  assert.ok(readme.includes('npx -y pnpm@12.4.2 install --frozen-lockfile && npx -y pnpm@12.4.2 start'))
  assert.ok(readme.includes('npx -y pnpm@12.4.2 install --frozen-lockfile && npx -y pnpm@12.4.2 test'))
  const ci = readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8')
  assert.match(ci, /^pnpm test$/m)
})

test('the example config is valid', () => {
  const env = { OPENAI_API_KEY: 'sk-x', TEAM_A_KEY: 'sk-team-a-0000000000', WEBHOOK_SECRET: 'whsec', ADMIN_TOKEN: 'admin-token-0123456789' }
  const config = loadConfigFile(new URL('../../examples/config/gateway.yaml', import.meta.url).pathname, env)
  assert.equal(config.models[0]?.name, 'qwen-7b')
})
