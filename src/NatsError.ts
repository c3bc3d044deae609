/**
 * Typed errors for everything that talks to a NATS server.
 *
 * Every foreign exception thrown by nats.js is turned into one of these at the
 * boundary, so callers can `Effect.catchTag` on a stable `_tag` and never see
 * a raw throw.
 *
 * @since 0.1.0
 */
import { Data, Predicate } from "effect"
import * as errors from "@nats-io/nats-core"
import { JetStreamApiError } from "@nats-io/jetstream"

/**
 * The connection could not be established, was closed, or is draining.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NatsClient } from "effect-nats"
 *
 * const program = Effect.void.pipe(
 *   Effect.provide(NatsClient.layer({ servers: "nats://127.0.0.1:4222" })),
 *   Effect.catchTag("NatsConnectionError", (e) => Effect.logError(e.message))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsConnectionError extends Data.TaggedError("NatsConnectionError")<{
  readonly reason: "ConnectFailed" | "AuthorizationViolation" | "Closed" | "Draining"
  readonly method: string
  readonly servers: string
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * A request, flush or JetStream API call got no answer in time. A timed-out
 * JetStream publish may still have been stored: retry it with the same msgID.
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsTimeoutError extends Data.TaggedError("NatsTimeoutError")<{
  readonly method: string
  readonly subject?: string | undefined
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * Nobody listens on the subject (or JetStream has no stream for it).
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsNoRespondersError extends Data.TaggedError("NatsNoRespondersError")<{
  readonly method: string
  readonly subject?: string | undefined
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * The server refused a publish or a subscription on a subject the user may not
 * use. The connection stays usable.
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsPermissionDeniedError extends Data.TaggedError("NatsPermissionDeniedError")<{
  readonly method: string
  readonly operation: "publish" | "subscription"
  readonly subject: string
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * Any other failure reported by the client or the server (protocol errors,
 * invalid arguments, JetStream API errors with their `code` and `errCode`).
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsRequestError extends Data.TaggedError("NatsRequestError")<{
  readonly method: string
  readonly subject?: string | undefined
  /** HTTP-like status for JetStream API errors (e.g. 400, 404, 503). */
  readonly code?: number | undefined
  /** JetStream `err_code` (e.g. 10059 stream not found). */
  readonly errCode?: number | undefined
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * The union of transport errors.
 *
 * @since 0.1.0
 * @category errors
 */
export type NatsError =
  | NatsConnectionError
  | NatsTimeoutError
  | NatsNoRespondersError
  | NatsPermissionDeniedError
  | NatsRequestError

/**
 * Is this value one of the NATS transport errors?
 *
 * @since 0.1.0
 * @category guards
 */
export const isNatsError = (u: unknown): u is NatsError =>
  Predicate.isTagged(u, "NatsConnectionError") ||
  Predicate.isTagged(u, "NatsTimeoutError") ||
  Predicate.isTagged(u, "NatsNoRespondersError") ||
  Predicate.isTagged(u, "NatsPermissionDeniedError") ||
  Predicate.isTagged(u, "NatsRequestError")

/**
 * Is this error worth retrying (timeouts, no responders, 503 "JetStream not
 * available", a connection that is reconnecting)? Permission and validation
 * errors are not.
 *
 * @since 0.1.0
 * @category guards
 */
export const isTransient = (e: NatsError): boolean => {
  switch (e._tag) {
    case "NatsTimeoutError":
    case "NatsNoRespondersError":
      return true
    case "NatsConnectionError":
      return e.reason === "ConnectFailed"
    case "NatsRequestError":
      return e.code === 503 || e.code === 408
    case "NatsPermissionDeniedError":
      return false
  }
}

const messageOf = (cause: unknown): string =>
  cause instanceof Error ? cause.message : String(cause)

const findCause = <A>(cause: unknown, refine: (u: unknown) => u is A): A | undefined => {
  let current: unknown = cause
  for (let i = 0; i < 5 && current !== undefined && current !== null; i++) {
    if (refine(current)) return current
    current = current instanceof Error ? current.cause : undefined
  }
  return undefined
}

const isInstance =
  <A>(ctor: abstract new (...args: never) => A) =>
  (u: unknown): u is A =>
    u instanceof ctor

/**
 * Turn anything nats.js throws into a {@link NatsError}.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NatsError } from "effect-nats"
 *
 * const flush = (nc: { flush(): Promise<void> }) =>
 *   Effect.tryPromise({ try: () => nc.flush(), catch: NatsError.fromCause("flush") })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromCause =
  (method: string, subject?: string, servers = "") =>
  (cause: unknown): NatsError => {
    if (isNatsError(cause)) return cause
    const permission = findCause(cause, isInstance(errors.PermissionViolationError))
    if (permission) {
      return new NatsPermissionDeniedError({
        method,
        operation: permission.operation,
        subject: permission.subject,
        message: `permission denied: ${permission.operation} on '${permission.subject}'`,
        cause
      })
    }
    if (findCause(cause, isInstance(errors.NoRespondersError)) ||
      (cause instanceof errors.RequestError && cause.isNoResponders())) {
      return new NatsNoRespondersError({
        method,
        subject,
        message: `no responders${subject ? ` on '${subject}'` : ""}`,
        cause
      })
    }
    if (findCause(cause, isInstance(errors.TimeoutError))) {
      return new NatsTimeoutError({ method, subject, message: `${method} timed out${subject ? ` on '${subject}'` : ""}`, cause })
    }
    if (findCause(cause, isInstance(errors.AuthorizationError)) ||
      findCause(cause, isInstance(errors.UserAuthenticationExpiredError))) {
      return new NatsConnectionError({
        reason: "AuthorizationViolation",
        method,
        servers,
        message: `authorization violation${servers ? ` connecting to ${servers}` : ""}: ${messageOf(cause)}`,
        cause
      })
    }
    if (findCause(cause, isInstance(errors.ClosedConnectionError))) {
      return new NatsConnectionError({ reason: "Closed", method, servers, message: "the connection is closed", cause })
    }
    if (findCause(cause, isInstance(errors.DrainingConnectionError))) {
      return new NatsConnectionError({ reason: "Draining", method, servers, message: "the connection is draining", cause })
    }
    if (cause instanceof errors.ConnectionError) {
      return new NatsConnectionError({
        reason: "ConnectFailed",
        method,
        servers,
        message: `cannot connect${servers ? ` to ${servers}` : ""}: ${messageOf(cause)}`,
        cause
      })
    }
    const api = findCause(cause, isInstance(JetStreamApiError))
    if (api) {
      if (api.status === 503) {
        return new NatsNoRespondersError({ method, subject, message: `JetStream unavailable: ${api.message}`, cause })
      }
      return new NatsRequestError({
        method,
        subject,
        code: api.status,
        errCode: api.code,
        message: `${method}: ${api.message}`,
        cause
      })
    }
    const status = findCause(cause, (u): u is { code: number } & Error =>
      u instanceof Error && Predicate.hasProperty(u, "code") && typeof u.code === "number")
    if (status?.code === 503) {
      return new NatsNoRespondersError({ method, subject, message: `no responders: ${status.message}`, cause })
    }
    if (status?.code === 408) {
      return new NatsTimeoutError({ method, subject, message: `${method} timed out: ${status.message}`, cause })
    }
    return new NatsRequestError({
      method,
      subject,
      code: status?.code,
      message: `${method} failed: ${messageOf(cause)}`,
      cause
    })
  }
