/** Reading fields of parsed JSON without trusting its shape. */
export type Json = Record<string, unknown>

/** `obj[key]` when it is a JSON object. */
export function objectAt(obj: Json, key: string): Json | undefined {
  const value = obj[key]
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Json) : undefined
}

/** `obj[key]` when it is a non-empty string. */
export function stringAt(obj: Json, key: string): string | undefined {
  const value = obj[key]
  return typeof value === 'string' && value !== '' ? value : undefined
}

/** A token count as reported, or undefined when absent or not a count. */
export function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? Math.trunc(value) : undefined
}
