// The reference server's own messages between the primary and its workers (node:cluster IPC): requests with
// answers (admin views, metrics, reload) and a few notices (start, ready, failed). The rate-limit counters use a
// protocol of their own (@llmproxy/rate-limit's CounterHost), on the same channel.
import type { Serializable } from 'node:child_process'
import { ConfigError, type ConfigProblem } from '@llmproxy/core'
import { ReloadNotAppliedError } from '../reload.js'

/** Tag of every message of this protocol (other IPC messages pass by). */
const TAG = 'llmproxy:gateway'

/** Operations one side serves: name → [argument, result]. */
export type OpTable = Record<string, [unknown, unknown]>

export type Handlers<T extends OpTable> = { [K in keyof T]: (arg: T[K][0]) => T[K][1] | Promise<T[K][1]> }

interface CallMessage {
  t: typeof TAG
  id: number
  op: string
  arg: unknown
}

interface ReplyMessage {
  t: typeof TAG
  id: number
  ok: boolean
  value?: unknown
  error?: { message: string; problems?: ConfigProblem[]; notApplied?: true }
}

/** A one-way notice (`kind`), e.g. a worker telling the primary it listens. */
export interface Notice {
  t: typeof TAG
  kind: string
  [field: string]: unknown
}

export function notice(kind: string, fields: Record<string, unknown> = {}): Notice {
  return { ...fields, t: TAG, kind }
}

/** The notice in `message`, or null when it is not one of this protocol. */
export function asNotice(message: unknown): Notice | null {
  const m = message as Partial<Notice> | null
  return m !== null && typeof m === 'object' && m.t === TAG && typeof m.kind === 'string' ? (m as Notice) : null
}

/** A call the other side did not answer in time (it may still run it: the channel keeps the message). */
export class NoAnswerError extends Error {
  override name = 'NoAnswerError'
}

/**
 * Errors cross the channel as their message (and a ConfigError's problems, so that a reload reports them; a reload
 * not applied for another reason stays one, so that the worker that was asked answers it as a server error).
 */
function toWire(err: unknown): ReplyMessage['error'] {
  if (err instanceof ConfigError) return { message: err.message, problems: err.problems }
  if (err instanceof ReloadNotAppliedError) return { message: err.message, notApplied: true }
  return { message: err instanceof Error ? err.message : String(err) }
}

function fromWire(error: ReplyMessage['error']): Error {
  if (error?.problems !== undefined) {
    const err = new ConfigError('reload', error.problems)
    err.message = error.message
    return err
  }
  if (error?.notApplied === true) return new ReloadNotAppliedError(error.message)
  return new Error(error?.message ?? 'the other process failed')
}

/**
 * Requests and answers over one IPC channel: `call` asks the other side, `handle` serves what it asks (with
 * `handlers`). Values are JSON (the channel's serialization).
 */
export class Rpc<Local extends OpTable, Remote extends OpTable> {
  private readonly send: (message: Serializable) => void
  private readonly handlers: Handlers<Local>
  private readonly pending = new Map<number, { resolve(value: unknown): void; reject(err: Error): void; timer: NodeJS.Timeout }>()
  private seq = 0

  constructor(send: (message: Serializable) => void, handlers: Handlers<Local>) {
    this.send = send
    this.handlers = handlers
  }

  /** Asks the other side; rejects when it fails, is gone (`close`) or does not answer within `timeoutMs`. */
  call<K extends keyof Remote & string>(op: K, arg: Remote[K][0], timeoutMs = 10_000): Promise<Remote[K][1]> {
    const id = ++this.seq
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new NoAnswerError(`no answer to "${op}" within ${timeoutMs} ms`))
      }, timeoutMs)
      this.pending.set(id, { resolve: (value) => resolve(value as Remote[K][1]), reject, timer })
      const message: CallMessage = { t: TAG, id, op, arg }
      this.send(message)
    })
  }

  /** Serves a call or settles an answer; false when `message` is not a call or an answer of this protocol. */
  handle(message: unknown): boolean {
    const m = message as Partial<CallMessage & ReplyMessage> | null
    if (m === null || typeof m !== 'object' || m.t !== TAG || typeof m.id !== 'number') return false
    if (typeof m.op === 'string') {
      this.serve(m.id, m.op, m.arg)
      return true
    }
    const waiting = this.pending.get(m.id)
    if (waiting === undefined) return true
    this.pending.delete(m.id)
    clearTimeout(waiting.timer)
    if (m.ok === true) waiting.resolve(m.value)
    else waiting.reject(fromWire(m.error))
    return true
  }

  /** The other side is gone: calls waiting for it reject. */
  close(reason: string): void {
    for (const [id, waiting] of this.pending) {
      clearTimeout(waiting.timer)
      this.pending.delete(id)
      waiting.reject(new Error(reason))
    }
  }

  private serve(id: number, op: string, arg: unknown): void {
    const reply = (fields: Pick<ReplyMessage, 'ok' | 'value' | 'error'>): void => {
      const message: ReplyMessage = { t: TAG, id, ...fields }
      this.send(message)
    }
    const handler = Object.hasOwn(this.handlers, op) ? this.handlers[op as keyof Local] : undefined
    if (handler === undefined) {
      reply({ ok: false, error: { message: `unknown operation "${op}"` } })
      return
    }
    Promise.resolve()
      .then(() => handler(arg as Local[keyof Local][0]))
      .then(
        (value) => reply({ ok: true, value }),
        (err: unknown) => reply({ ok: false, error: toWire(err) }),
      )
  }
}
