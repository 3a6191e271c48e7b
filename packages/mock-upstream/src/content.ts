/** The fixed vocabulary of generated text: token `i` is `WORDS[i % WORDS.length] + ' '`. */
export const WORDS: readonly string[] = [
  'lorem',
  'ipsum',
  'dolor',
  'sit',
  'amet',
  'consectetur',
  'adipiscing',
  'elit',
  'sed',
  'do',
  'eiusmod',
  'tempor',
  'incididunt',
  'ut',
  'labore',
  'et',
]

const TOKENS: readonly string[] = WORDS.map((word) => `${word} `)
/** The tokens as JSON string literals, ready to splice into an event. */
const TOKENS_JSON: readonly string[] = TOKENS.map((token) => JSON.stringify(token))

/** The fixed vocabulary of reasoning text: reasoning token `i` is `REASONING_WORDS[i % REASONING_WORDS.length] + ' '`. */
export const REASONING_WORDS: readonly string[] = ['hmm', 'let', 'me', 'think', 'this', 'through', 'carefully', 'first']
const REASONING_JSON: readonly string[] = REASONING_WORDS.map((word) => JSON.stringify(`${word} `))

/** The tokens an answer is made of: the WORDS (cycled, from a shift), or a literal text's tokens. */
export interface Vocabulary {
  readonly texts: readonly string[]
  /** `texts` as JSON string literals. */
  readonly json: readonly string[]
}

export const WORDS_VOCABULARY: Vocabulary = { texts: TOKENS, json: TOKENS_JSON }

/** A literal text split into tokens after each space: `'a b  c'` → `'a '`, `'b '`, `' '`, `'c'`. */
export function textVocabulary(text: string): Vocabulary {
  const texts: string[] = []
  let start = 0
  while (start < text.length) {
    const space = text.indexOf(' ', start)
    const end = space === -1 ? text.length : space + 1
    texts.push(text.slice(start, end))
    start = end
  }
  return { texts, json: texts.map((t) => JSON.stringify(t)) }
}

/** The deterministic text of `tokens` tokens: what the mock answers with (`shift`: the behavior's `shift`). */
export function expectedContent(tokens: number, shift = 0): string {
  let text = ''
  for (let i = 0; i < tokens; i++) text += TOKENS[(i + shift) % TOKENS.length]
  return text
}

/** Reasoning token `i`. */
export function reasoningToken(i: number): string {
  return `${REASONING_WORDS[i % REASONING_WORDS.length]} `
}

/** The deterministic reasoning text of `tokens` reasoning tokens. */
export function expectedReasoning(tokens: number): string {
  let text = ''
  for (let i = 0; i < tokens; i++) text += reasoningToken(i)
  return text
}

/** Reasoning token `i` as a JSON string literal. */
export function reasoningJson(i: number): string {
  return REASONING_JSON[i % REASONING_JSON.length] as string
}

/**
 * The signature of a reasoning of `tokens` tokens (Anthropic `signature`, Gemini `thoughtSignature`): deterministic base64.
 * `redacted`: a `redacted_thinking` block follows the thinking block (behavior `redactedThinking`); the signature says so,
 * so that the request checks can tell when a client sends the thinking back without it.
 */
export function signatureFor(tokens: number, redacted = false): string {
  return Buffer.from(`llmproxy-mock-signature:${tokens}${redacted ? REDACTED_MARK : ''}`).toString('base64')
}

const REDACTED_MARK = ':redacted'

/** The reasoning tokens of a signature {@link signatureFor} made with `redacted`, or null for any other string. */
export function redactedSignatureTokens(signature: string): number | null {
  const match = /^llmproxy-mock-signature:(\d+):redacted$/.exec(Buffer.from(signature, 'base64').toString())
  return match === null ? null : Number(match[1])
}

/** The `data` of the mock's Anthropic `redacted_thinking` block (behavior `redactedThinking`). */
export const REDACTED_THINKING_DATA = Buffer.from('llmproxy-mock-redacted-thinking').toString('base64')

/**
 * Where a continuation starts (prefill), as the first token index `from` and, when the continuation starts inside
 * a token, the text of its first event `head`. When `prefix` is the start of the answer's own text, `from` is the
 * number of whole tokens it covers and the continuation is exactly the rest of the text: a prefix ending inside a
 * word sends the rest of that token first (it counts as one token); a prefix missing only a token's trailing
 * whitespace counts as whole tokens, the whitespace going first with the next token. Otherwise `from` is the number
 * of words in the prefix, and `head` a space and token `from` when the prefix does not end with whitespace.
 */
export function continuationOf(prefix: string, vocab: Vocabulary, shift: number, cyclic: boolean): { from: number; head: string | null } {
  const texts = vocab.texts
  let pos = 0
  let i = 0
  while (pos < prefix.length && (cyclic || i < texts.length)) {
    const token = texts[(i + shift) % texts.length] as string
    if (prefix.startsWith(token, pos)) {
      pos += token.length
      i++
      continue
    }
    const rest = prefix.slice(pos)
    if (!token.startsWith(rest)) break
    const head = token.slice(rest.length)
    // Only the trailing whitespace is missing (Anthropic refuses it in a prefill): the prefix counts as whole tokens.
    if (/^\s+$/.test(head) && (cyclic || i + 1 < texts.length)) return { from: i + 1, head: head + texts[(i + 1 + shift) % texts.length] }
    return { from: i, head }
  }
  if (pos === prefix.length) return { from: i, head: null }
  const words = prefix.match(/\S+/g)?.length ?? 0
  const separated = /\s$/.test(prefix)
  const next = texts.length === 0 || (!cyclic && words >= texts.length) ? '' : (texts[(words + shift) % texts.length] as string)
  return { from: words, head: separated ? null : ` ${next}` }
}

/** Tool-call arguments are streamed in fragments of this many characters; each fragment counts as one token. */
export const ARGUMENT_FRAGMENT = 8

/** A tool call ready to stream: its arguments JSON and that JSON's fragments. */
export interface PlannedToolCall {
  readonly name: string
  readonly args: Record<string, unknown>
  readonly argsJson: string
  readonly fragments: readonly string[]
}

export function planToolCall(name: string, args: Record<string, unknown>): PlannedToolCall {
  const argsJson = JSON.stringify(args)
  const fragments: string[] = []
  for (let at = 0; at < argsJson.length; at += ARGUMENT_FRAGMENT) fragments.push(argsJson.slice(at, at + ARGUMENT_FRAGMENT))
  return { name, args, argsJson, fragments }
}

export type Fields = Record<string, unknown>

export function isObject(value: unknown): value is Fields {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/**
 * The prompt tokens the mock reports for a request body:
 * `ceil(UTF-8 byte length of JSON.stringify(messages ?? prompt ?? input ?? contents ?? inputs) / 4)`,
 * 0 when the body has none of these fields.
 */
export function promptTokensFor(body: unknown): number {
  if (!isObject(body)) return 0
  const source = body.messages ?? body.prompt ?? body.input ?? body.contents ?? body.inputs
  if (source === undefined || source === null) return 0
  return Math.ceil(Buffer.byteLength(JSON.stringify(source)) / 4)
}

const CAP_FIELDS = ['max_tokens', 'max_completion_tokens', 'max_output_tokens', 'maxOutputTokens', 'max_new_tokens'] as const

function capIn(obj: Fields): number | undefined {
  let cap: number | undefined
  for (const field of CAP_FIELDS) {
    const value = obj[field]
    if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && (cap === undefined || value < cap)) cap = value
  }
  return cap
}

/**
 * The completion-token cap a request body asks for, or undefined: the smallest of `max_tokens`,
 * `max_completion_tokens`, `max_output_tokens`, `maxOutputTokens`, `max_new_tokens`, read at the top
 * level and in `generationConfig` (Gemini) and `parameters` (TGI).
 */
export function tokenCapOf(body: Fields): number | undefined {
  let cap = capIn(body)
  for (const nestedKey of ['generationConfig', 'parameters']) {
    const inner = body[nestedKey]
    if (!isObject(inner)) continue
    const nested = capIn(inner)
    if (nested !== undefined && (cap === undefined || nested < cap)) cap = nested
  }
  return cap
}
