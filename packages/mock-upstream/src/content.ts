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

/** The text of token `i`. */
function tokenText(i: number): string {
  return TOKENS[i % TOKENS.length] as string
}

/** The text of token `i` as a JSON string literal (quotes included). */
export function tokenJson(i: number): string {
  return TOKENS_JSON[i % TOKENS_JSON.length] as string
}

/** The deterministic text of `tokens` tokens: what the mock answers with. */
export function expectedContent(tokens: number): string {
  let text = ''
  for (let i = 0; i < tokens; i++) text += tokenText(i)
  return text
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
