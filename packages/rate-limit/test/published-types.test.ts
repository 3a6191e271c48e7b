// The declarations the package publishes (dist/*.d.ts), compiled as an app compiles them: strict, skipLibCheck off.
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const pkg = fileURLToPath(new URL('..', import.meta.url))

test('the published declarations compile in an app that does not import @fastify/rate-limit', () => {
  // Inside the package, so that the declarations' imports resolve through its node_modules (to the workspace's sources).
  const out = mkdtempSync(join(pkg, '.published-types-'))
  try {
    const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
    const fromSources = ['--module', 'nodenext', '--customConditions', 'llmproxy-source', '--types', 'node']
    execFileSync(process.execPath, [tsc, '-p', join(pkg, 'tsconfig.build.json'), ...fromSources, '--noCheck', '--outDir', out])
    const declarations = readdirSync(out)
      .filter((name) => name.endsWith('.d.ts'))
      .map((name) => join(out, name))
    const program = ts.createProgram(declarations, {
      strict: true,
      skipLibCheck: false,
      noEmit: true,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      customConditions: ['llmproxy-source'],
      target: ts.ScriptTarget.ES2023,
      types: ['node'],
    })
    // Only the declarations are checked (the sources they import have their own type check).
    const problems = declarations
      .flatMap((file) => program.getSemanticDiagnostics(program.getSourceFile(file)))
      .map((diagnostic) => ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n'))
    assert.ok(declarations.length > 10)
    assert.deepEqual(problems, [])
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
})
