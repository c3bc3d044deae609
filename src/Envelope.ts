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
import type { MsgHdrs } from "@nats-io/nats-core"
import { DateTime, type Effect, type FiberRef, type Option, Schema } from "effect"
import { dual } from "effect/Function"
import * as internal from "./internal/causation.js"
import { fromRecord } from "./internal/headers.js"
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
  /**
   * Version of the data schema the message was written at. A handler of an
   * event with past versions gets `data` migrated to the current version;
   * this still says what was stored.
   */
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

const messageIdPattern = /^\S(?:[^\r\n]*\S)?$/u
const timestampPattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})$/i

const isMessageId = (id: string): boolean => messageIdPattern.test(id) && id.isWellFormed()

/**
 * A message id: no line breaks, no leading or trailing whitespace, no lone
 * surrogates (it is also the `Nats-Msg-Id` header, which must survive UTF-8).
 */
const MessageId = Schema.String.pipe(
  Schema.filter(isMessageId, {
    identifier: "MessageId",
    jsonSchema: { minLength: 1, pattern: messageIdPattern.source },
    message: () => "a message id must be non-empty well-formed text without line breaks or surrounding whitespace"
  })
)

/** An ISO 8601 date-time with a zone, as a `DateTime.Utc`. */
const Timestamp = Schema.compose(Schema.String.pipe(Schema.pattern(timestampPattern)), Schema.DateTimeUtc)

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
 * The envelope Schema of one version of an event's data: `schemaVersion`
 * is that version (a literal; optional for version 1, so a message written
 * without it reads as version 1). `Event.make` unites one per version.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Envelope } from "effect-nats"
 *
 * const v2 = Envelope.versioned(Schema.Struct({ amount: Schema.Number }), 2)
 * ```
 *
 * @since 0.2.0
 * @category schemas
 */
export const versioned = <A, I, R>(
  data: Schema.Schema<A, I, R>,
  schemaVersion: number
): Schema.Schema<Envelope<A>, Encoded<I>, R> =>
  Schema.Struct({
    ...metadataFields,
    schemaVersion: schemaVersion === 1 ? Schema.optional(Schema.Literal(1)) : Schema.Literal(schemaVersion),
    data
  }) as unknown as Schema.Schema<Envelope<A>, Encoded<I>, R>

const optionalString = (o: Record<string, unknown>, key: string): boolean =>
  !Object.hasOwn(o, key) || o[key] === undefined || typeof o[key] === "string"

const optionalInt = (o: Record<string, unknown>, key: string): boolean =>
  !Object.hasOwn(o, key) || o[key] === undefined || Number.isSafeInteger(o[key])

/**
 * The envelope metadata of `u`, accepted exactly when {@link Unknown} accepts
 * it and decoded to the same value (same key order), with `data` left as it
 * is; `undefined` when anything is off (decode with the Schema then: it
 * reports every issue). The consumer's fast path (see `Handler.make`): the
 * Schema's generic walk costs more than the rest of a message's handling.
 * test/EnvelopeFastDecode.test.ts checks it against the Schema.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeMetadata = (u: unknown): Envelope<unknown> | undefined => {
  if (typeof u !== "object" || u === null || Array.isArray(u)) return undefined
  const o = u as Record<string, unknown>
  const { id, type, timestamp, correlationId, aggregateId, aggregateType, version } = o
  if (
    typeof id !== "string" || !isMessageId(id) ||
    typeof type !== "string" || type.length === 0 ||
    typeof timestamp !== "string" || !timestampPattern.test(timestamp) ||
    typeof correlationId !== "string" || correlationId.length === 0 ||
    typeof aggregateId !== "string" || typeof aggregateType !== "string" ||
    typeof version !== "number" || !Number.isSafeInteger(version) || version < 0 ||
    !optionalString(o, "source") || !optionalString(o, "causationId") || !optionalString(o, "tenantId") ||
    !optionalInt(o, "schemaVersion")
  ) return undefined
  let at: DateTime.Utc
  try {
    at = DateTime.unsafeMake(timestamp) as DateTime.Utc
  } catch {
    return undefined
  }
  const out: Record<string, unknown> = { id, type }
  if (Object.hasOwn(o, "source")) out.source = o.source
  out.timestamp = at
  out.correlationId = correlationId
  if (Object.hasOwn(o, "causationId")) out.causationId = o.causationId
  out.aggregateId = aggregateId
  out.aggregateType = aggregateType
  out.version = version
  if (Object.hasOwn(o, "tenantId")) out.tenantId = o.tenantId
  if (Object.hasOwn(o, "schemaVersion")) out.schemaVersion = o.schemaVersion
  out.data = o.data
  return out as unknown as Envelope<unknown>
}

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

const setSafe = (h: Record<string, string>, name: string, value: string | undefined): void => {
  // nats.js trims header values: leave out what would not arrive as written
  if (value !== undefined && safeHeaderValue.test(value) && value.trim() === value) h[name] = value
}

/**
 * The NATS headers for an envelope (plus W3C trace headers, if given), as a
 * record (first value of each header, in wire order).
 *
 * @since 0.1.0
 * @category headers
 */
export const headerRecord = <A>(
  envelope: Envelope<A>,
  trace?: { readonly traceparent?: string | undefined; readonly tracestate?: string | undefined }
): Record<string, string> => {
  const h: Record<string, string> = {}
  h[HeaderNames.msgId] = envelope.id
  h[HeaderNames.contentType] = "application/json"
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
 * The NATS headers for an envelope (plus W3C trace headers, if given).
 *
 * @since 0.1.0
 * @category headers
 */
export const toHeaders = <A>(
  envelope: Envelope<A>,
  trace?: { readonly traceparent?: string | undefined; readonly tracestate?: string | undefined }
): MsgHdrs => fromRecord(headerRecord(envelope, trace))

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
export const current: FiberRef.FiberRef<Option.Option<Causation>> = internal.current

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
} = dual(2, internal.withCausation)
