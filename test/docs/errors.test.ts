// docs/errors.md lists every error code the gateway can answer with: generated from the one catalogue in code.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import { CATALOGUE } from '@llmproxy/core'
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
