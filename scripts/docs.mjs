#!/usr/bin/env node
// `pnpm docs`: rewrites the generated parts of README.md (the config reference, from the config schema).
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { replaceSection } from './readme-sections.mjs'

const { configReference } = await import('@llmproxy/server')
const file = new URL('../README.md', import.meta.url)
writeFileSync(file, replaceSection(readFileSync(file, 'utf8'), 'config-reference', configReference()))
// The formatter pads the table's cells; keep the file as `pnpm lint` wants it.
execFileSync('npx', ['biome', 'format', '--write', 'README.md'], { cwd: new URL('..', import.meta.url), stdio: 'inherit' })
