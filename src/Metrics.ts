/**
 * The toolkit's metrics, as Effect `Metric`s. Read them with `Metric.value`,
 * or export them with @effect/opentelemetry. To tell consumers apart, run
 * each one under `Effect.tagMetrics` (its worker fibers inherit the tags):
 * `Consumer.make(options).pipe(Effect.tagMetrics("consumer", "payments"))`.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Metrics } from "effect-nats"
 *
 * const report = Effect.gen(function*() {
 *   const acked = yield* Metric.value(Metrics.acked)
 *   yield* Effect.log(`acked: ${acked.count}`)
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Metric, MetricBoundaries } from "effect"

/**
 * Messages published (one per PubAck, duplicates included).
 *
 * @since 0.1.0
 * @category metrics
 */
export const published = Metric.counter("effect_nats_published_total", {
  description: "messages published to JetStream",
  incremental: true
})

/**
 * Publishes that failed after their retries.
 *
 * @since 0.1.0
 * @category metrics
 */
export const publishFailed = Metric.counter("effect_nats_publish_failed_total", {
  description: "publishes that failed after retries",
  incremental: true
})

/**
 * Messages taken from a consumer (each delivery counts).
 *
 * @since 0.1.0
 * @category metrics
 */
export const consumed = Metric.counter("effect_nats_consumed_total", {
  description: "messages delivered to a consumer",
  incremental: true
})

/**
 * Messages acknowledged (handled, duplicate or ignored).
 *
 * @since 0.1.0
 * @category metrics
 */
export const acked = Metric.counter("effect_nats_acked_total", { description: "messages acked", incremental: true })

/**
 * In-process handler retries.
 *
 * @since 0.1.0
 * @category metrics
 */
export const retried = Metric.counter("effect_nats_retried_total", {
  description: "in-process handler retries",
  incremental: true
})

/**
 * Messages given back to the server with `nak(delay)` for a later redelivery.
 *
 * @since 0.1.0
 * @category metrics
 */
export const redelivered = Metric.counter("effect_nats_redelivered_total", {
  description: "messages nak'ed for redelivery",
  incremental: true
})

/**
 * Messages dead-lettered.
 *
 * @since 0.1.0
 * @category metrics
 */
export const deadLettered = Metric.counter("effect_nats_dead_lettered_total", {
  description: "messages dead-lettered",
  incremental: true
})

/**
 * Duplicates skipped by the dedup stage.
 *
 * @since 0.1.0
 * @category metrics
 */
export const duplicatesSkipped = Metric.counter("effect_nats_duplicates_skipped_total", {
  description: "duplicate messages acked without handling",
  incremental: true
})

/**
 * Messages of a type no handler is registered for.
 *
 * @since 0.1.0
 * @category metrics
 */
export const unhandled = Metric.counter("effect_nats_unhandled_total", {
  description: "messages with no handler for their type",
  incremental: true
})

/**
 * Messages whose handling ran past the consumer's `handlerTimeout`: the
 * watchdog settled them (nak, or a dead letter at the last delivery) and
 * replaced the worker.
 *
 * @since 0.2.0
 * @category metrics
 */
export const handlerTimeouts = Metric.counter("effect_nats_handler_timeouts_total", {
  description: "messages whose handling exceeded the handler timeout",
  incremental: true
})

/**
 * Exceptions that a callback handed to nats.js caught before they could end
 * the connection's reader (they are logged, and the message settled).
 *
 * @since 0.2.0
 * @category metrics
 */
export const callbackDefects = Metric.counter("effect_nats_callback_defects_total", {
  description: "exceptions caught in callbacks handed to nats.js",
  incremental: true
})

/**
 * Pulls a consumer found lost and issued again, tagged `signal`: `advisory`
 * (a new consumer leader was elected), `heartbeat` (the pull's idle
 * heartbeats stopped) or `reconnect` (the connection reconnected). One per
 * stall: the signals that come while it lasts re-issue the pull without
 * counting again.
 *
 * @since 0.2.0
 * @category metrics
 */
export const consumerStalls = Metric.counter("effect_nats_consumer_stalls_total", {
  description: "pulls found lost (leader elected, heartbeats missed, reconnect) and issued again",
  incremental: true
})

/**
 * Handler duration in milliseconds.
 *
 * @since 0.1.0
 * @category metrics
 */
export const handlerDuration = Metric.histogram(
  "effect_nats_handler_duration_ms",
  MetricBoundaries.exponential({ start: 0.5, factor: 2, count: 16 }),
  "handler duration in milliseconds"
)

/**
 * Outbox rows not yet published.
 *
 * @since 0.1.0
 * @category metrics
 */
export const outboxPending = Metric.gauge("effect_nats_outbox_pending", {
  description: "outbox rows waiting to be published"
})

/**
 * Age in milliseconds of the oldest unpublished outbox row.
 *
 * @since 0.1.0
 * @category metrics
 */
export const outboxLag = Metric.gauge("effect_nats_outbox_lag_ms", {
  description: "age of the oldest pending outbox row in milliseconds"
})
