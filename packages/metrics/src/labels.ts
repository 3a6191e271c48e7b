import type { FastifyBaseLogger } from 'fastify'

/** The label value that stands for every value past a cap, and for a missing one. */
export const OVERFLOW_LABEL = 'other'
export const NONE_LABEL = 'none'

/**
 * The entries of one label (model, upstream, key_id), keyed by label value, with a bound on distinct
 * values: the first `max` raw values get their own entry, later new values share the `other` entry
 * (logged once), so a misbehaving source cannot blow up the series count. An entry carries whatever the
 * caller caches per label value (series handles), and a dense `id` (0, 1, 2, ... in creation order) that
 * callers use to index arrays instead of building composite string keys.
 */
export class LabelIndex<E> {
  /** Admitted raw values (at most `max`). */
  private readonly admitted = new Map<string, E>()
  /** Every entry by label value: admitted values, and `other` / `none` once used. */
  private readonly byLabel = new Map<string, E>()
  private readonly name: string
  private readonly max: number
  private readonly log: FastifyBaseLogger
  private readonly create: (label: string, id: number) => E
  private warned = false

  constructor(name: string, max: number, log: FastifyBaseLogger, create: (label: string, id: number) => E) {
    this.name = name
    this.max = max
    this.log = log
    this.create = create
  }

  /** The entry of a raw value (one Map lookup when seen before). */
  get(value: string): E {
    const entry = this.admitted.get(value)
    return entry === undefined ? this.admit(value) : entry
  }

  /** The entry of a label value as is, outside the cap (`none`, `other`). */
  entry(label: string): E {
    let entry = this.byLabel.get(label)
    if (entry === undefined) {
      entry = this.create(label, this.byLabel.size)
      this.byLabel.set(label, entry)
    }
    return entry
  }

  private admit(value: string): E {
    if (this.admitted.size >= this.max) {
      if (!this.warned) {
        this.warned = true
        this.log.warn({ label: this.name, max: this.max }, `metrics label cap reached; new values are reported as "${OVERFLOW_LABEL}"`)
      }
      return this.entry(OVERFLOW_LABEL)
    }
    const entry = this.entry(value)
    this.admitted.set(value, entry)
    return entry
  }
}

const STATUS_LABELS: readonly string[] = Array.from({ length: 600 }, (_, i) => String(i))

/** The HTTP status as a label value, without allocating; out-of-range values become `other`. */
export function statusLabel(status: number): string {
  return STATUS_LABELS[status] ?? OVERFLOW_LABEL
}
