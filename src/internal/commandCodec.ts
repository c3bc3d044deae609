/**
 * The command envelope on the wire: the request (`Command.request` with the
 * payload left as it is) and the response (`Command.Response`), read and
 * written on every round trip. The Schemas are the definition; the functions
 * here give exactly what they give (test/CommandCodec.test.ts checks each
 * against its Schema with fast-check): by hand for the usual forms (the
 * Schema's generic walk costs ~1.3-1.6 µs per call here, the hand-written
 * forms a fraction of that), through the Schema for anything else, which
 * then decides and says why.
 *
 * @internal
 */
import { DateTime, Either, type ParseResult, Schema } from "effect"
import * as Command from "../Command.js"

/** The request envelope, its payload left as it is (decoded or encoded with the command's Schema apart). */
export const RequestEnvelope = Command.request(Schema.Unknown)

/** A decoded request envelope. */
export type RequestEnvelope = typeof RequestEnvelope.Type

/** A request envelope as JSON. */
type RequestEnvelopeEncoded = typeof RequestEnvelope.Encoded

/** Request metadata, decoded. */
export type RequestMetadata = typeof Command.RequestMetadata.Type

/** A decoded response. */
export type Response = typeof Command.Response.Type

/** A response as JSON. */
type ResponseEncoded = typeof Command.Response.Encoded

type Mutable<A> = { -readonly [K in keyof A]: A[K] }

/** A JSON object (not null, not an array). */
const isRecord = (u: unknown): u is { readonly [key: string]: unknown } =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** `YYYY-MM-DDTHH:mm:ss[.fraction]Z`: what `Date.prototype.toISOString` (and `Schema.DateTimeUtc` encoding) writes. */
const isoUtc = /^(?:\d{4}|[+-]\d{6})-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z$/

/** A timestamp in the usual form, as `Schema.DateTimeUtc` decodes it; `undefined` for any other form. */
const parseUtc = (u: unknown): DateTime.Utc | undefined => {
  if (typeof u !== "string" || !isoUtc.test(u)) return undefined
  const millis = Date.parse(u)
  return Number.isNaN(millis) ? undefined : DateTime.unsafeMake(millis)
}

/** What `Schema.DateTimeUtc` encodes a `DateTime.Utc` to (`DateTime.formatIso`, in fewer steps). */
const formatUtc = (at: DateTime.Utc): string => new Date(at.epochMillis).toISOString()

/** Absent, or a string at least `min` long. */
const optionalString = (o: { readonly [key: string]: unknown }, key: string, min: number): boolean =>
  !(key in o) || (typeof o[key] === "string" && (o[key] as string).length >= min)

/** A value the hand-written form does not take (the Schema decides). */
const unusual: unique symbol = Symbol("unusual")

const decodeRequestMetadata = (u: unknown): RequestMetadata | typeof unusual => {
  if (
    !isRecord(u) || !optionalString(u, "requestId", 1) || !optionalString(u, "correlationId", 1) ||
    !optionalString(u, "causationId", 0) || !optionalString(u, "userId", 0)
  ) return unusual
  const out: Mutable<RequestMetadata> = {}
  if ("requestId" in u) out.requestId = u.requestId as string
  if ("correlationId" in u) out.correlationId = u.correlationId as string
  if ("causationId" in u) out.causationId = u.causationId as string
  if ("userId" in u) out.userId = u.userId as string
  if ("timestamp" in u) {
    const at = parseUtc(u.timestamp)
    if (at === undefined) return unusual
    out.timestamp = at
  }
  return out
}

/** {@link decodeRequest} for the usual forms; `undefined` for anything else. */
export const decodeRequestByHand = (u: unknown): RequestEnvelope | undefined => {
  if (!isRecord(u) || !optionalString(u, "aggregateId", 0)) return undefined
  const metadata = "metadata" in u ? decodeRequestMetadata(u.metadata) : undefined
  if (metadata === unusual) return undefined
  // the Schema's key order: aggregateId, payload, metadata
  const out = {} as Mutable<RequestEnvelope>
  if ("aggregateId" in u) out.aggregateId = u.aggregateId as string
  out.payload = u.payload
  if (metadata !== undefined) out.metadata = metadata
  return out
}

const decodeRequestBySchema = Schema.decodeUnknownEither(RequestEnvelope)

/**
 * The request envelope of a parsed JSON body, as `RequestEnvelope` decodes it
 * (the payload left as it is, `undefined` when missing).
 */
export const decodeRequest = (u: unknown): Either.Either<RequestEnvelope, ParseResult.ParseError> => {
  const body = decodeRequestByHand(u)
  return body === undefined ? decodeRequestBySchema(u) : Either.right(body)
}

/** {@link encodeRequest} when it cannot fail (no empty id); `undefined` otherwise. */
export const encodeRequestByHand = (body: RequestEnvelope): RequestEnvelopeEncoded | undefined => {
  const m = body.metadata
  if (m !== undefined && (m.requestId === "" || m.correlationId === "")) return undefined
  const out = {} as Mutable<RequestEnvelopeEncoded>
  if ("aggregateId" in body) out.aggregateId = body.aggregateId!
  out.payload = body.payload
  if (m !== undefined) {
    const metadata: Mutable<NonNullable<RequestEnvelopeEncoded["metadata"]>> = {}
    if ("requestId" in m) metadata.requestId = m.requestId!
    if ("correlationId" in m) metadata.correlationId = m.correlationId!
    if ("causationId" in m) metadata.causationId = m.causationId!
    if ("userId" in m) metadata.userId = m.userId!
    if ("timestamp" in m) metadata.timestamp = formatUtc(m.timestamp!)
    out.metadata = metadata
  }
  return out
}

const encodeRequestBySchema = Schema.encodeEither(RequestEnvelope)

/** A request envelope (its payload already encoded) as JSON, as `RequestEnvelope` encodes it. */
export const encodeRequest = (body: RequestEnvelope): Either.Either<RequestEnvelopeEncoded, ParseResult.ParseError> => {
  const encoded = encodeRequestByHand(body)
  return encoded === undefined ? encodeRequestBySchema(body) : Either.right(encoded)
}

const decodeErrorBody = (u: unknown): Response["error"] | typeof unusual => {
  if (!isRecord(u) || typeof u.code !== "string" || typeof u.message !== "string") return unusual
  return "details" in u ? { code: u.code, message: u.message, details: u.details } : { code: u.code, message: u.message }
}

/** {@link decodeResponse} for the usual forms; `undefined` for anything else. */
export const decodeResponseByHand = (u: unknown): Response | undefined => {
  if (!isRecord(u) || typeof u.success !== "boolean" || !isRecord(u.metadata)) return undefined
  const metadata = u.metadata
  const { correlationId, durationMs } = metadata
  const error = "error" in u ? decodeErrorBody(u.error) : undefined
  const timestamp = parseUtc(metadata.timestamp)
  if (
    error === unusual || typeof correlationId !== "string" || typeof durationMs !== "number" ||
    !optionalString(metadata, "requestId", 0) || timestamp === undefined
  ) return undefined
  const out = { success: u.success } as Mutable<Response>
  if ("result" in u) out.result = u.result
  if (error !== undefined) out.error = error
  out.metadata = "requestId" in metadata
    ? { requestId: metadata.requestId as string, correlationId, timestamp, durationMs }
    : { correlationId, timestamp, durationMs }
  return out
}

const decodeResponseBySchema = Schema.decodeUnknownEither(Command.Response)

/** The response of a parsed JSON body, as `Command.Response` decodes it. */
export const decodeResponse = (u: unknown): Either.Either<Response, ParseResult.ParseError> => {
  const response = decodeResponseByHand(u)
  return response === undefined ? decodeResponseBySchema(u) : Either.right(response)
}

/** A response as JSON, as `Command.Response` encodes it (it cannot fail). */
export const encodeResponse = (response: Response): ResponseEncoded => {
  const out = { success: response.success } as Mutable<ResponseEncoded>
  if ("result" in response) out.result = response.result
  if ("error" in response) out.error = response.error
  const m = response.metadata
  const timestamp = formatUtc(m.timestamp)
  out.metadata = "requestId" in m
    ? { requestId: m.requestId!, correlationId: m.correlationId, timestamp, durationMs: m.durationMs }
    : { correlationId: m.correlationId, timestamp, durationMs: m.durationMs }
  return out
}
