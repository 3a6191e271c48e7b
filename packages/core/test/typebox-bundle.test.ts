// The build's TypeBox (scripts/bundle-typebox.mjs): one module that works like TypeBox itself.
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath, pathToFileURL } from 'node:url'

const core = fileURLToPath(new URL('..', import.meta.url))

test('the bundled TypeBox is one module, with working builders, defaults and errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmproxy-typebox-'))
  try {
    const bundle = join(dir, 'typebox.js')
    execFileSync(process.execPath, [join(core, 'scripts/bundle-typebox.mjs'), bundle], { cwd: dir })
    // A fresh process records every module it loads (besides Node's own) while importing the bundle.
    const hooks = `data:text/javascript,${encodeURIComponent(
      'export async function load(url, context, next) { if (!url.startsWith("node:")) process.stderr.write("LOADED " + url + "\\n"); return next(url, context) }',
    )}`
    const script = `
      import { register } from 'node:module'
      register(${JSON.stringify(hooks)})
      const { Type, Value } = await import(${JSON.stringify(pathToFileURL(bundle).href)})
      const schema = Type.Object({ port: Type.Integer({ minimum: 1, default: 8080 }), host: Type.Optional(Type.String()) }, { additionalProperties: false })
      const errors = [...Value.Errors(schema, { port: 0, extra: 1 })].map((e) => e.instancePath + ' ' + e.keyword)
      console.log(JSON.stringify({ defaults: Value.Default(schema, {}), errors }))
    `
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: dir, encoding: 'utf8' })
    assert.equal(child.status, 0, child.stderr)
    const loaded = child.stderr.split('\n').filter((line) => line.startsWith('LOADED '))
    assert.deepEqual(loaded, [`LOADED ${pathToFileURL(bundle).href}`])
    const result = JSON.parse(child.stdout) as { defaults: unknown; errors: string[] }
    assert.deepEqual(result.defaults, { port: 8080 })
    assert.ok(result.errors.includes('/port minimum'), result.errors.join(', '))
    assert.ok(
      result.errors.some((e) => e.startsWith('/extra')),
      result.errors.join(', '),
    )
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
