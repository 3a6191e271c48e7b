/**
 * JSON Schema between the formats. OpenAI and Anthropic take JSON Schema as is. Gemini takes full JSON Schema in
 * `parametersJsonSchema` / `responseJsonSchema` (what we send), with two limits that break real tool schemas (Claude
 * Code's, MCP servers'): it rejects `$schema`, and a `$ref` there may have no sibling keywords. Gemini clients may
 * send the older OpenAPI-subset `Schema` (`parameters`, `responseSchema`: upper-case types, `nullable`), which the
 * other formats do not take.
 */
import { isObject, type JsonObject } from './request-ir.js'

/** A copy of `schema` that Gemini's JSON Schema fields accept: no `$schema`, local `$ref`s inlined (unless recursive). */
export function toGeminiJsonSchema(schema: JsonObject): JsonObject {
  const defs = { ...(isObject(schema.$defs) ? schema.$defs : {}), ...(isObject(schema.definitions) ? schema.definitions : {}) }
  const state = { defs, recursive: false }
  const out = geminiNode(schema, state, []) as JsonObject
  if (!state.recursive) {
    delete out.$defs
    delete out.definitions
  }
  return out
}

interface InlineState {
  defs: JsonObject
  /** A recursive `$ref` was kept (so `$defs` must stay). */
  recursive: boolean
}

function geminiNode(node: unknown, state: InlineState, chain: string[]): unknown {
  if (Array.isArray(node)) return node.map((item) => geminiNode(item, state, chain))
  if (!isObject(node)) return node
  const ref = typeof node.$ref === 'string' ? localRefName(node.$ref) : undefined
  if (ref !== undefined && isObject(state.defs[ref])) {
    if (chain.includes(ref)) {
      // Gemini unrolls recursion itself; a $ref there may only have `$` siblings.
      state.recursive = true
      return { $ref: node.$ref }
    }
    const { $ref: _ref, ...siblings } = node
    return geminiNode({ ...state.defs[ref], ...siblings }, state, [...chain, ref])
  }
  const out: JsonObject = {}
  for (const key in node) {
    if (key === '$schema') continue
    const value = node[key]
    // Keyword values that are not schemas (enum, const, default, examples) are copied untouched.
    out[key] = SCHEMA_VALUED.has(key)
      ? geminiNode(value, state, chain)
      : SCHEMA_MAPS.has(key)
        ? mapValues(value, state, chain, key === '$defs' || key === 'definitions')
        : value
  }
  return out
}

const SCHEMA_VALUED: ReadonlySet<string> = new Set([
  'items',
  'prefixItems',
  'additionalProperties',
  'anyOf',
  'oneOf',
  'allOf',
  'not',
  'propertyNames',
  'contains',
  'if',
  'then',
  'else',
])
const SCHEMA_MAPS: ReadonlySet<string> = new Set(['properties', 'patternProperties', '$defs', 'definitions'])

/** Property maps and definition maps (a definition is on its own resolution chain, so its recursion stays a $ref). */
function mapValues(value: unknown, state: InlineState, chain: string[], definitions: boolean): unknown {
  if (!isObject(value)) return value
  const out: JsonObject = {}
  for (const key in value) out[key] = geminiNode(value[key], state, definitions ? [...chain, key] : chain)
  return out
}

function localRefName(ref: string): string | undefined {
  if (ref.startsWith('#/$defs/')) return ref.slice(8)
  if (ref.startsWith('#/definitions/')) return ref.slice(14)
  return undefined
}

/** Gemini's OpenAPI-subset Schema → JSON Schema: lower-case types, `nullable` as a `null` type, int64 strings as numbers. */
export function fromGeminiSchema(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(fromGeminiSchema)
  if (!isObject(schema)) return schema
  const out: JsonObject = {}
  for (const key in schema) {
    const value = schema[key]
    if (key === 'nullable' || key === 'propertyOrdering' || key === 'example') continue
    // Gemini marks a string enum with format "enum", which is no JSON Schema format (strict schemas refuse it).
    if (key === 'format' && value === 'enum') continue
    if (key === 'type') {
      if (typeof value === 'string' && value !== 'TYPE_UNSPECIFIED') out.type = value.toLowerCase()
    } else if (key === 'properties' && isObject(value)) {
      const properties: JsonObject = {}
      for (const name in value) properties[name] = fromGeminiSchema(value[name])
      out.properties = properties
    } else if (key === 'items' || key === 'anyOf') {
      out[key] = fromGeminiSchema(value)
    } else if (INT64_KEYWORDS.has(key) && typeof value === 'string') {
      out[key] = Number(value)
    } else {
      out[key] = value
    }
  }
  if (schema.nullable === true) {
    if (typeof out.type === 'string') out.type = [out.type, 'null']
    else if (Array.isArray(out.anyOf)) out.anyOf = [...out.anyOf, { type: 'null' }]
    // An enum lists every value a schema takes: null too, or the null type above would admit nothing.
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null]
  }
  return out
}

const INT64_KEYWORDS: ReadonlySet<string> = new Set(['minItems', 'maxItems', 'minLength', 'maxLength', 'minProperties', 'maxProperties'])
