// Loaded into every Node process of a test run by scripts/run-tests.mjs (through NODE_OPTIONS): @llmproxy/core's
// src/typebox.ts resolves to LLMPROXY_TEST_TYPEBOX, the module the build makes of it
// (packages/core/scripts/bundle-typebox.mjs). TypeBox is ~680 ES modules, and loading them through tsx cost each
// test process about 2 s of CPU: most of the suite's time on 2 cores. The code is TypeBox's own either way.
import { register } from 'node:module'
import { pathToFileURL } from 'node:url'

const bundle = process.env.LLMPROXY_TEST_TYPEBOX
if (bundle) {
  const source = new URL('../packages/core/src/typebox.ts', import.meta.url).href
  const hooks = `export async function resolve(specifier, context, next) {
    const resolved = await next(specifier, context)
    return resolved.url === ${JSON.stringify(source)} ? { url: ${JSON.stringify(pathToFileURL(bundle).href)}, shortCircuit: true } : resolved
  }`
  register(`data:text/javascript,${encodeURIComponent(hooks)}`)
}
