/**
 * Command and query definitions: plain values that carry the subject
 * (`<service>.command.<aggregate>.<name>`, queries `.query.`) and the Schemas
 * of the payload, the success value and the typed failures.
 *
 * The wire format (JSON, documented so other languages interoperate):
 *
 * ```json
 * // request
 * { "aggregateId": "inv-1", "payload": { … },
 *   "metadata": { "requestId": "…", "correlationId": "…", "causationId": "…",
 *                 "userId": "…", "timestamp": "2026-01-01T00:00:00.000Z" } }
 * // response
 * { "success": true, "result": { … },
 *   "metadata": { "requestId": "…", "correlationId": "…", "timestamp": "…", "durationMs": 1.25 } }
 * { "success": false, "error": { "code": "404", "message": "…", "details": { "_tag": "InvoiceNotFound", … } },
 *   "metadata": { … } }
 * ```
 *
 * A failed response also carries the micro protocol headers
 * `Nats-Service-Error` (the message) and `Nats-Service-Error-Code` (the code).
 * `details` of a typed failure is the failure encoded with the command's
 * failure Schema, so the client decodes it back to the same class.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
import { type Pipeable, pipeArguments } from "effect/Pipeable"
import * as Subject from "./Subject.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-nats/Command")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * A command changes state; a query reads it.
 *
 * @since 0.1.0
 * @category models
 */
export type Kind = "command" | "query"

/**
 * What a typed failure must look like: a tagged value with a stable `code`
 * (sent as `Nats-Service-Error-Code`). Define failures as `Schema.TaggedError`
 * classes with a `code` property.
 *
 * @since 0.1.0
 * @category models
 */
export interface Failure {
  readonly _tag: string
  readonly code: string
}

/**
 * A command (or query) definition.
 *
 * @since 0.1.0
 * @category models
 */
export interface Command<
  K extends Kind,
  Payload extends Schema.Schema.Any,
  Success extends Schema.Schema.Any,
  Failure extends Schema.Schema.All
> extends Pipeable {
  readonly [TypeId]: TypeId
  readonly kind: K
  readonly service: string
  readonly aggregate: string
  readonly name: string
  /** `<service>.<kind>.<aggregate>.<name>` */
  readonly subject: string
  /** The micro endpoint name: `<aggregate>_<name>` (queries: `<aggregate>_<name>_query`). */
  readonly endpoint: string
  readonly payload: Payload
  readonly success: Success
  /** A union of `Schema.TaggedError` classes with a `code` (or `Schema.Never`). */
  readonly failure: Failure
}

/**
 * Any command or query definition.
 *
 * @since 0.1.0
 * @category models
 */
export interface Any<K extends Kind = Kind> extends Command<K, Schema.Schema.Any, Schema.Schema.Any, Schema.Schema.All> {}

/**
 * The payload type of a definition.
 *
 * @since 0.1.0
 * @category type-level
 */
export type Payload<C extends Any> = Schema.Schema.Type<C["payload"]>

/**
 * The success type of a definition.
 *
 * @since 0.1.0
 * @category type-level
 */
export type Success<C extends Any> = Schema.Schema.Type<C["success"]>

/**
 * The typed failures of a definition.
 *
 * @since 0.1.0
 * @category type-level
 */
export type Error<C extends Any> = Schema.Schema.Type<C["failure"]>

/**
 * The Schema context a definition needs (to encode and decode).
 *
 * @since 0.1.0
 * @category type-level
 */
export type Context<C extends Any> =
  | Schema.Schema.Context<C["payload"]>
  | Schema.Schema.Context<C["success"]>
  | Schema.Schema.Context<C["failure"]>

/**
 * Rejects failure Schemas whose members lack `_tag` or `code` (at the type level).
 *
 * @since 0.1.0
 * @category type-level
 */
export type ValidFailure<F extends Schema.Schema.All> = [Schema.Schema.Type<F>] extends [Failure] ? unknown
  : { readonly "failure members need a _tag and a string code": never }

const Proto = {
  [TypeId]: TypeId,
  pipe() {
    return pipeArguments(this, arguments)
  }
}

/**
 * Options of {@link make} and {@link query}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<
  Payload extends Schema.Schema.Any,
  Success extends Schema.Schema.Any,
  Failure extends Schema.Schema.All
> {
  /** First subject token, lowercase (`billing`). */
  readonly service: string
  /** Lowercase (`invoice`). */
  readonly aggregate: string
  /** Lowercase (`issue`). */
  readonly name: string
  readonly payload: Payload
  readonly success: Success
  /** Default `Schema.Never` (the command cannot fail in a typed way). */
  readonly failure?: (Failure & ValidFailure<Failure>) | undefined
}

const define = <
  K extends Kind,
  Payload extends Schema.Schema.Any,
  Success extends Schema.Schema.Any,
  Failure extends Schema.Schema.All
>(kind: K, options: Options<Payload, Success, Failure>, what: string): Command<K, Payload, Success, Failure> => {
  Subject.assertName(options.service, `${what} service`, 1)
  Subject.assertName(options.aggregate, `${what} aggregate`, 1)
  Subject.assertName(options.name, `${what} name`, 1)
  const command = Object.create(Proto) as {
    -readonly [P in keyof Command<K, Payload, Success, Failure>]: Command<K, Payload, Success, Failure>[P]
  }
  command.kind = kind
  command.service = options.service
  command.aggregate = options.aggregate
  command.name = options.name
  command.subject = `${options.service}.${kind}.${options.aggregate}.${options.name}`
  command.endpoint = kind === "command"
    ? `${options.aggregate}_${options.name}`
    : `${options.aggregate}_${options.name}_query`
  command.payload = options.payload
  command.success = options.success
  command.failure = (options.failure ?? Schema.Never) as Failure
  return command
}

/**
 * Define a command on `<service>.command.<aggregate>.<name>`. Names are
 * single lowercase subject tokens; a bad name throws at definition time.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Command } from "effect-nats"
 *
 * class InvoiceNotFound extends Schema.TaggedError<InvoiceNotFound>()("InvoiceNotFound", {
 *   invoiceId: Schema.String
 * }) {
 *   readonly code = "404"
 * }
 *
 * class AlreadyPaid extends Schema.TaggedError<AlreadyPaid>()("AlreadyPaid", {
 *   invoiceId: Schema.String
 * }) {
 *   readonly code = "ALREADY_PAID"
 * }
 *
 * export const PayInvoice = Command.make({
 *   service: "billing",
 *   aggregate: "invoice",
 *   name: "pay",
 *   payload: Schema.Struct({ amount: Schema.Number }),
 *   success: Schema.Struct({ paid: Schema.Number }),
 *   failure: Schema.Union(InvoiceNotFound, AlreadyPaid)
 * })
 * // PayInvoice.subject === "billing.command.invoice.pay"
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <
  Payload extends Schema.Schema.Any,
  Success extends Schema.Schema.Any,
  Failure extends Schema.Schema.All = typeof Schema.Never
>(options: Options<Payload, Success, Failure>): Command<"command", Payload, Success, Failure> =>
  define("command", options, "Command.make")

/**
 * Define a query on `<service>.query.<aggregate>.<name>` (name default `get`,
 * payload default an empty struct).
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Command } from "effect-nats"
 *
 * export const GetInvoice = Command.query({
 *   service: "billing",
 *   aggregate: "invoice",
 *   success: Schema.Struct({ invoiceId: Schema.String, amount: Schema.Number })
 * })
 * // GetInvoice.subject === "billing.query.invoice.get"
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const query = <
  Success extends Schema.Schema.Any,
  Failure extends Schema.Schema.All = typeof Schema.Never,
  Payload extends Schema.Schema.Any = Schema.Struct<{}>
>(options: {
  readonly service: string
  readonly aggregate: string
  readonly name?: string | undefined
  readonly payload?: Payload | undefined
  readonly success: Success
  readonly failure?: (Failure & ValidFailure<Failure>) | undefined
}): Command<"query", Payload, Success, Failure> =>
  define("query", {
    service: options.service,
    aggregate: options.aggregate,
    name: options.name ?? "get",
    payload: (options.payload ?? Schema.Struct({})) as Payload,
    success: options.success,
    failure: options.failure
  }, "Command.query")

/**
 * Is this value a command or query definition?
 *
 * @since 0.1.0
 * @category guards
 */
export const isCommand = (u: unknown): u is Any => typeof u === "object" && u !== null && TypeId in u

/**
 * Request metadata on the wire. The service accepts a request without it
 * (a generated request id, the request id as correlation id, its own clock).
 *
 * @since 0.1.0
 * @category schemas
 */
export const RequestMetadata = Schema.Struct({
  requestId: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { exact: true }),
  correlationId: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1)), { exact: true }),
  causationId: Schema.optionalWith(Schema.String, { exact: true }),
  userId: Schema.optionalWith(Schema.String, { exact: true }),
  timestamp: Schema.optionalWith(Schema.DateTimeUtc, { exact: true })
})

/**
 * The request body for a payload Schema.
 *
 * @since 0.1.0
 * @category schemas
 */
export const request = <Payload extends Schema.Schema.Any>(payload: Payload) =>
  Schema.Struct({
    aggregateId: Schema.optionalWith(Schema.String, { exact: true }),
    payload,
    metadata: Schema.optionalWith(RequestMetadata, { exact: true })
  })

/**
 * The error body of a failed response: `details` is the encoded typed failure
 * (with its `_tag`), or the validation issues of a 400.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ErrorBody = Schema.Struct({
  code: Schema.String,
  message: Schema.String,
  details: Schema.optionalWith(Schema.Unknown, { exact: true })
})

/**
 * Response metadata: the correlation id, when the response was made, and
 * how long the handler took.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ResponseMetadata = Schema.Struct({
  requestId: Schema.optionalWith(Schema.String, { exact: true }),
  correlationId: Schema.String,
  timestamp: Schema.DateTimeUtc,
  durationMs: Schema.Number
})

/**
 * @since 0.1.0
 * @category models
 */
export type ResponseMetadata = typeof ResponseMetadata.Type

/**
 * The response body, with `result` left encoded (decoded with the command's
 * success Schema afterwards).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Response = Schema.Struct({
  success: Schema.Boolean,
  result: Schema.optionalWith(Schema.Unknown, { exact: true }),
  error: Schema.optionalWith(ErrorBody, { exact: true }),
  metadata: ResponseMetadata
})

/**
 * Codes the service uses for errors that are not typed failures.
 *
 * @since 0.1.0
 * @category constants
 */
export const ErrorCodes = {
  /** The request did not decode (invalid JSON, a missing or mistyped field). */
  badRequest: "400",
  /** The handler died, or its result did not encode. Details are logged, not sent. */
  internal: "500",
  /** The service stopped before the handler finished. */
  unavailable: "503"
} as const
