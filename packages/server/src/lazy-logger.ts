import type { FastifyBaseLogger } from 'fastify'
import type { Bindings, ChildLoggerOptions, LevelWithSilentOrString, Logger } from 'pino'

type MakeChild = (this: FastifyBaseLogger, bindings: Bindings, options?: ChildLoggerOptions) => FastifyBaseLogger

/**
 * A child logger that becomes a real pino child only when something is logged through it. Fastify makes
 * one per request; building it (bindings serialized, redaction set up) cost more than the rest of the
 * gateway's work before the upstream call, and most requests log one line after the response, or none.
 */
class LazyChildLogger implements FastifyBaseLogger {
  private readonly parent: FastifyBaseLogger
  private readonly makeChild: MakeChild
  private readonly bindings: Bindings
  private readonly options: ChildLoggerOptions | undefined
  private real: FastifyBaseLogger | null = null

  constructor(parent: FastifyBaseLogger, makeChild: MakeChild, bindings: Bindings, options: ChildLoggerOptions | undefined) {
    this.parent = parent
    this.makeChild = makeChild
    this.bindings = bindings
    this.options = options
  }

  private get logger(): FastifyBaseLogger {
    if (this.real === null) {
      const parent = this.parent instanceof LazyChildLogger ? this.parent.logger : this.parent
      this.real = this.makeChild.call(parent, this.bindings, this.options)
    }
    return this.real
  }

  get level(): LevelWithSilentOrString {
    return this.real?.level ?? this.options?.level ?? this.parent.level
  }

  set level(level: LevelWithSilentOrString) {
    this.logger.level = level
  }

  // Methods on the prototype, not per-instance closures: a request's logger is one small object.
  fatal(...args: unknown[]): void {
    Reflect.apply(this.logger.fatal, this.logger, args)
  }
  error(...args: unknown[]): void {
    Reflect.apply(this.logger.error, this.logger, args)
  }
  warn(...args: unknown[]): void {
    Reflect.apply(this.logger.warn, this.logger, args)
  }
  info(...args: unknown[]): void {
    Reflect.apply(this.logger.info, this.logger, args)
  }
  debug(...args: unknown[]): void {
    Reflect.apply(this.logger.debug, this.logger, args)
  }
  trace(...args: unknown[]): void {
    Reflect.apply(this.logger.trace, this.logger, args)
  }
  silent(...args: unknown[]): void {
    Reflect.apply(this.logger.silent, this.logger, args)
  }

  /** Lazy as well: Fastify's own loggers are children of the root, and each request's logger a child of one. */
  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return new LazyChildLogger(this, this.makeChild, bindings, options)
  }
}

/**
 * The pino logger as the gateway hands it to Fastify: the same logger (it inherits everything), except
 * that its children are lazy. Fastify's default child factory then stays in use, without the per-request
 * validation a custom `childLoggerFactory` gets.
 */
export function withLazyChildren(logger: Logger): FastifyBaseLogger {
  const root: FastifyBaseLogger = Object.create(logger)
  const makeChild = logger.child as unknown as MakeChild
  root.child = (bindings, options) => new LazyChildLogger(root, makeChild, bindings, options)
  return root
}
