/**
 * The provisioning file read by `effect-nats streams ensure <file>`: JSON with
 * the streams and durable consumers an application needs, in the shape of
 * effect-nats' `JetStream.StreamSpec` / `JetStream.ConsumerSpec`.
 *
 * ```json
 * {
 *   "streams": [
 *     { "name": "BILLING", "subjects": ["billing.>"], "maxAge": "7 days", "duplicateWindow": "2 minutes" }
 *   ],
 *   "consumers": [
 *     { "stream": "BILLING", "durable": "payments", "filterSubject": "billing.invoice.>", "ackWait": "30 seconds", "maxDeliver": 6 }
 *   ]
 * }
 * ```
 *
 * Durations are strings such as `"7 days"`, `"30 seconds"`, `"500 millis"`.
 * Unknown fields are errors (a typo must not be silently ignored).
 *
 * @since 0.1.0
 */
import { Data, Duration, Effect, Option, ParseResult, Schema } from "effect"

/**
 * A duration written as a string (`"7 days"`, `"30 seconds"`, `"500 millis"`),
 * decoded to a `Duration`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const DurationString: Schema.Schema<Duration.Duration, string> = Schema.transformOrFail(
  Schema.String,
  Schema.DurationFromSelf,
  {
    strict: true,
    decode: (s, _, ast) => {
      const d = Duration.decodeUnknown(s.trim())
      return Option.isSome(d) && Duration.isFinite(d.value) && Duration.toMillis(d.value) >= 0
        ? ParseResult.succeed(d.value)
        : ParseResult.fail(
          new ParseResult.Type(ast, s, `expected a duration such as "7 days", "30 seconds" or "500 millis", got ${JSON.stringify(s)}`)
        )
    },
    encode: (d) => ParseResult.succeed(Duration.format(d))
  }
)

/** An optional field: absent or of type `schema` (never `undefined`, never `null`). */
const opt = <S extends Schema.Schema.Any>(schema: S) => Schema.optionalWith(schema, { exact: true })

const oneOf = <const L extends ReadonlyArray<string>>(...literals: L) =>
  Schema.String.pipe(
    Schema.filter((s): s is L[number] => literals.includes(s), {
      message: (issue) =>
        `expected one of ${literals.map((l) => JSON.stringify(l)).join(", ")}, got ${JSON.stringify(issue.actual)}`
    })
  )

const Name = (what: string) =>
  Schema.String.pipe(
    Schema.filter((s) =>
      /^[^\s.*>/\\]+$/.test(s) || `expected a ${what} name without spaces, '.', '*', '>', '/' or '\\', got ${JSON.stringify(s)}`
    )
  )

const Subject = Schema.String.pipe(
  Schema.filter((s) => /^[^\s]+$/.test(s) || `expected a subject without spaces, got ${JSON.stringify(s)}`)
)

const Limit = Schema.Int.pipe(
  Schema.filter((n) => n === -1 || n >= 1 || `expected -1 (unlimited) or a positive integer, got ${n}`)
)

const Replicas = Schema.Int.pipe(Schema.filter((n) => (n >= 1 && n <= 5) || `expected 1 to 5 replicas, got ${n}`))

/**
 * One stream (see `JetStream.StreamSpec`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const StreamSpec = Schema.Struct({
  name: Name("stream"),
  subjects: Schema.Array(Subject).annotations({ message: () => "expected a list of subjects" }).pipe(
    Schema.minItems(1, { message: () => "expected at least one subject" })
  ),
  description: opt(Schema.String),
  retention: opt(oneOf("limits", "interest", "workqueue")),
  storage: opt(oneOf("file", "memory")),
  maxMsgs: opt(Limit),
  maxBytes: opt(Limit),
  maxAge: opt(DurationString),
  maxMsgSize: opt(Limit),
  duplicateWindow: opt(DurationString),
  replicas: opt(Replicas),
  discard: opt(oneOf("old", "new"))
})

/**
 * One durable pull consumer (see `JetStream.ConsumerSpec`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const ConsumerSpec = Schema.Struct({
  stream: Name("stream"),
  durable: Name("consumer"),
  description: opt(Schema.String),
  filterSubject: opt(Subject),
  ackWait: opt(DurationString),
  maxDeliver: opt(Limit),
  maxAckPending: opt(Limit),
  deliverPolicy: opt(oneOf("all", "new", "last", "last_per_subject")),
  backoff: opt(Schema.Array(DurationString)),
  inactiveThreshold: opt(DurationString),
  replicas: opt(Replicas)
})

/**
 * The whole file: `streams` and `consumers`, both optional.
 *
 * @since 0.1.0
 * @category schemas
 */
export const StreamsFile = Schema.Struct({
  streams: Schema.optionalWith(Schema.Array(StreamSpec), { exact: true, default: () => [] }),
  consumers: Schema.optionalWith(Schema.Array(ConsumerSpec), { exact: true, default: () => [] })
})

/**
 * A decoded file.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamsFile extends Schema.Schema.Type<typeof StreamsFile> {}

/**
 * The file is not valid JSON or does not match {@link StreamsFile}; the
 * message names each bad field (`streams[0].maxAge: expected a duration ...`).
 *
 * @since 0.1.0
 * @category errors
 */
export class StreamsFileError extends Data.TaggedError("StreamsFileError")<{
  readonly source: string
  readonly issues: ReadonlyArray<string>
  readonly message: string
}> {}

const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (acc, key) => typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`,
    ""
  )

const decodeFile = Schema.decodeUnknown(StreamsFile, { errors: "all", onExcessProperty: "error" })

const parseJson = (text: string, source: string): Effect.Effect<unknown, StreamsFileError> =>
  Effect.try({
    try: (): unknown => JSON.parse(text),
    catch: (cause) => {
      const issue = `not valid JSON (${cause instanceof Error ? cause.message : String(cause)})`
      return new StreamsFileError({ source, issues: [issue], message: `${source}: ${issue}` })
    }
  }).pipe(
    Effect.filterOrFail(
      (json) => typeof json === "object" && json !== null && !Array.isArray(json),
      () => {
        const issue = 'expected an object { "streams": [...], "consumers": [...] }'
        return new StreamsFileError({ source, issues: [issue], message: `${source}: ${issue}` })
      }
    )
  )

/**
 * Decode the text of a file; `source` (its path) is used in error messages.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { StreamsFile } from "@effect-nats/cli"
 *
 * const file = StreamsFile.decode('{ "streams": [{ "name": "BILLING", "subjects": ["billing.>"], "maxAge": "7 days" }] }')
 * // Effect<StreamsFile, StreamsFileError>
 * ```
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode = (text: string, source = "<input>"): Effect.Effect<StreamsFile, StreamsFileError> =>
  parseJson(text, source).pipe(Effect.flatMap((json) =>
    decodeFile(json).pipe(Effect.mapError((error) => {
      const issues = ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => {
        const where = formatPath(issue.path)
        const message = issue._tag === "Unexpected" && issue.path.length > 0
          ? "unknown field"
          : issue._tag === "Missing"
          ? "required field is missing"
          : issue.message
        return where === "" ? message : `${where}: ${message}`
      })
      return new StreamsFileError({ source, issues, message: `${source}: ${issues.join("; ")}` })
    }))
  ))
