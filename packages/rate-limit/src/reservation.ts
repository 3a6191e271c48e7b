import { estimateTokensFromBytes } from '@llmproxy/core'

function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.ceil(value) : undefined
}

function geminiMaxOutput(body: Record<string, unknown>): number | undefined {
  const config = body.generationConfig
  return config !== null && typeof config === 'object' ? count((config as Record<string, unknown>).maxOutputTokens) : undefined
}

/**
 * Tokens a request may use, reserved before it runs: its completion cap (`max_tokens`, `max_completion_tokens`,
 * `max_output_tokens` or Gemini's `generationConfig.maxOutputTokens`; `reserveTokens` when it sets none) plus a
 * prompt estimate of one token per four bytes of body (from `content-length`; the body is serialised only when
 * that header is missing).
 */
export function expectedTokens(body: Record<string, unknown>, contentLength: string | undefined, reserveTokens: number): number {
  const completion =
    count(body.max_tokens) ?? count(body.max_completion_tokens) ?? count(body.max_output_tokens) ?? geminiMaxOutput(body) ?? reserveTokens
  const declared = contentLength === undefined ? Number.NaN : Number(contentLength)
  const bytes = Number.isFinite(declared) && declared >= 0 ? declared : Buffer.byteLength(JSON.stringify(body))
  return completion + estimateTokensFromBytes(bytes)
}
