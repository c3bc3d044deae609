/**
 * The outbox relay: a scoped fiber that publishes the committed rows of an
 * {@link Outbox.OutboxStore} to JetStream and marks them published.
 *
 * - **Latency**: it waits on the store's wake-up signals (an enqueue in this
 *   process once its transaction is over; Postgres `LISTEN/NOTIFY` from any
 *   process), so commit-to-publish takes milliseconds. Polling at
 *   `pollInterval` is only a fallback for writers it cannot hear.
 * - **Order and several instances**: one relay at a time holds the store's
 *   lease (a lease row with owner and expiry, renewed before every batch) and
 *   publishes; the others stand by and take over when the lease expires or is
 *   released. A batch is published with the publisher's
 *   `publishMessages`: the messages of one aggregate one after another in
 *   enqueue order, different aggregates concurrently (`window`); a failed
 *   publish stops its aggregate for this round, so a later event never
 *   overtakes an earlier one. A batch is bounded by half
 *   the lease TTL, so a relay stops publishing before its lease can expire.
 * - **Crash safety**: rows are published with `msgID = row id` and marked
 *   after their PubAck. A crash between the two re-publishes the rows on
 *   restart, and JetStream drops them as duplicates if the restart comes
 *   within the stream's duplicate window (default 2 minutes); consumer-side
 *   {@link Dedup} catches what the window misses.
 * - Failures (NATS or the store) are retried with `retry`; published rows
 *   are deleted after `retention`; `Metrics.outboxPending` and
 *   `Metrics.outboxLag` are updated every `metricsInterval`.
 *
 * @since 0.1.0
 */
import { randomUUID } from "node:crypto"
import { Clock, Duration, Effect, Layer, Metric, Option, Queue, Schedule, type Scope } from "effect"
import * as Metrics from "./Metrics.js"
import { OutboxError, OutboxStore } from "./Outbox.js"
import { Publisher, type PublishError } from "./Publisher.js"

/**
 * Relay options.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Fallback poll for rows written by processes the relay cannot hear (default 1 second). */
  readonly pollInterval?: Duration.DurationInput | undefined
  /** Rows fetched per batch (default 256). */
  readonly batchSize?: number | undefined
  /** Aggregates published concurrently within a batch (default 64). */
  readonly window?: number | undefined
  /** How long the lease lasts without renewal (default 30 seconds). */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /**
   * The lease owner id (default: random per relay). A stable id (e.g. the
   * pod name) lets a restarted relay take its lease back at once.
   */
  readonly owner?: string | undefined
  /** Retry policy of a failed batch (default: exponential from 100 ms, capped at 5 s, forever). */
  readonly retry?: Schedule.Schedule<unknown, PublishError | OutboxError> | undefined
  /** How long published rows are kept (default 1 hour). */
  readonly retention?: Duration.DurationInput | undefined
  /** How often published rows older than `retention` are deleted (default 1 minute). */
  readonly cleanupInterval?: Duration.DurationInput | undefined
  /** How often the pending count and lag metrics are updated (default 5 seconds). */
  readonly metricsInterval?: Duration.DurationInput | undefined
}

/**
 * The default retry policy of a failed batch.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("100 millis").pipe(
  Schedule.either(Schedule.spaced("5 seconds"))
)

type Round = "Standby" | "Idle" | "More"

/**
 * Run the relay in the current scope. It stops when the scope closes (an
 * in-flight batch is interrupted: its rows stay pending and are re-published
 * later, deduplicated by msgID) and releases its lease.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { OutboxRelay } from "effect-nats"
 *
 * const relay = OutboxRelay.make({ pollInterval: "2 seconds", leaseTtl: "15 seconds", owner: process.env.HOSTNAME })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<void, OutboxError, OutboxStore | Publisher | Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* OutboxStore
    const publisher = yield* Publisher
    const owner = options.owner ?? randomUUID()
    const pollInterval = Duration.decode(options.pollInterval ?? "1 second")
    const leaseTtl = Duration.decode(options.leaseTtl ?? "30 seconds")
    const batchSize = Math.max(1, options.batchSize ?? 256)
    const window = Math.max(1, options.window ?? 64)
    const retry = options.retry ?? defaultRetry
    const retention = Duration.decode(options.retention ?? "1 hour")

    const batch: Effect.Effect<Round, PublishError | OutboxError> = Effect.gen(function*() {
      const rows = yield* store.pending(batchSize)
      if (rows.length === 0) return "Idle"
      // per aggregate in enqueue order, `window` aggregates at a time; a failure stops its aggregate
      const published = yield* publisher.publishMessages(rows, { window })
      if (published.acks.length > 0) yield* store.markPublished(published.acks.map((ack) => ack.id))
      if (published.failure !== undefined) return yield* published.failure
      return rows.length < batchSize ? "Idle" : "More"
    })

    const round: Effect.Effect<Round, PublishError | OutboxError> = Effect.flatMap(
      store.acquireLease(owner, leaseTtl),
      (leader) =>
        leader
          ? batch.pipe(
            // stop before the lease can expire under us: another relay may take over after it
            Effect.timeoutFail({
              duration: Duration.times(leaseTtl, 0.5),
              onTimeout: () =>
                new OutboxError({ method: "relay", message: `a batch took longer than half the lease (${Duration.format(leaseTtl)})` })
            })
          )
          : Effect.succeed<Round>("Standby")
    )

    const wake = yield* store.listen
    yield* Effect.addFinalizer(() =>
      store.releaseLease(owner).pipe(Effect.timeoutOption("5 seconds"), Effect.ignore)
    )

    const loop = Effect.gen(function*() {
      while (true) {
        const result = yield* round.pipe(
          Effect.tapError((error) => Effect.logWarning(`OutboxRelay ${owner}: ${error.message}; retrying`)),
          Effect.retry(retry),
          Effect.catchAll((error) =>
            Effect.as(Effect.logError(`OutboxRelay ${owner}: retries exhausted: ${error.message}`), "Idle" as const)
          )
        )
        if (result === "More") continue
        // a standby looks again when the leader's lease may have expired
        const wait = result === "Standby" ? Duration.min(pollInterval, leaseTtl) : pollInterval
        yield* Effect.timeoutOption(Queue.take(wake), wait)
        yield* Queue.takeAll(wake)
      }
    })

    const metrics = Effect.gen(function*() {
      const stats = yield* store.stats
      const now = yield* Clock.currentTimeMillis
      yield* Metric.set(Metrics.outboxPending, stats.pending)
      yield* Metric.set(
        Metrics.outboxLag,
        Option.match(stats.oldestPendingAt, { onNone: () => 0, onSome: (at) => Math.max(0, now - at) / 1000 })
      )
    })

    yield* loop.pipe(Effect.forkScoped)
    yield* metrics.pipe(
      Effect.catchAll((error) => Effect.logWarning(`OutboxRelay ${owner}: metrics: ${error.message}`)),
      Effect.repeat(Schedule.spaced(options.metricsInterval ?? "5 seconds")),
      Effect.forkScoped
    )
    yield* store.cleanup(retention).pipe(
      Effect.catchAll((error) => Effect.as(Effect.logWarning(`OutboxRelay ${owner}: cleanup: ${error.message}`), 0)),
      Effect.delay(options.cleanupInterval ?? "1 minute"),
      Effect.forever,
      Effect.forkScoped
    )
  })

/**
 * The relay as a layer: runs for the lifetime of the layer. Needs the
 * {@link Outbox.OutboxStore} the outbox writes to, and a {@link Publisher}.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { JetStream, NatsClient, Outbox, OutboxRelay, Publisher } from "effect-nats"
 * import { SqlOutbox } from "@effect-nats/sql"
 * import { SqliteClient } from "@effect/sql-sqlite-node"
 *
 * const MainLive = Layer.mergeAll(Outbox.layer({ source: "billing" }), OutboxRelay.layer()).pipe(
 *   Layer.provideMerge(SqlOutbox.layer()),
 *   Layer.provideMerge(SqliteClient.layer({ filename: "billing.db" })),
 *   Layer.provide(Publisher.layer()),
 *   Layer.provide(JetStream.layer),
 *   Layer.provide(NatsClient.layerConfig())
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<never, OutboxError, OutboxStore | Publisher> =>
  Layer.scopedDiscard(make(options))
