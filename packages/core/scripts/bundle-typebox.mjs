// Part of `pnpm build`: replaces tsc's dist/typebox.js (a re-export of TypeBox's ~680 modules) with one
// bundled module, so a process that loads @llmproxy/core/typebox loads one file (see src/typebox.ts).
// `node scripts/bundle-typebox.mjs FILE` writes the bundle to FILE instead (the tests do).
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = fileURLToPath(new URL('..', import.meta.url))
await build({
  absWorkingDir: root,
  entryPoints: ['src/typebox.ts'],
  outfile: process.argv[2] === undefined ? join(root, 'dist/typebox.js') : resolve(process.argv[2]),
  allowOverwrite: true,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  legalComments: 'none',
  logLevel: 'warning',
  sourcemap: true,
})
