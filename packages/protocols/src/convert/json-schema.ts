/**
 * JSON Schema between the formats. OpenAI and Anthropic take JSON Schema as is. Gemini takes full JSON Schema in
 * `parametersJsonSchema` / `responseJsonSchema` (what we send), with two limits that break real tool schemas (Claude
 * Code's, MCP servers'): it rejects `$schema`, and a `$ref` there may have no sibling keywords. Gemini clients may
 * send the older OpenAPI-subset `Schema` (`parameters`, `responseSchema`: upper-case types, `nullable`), which the
 * other formats do not take.
 */
import { isObject, type JsonObject } from './request-ir.js'
import { ConversionError } from './types.js'

/**
 * Schema nodes a request's inlined `$ref`s may add, all its schemas together. A definition referring to another
 * twice, which refers to another twice, … doubles at each step: 2.5 KB of schema made 247 MB of request and ran the
 * gateway out of memory. Real tool schemas (Claude Code's, MCP servers') add a few thousand.
 */
export const MAX_INLINED_NODES = 20_000

/** What a request's schemas may still add by inlining (one per request, shared by its tools and response format). */
export interface InlineBudget {
  left: number
}

/**
 * A copy of `schema` that Gemini's JSON Schema fields accept: no `$schema`, local `$ref`s inlined (unless recursive).
 * Throws a ConversionError naming `field` when the inlining would outgrow `budget`.
 */
export function toGeminiJsonSchema(schema: JsonObject, field: string, budget: InlineBudget): JsonObject {
  const defs = { ...(isObject(schema.$defs) ? schema.$defs : {}), ...(isObject(schema.definitions) ? schema.definitions : {}) }
  const state: InlineState = { defs, recursive: false, field, budget }
  const { $defs, definitions, ...body } = schema
  const out = geminiNode(body, state, []) as JsonObject
  // The definitions go along only for a recursive $ref kept (Gemini unrolls it); else everything is inlined.
  if (state.recursive) {
    if ($defs !== undefined) out.$defs = mapValues($defs, state, [], true)
    if (definitions !== undefined) out.definitions = mapValues(definitions, state, [], true)
  }
  return out
}

interface InlineState {
  defs: JsonObject
  /** A recursive `$ref` was kept (so `$defs` must stay). */
  recursive: boolean
  field: string
  budget: InlineBudget
}

function geminiNode(node: unknown, state: InlineState, chain: string[]): unknown {
  if (Array.isArray(node)) return node.map((item) => geminiNode(item, state, chain))
  if (!isObject(node)) return node
  // Inside an inlined definition, each node is added by the inlining (the rest is the request's own, bounded by its size).
  if (chain.length > 0 && --state.budget.left < 0) {
    throw new ConversionError(
      state.field,
      `Its $refs, inlined for Gemini (which takes no $ref with other keywords), make more than ${MAX_INLINED_NODES} schema nodes in this request.`,
    )
  }
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
