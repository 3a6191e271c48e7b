import { ConfigSchema } from './config.js'

type JsonObject = Record<string, unknown>

/**
 * A property with a default may be left out of a config file, but TypeBox lists it as required.
 * Editors would flag it as missing, so such properties are dropped from `required`.
 */
function optionalDefaults(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(optionalDefaults)
  if (node === null || typeof node !== 'object') return node
  const out: JsonObject = {}
  for (const [key, value] of Object.entries(node as JsonObject)) out[key] = optionalDefaults(value)
  const properties = out.properties as Record<string, JsonObject> | undefined
  if (Array.isArray(out.required) && properties !== undefined) {
    const required = (out.required as string[]).filter((name) => properties[name]?.default === undefined)
    if (required.length > 0) out.required = required
    else delete out.required
  }
  return out
}

/** The config's JSON Schema (draft 2020-12), as printed by `llmproxy schema` and committed as schema.json. */
export function configJsonSchema(): JsonObject {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'LLMProxy configuration',
    ...(optionalDefaults(JSON.parse(JSON.stringify(ConfigSchema))) as JsonObject),
  }
}
