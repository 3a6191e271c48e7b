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
 * Characters of JSON a request's inlined `$ref`s may add, all its schemas together. A definition referring to another
 * twice, which refers to another twice, … doubles at each step (2.5 KB of schema made 247 MB of request); one
 * definition with a long `description` referred to 19,000 times made 476 MB from 679 KB. Counted as serialised, the
 * values copied untouched (descriptions, enums, defaults) included. Real tool schemas (Claude Code's, MCP servers')
 * add tens of kilobytes.
 */
export const MAX_INLINED_CHARS = 2_000_000

/**
 * How deep an inlined schema may nest, each `$ref` followed counting as a level: as deep as a request body may nest
 * (its own schemas never reach it). A chain of definitions each referring to the next nests without bound, and the
 * recursion that inlines it overflowed the stack at a few thousand.
 */
export const MAX_INLINED_DEPTH = 128

/** What a request's schemas may still add by inlining, in characters (one per request, shared by its tools and response format). */
export interface InlineBudget {
  left: number
}

/**
 * A copy of `schema` that Gemini's JSON Schema fields accept: no `$schema`, local `$ref`s inlined (unless recursive).
 * Throws a ConversionError naming `field` when the inlining would outgrow `budget` or nest too deep.
 */
export function toGeminiJsonSchema(schema: JsonObject, field: string, budget: InlineBudget): JsonObject {
  const defs = { ...(isObject(schema.$defs) ? schema.$defs : {}), ...(isObject(schema.definitions) ? schema.definitions : {}) }
  const state: InlineState = { defs, recursive: false, field, budget, lengths: new WeakMap() }
  const { $defs, definitions, ...body } = schema
  const out = geminiNode(body, state, [], 0) as JsonObject
  // The definitions go along only for a recursive $ref kept (Gemini unrolls it); else everything is inlined.
  if (state.recursive) {
    if ($defs !== undefined) out.$defs = mapValues($defs, state, [], true, 0)
    if (definitions !== undefined) out.definitions = mapValues(definitions, state, [], true, 0)
  }
  return out
}

interface InlineState {
  defs: JsonObject
  /** A recursive `$ref` was kept (so `$defs` must stay). */
  recursive: boolean
  field: string
  budget: InlineBudget
  /** Serialised lengths of the objects and arrays copied as they are (see jsonLength). */
  lengths: WeakMap<object, number>
}

function geminiNode(node: unknown, state: InlineState, chain: string[], depth: number): unknown {
  if (depth > MAX_INLINED_DEPTH) {
    throw new ConversionError(
      state.field,
      `Its $refs, inlined for Gemini (which takes no $ref with other keywords), nest it more than ${MAX_INLINED_DEPTH} levels deep.`,
    )
  }
  // Inside an inlined definition, everything is added by the inlining (the rest is the request's own, bounded by its size).
  const inlined = chain.length > 0
  if (Array.isArray(node)) {
    if (inlined) charge(state, node.length + 1)
    return node.map((item) => geminiNode(item, state, chain, depth + 1))
  }
  if (!isObject(node)) {
    if (inlined) charge(state, jsonLength(node, state))
    return node
  }
  const ref = typeof node.$ref === 'string' ? localRefName(node.$ref) : undefined
  if (ref !== undefined && isObject(state.defs[ref])) {
    if (chain.includes(ref)) {
      // Gemini unrolls recursion itself; a $ref there may only have `$` siblings.
      state.recursive = true
      const kept = { $ref: node.$ref }
      if (inlined) charge(state, jsonLength(kept, state))
      return kept
    }
    const { $ref: _ref, ...siblings } = node
    return geminiNode({ ...state.defs[ref], ...siblings }, state, [...chain, ref], depth + 1)
  }
  const out: JsonObject = {}
  if (inlined) charge(state, 2)
  for (const key in node) {
    if (key === '$schema') continue
    const value = node[key]
    if (inlined) charge(state, key.length + 4)
    // Keyword values that are not schemas (enum, const, default, examples) are copied untouched.
    if (SCHEMA_VALUED.has(key)) out[key] = geminiNode(value, state, chain, depth + 1)
    else if (SCHEMA_MAPS.has(key)) out[key] = mapValues(value, state, chain, key === '$defs' || key === 'definitions', depth + 1)
    else {
      if (inlined) charge(state, jsonLength(value, state))
      out[key] = value
    }
  }
  return out
}

/** Takes `chars` from the request's inlining budget; refuses the request when it runs out. */
function charge(state: InlineState, chars: number): void {
  state.budget.left -= chars
  if (state.budget.left < 0) {
    throw new ConversionError(
      state.field,
      `Its $refs, inlined for Gemini (which takes no $ref with other keywords), add more than ${MAX_INLINED_CHARS} characters of schema to this request.`,
    )
  }
}

/**
 * A JSON value's length serialised: what a copy of it adds to the upstream's request. A string counts its characters
 * (escapes aside: serialising each copy would double the cost of inlining). An object or array (an enum, a default) is
 * copied by reference into each place its definition is inlined: it is serialised once.
 */
function jsonLength(value: unknown, state: InlineState): number {
  if (typeof value === 'string') return value.length + 2
  if (typeof value !== 'object' || value === null) return String(value).length
  let length = state.lengths.get(value)
  if (length === undefined) {
    length = JSON.stringify(value).length
    state.lengths.set(value, length)
  }
  return length
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
function mapValues(value: unknown, state: InlineState, chain: string[], definitions: boolean, depth: number): unknown {
  const inlined = chain.length > 0
  if (!isObject(value)) {
    if (inlined) charge(state, jsonLength(value, state))
    return value
  }
  const out: JsonObject = {}
  if (inlined) charge(state, 2)
  for (const key in value) {
    if (inlined) charge(state, key.length + 4)
    out[key] = geminiNode(value[key], state, definitions ? [...chain, key] : chain, depth + 1)
  }
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
