/**
 * Projections: read models folded from a stream's history, then kept up to
 * date by its live events.
 *
 * A projection reads the stream (or the subjects of a filter) from a start
 * position — the beginning, a stream sequence or a time — with an ordered
 * consumer: ephemeral, no acks, in stream order, re-created by nats.js from
 * the last sequence it delivered when it notices a gap. Its handlers are the
 * consumers' {@link Handler}s (so past event versions are migrated to the
 * current type). When it starts it counts what is stored from its start
 * position (`total`); the first `total` messages are the history, and it
 * goes on with the live ones on the same consumer: no gap and no double at
 * the switch. Progress (`done` / `total`, rate) is a `SubscriptionRef`.
 *
 * A handler that fails is retried with `retry`, then the projection stops
 * with a {@link ProjectionError} (a fold must not skip an event). A message
 * that does not decode, or whose type has no handler, is counted in
 * `skipped` and passed over (a projection has no dead-letter queue; the
 * consumers of the stream have theirs).
 *
 * @since 0.2.0
 */
import type { JsMsg } from "@nats-io/jetstream"
import { Clock, Data, Deferred, Effect, Either, Fiber, type Schedule, type Scope, type Stream, SubscriptionRef } from "effect"
import type * as Envelope from "./Envelope.js"
import type * as Handler from "./Handler.js"
import * as History from "./internal/history.js"
import * as Json from "./internal/json.js"
import { type DeliverFrom, JetStream } from "./JetStream.js"
import * as Limits from "./Limits.js"
import type * as NatsError from "./NatsError.js"

/**
 * Projection options.
 *
 * @since 0.2.0
 * @category models
 */
export interface Options<H extends ReadonlyArray<Handler.Any>> {
  readonly stream: string
  /** One subject filter (default: the whole stream). */
  readonly filterSubject?: string | undefined
  /**
   * The handlers, by event type. Their middleware (`Handler.timeout`,
   * `Handler.filter`, ...) runs around each message; their message policies
   * (`Handler.retry`, `redelivery`, `onError`) do not: there is nothing to
   * nak, a projection's `retry` applies and a failure stops it.
   */
  readonly handlers: H
  /** Where to start (default `all`: the beginning); `{ startSequence }` or `{ startTime }` to resume or rebuild a window. */
  readonly from?: DeliverFrom | undefined
  /** Retries of a failing handler before the projection stops (default: none). */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /** Messages between two progress updates (default 1000; the switch to live is always reported). */
  readonly progressEvery?: number | undefined
}

/**
 * How far a projection is.
 *
 * @since 0.2.0
 * @category models
 */
export interface Progress {
  /** Messages read (handled or skipped). */
  readonly done: number
  /** Messages stored from the start position when the projection started: its history. */
  readonly total: number
  /** Messages read per second since the start. */
  readonly rate: number
  /** Messages that did not decode or had no handler. */
  readonly skipped: number
  /** The stream sequence of the last message read (0 before the first). */
  readonly sequence: number
  /** The history is read (`done >= total`): what comes now is live. */
  readonly live: boolean
}

/**
 * A running projection.
 *
 * @since 0.2.0
 * @category models
 */
export interface Projection {
  readonly progress: Effect.Effect<Progress>
  /** Every progress update. */
  readonly changes: Stream.Stream<Progress>
  /** Waits until the history is read (the switch to live), with the progress at that point. */
  readonly live: Effect.Effect<Progress, ProjectionError | NatsError.NatsError>
  /** Waits for the projection to stop: only with a failure (it follows the stream until its scope closes). */
  readonly await: Effect.Effect<never, ProjectionError | NatsError.NatsError>
}

/**
 * A handler failed (after its retries): the projection stopped at this message.
 *
 * @since 0.2.0
 * @category errors
 */
export class ProjectionError extends Data.TaggedError("ProjectionError")<{
  readonly stream: string
  readonly sequence: number
  readonly type: string
  readonly message: string
  readonly cause: unknown
}> {}

/**
 * Start a projection in the current scope; it follows the stream until the
 * scope closes.
 *
 * @example
 * ```ts
 * import { Effect, Ref } from "effect"
 * import { Handler, Projection } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const rebuild = Effect.gen(function*() {
 *   const totals = yield* Ref.make(new Map<string, number>())
 *   const projection = yield* Projection.make({
 *     stream: "BILLING",
 *     handlers: [Handler.make(InvoiceIssued, (e) => Ref.update(totals, (m) => new Map(m).set(e.data.invoiceId, e.data.amount)))]
 *   })
 *   const atSwitch = yield* projection.live // the history is folded; live events follow
 *   yield* Effect.log(`rebuilt ${atSwitch.done} events at ${Math.round(atSwitch.rate)}/s`)
 * })
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = <const H extends ReadonlyArray<Handler.Any>>(
  options: Options<H>
): Effect.Effect<Projection, NatsError.NatsError, Scope.Scope | JetStream | Handler.Context<H[number]>> =>
  Effect.gen(function*() {
    const js = yield* JetStream
    const limits = Limits.resolve(yield* Limits.Limits, undefined)
    const handlers = new Map<string, Handler.Any>(options.handlers.map((h) => [h.type, h]))
    const every = Math.max(1, options.progressEvery ?? 1000)
    const reader = yield* History.open(js, options)
    const started = yield* Clock.currentTimeMillis
    const initial: Progress = { done: 0, total: reader.total, rate: 0, skipped: 0, sequence: 0, live: reader.total === 0 }
    const progress = yield* SubscriptionRef.make(initial)
    const switched = yield* Deferred.make<Progress, ProjectionError | NatsError.NatsError>()
    if (initial.live) yield* Deferred.succeed(switched, initial)

    const handle = (handler: Handler.Any, envelope: Envelope.Envelope<unknown>, msg: JsMsg) => {
      const sequence = msg.seq
      // the handler's middleware sees the stored message (read by an ordered consumer: nothing to ack)
      const run = handler.handle(envelope, { msg, subject: msg.subject }) as Effect.Effect<void, unknown>
      return (options.retry === undefined ? run : Effect.retry(run, options.retry)).pipe(
        Effect.catchAllCause((cause) =>
          new ProjectionError({
            stream: options.stream,
            sequence,
            type: handler.type,
            message: `projection of ${options.stream} stopped at #${sequence} (${handler.type}): the handler failed`,
            cause
          })
        )
      )
    }

    /** Decode a message for its handler: the envelope, or undefined to skip it. */
    const decode = (data: Uint8Array) => {
      const parsed = Json.parse(data, limits.maxDepth, limits.maxBytes)
      if (Either.isLeft(parsed)) return undefined
      const json = parsed.right
      const type = typeof json === "object" && json !== null && "type" in json ? json.type : undefined
      const handler = typeof type === "string" ? handlers.get(type) : undefined
      if (handler === undefined) return undefined
      return Effect.map(
        Effect.either(handler.decode(json) as Effect.Effect<Envelope.Envelope<unknown>, unknown>),
        (decoded) => Either.isRight(decoded) ? { handler, envelope: decoded.right } : undefined
      )
    }

    const loop = Effect.gen(function*() {
      let done = 0
      let skipped = 0
      for (;;) {
        const msg = yield* reader.next
        const sequence = msg.seq
        const decoded = decode(msg.data)
        const target = decoded === undefined ? undefined : yield* decoded
        if (target === undefined) skipped++
        else yield* handle(target.handler, target.envelope, msg)
        done++
        const switching = done === reader.total
        if (switching || done % every === 0) {
          const elapsed = (yield* Clock.currentTimeMillis) - started
          const now: Progress = {
            done,
            total: reader.total,
            rate: elapsed > 0 ? (done * 1000) / elapsed : 0,
            skipped,
            sequence,
            live: done >= reader.total
          }
          yield* SubscriptionRef.set(progress, now)
          if (switching) yield* Deferred.succeed(switched, now)
        }
      }
    })
    const fiber = yield* Effect.forkScoped(
      Effect.tapError(loop, (e) => Deferred.fail(switched, e)) as Effect.Effect<never, ProjectionError | NatsError.NatsError>
    )
    return {
      progress: SubscriptionRef.get(progress),
      changes: progress.changes,
      live: Deferred.await(switched),
      await: Fiber.join(fiber)
    }
  }) as Effect.Effect<Projection, NatsError.NatsError, Scope.Scope | JetStream | Handler.Context<H[number]>>
