/**
 * The wire format: a JSON envelope around every event, plus NATS headers that
 * let routers and other languages read the metadata without decoding the body.
 *
 * ```json
 * { "id": "0190…", "type": "billing.invoice.issued", "source": "billing",
 *   "timestamp": "2026-01-01T00:00:00.000Z", "correlationId": "…", "causationId": "…",
 *   "aggregateId": "inv-1", "aggregateType": "Invoice", "version": 1,
 *   "tenantId": "acme", "schemaVersion": 1, "data": { … } }
 * ```
 *
 * Headers: `Nats-Msg-Id` (= id, JetStream dedup), `Content-Type: application/json`,
 * `traceparent` / `tracestate` (W3C), and `Event-Type`, `Correlation-Id`,
 * `Causation-Id`, `Aggregate-Id`, `Aggregate-Type`, `Tenant-Id`. A metadata header
 * is left out when its value is not printable ASCII (the body always has it).
 *
 * @since 0.1.0
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core"
import { type DateTime, Effect, FiberRef, Option, Schema } from "effect"
import { dual } from "effect/Function"
import { globalValue } from "effect/GlobalValue"
import { uuidv7 } from "./internal/uuid.js"

/**
 * Header names of the wire format.
 *
 * @since 0.1.0
 * @category constants
 */
export const HeaderNames = {
  msgId: "Nats-Msg-Id",
  contentType: "Content-Type",
  traceparent: "traceparent",
  tracestate: "tracestate",
  type: "Event-Type",
  correlationId: "Correlation-Id",
  causationId: "Causation-Id",
  aggregateId: "Aggregate-Id",
  aggregateType: "Aggregate-Type",
  tenantId: "Tenant-Id"
} as const

/**
 * The decoded envelope of an event whose data has type `A`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Envelope<A> {
  /** Unique message id (UUID v7 by default); also `Nats-Msg-Id`. */
  readonly id: string
  /** Event type, `<context>.<aggregate>.<event>`. */
  readonly type: string
  /** The service that produced it. */
  readonly source?: string | undefined
  readonly timestamp: DateTime.Utc
  /** The id shared by every message of one business flow. */
  readonly correlationId: string
  /** The id of the message that caused this one. */
  readonly causationId?: string | undefined
  readonly aggregateId: string
  readonly aggregateType: string
  /** Aggregate version after this event (0 = unversioned). */
  readonly version: number
  readonly tenantId?: string | undefined
  /** Version of the data schema. */
  readonly schemaVersion?: number | undefined
  readonly data: A
}

/**
 * The JSON form of an envelope.
 *
 * @since 0.1.0
 * @category models
 */
export interface Encoded<I> {
  readonly id: string
  readonly type: string
  readonly source?: string | undefined
  readonly timestamp: string
  readonly correlationId: string
  readonly causationId?: string | undefined
  readonly aggregateId: string
  readonly aggregateType: string
  readonly version: number
  readonly tenantId?: string | undefined
  readonly schemaVersion?: number | undefined
  readonly data: I
}

const NonEmpty = Schema.String.pipe(Schema.minLength(1))

/** A message id: no line breaks, no leading or trailing whitespace (it is also the `Nats-Msg-Id` header). */
const MessageId = Schema.String.pipe(Schema.pattern(/^\S(?:[^\r\n]*\S)?$/u))

/** An ISO 8601 date-time with a zone, as a `DateTime.Utc`. */
const Timestamp = Schema.compose(
  Schema.String.pipe(Schema.pattern(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})$/i)),
  Schema.DateTimeUtc
)

const metadataFields = {
  id: MessageId,
  type: NonEmpty,
  source: Schema.optional(Schema.String),
  timestamp: Timestamp,
  correlationId: NonEmpty,
  causationId: Schema.optional(Schema.String),
  aggregateId: Schema.String,
  aggregateType: Schema.String,
  version: Schema.Int.pipe(Schema.nonNegative()),
  tenantId: Schema.optional(Schema.String),
  schemaVersion: Schema.optional(Schema.Int)
}

/**
 * The envelope Schema for a given data Schema.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Envelope } from "effect-nats"
 *
 * const InvoiceIssued = Envelope.schema(Schema.Struct({ amount: Schema.Number }))
 * const decode = Schema.decodeUnknownEither(Schema.parseJson(InvoiceIssued))
 * ```
 *
 * @since 0.1.0
 * @category schemas
 */
export const schema = <A, I, R>(data: Schema.Schema<A, I, R>): Schema.Schema<Envelope<A>, Encoded<I>, R> =>
  Schema.Struct({ ...metadataFields, data })

/**
 * The envelope with `data` left undecoded: what the consumer reads first to
 * route a message by `type` before decoding its data.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Unknown: Schema.Schema<Envelope<unknown>, Encoded<unknown>> = schema(Schema.Unknown)

/**
 * A new envelope id: a UUID v7 from the given time (milliseconds).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeId = (nowMillis: number): string => uuidv7(nowMillis)

const safeHeaderValue = /^[\x20-\x7e]{1,1024}$/

const setSafe = (h: MsgHdrs, name: string, value: string | undefined): void => {
  // nats.js trims header values: leave out what would not arrive as written
  if (value !== undefined && safeHeaderValue.test(value) && value.trim() === value) h.set(name, value)
}

/**
 * The NATS headers for an envelope (plus W3C trace headers, if given).
 *
 * @since 0.1.0
 * @category headers
 */
export const toHeaders = <A>(
  envelope: Envelope<A>,
  trace?: { readonly traceparent?: string | undefined; readonly tracestate?: string | undefined }
): MsgHdrs => {
  const h = natsHeaders()
  h.set(HeaderNames.msgId, envelope.id)
  h.set(HeaderNames.contentType, "application/json")
  setSafe(h, HeaderNames.traceparent, trace?.traceparent)
  setSafe(h, HeaderNames.tracestate, trace?.tracestate)
  setSafe(h, HeaderNames.type, envelope.type)
  setSafe(h, HeaderNames.correlationId, envelope.correlationId)
  setSafe(h, HeaderNames.causationId, envelope.causationId)
  setSafe(h, HeaderNames.aggregateId, envelope.aggregateId)
  setSafe(h, HeaderNames.aggregateType, envelope.aggregateType)
  setSafe(h, HeaderNames.tenantId, envelope.tenantId)
  return h
}

/**
 * What a new message inherits from the message being handled: its id becomes
 * the causation id, its correlation id (and tenant) carry over.
 *
 * @since 0.1.0
 * @category models
 */
export interface Causation {
  readonly id: string
  readonly correlationId: string
  readonly tenantId?: string | undefined
}

/**
 * The message being handled by the current fiber, set by the consumer
 * pipeline and the command service, read by the publisher and the outbox.
 *
 * @since 0.1.0
 * @category context
 */
export const current: FiberRef.FiberRef<Option.Option<Causation>> = globalValue(
  Symbol.for("effect-nats/Envelope/current"),
  () => FiberRef.unsafeMake<Option.Option<Causation>>(Option.none())
)

/**
 * Run an effect as the handling of `causation`: messages it publishes are
 * caused by it and share its correlation id.
 *
 * @since 0.1.0
 * @category context
 */
export const withCausation: {
  (causation: Causation): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, causation: Causation): Effect.Effect<A, E, R>
} = dual(2, <A, E, R>(self: Effect.Effect<A, E, R>, causation: Causation) =>
  Effect.locally(self, current, Option.some(causation)))
