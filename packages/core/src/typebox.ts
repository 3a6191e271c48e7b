/**
 * TypeBox, as every @llmproxy package uses it: the `Type` builders, `Value` (defaults and errors) and
 * `Settings`. From source this is TypeBox itself; the build bundles it into one module (dist/typebox.js),
 * because TypeBox 1.x ships ~680 ES modules and Node 20 pays for each one it loads: importing them cost
 * the gateway 16 MB of RSS and 335 ms of start-up, bundled 4 MB and 19 ms.
 */
import Type from 'typebox'

export type { Static, TSchema } from 'typebox'
export { Settings } from 'typebox/system'
export { Value } from 'typebox/value'
export { Type }
