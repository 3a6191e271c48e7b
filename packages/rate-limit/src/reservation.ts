import { estimateTokensFromBytes } from '@llmproxy/core'
import type { WireFormat } from '@llmproxy/protocols'

/**
 * Tokens a request may use, reserved before it runs: its output cap in the client's API (the largest of
 * `max_tokens`, `max_completion_tokens`, `max_output_tokens`; Gemini's `generationConfig.maxOutputTokens`;
 * `reserveTokens` when it sets none; none for embeddings and token counting) times the answers it asks for (`n`,
 * `best_of`, `candidateCount`; legacy completions: for each prompt), plus a prompt estimate of one token per four bytes
 * of body (from `content-length`; the body is serialised only when that header is missing). `route`: the request's
 * path, without its query.
 */
export function expectedTokens(
  wire: WireFormat,
  route: string,
  body: Record<string, unknown>,
  contentLength: string | undefined,
  reserveTokens: number,
): number {
  const cap = wire.outputCap(body, route)
  const declared = contentLength === undefined ? Number.NaN : Number(contentLength)
  const bytes = Number.isFinite(declared) && declared >= 0 ? declared : Buffer.byteLength(JSON.stringify(body))
  return (cap.tokens ?? reserveTokens) * cap.choices + estimateTokensFromBytes(bytes)
}

/** What a request too large for a limit can shrink: its output cap and prompt, or (it generates nothing) its input. */
export function shrinkable(wire: WireFormat, route: string, body: Record<string, unknown>): string {
  return wire.outputCap(body, route).tokens === 0 ? 'send less input' : 'lower max_tokens or the prompt'
}
