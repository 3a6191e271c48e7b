import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { makeDirectory } from '../src/index.js'

test('makeDirectory makes the missing directories, again and again, and says why one cannot be made', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'llmproxy-make-directory-'))
  t.after(() => rmSync(root, { recursive: true, force: true }))
  const deep = join(root, 'a', 'b', 'c')
  makeDirectory(deep)
  makeDirectory(deep)
  assert.ok(statSync(deep).isDirectory())
  // A file in the way.
  writeFileSync(join(root, 'file'), '')
  assert.throws(() => makeDirectory(join(root, 'file', 'spool')), { code: 'ENOTDIR' })
  assert.throws(() => makeDirectory(join(root, 'file')), { code: 'EEXIST' })
})

test('makeDirectory fails at once where a directory that exists answers ENOENT (Node 20’s recursive mkdir loops for good)', {
  skip: !existsSync('/proc/self'),
}, () => {
  assert.throws(() => makeDirectory('/proc/llmproxy-spool/usage'), { code: 'ENOENT' })
})
