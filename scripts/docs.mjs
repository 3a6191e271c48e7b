#!/usr/bin/env node
// `pnpm docs`: rewrites the generated parts of README.md (the config reference, from the config schema).
import { readFileSync, writeFileSync } from 'node:fs'
import { replaceSection } from './readme-sections.mjs'

const { configReference } = await import('@llmproxy/server')
const file = new URL('../README.md', import.meta.url)
writeFileSync(file, replaceSection(readFileSync(file, 'utf8'), 'config-reference', configReference()))
