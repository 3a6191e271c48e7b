export const MINUTE_MS = 60_000
/** Counters are kept this long after their window ends, so a late reconciliation still finds them. */
export const WINDOW_GRACE_MS = 60_000

export type QuotaPer = 'day' | 'month'

/** A UTC calendar day or month: its name (part of the counter key) and its bounds (epoch ms). */
export interface Period {
  readonly name: string
  readonly startsAt: number
  readonly endsAt: number
}

function pad(n: number): string {
  return n < 10 ? `0${n}` : `${n}`
}

export function periodOf(per: QuotaPer, now: number): Period {
  const d = new Date(now)
  const y = d.getUTCFullYear()
  const m = d.getUTCMonth()
  if (per === 'month') return { name: `${y}-${pad(m + 1)}`, startsAt: Date.UTC(y, m, 1), endsAt: Date.UTC(y, m + 1, 1) }
  const day = d.getUTCDate()
  return { name: `${y}-${pad(m + 1)}-${pad(day)}`, startsAt: Date.UTC(y, m, day), endsAt: Date.UTC(y, m, day + 1) }
}

/** The current day and month, recomputed only when the clock leaves them (no Date per request). */
export class PeriodClock {
  private day: Period = { name: '', startsAt: 0, endsAt: 0 }
  private month: Period = { name: '', startsAt: 0, endsAt: 0 }

  current(per: QuotaPer, now: number): Period {
    if (per === 'day') {
      if (now >= this.day.endsAt || now < this.day.startsAt) this.day = periodOf('day', now)
      return this.day
    }
    if (now >= this.month.endsAt || now < this.month.startsAt) this.month = periodOf('month', now)
    return this.month
  }
}

/** OpenAI's reset duration format: `250ms`, `12s`, `6m0s`, `1h2m3s` (whole seconds above one second, rounded up). */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`
  const total = Math.ceil(ms / 1000)
  const h = Math.floor(total / 3600)
  const m = Math.floor((total % 3600) / 60)
  const s = total % 60
  if (h > 0) return `${h}h${m}m${s}s`
  if (m > 0) return `${m}m${s}s`
  return `${s}s`
}

/** Whole seconds for `retry-after`, at least 1. */
export function retryAfterSeconds(ms: number): string {
  return `${Math.max(1, Math.ceil(ms / 1000))}`
}
