/**
 * Dead letters: messages the pipeline gave up on, kept with their reason in a
 * JetStream stream (`DLQ` on `dlq.<context>` by default) so that operators can
 * list, inspect and replay them.
 *
 * A record keeps the original bytes and headers, the decoded envelope where
 * possible, the error tag and message, the number of attempts, when it failed,
 * and where it came from (stream, consumer, subject, sequence). It is published
 * with `Nats-Msg-Id: <stream>:<sequence>:<stored at>`, so the same message dead-lettered
 * twice (by the pipeline and by the max-deliveries watcher) is stored once
 * (the id also holds the source message's stored time, so a recreated stream
 * whose sequences restart does not collide).
 *
 * @since 0.1.0
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core"
import { Clock, Context, Data, Duration, Effect, Either, Layer, Option, Schema } from "effect"
import * as Envelope from "./Envelope.js"
import * as Json from "./internal/json.js"
import { JetStream, type JetStreamProvisionError } from "./JetStream.js"
import * as Limits from "./Limits.js"
import * as NatsError from "./NatsError.js"

/**
 * The body of a dead-letter message.
 *
 * @since 0.1.0
 * @category schemas
 */
export class Record extends Schema.Class<Record>("effect-nats/DeadLetter/Record")({
  /** The subject the message was published on. */
  subject: Schema.String,
  /** The original headers (all values). */
  headers: Schema.Record({ key: Schema.String, value: Schema.Array(Schema.String) }),
  /** The original payload, base64 (its first `maxPayloadBytes` when `payloadTruncated`). */
  payload: Schema.String,
  /** The original payload's size in bytes (absent in records written before it was kept). */
  payloadBytes: Schema.optional(Schema.Number),
  /** True when only the first `maxPayloadBytes` of the payload were kept: such a record cannot be replayed. */
  payloadTruncated: Schema.optional(Schema.Boolean),
  /** The envelope as JSON, when the (whole) payload parsed as one. */
  envelope: Schema.optional(Schema.Unknown),
  /** The error's tag (`ParseError`, `UnknownType`, `TooLarge`, `TooDeep`, a handler error's `_tag`, ...). */
  errorTag: Schema.String,
  /** A readable reason. */
  errorMessage: Schema.String,
  /** Why it was dead-lettered: `Decode`, `UnknownType`, `TooLarge`, `TooDeep`, `Permanent`, `MaxDeliveries`, `Timeout`, `PublishFailed`. */
  reason: Schema.String,
  attempts: Schema.Number,
  failedAt: Schema.String,
  stream: Schema.optional(Schema.String),
  consumer: Schema.optional(Schema.String),
  sequence: Schema.optional(Schema.Number)
}) {}

/**
 * A stored dead letter: its sequence in the DLQ stream and its record.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly seq: number
  readonly subject: string
  readonly record: Record
}

/**
 * Failure of a dead-letter operation.
 *
 * @since 0.1.0
 * @category errors
 */
export class DeadLetterError extends Data.TaggedError("DeadLetterError")<{
  readonly reason: "NotFound" | "Malformed" | "Truncated" | "Transport"
  readonly method: string
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * Options of the dead-letter layer.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Stream name (default `DLQ`). */
  readonly stream?: string | undefined
  /** Subject prefix (default `dlq`): records go to `<prefix>.<context>`. */
  readonly prefix?: string | undefined
  /** How long dead letters are kept (default 30 days). */
  readonly maxAge?: Duration.DurationInput | undefined
  readonly replicas?: number | undefined
  /** Create or update the DLQ stream to match these options when the layer starts (default true). */
  readonly provision?: boolean | undefined
  /**
   * The most payload bytes a record keeps (default 256 KiB). A longer payload
   * (an oversize message) is cut, so that the record itself, with its base64
   * payload, headers and reason, always fits the server's max_payload (1 MiB
   * by default); such a record says `payloadTruncated` and cannot be replayed.
   */
  readonly maxPayloadBytes?: number | undefined
}

const maxErrorMessageLength = 16 * 1024

/**
 * What to dead-letter: the original message, why, and where it came from.
 *
 * @since 0.1.0
 * @category models
 */
export interface Failure {
  readonly subject: string
  readonly headers: MsgHdrs | undefined
  readonly data: Uint8Array
  readonly reason: string
  readonly errorTag: string
  readonly errorMessage: string
  readonly attempts: number
  readonly stream?: string | undefined
  readonly consumer?: string | undefined
  readonly sequence?: number | undefined
  /** When the source message was stored in its stream (epoch millis): part of the default id. */
  readonly storedAt?: number | undefined
  /** Message id for the DLQ publish (default `<stream>:<sequence>:<storedAt>`, else a new id). */
  readonly id?: string | undefined
}

/**
 * The dead-letter service.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { DeadLetter } from "effect-nats"
 *
 * const replayAll = Effect.gen(function*() {
 *   const dlq = yield* DeadLetter.DeadLetter
 *   for (const entry of yield* dlq.list({ context: "billing" })) {
 *     yield* Effect.log(`${entry.seq}: ${entry.record.reason} ${entry.record.errorMessage}`)
 *     yield* dlq.replay(entry.seq)
 *   }
 * })
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class DeadLetter extends Context.Tag("effect-nats/DeadLetter")<DeadLetter, {
  readonly stream: string
  /** The DLQ subject for a context: `<prefix>.<context>`. */
  readonly subjectFor: (context: string) => string
  /** Store a dead letter; returns its DLQ sequence. */
  readonly send: (failure: Failure) => Effect.Effect<number, DeadLetterError>
  /** List dead letters, oldest first, optionally of one context. */
  readonly list: (options?: {
    readonly context?: string | undefined
    readonly limit?: number | undefined
    readonly fromSeq?: number | undefined
  }) => Effect.Effect<Array<Entry>, DeadLetterError>
  /** One dead letter by DLQ sequence. */
  readonly get: (seq: number) => Effect.Effect<Entry, DeadLetterError>
  /**
   * Publish a dead letter again to its original subject (or `to`). An envelope
   * gets a new id, with the dead letter's id as causation; other payloads are
   * sent as they were. The entry is removed from the DLQ unless `keep` is set.
   */
  readonly replay: (
    seq: number,
    options?: { readonly to?: string | undefined; readonly keep?: boolean | undefined }
  ) => Effect.Effect<{ readonly id: string; readonly subject: string; readonly seq: number }, DeadLetterError>
}>() {}

const transport = (method: string) => (cause: unknown) => {
  const e = NatsError.fromCause(method)(cause)
  return new DeadLetterError({ reason: "Transport", method, message: e.message, cause: e })
}

const headersRecord = (h: MsgHdrs | undefined): { [k: string]: Array<string> } => {
  const out: { [k: string]: Array<string> } = {}
  if (h) for (const [k, v] of h) out[k] = [...v]
  return out
}

const decodeRecord = Schema.decodeUnknownEither(Schema.parseJson(Record))
const textDecoder = new TextDecoder()
const textEncoder = new TextEncoder()

/**
 * Build the service, ensuring the DLQ stream exists (unless `provision: false`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const js = yield* JetStream
    const stream = options.stream ?? "DLQ"
    const prefix = options.prefix ?? "dlq"
    const maxPayloadBytes = options.maxPayloadBytes ?? 256 * 1024
    // records and payloads are read within the limits (a record is a message: the server bounds its size)
    const { maxDepth } = yield* Limits.Limits
    if (options.provision !== false) {
      yield* js.ensureStream({
        name: stream,
        subjects: [`${prefix}.>`],
        maxAge: options.maxAge ?? "30 days",
        replicas: options.replicas
      })
    }
    const subjectFor = (context: string) => `${prefix}.${context}`

    const send = (failure: Failure) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const truncated = failure.data.byteLength > maxPayloadBytes
        const kept = truncated ? failure.data.subarray(0, maxPayloadBytes) : failure.data
        // the decoded envelope, where there is one within the limits (the payload itself is always kept)
        const parsed = truncated ? undefined : Json.parse(kept, maxDepth, Number.POSITIVE_INFINITY)
        const envelope = parsed !== undefined && Either.isRight(parsed) ? Option.some(parsed.right) : Option.none()
        const record = new Record({
          subject: failure.subject,
          headers: headersRecord(failure.headers),
          payload: Buffer.from(kept.buffer, kept.byteOffset, kept.byteLength).toString("base64"),
          payloadBytes: failure.data.byteLength,
          payloadTruncated: truncated ? true : undefined,
          envelope: Option.getOrUndefined(envelope),
          errorTag: failure.errorTag,
          errorMessage: failure.errorMessage.length > maxErrorMessageLength
            ? failure.errorMessage.slice(0, maxErrorMessageLength) + "… (cut)"
            : failure.errorMessage,
          reason: failure.reason,
          attempts: failure.attempts,
          failedAt: new Date(now).toISOString(),
          stream: failure.stream,
          consumer: failure.consumer,
          sequence: failure.sequence
        })
        // one record per source message, also when a stream is recreated and sequences restart
        const id = failure.id ??
          (failure.stream !== undefined && failure.sequence !== undefined
            ? `${failure.stream}:${failure.sequence}:${failure.storedAt ?? 0}`
            : Envelope.makeId(now))
        const h = natsHeaders()
        h.set("Nats-Msg-Id", id)
        h.set("Content-Type", "application/json")
        h.set("Dlq-Reason", failure.reason)
        h.set("Dlq-Error-Tag", failure.errorTag.replace(/[^\x20-\x7e]/g, "?").slice(0, 256))
        const context = failure.subject.split(".")[0] || "unknown"
        const subject = subjectFor(/^[A-Za-z0-9_-]+$/.test(context) ? context : "unknown")
        const ack = yield* Effect.tryPromise({
          try: () => js.client.publish(subject, textEncoder.encode(JSON.stringify(record)), { msgID: id, headers: h }),
          catch: transport("DeadLetter.send")
        })
        return ack.seq
      }).pipe(Effect.withSpan("DeadLetter.send", { captureStackTrace: false }))

    const toEntry = (seq: number, subject: string, data: Uint8Array) => {
      // (a record holds the envelope one level down)
      const refused = Json.exceeds(data, maxDepth + 1, Number.POSITIVE_INFINITY)
      if (refused !== undefined) {
        return Effect.fail(
          new DeadLetterError({
            reason: "Malformed",
            method: "DeadLetter.get",
            message: `DLQ message ${seq} is refused: ${refused.message}`
          })
        )
      }
      return decodeRecord(textDecoder.decode(data)).pipe(
        Effect.map((record): Entry => ({ seq, subject, record })),
        Effect.mapError((cause) =>
          new DeadLetterError({
            reason: "Malformed",
            method: "DeadLetter.get",
            message: `DLQ message ${seq} is not a dead-letter record`,
            cause
          })
        )
      )
    }

    const get = (seq: number) =>
      Effect.tryPromise({
        try: () => js.manager.streams.getMessage(stream, { seq }),
        catch: (cause) => cause
      }).pipe(
        Effect.catchAll((cause) => {
          const e = NatsError.fromCause("DeadLetter.get")(cause)
          return e._tag === "NatsRequestError" && e.errCode === 10037
            ? Effect.succeed(null)
            : Effect.fail(new DeadLetterError({ reason: "Transport", method: "DeadLetter.get", message: e.message, cause: e }))
        }),
        Effect.flatMap((m) =>
          m === null
            ? Effect.fail(new DeadLetterError({ reason: "NotFound", method: "DeadLetter.get", message: `no dead letter ${seq}` }))
            : toEntry(m.seq, m.subject, m.data)
        )
      )

    const list = (listOptions: {
      readonly context?: string | undefined
      readonly limit?: number | undefined
      readonly fromSeq?: number | undefined
    } = {}) =>
      Effect.gen(function*() {
        const info = yield* js.streamInfo(stream).pipe(Effect.mapError((e) => transport("DeadLetter.list")(e)))
        const limit = listOptions.limit ?? 100
        const wanted = listOptions.context !== undefined ? subjectFor(listOptions.context) : undefined
        const out: Array<Entry> = []
        if (info.state.messages === 0) return out
        for (let seq = Math.max(info.state.first_seq, listOptions.fromSeq ?? 1, 1); seq <= info.state.last_seq && out.length < limit; seq++) {
          const entry = yield* get(seq).pipe(
            Effect.map(Option.some),
            Effect.catchIf((e) => e.reason === "NotFound" || e.reason === "Malformed", () => Effect.succeedNone)
          )
          if (Option.isSome(entry) && (wanted === undefined || entry.value.subject === wanted)) out.push(entry.value)
        }
        return out
      })

    const replay = (seq: number, replayOptions: { readonly to?: string | undefined; readonly keep?: boolean | undefined } = {}) =>
      Effect.gen(function*() {
        const entry = yield* get(seq)
        const now = yield* Clock.currentTimeMillis
        const record = entry.record
        if (record.payloadTruncated === true) {
          return yield* new DeadLetterError({
            reason: "Truncated",
            method: "DeadLetter.replay",
            message: `dead letter ${seq} kept only ${record.payload.length} base64 characters of a ` +
              `${record.payloadBytes ?? "?"}-byte payload: it cannot be replayed`
          })
        }
        const subject = replayOptions.to ?? record.subject
        const h = natsHeaders()
        for (const [k, values] of Object.entries(record.headers)) {
          if (k.toLowerCase() === "nats-msg-id") continue
          for (const v of values) h.append(k, v)
        }
        let payload: Uint8Array = Buffer.from(record.payload, "base64")
        let id = `replay:${stream}:${seq}`
        const env = record.envelope
        if (typeof env === "object" && env !== null && "id" in env && typeof env.id === "string") {
          id = Envelope.makeId(now)
          const replayed = { ...env, id, causationId: env.id }
          payload = textEncoder.encode(JSON.stringify(replayed))
          h.set(Envelope.HeaderNames.causationId, env.id)
        }
        h.set("Nats-Msg-Id", id)
        const ack = yield* Effect.tryPromise({
          try: () => js.client.publish(subject, payload, { msgID: id, headers: h }),
          catch: transport("DeadLetter.replay")
        })
        if (replayOptions.keep !== true) {
          yield* Effect.tryPromise({
            try: () => js.manager.streams.deleteMessage(stream, seq, false),
            catch: transport("DeadLetter.replay")
          })
        }
        return { id, subject, seq: ack.seq }
      }).pipe(Effect.withSpan("DeadLetter.replay", { attributes: { "messaging.nats.dlq_sequence": seq } }))

    return DeadLetter.of({ stream, subjectFor, send, list, get, replay })
  })

/**
 * The dead-letter layer; ensures the DLQ stream when built.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<DeadLetter, JetStreamProvisionError | NatsError.NatsError, JetStream> =>
  Layer.effect(DeadLetter, make(options))
