/**
 * The answer to a command request: the outcome of a request (a result or an
 * error body), written as `Command.Response` with the micro protocol's error
 * headers, and counted in the endpoint's statistics.
 *
 * @internal
 */
import { headers as natsHeaders, type Msg } from "@nats-io/nats-core"
import { Cause, DateTime, Effect, Either, Option, type ParseResult } from "effect"
import * as Command from "../Command.js"
import type { Request } from "../CommandService.js"
import * as Codec from "./codec.js"
import { encodeResponse, type Response } from "./commandCodec.js"
import * as micro from "./micro.js"

/** The error body of a response. */
export type ErrorBody = NonNullable<Response["error"]>

/** What a request came to: a result (encoded) or an error, and the request when it decoded. */
export interface Outcome {
  readonly request?: Request | undefined
  readonly result?: unknown
  readonly error?: ErrorBody | undefined
}

/** An outcome, and what to log about it (a 500's details). */
export interface Failed {
  readonly outcome: Outcome
  readonly log?: Effect.Effect<void> | undefined
}

/** A `400`. */
export const badRequest = (message: string, details?: unknown): Outcome => ({
  error: details === undefined
    ? { code: Command.ErrorCodes.badRequest, message }
    : { code: Command.ErrorCodes.badRequest, message, details }
})

/** A `500`: the details are logged, never sent. */
export const internalError: ErrorBody = { code: Command.ErrorCodes.internal, message: "internal error" }

/** The answer to a request whose handler was interrupted (the service stopping): a `503`. */
export const stopping = (request?: Request): Outcome => ({
  request,
  error: { code: Command.ErrorCodes.unavailable, message: "service stopping" }
})

/** A header value: one line, at most 512 characters. */
export const headerSafe = (s: string): string => {
  // eslint-disable-next-line no-control-regex
  const line = s.replace(/[\u0000-\u001f\u007f]+/g, " ").trim()
  return line.length > 512 ? line.slice(0, 511) + "…" : line || "error"
}

/** How a command's failures are told apart and encoded. */
export interface Failures<R> {
  readonly subject: string
  readonly isFailure: (u: unknown) => boolean
  readonly encodeFailure: Codec.Codec<unknown, R>
}

const typedFailure = (
  subject: string,
  request: Request,
  error: Command.Failure,
  details: Either.Either<unknown, ParseResult.ParseError>
): Failed => {
  if (Either.isLeft(details)) {
    return {
      outcome: { request, error: internalError },
      log: Effect.logError(`CommandService: cannot encode the failure of ${subject}`, details.left)
    }
  }
  return { outcome: { request, error: { code: String(error.code), message: failureMessage(error, details.right), details: details.right } } }
}

/**
 * The message a typed failure is written by: the failure's own (a `message`
 * field or getter), else its tag and encoded fields, `OutOfStock { sku: "none" }`.
 * The getter Schema.TaggedError adds when there is no `message` field (on the
 * class it makes, the one with its own static `_tag`) is not the failure's own:
 * it prints the fields without saying which failure it is.
 */
export const failureMessage = (error: Command.Failure, details: unknown): string => {
  let owner: object | null = error
  while (owner !== null && !Object.prototype.hasOwnProperty.call(owner, "message")) owner = Object.getPrototypeOf(owner)
  const ctor: unknown = owner === null || owner === error ? undefined : owner.constructor
  const schemaDefault = typeof ctor === "function" && Object.prototype.hasOwnProperty.call(ctor, "_tag") && "fields" in ctor
  const own: unknown = (error as { readonly message?: unknown }).message
  if (!schemaDefault && typeof own === "string" && own.length > 0) return own
  const fields = typeof details === "object" && details !== null
    ? Object.entries(details).filter(([key]) => key !== "_tag" && key !== "code")
    : []
  return fields.length === 0
    ? error._tag
    : `${error._tag} { ${fields.map(([key, value]) => `${key}: ${JSON.stringify(value)}`).join(", ")} }`
}

/**
 * The outcome of a handler that failed: its typed failure (encoded with the
 * failure Schema), `503` when interrupted, else `500` (logged). An Effect
 * only when the failure Schema needs the effectful encoder.
 */
export const failed = <R>(
  failures: Failures<R>,
  request: Request,
  cause: Cause.Cause<unknown>
): Failed | Effect.Effect<Failed, never, R> => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure) && failures.isFailure(failure.value)) {
    const error = failure.value as Command.Failure & { readonly message?: unknown }
    const encoded = failures.encodeFailure(error)
    const details = Codec.sync(encoded)
    return details === undefined
      ? Effect.map(Effect.either(encoded), (d) => typedFailure(failures.subject, request, error, d))
      : typedFailure(failures.subject, request, error, details)
  }
  if (Cause.isInterruptedOnly(cause)) return { outcome: stopping(request) }
  return {
    outcome: { request, error: internalError },
    log: Effect.logError(`CommandService: ${failures.subject} failed unexpectedly`, cause).pipe(
      Effect.annotateLogs({ requestId: request.id, correlationId: request.correlationId })
    )
  }
}

/** What answering did: the error counted (`"<code>:<message>"`, as nats.go reports it), and what to log. */
export interface Sent {
  readonly lastError: string | undefined
  readonly log: Effect.Effect<void> | undefined
}

const textEncoder = new TextEncoder()

const body = (outcome: Outcome, error: ErrorBody | undefined, nowMillis: number, durationMs: number): string => {
  const request = outcome.request
  const timestamp = DateTime.unsafeMake(nowMillis)
  const metadata = request !== undefined
    ? { requestId: request.id, correlationId: request.correlationId, timestamp, durationMs }
    : { correlationId: "", timestamp, durationMs }
  return JSON.stringify(encodeResponse(
    error === undefined ? { success: true, result: outcome.result, metadata } : { success: false, error, metadata }
  ))
}

/**
 * Answer a request (when it has a reply subject) and count it in the
 * endpoint's statistics. Never throws: a result that is not JSON (a bigint, a
 * cycle) is answered `500`, and a response that cannot be sent is logged.
 */
export const send = (
  endpoint: micro.Endpoint,
  msg: Msg,
  outcome: Outcome,
  started: bigint,
  nowMillis: number
): Sent => {
  const nanos = process.hrtime.bigint() - started
  const durationMs = Number(nanos) / 1e6
  let error = outcome.error
  let log: Effect.Effect<void> | undefined
  let payload: string
  try {
    payload = body(outcome, error, nowMillis, durationMs)
  } catch (e) {
    error = internalError
    payload = body(outcome, error, nowMillis, durationMs)
    log = Effect.logError(`CommandService: the response of ${endpoint.subject} is not JSON`, e)
  }
  const lastError = error === undefined ? undefined : `${error.code}:${headerSafe(error.message)}`
  endpoint.record(nanos, lastError)
  try {
    let h: ReturnType<typeof natsHeaders> | undefined
    if (error !== undefined) {
      h = natsHeaders()
      h.set(micro.ErrorHeader, headerSafe(error.message))
      h.set(micro.ErrorCodeHeader, headerSafe(error.code))
    }
    if (msg.reply) msg.respond(textEncoder.encode(payload), h ? { headers: h } : undefined)
  } catch (e) {
    log = Effect.logWarning(`CommandService: cannot respond on ${endpoint.subject}`, new Cause.UnknownException(e))
  }
  return { lastError, log }
}
