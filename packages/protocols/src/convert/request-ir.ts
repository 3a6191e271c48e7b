/**
 * The neutral request every client format is parsed into and every upstream format is rendered from (3 parsers +
 * 3 renderers instead of 6 pairwise converters). It holds only what some format can express and another can take;
 * each part that a renderer may refuse keeps the client's field path (`path`) for the ConversionError.
 */
import { echoed } from '@llmproxy/core'
import { InvalidFieldError } from './types.js'

export type JsonObject = Record<string, unknown>

/** OpenAI's reasoning_effort scale, the widest of the three (Anthropic output_config.effort and Gemini thinkingLevel are subsets). */
export type Effort = 'minimal' | 'low' | 'medium' | 'high' | 'xhigh' | 'max'

/** Bytes inline (base64) or a URL the upstream fetches itself. */
export type MediaSource = { kind: 'base64'; mediaType: string; data: string } | { kind: 'url'; url: string; mediaType?: string }

export type TextPart = { type: 'text'; text: string }
export type ImagePart = { type: 'image'; source: MediaSource; path: string }
/** A PDF (bytes or URL) or a plain-text document. */
export type DocumentPart = { type: 'document'; source: MediaSource | { kind: 'text'; text: string }; title?: string; path: string }
export type AudioPart = { type: 'audio'; mediaType: string; data: string; path: string }
/** What a tool result may carry. */
export type ResultPart = TextPart | ImagePart | DocumentPart

export type Part =
  | TextPart
  | ImagePart
  | DocumentPart
  | AudioPart
  /** Reasoning in assistant history; `signature` is the upstream's (Anthropic thinking signature, Gemini thoughtSignature). */
  | { type: 'reasoning'; text: string; signature?: string }
  /** Anthropic redacted_thinking: only an Anthropic upstream can take it. */
  | { type: 'redacted_reasoning'; data: string }
  /** `id` without the signature suffix (see splitToolCallId); `signature` is what the suffix carried. */
  | { type: 'tool_call'; id: string; name: string; input: JsonObject; signature?: string }
  | { type: 'tool_result'; callId: string; content: ResultPart[]; isError: boolean; path: string }

/** `system` turns are system messages after the first non-system one (OpenAI, Anthropic); only OpenAI keeps their place. */
export interface Turn {
  role: 'user' | 'assistant' | 'system'
  parts: Part[]
}

export interface ToolDef {
  name: string
  description?: string
  /** JSON Schema of the arguments (an object schema). */
  parameters: JsonObject
  strict?: boolean
}

export interface ToolChoice {
  mode: 'auto' | 'none' | 'required' | 'tool'
  /** The tool for mode 'tool'. */
  name?: string
  /** Only these tools may be called (OpenAI allowed_tools, Gemini allowedFunctionNames). */
  allowed?: string[]
}

export interface Reasoning {
  /** false: the client asked for no reasoning. */
  enabled: boolean
  effort?: Effort
  /** A token budget (Anthropic budget_tokens, Gemini thinkingBudget). */
  budget?: number
  /** Whether the client wants the reasoning text back (Anthropic display, Gemini includeThoughts). */
  show?: boolean
}

export type ResponseFormat =
  | { type: 'json'; path: string }
  | { type: 'json_schema'; schema: JsonObject; name?: string; description?: string; strict?: boolean; path: string }

export interface ChatRequest {
  system: string[]
  turns: Turn[]
  tools: ToolDef[]
  toolChoice?: ToolChoice
  /** false: at most one tool call per turn (OpenAI parallel_tool_calls, Anthropic disable_parallel_tool_use). */
  parallelToolCalls?: boolean
  maxTokens?: number
  temperature?: number
  topP?: number
  topK?: number
  stop?: { sequences: string[]; path: string }
  seed?: number
  presencePenalty?: number
  frequencyPenalty?: number
  responseFormat?: ResponseFormat
  reasoning?: Reasoning
  /** An end-user id (OpenAI user, Anthropic metadata.user_id). */
  user?: string
}

export function emptyRequest(): ChatRequest {
  return { system: [], turns: [], tools: [] }
}

/** Appends parts to the last turn when it has the role, else starts a turn (consecutive same-role messages merge). */
export function pushParts(turns: Turn[], role: Turn['role'], parts: Part[]): void {
  if (parts.length === 0) return
  const last = turns.at(-1)
  if (last?.role === role) last.parts.push(...parts)
  else turns.push({ role, parts })
}

/**
 * A client's JSON value as an error message names it: as JSON, cut to a few characters. Never `String(value)`, which
 * throws on an object with a `toString` key (`{"toString":1}`): a TypeError that is no client error.
 */
export function described(value: unknown): string {
  if (typeof value === 'string') return echoed(value, true)
  const json = JSON.stringify(value)
  return json === undefined ? 'none' : echoed(json)
}

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function objectAt(value: unknown, path: string): JsonObject {
  if (!isObject(value)) throw new InvalidFieldError(path, `${path} must be an object.`)
  return value
}

export function arrayAt(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) throw new InvalidFieldError(path, `${path} must be an array.`)
  return value
}

/** Content given as blocks rather than text (the caller took the string case): the blocks. */
export function blocksAt(value: unknown, path: string): unknown[] {
  if (!Array.isArray(value)) throw new InvalidFieldError(path, `${path} must be a string or an array.`)
  return value
}

export function stringAt(value: unknown, path: string): string {
  if (typeof value !== 'string') throw new InvalidFieldError(path, `${path} must be a string.`)
  return value
}

/** A field that may be absent or null; when set, it must be an array (a malformed one is refused, not ignored). */
export function optionalArray(value: unknown, path: string): unknown[] | undefined {
  return value === undefined || value === null ? undefined : arrayAt(value, path)
}

/** A field that may be absent or null; when set, it must be an object. */
export function optionalObject(value: unknown, path: string): JsonObject | undefined {
  return value === undefined || value === null ? undefined : objectAt(value, path)
}

export function optionalString(value: unknown, path: string): string | undefined {
  return value === undefined || value === null ? undefined : stringAt(value, path)
}

export function optionalNumber(value: unknown, path: string): number | undefined {
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new InvalidFieldError(path, `${path} must be a number.`)
  return value
}

/** Names clients use for a media type, by the name the APIs take (OpenAI accepts `image/jpg`, Anthropic refuses it). */
const MEDIA_TYPE_ALIASES: Record<string, string> = { 'image/jpg': 'image/jpeg' }

/** A media type as the APIs spell it: lower case, without parameters (`;name=cat.png`, RFC 2397), aliases mapped. */
export function canonicalMediaType(mediaType: string): string {
  const semicolon = mediaType.indexOf(';')
  const type = (semicolon === -1 ? mediaType : mediaType.slice(0, semicolon)).trim().toLowerCase()
  return MEDIA_TYPE_ALIASES[type] ?? type
}

/** `data:<mediatype>[;<parameter>…];base64,<data>` → its parts; undefined for any other URL. */
export function parseDataUrl(url: string): { mediaType: string; data: string } | undefined {
  if (!url.startsWith('data:')) return undefined
  const comma = url.indexOf(',')
  if (comma === -1) return undefined
  const meta = url.slice(5, comma)
  if (!meta.endsWith(';base64')) return undefined
  return { mediaType: canonicalMediaType(meta.slice(0, -7)), data: url.slice(comma + 1) }
}

/** A media source from a URL that may be a data: URL. */
export function sourceFromUrl(url: string): MediaSource {
  const inline = parseDataUrl(url)
  return inline === undefined ? { kind: 'url', url } : { kind: 'base64', ...inline }
}

export function dataUrl(mediaType: string, data: string): string {
  return `data:${mediaType};base64,${data}`
}

const EXTENSION_TYPES: Record<string, string> = {
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  webp: 'image/webp',
  heic: 'image/heic',
  heif: 'image/heif',
  pdf: 'application/pdf',
  // A file's bare base64 named so is text, not the PDF a nameless one is taken for.
  txt: 'text/plain',
  md: 'text/markdown',
  csv: 'text/csv',
}

/** The media type a URL's path extension names (query and fragment ignored), if it is one we know. */
export function mediaTypeFromUrl(url: string): string | undefined {
  const end = url.search(/[?#]/)
  const path = end === -1 ? url : url.slice(0, end)
  const dot = path.lastIndexOf('.')
  if (dot === -1 || dot < path.lastIndexOf('/')) return undefined
  return EXTENSION_TYPES[path.slice(dot + 1).toLowerCase()]
}

/** Joins the text parts of a content list (for fields that take one string). */
export function joinText(parts: readonly Part[], separator: string): string {
  let out = ''
  let first = true
  for (const part of parts) {
    if (part.type !== 'text') continue
    out = first ? part.text : out + separator + part.text
    first = false
  }
  return out
}

/** Reasoning budgets for effort levels, for targets that take a budget (Gemini thinkingBudget). */
const BUDGET_FOR_EFFORT: Record<Effort, number> = { minimal: 512, low: 2048, medium: 8192, high: 16384, xhigh: 24576, max: 24576 }

export function budgetForEffort(effort: Effort): number {
  return BUDGET_FOR_EFFORT[effort]
}

/** The effort level a token budget stands for, for targets that take a level. */
export function effortForBudget(budget: number): Effort {
  if (budget < 4096) return 'low'
  if (budget < 16384) return 'medium'
  return 'high'
}

const EFFORTS: ReadonlySet<string> = new Set(['minimal', 'low', 'medium', 'high', 'xhigh', 'max'])

export function isEffort(value: unknown): value is Effort {
  return typeof value === 'string' && EFFORTS.has(value)
}
