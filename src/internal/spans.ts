/**
 * The one place the toolkit's messaging span options and per-consumer metric
 * labels are built (OpenTelemetry messaging conventions, keys from
 * `Tracing.Attributes`).
 *
 * @internal
 */
import { MetricLabel, type Tracer } from "effect"
import { Attributes } from "../Tracing.js"

/** The messaging operations the toolkit's spans stand for. */
export type Operation = "publish" | "send" | "process"

/** Span options of a per-message span: no stack trace captured. */
export interface MessagingSpan {
  readonly kind: Tracer.SpanKind
  readonly captureStackTrace: false
  readonly attributes: Record<string, unknown>
}

/**
 * The span options of a messaging span on `destination`: `messaging.system`,
 * destination name, operation type and name, plus `extra` (e.g. the consumer
 * group and stream). Build once per subject, not per message.
 */
export const messagingSpan = (
  kind: Tracer.SpanKind,
  operation: Operation,
  destination: string,
  extra?: Readonly<Record<string, unknown>>
): MessagingSpan => ({
  kind,
  captureStackTrace: false,
  attributes: {
    [Attributes.system]: "nats",
    [Attributes.destination]: destination,
    [Attributes.operationType]: operation,
    [Attributes.operationName]: operation,
    ...extra
  }
})

/**
 * The metric labels of a durable consumer (`messaging.consumer.group.name`,
 * `messaging.nats.stream`), the same keys as its spans. Built once per
 * consumer (the lag gauges).
 */
export const consumerLabels = (stream: string, durable: string): ReadonlyArray<MetricLabel.MetricLabel> => [
  MetricLabel.make(Attributes.consumerGroup, durable),
  MetricLabel.make(Attributes.stream, stream)
]
