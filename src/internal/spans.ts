/**
 * The one place the toolkit's messaging span options and per-consumer metric
 * labels are built (OpenTelemetry messaging conventions, keys from
 * `Tracing.Attributes`).
 *
 * @internal
 */
import type { MsgHdrs } from "@nats-io/nats-core"
import { MetricLabel, Option, type Tracer } from "effect"
import { Attributes, extract } from "../Tracing.js"

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
 * The parent of a span for a received message: the `traceparent` of its
 * headers, else a new trace (`root`, not the receiving fiber's span).
 */
export const parentOf = (
  headers: MsgHdrs | undefined
): { readonly parent: Tracer.ExternalSpan } | { readonly root: true } =>
  Option.match(extract(headers), { onNone: () => ({ root: true }), onSome: (parent) => ({ parent }) })

/**
 * The metric labels of a durable consumer (`messaging.consumer.group.name`,
 * `messaging.nats.stream`), the same keys as its spans. Built once per
 * consumer (the lag gauges).
 */
export const consumerLabels = (stream: string, durable: string): ReadonlyArray<MetricLabel.MetricLabel> => [
  MetricLabel.make(Attributes.consumerGroup, durable),
  MetricLabel.make(Attributes.stream, stream)
]
