/**
 * W3C trace propagation over NATS headers and the OpenTelemetry messaging
 * attribute names used by the toolkit's spans (`publish <subject>` PRODUCER,
 * `process <subject>` CONSUMER, `send <subject>` CLIENT, `<endpoint>` SERVER).
 *
 * @since 0.1.0
 */
import { Match, type MsgHdrs } from "@nats-io/nats-core"
import { Effect, Option, Tracer } from "effect"
import { isRecordingTracer } from "./internal/fiberContext.js"

/**
 * Span attribute keys (OpenTelemetry messaging semantic conventions).
 *
 * @since 0.1.0
 * @category constants
 */
export const Attributes = {
  system: "messaging.system",
  destination: "messaging.destination.name",
  operationType: "messaging.operation.type",
  operationName: "messaging.operation.name",
  messageId: "messaging.message.id",
  conversationId: "messaging.message.conversation_id",
  consumerGroup: "messaging.consumer.group.name",
  bodySize: "messaging.message.body.size",
  deliveryCount: "messaging.nats.delivery_count",
  streamSequence: "messaging.nats.stream_sequence",
  stream: "messaging.nats.stream",
  eventType: "messaging.nats.event_type"
} as const

const traceId = /^[0-9a-f]{32}$/
const spanId = /^[0-9a-f]{16}$/

/**
 * The W3C `traceparent` value for a span.
 *
 * @since 0.1.0
 * @category propagation
 */
export const traceparent = (span: Tracer.AnySpan): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/**
 * Parse a W3C `traceparent` value into an external parent span.
 *
 * @since 0.1.0
 * @category propagation
 */
export const parseTraceparent = (value: string): Option.Option<Tracer.ExternalSpan> => {
  const parts = value.trim().split("-")
  if (parts.length !== 4 || parts[0] !== "00") return Option.none()
  const [, trace, span, flags] = parts as [string, string, string, string]
  if (!traceId.test(trace) || !spanId.test(span) || /^0+$/.test(trace) || /^0+$/.test(span)) return Option.none()
  return Option.some(Tracer.externalSpan({ traceId: trace, spanId: span, sampled: (parseInt(flags, 16) & 1) === 1 }))
}

/**
 * Write the span's `traceparent` into NATS headers.
 *
 * @since 0.1.0
 * @category propagation
 */
export const inject = (span: Tracer.AnySpan, headers: MsgHdrs): void => {
  headers.set("traceparent", traceparent(span))
}

/**
 * Read the parent span from NATS headers (`traceparent`, matched case-insensitively).
 *
 * @since 0.1.0
 * @category propagation
 */
export const extract = (headers: MsgHdrs | undefined): Option.Option<Tracer.ExternalSpan> => {
  if (headers === undefined) return Option.none()
  const value = headers.get("traceparent", Match.IgnoreCase)
  return value === "" ? Option.none() : parseTraceparent(value)
}

/**
 * Is a tracer installed that records spans (anything but Effect's built-in
 * default, e.g. @effect/opentelemetry)? The toolkit's per-message spans are
 * only created when one is: without it they would cost time and record
 * nothing.
 *
 * **The rule, everywhere**: a service or consumer reads this once, when it is
 * built (`Publisher.make` / `layer`, `Consumer.make`, `CommandService.make` /
 * `layer`, `CommandClient.make` / `layer`; `CommandClient.subscribe` when it
 * subscribes), and keeps one path for its lifetime, the spans a wrapper
 * around it. So the tracer must be installed where the
 * toolkit's layers are built: provide the tracing layer to them
 * (`MyLayers.pipe(Layer.provide(TracingLive))`, or `Effect.provide(TracingLive)`
 * outside them), not beside them (`Layer.merge(MyLayers, TracingLive)` builds
 * both apart, and the toolkit sees no tracer).
 *
 * @since 0.1.0
 * @category tracing
 */
export const isRecording: Effect.Effect<boolean> = Effect.map(Effect.tracer, isRecordingTracer)
