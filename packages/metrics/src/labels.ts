import type { FastifyBaseLogger } from 'fastify'

/** The label value that stands for every value past a cap, and for a missing one. */
export const OVERFLOW_LABEL = 'other'
export const NONE_LABEL = 'none'

/**
 * Bounds the distinct values of one label: the first `max` values pass, later new values become
 * `other` (logged once), so a misbehaving source cannot blow up the series count.
 */
export class LabelCap {
  private readonly seen = new Set<string>()
  private readonly max: number
  private readonly label: string
  private readonly log: FastifyBaseLogger
  private warned = false

  constructor(label: string, max: number, log: FastifyBaseLogger) {
    this.label = label
    this.max = max
    this.log = log
  }

  get(value: string): string {
    if (this.seen.has(value)) return value
    if (this.seen.size >= this.max) {
      if (!this.warned) {
        this.warned = true
        this.log.warn({ label: this.label, max: this.max }, `metrics label cap reached; new values are reported as "${OVERFLOW_LABEL}"`)
      }
      return OVERFLOW_LABEL
    }
    this.seen.add(value)
    return value
  }
}

const STATUS_LABELS: readonly string[] = Array.from({ length: 600 }, (_, i) => String(i))

/** The HTTP status as a label value, without allocating; out-of-range values become `other`. */
export function statusLabel(status: number): string {
  return STATUS_LABELS[status] ?? OVERFLOW_LABEL
}
