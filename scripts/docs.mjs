#!/usr/bin/env node
// `pnpm run docs` (`run`: pnpm has a `docs` command of its own): rewrites the generated parts of the docs: the
// config reference (from the config schema) and the error catalogue (from @llmproxy/core's CATALOGUE).
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { errorTable, replaceSection } from './readme-sections.mjs'

const { configReference } = await import('@llmproxy/server')
const { CATALOGUE } = await import('@llmproxy/core')
const rewrite = (path, name, content) => {
  const file = new URL(`../${path}`, import.meta.url)
  writeFileSync(file, replaceSection(readFileSync(file, 'utf8'), name, content))
}
rewrite('docs/configuration.md', 'config-reference', configReference())
rewrite('docs/errors.md', 'error-catalogue', errorTable(CATALOGUE))
// The formatter pads the tables' cells; keep the files as `pnpm lint` wants them.
execFileSync('npx', ['biome', 'format', '--write', 'docs/configuration.md', 'docs/errors.md'], {
  cwd: new URL('..', import.meta.url),
  stdio: 'inherit',
})
