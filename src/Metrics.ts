/**
 * The toolkit's metrics, as Effect `Metric`s, named and labelled after the
 * OpenTelemetry messaging semantic conventions: `messaging.client.sent.messages`,
 * `messaging.client.consumed.messages` and `messaging.process.duration` are the
 * conventions' own; what is NATS-specific is under `messaging.nats.*`. Every
 * metric carries `messaging.system=nats` (in its key: no cost per update).
 *
 * The pipeline's metrics also carry the metric tags of the fiber that records
 * them: to tell consumers apart, run each one under `Effect.tagMetrics` (its
 * worker fibers inherit the tags), with the conventions' key:
 * `Consumer.make(options).pipe(Effect.tagMetrics("messaging.consumer.group.name", "payments"))`.
 * The lag gauges carry `messaging.consumer.group.name` and
 * `messaging.nats.stream` always.
 *
 * Read them with `Metric.value`, or export them (OTLP, Prometheus) with
 * `Telemetry.layer` of `@effect-nats/opentelemetry`, which also reports the
 * {@link units}. The server-side lag gauges are set by `Lag`, the outbox
 * gauges by `OutboxRelay`.
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
import { Metric, MetricBoundaries, MetricKey } from "effect"
import { Attributes } from "./Tracing.js"

/** A key with `messaging.system=nats` and the given constant attributes (part of the key: free per update). */
const withAttributes = <K extends MetricKey.MetricKey.Untyped>(key: K, attributes: Readonly<Record<string, string>>): K => {
  let out: MetricKey.MetricKey.Untyped = MetricKey.tagged(key, Attributes.system, "nats")
  for (const [k, v] of Object.entries(attributes)) out = MetricKey.tagged(out, k, v)
  return out as K
}

const counter = (name: string, description: string, attributes: Readonly<Record<string, string>> = {}) =>
  Metric.fromMetricKey(withAttributes(MetricKey.counter(name, { description, incremental: true }), attributes))

const gauge = (name: string, description: string) =>
  Metric.fromMetricKey(withAttributes(MetricKey.gauge(name, { description }), {}))

/**
 * The metric names, one constant each (what an exporter shows; Prometheus
 * writes the dots as `_` and adds `_total` to counters).
 *
 * @since 0.2.0
 * @category constants
 */
export const Names = {
  sent: "messaging.client.sent.messages",
  consumed: "messaging.client.consumed.messages",
  processDuration: "messaging.process.duration",
  settled: "messaging.nats.settled.messages",
  skipped: "messaging.nats.skipped.messages",
  retries: "messaging.nats.process.retries",
  timeouts: "messaging.nats.process.timeouts",
  callbackDefects: "messaging.nats.client.callback_defects",
  consumerStalls: "messaging.nats.consumer.stalls",
  batchSize: "messaging.nats.consumer.batch.size",
  outboxPending: "messaging.nats.outbox.pending",
  outboxOldestAge: "messaging.nats.outbox.oldest_age",
  consumerPending: "messaging.nats.consumer.pending",
  consumerAckPending: "messaging.nats.consumer.ack_pending",
  consumerRedelivered: "messaging.nats.consumer.redelivered",
  deadLetterDepth: "messaging.nats.dlq.depth",
  circuitState: "messaging.nats.circuit.state"
} as const

/**
 * The unit of each metric (UCUM, as OpenTelemetry writes it), by name:
 * Effect metrics carry none, so exporters take it from here.
 *
 * @since 0.2.0
 * @category constants
 */
export const units: Readonly<Record<string, string>> = {
  [Names.sent]: "{message}",
  [Names.consumed]: "{message}",
  [Names.processDuration]: "s",
  [Names.settled]: "{message}",
  [Names.skipped]: "{message}",
  [Names.retries]: "{retry}",
  [Names.timeouts]: "{message}",
  [Names.callbackDefects]: "{exception}",
  [Names.consumerStalls]: "{stall}",
  [Names.batchSize]: "{message}",
  [Names.outboxPending]: "{row}",
  [Names.outboxOldestAge]: "s",
  [Names.consumerPending]: "{message}",
  [Names.consumerAckPending]: "{message}",
  [Names.consumerRedelivered]: "{message}",
  [Names.deadLetterDepth]: "{message}",
  [Names.circuitState]: "{state}"
}

/**
 * Attribute keys of the toolkit's metrics that the messaging conventions do
 * not define.
 *
 * @since 0.2.0
 * @category constants
 */
export const MetricAttributes = {
  /** `ack`, `nak` or `dead_letter` on `messaging.nats.settled.messages`. */
  outcome: "messaging.nats.settle.outcome",
  /** `duplicate` or `unhandled` on `messaging.nats.skipped.messages`. */
  reason: "messaging.nats.skip.reason",
  /** The context (first subject token) of a dead-letter queue, on `messaging.nats.dlq.depth`. */
  deadLetterContext: "messaging.nats.dlq.context",
  /** The error's tag on a failed send (`error.type` of the conventions). */
  errorType: "error.type",
  /** The circuit breaker's name (`Handler.circuitBreaker`), on `messaging.nats.circuit.state`. */
  breaker: "messaging.nats.circuit.breaker"
} as const

/**
 * Messages published (one per PubAck, duplicates included):
 * `messaging.client.sent.messages`, `messaging.operation.name=publish`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const published = counter(Names.sent, "messages published to JetStream", {
  [Attributes.operationName]: "publish"
})

/**
 * Publishes that failed after their retries: `messaging.client.sent.messages`
 * with `error.type=PublishError`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const publishFailed = counter(Names.sent, "messages published to JetStream", {
  [Attributes.operationName]: "publish",
  [MetricAttributes.errorType]: "PublishError"
})

/**
 * Messages taken from a consumer (each delivery counts):
 * `messaging.client.consumed.messages`, `messaging.operation.name=consume`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const consumed = counter(Names.consumed, "messages delivered to a consumer", {
  [Attributes.operationName]: "consume"
})

/**
 * Messages acknowledged (handled, duplicate or ignored):
 * `messaging.nats.settled.messages`, outcome `ack`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const acked = counter(Names.settled, "messages settled by a consumer", { [MetricAttributes.outcome]: "ack" })

/**
 * Messages given back to the server with `nak(delay)` for a later
 * redelivery: `messaging.nats.settled.messages`, outcome `nak`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const redelivered = counter(Names.settled, "messages settled by a consumer", { [MetricAttributes.outcome]: "nak" })

/**
 * Messages dead-lettered: `messaging.nats.settled.messages`, outcome `dead_letter`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const deadLettered = counter(Names.settled, "messages settled by a consumer", {
  [MetricAttributes.outcome]: "dead_letter"
})

/**
 * Duplicates skipped by the dedup stage (also counted as acked):
 * `messaging.nats.skipped.messages`, reason `duplicate`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const duplicatesSkipped = counter(Names.skipped, "messages acked without handling", {
  [MetricAttributes.reason]: "duplicate"
})

/**
 * Messages of a type no handler is registered for (also counted as acked
 * unless dead-lettered): `messaging.nats.skipped.messages`, reason `unhandled`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const unhandled = counter(Names.skipped, "messages acked without handling", {
  [MetricAttributes.reason]: "unhandled"
})

/**
 * In-process handler retries: `messaging.nats.process.retries`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const retried = counter(Names.retries, "in-process handler retries")

/**
 * Messages whose handling ran past the consumer's `handlerTimeout`: the
 * watchdog settled them (nak, or a dead letter at the last delivery) and
 * replaced the worker: `messaging.nats.process.timeouts`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const handlerTimeouts = counter(Names.timeouts, "messages whose handling exceeded the handler timeout")

/**
 * Exceptions that a callback handed to nats.js caught before they could end
 * the connection's reader (they are logged, and the message settled):
 * `messaging.nats.client.callback_defects`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const callbackDefects = counter(Names.callbackDefects, "exceptions caught in callbacks handed to nats.js")

/**
 * Pulls a consumer found lost and issued again:
 * `messaging.nats.consumer.stalls`, tagged `signal`: `advisory` (a new
 * consumer leader was elected), `heartbeat` (the pull's idle heartbeats
 * stopped) or `reconnect` (the connection reconnected). One per stall: the
 * signals that come while it lasts re-issue the pull without counting again.
 *
 * @since 0.2.0
 * @category metrics
 */
export const consumerStalls = counter(Names.consumerStalls, "pulls found lost (leader elected, heartbeats missed, reconnect) and issued again")

/**
 * Messages per committed batch of a consumer whose dedup store commits many
 * at once (see `Dedup.Batch`): `messaging.nats.consumer.batch.size`. Its
 * count is the number of commits, its sum the messages they settled.
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Metrics } from "effect-nats"
 *
 * const perCommit = Effect.map(Metric.value(Metrics.batchSize), (h) => (h.count === 0 ? 0 : h.sum / h.count))
 * ```
 *
 * @since 0.2.0
 * @category metrics
 */
export const batchSize: Metric.Metric.Histogram<number> = Metric.histogram(
  Names.batchSize,
  // 1 .. 512
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 10 }),
  "messages per committed batch"
)

/**
 * Duration of a successful handler: `messaging.process.duration`, in seconds
 * (the conventions' unit), `messaging.operation.name=process`. It is given
 * milliseconds (what `performance.now()` measures) and records seconds.
 *
 * @since 0.1.0
 * @category metrics
 */
export const handlerDuration: Metric.Metric.Histogram<number> = Metric.fromMetricKey(withAttributes(
  MetricKey.histogram(
    Names.processDuration,
    // 0.5 ms .. ~16 s
    MetricBoundaries.exponential({ start: 0.0005, factor: 2, count: 16 }),
    "duration of processing a message (handler) in seconds"
  ),
  { [Attributes.operationName]: "process" }
)).pipe(Metric.mapInput((millis: number) => millis / 1000))

/**
 * Outbox rows not yet published: `messaging.nats.outbox.pending`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const outboxPending = gauge(Names.outboxPending, "outbox rows waiting to be published")

/**
 * The state of a handler's circuit breaker (`Handler.circuitBreaker`): 0
 * closed, 1 half-open, 2 open; `messaging.nats.circuit.state`, attribute
 * `messaging.nats.circuit.breaker` (its name).
 *
 * @example
 * ```ts
 * import { Effect, Metric } from "effect"
 * import { Metrics } from "effect-nats"
 *
 * const state = Metric.value(Metric.tagged(Metrics.circuitState, Metrics.MetricAttributes.breaker, "payment-gateway"))
 * ```
 *
 * @since 0.2.0
 * @category metrics
 */
export const circuitState = gauge(Names.circuitState, "state of a handler's circuit breaker: 0 closed, 1 half-open, 2 open")

/**
 * Age in seconds of the oldest unpublished outbox row (0 when none waits):
 * `messaging.nats.outbox.oldest_age`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const outboxLag = gauge(Names.outboxOldestAge, "age of the oldest pending outbox row in seconds")

/**
 * Messages of the stream a consumer has not been delivered yet, as the
 * server counts them (`num_pending` of the consumer info), per
 * `messaging.nats.stream` and `messaging.consumer.group.name`:
 * `messaging.nats.consumer.pending`. Set by `Lag`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const consumerPending = gauge(Names.consumerPending, "messages not yet delivered to the consumer (server view)")

/**
 * Messages delivered to a consumer and not acknowledged yet
 * (`num_ack_pending`): `messaging.nats.consumer.ack_pending`. Set by `Lag`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const consumerAckPending = gauge(Names.consumerAckPending, "messages delivered and not yet acknowledged (server view)")

/**
 * Messages of a consumer delivered more than once and not acknowledged yet
 * (`num_redelivered`): `messaging.nats.consumer.redelivered`. Set by `Lag`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const consumerRedelivered = gauge(Names.consumerRedelivered, "messages redelivered and not yet acknowledged (server view)")

/**
 * Dead letters stored per context (`dlq.<context>`), per
 * `messaging.nats.dlq.context`: `messaging.nats.dlq.depth`. Set by `Lag`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const deadLetterDepth = gauge(Names.deadLetterDepth, "dead letters stored per context")
