/**
 * The estimate used when an upstream reports no usage: about four bytes of JSON text per token.
 * Documented in the README; the record then says `estimated: true`.
 */
export function estimateTokensFromBytes(bytes: number): number {
  return Math.ceil(bytes / 4)
}
