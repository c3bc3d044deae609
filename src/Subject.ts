/**
 * Typed, validated NATS subjects.
 *
 * A subject is a list of tokens joined by `.`. Any token that comes from user
 * data (an aggregate id, a tenant, a command name) is validated first, so a
 * hostile value such as `a.b`, `*`, `>` or `"x y"` can never route a message
 * to another subject.
 *
 * @since 0.1.0
 */
import { Data, Effect, Either } from "effect"

/**
 * The longest token accepted (in UTF-16 code units).
 *
 * @since 0.1.0
 * @category constants
 */
export const maxTokenLength = 256

/**
 * Why a token was refused.
 *
 * @since 0.1.0
 * @category models
 */
export type InvalidReason =
  | "Empty"
  | "TooLong"
  | "Separator"
  | "Wildcard"
  | "Whitespace"
  | "Control"
  | "Encoding"
  | "Convention"

/**
 * A subject token (or a definition name) that is not allowed.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidSubjectError extends Data.TaggedError("InvalidSubjectError")<{
  readonly token: string
  readonly reason: InvalidReason
  readonly message: string
}> {}

const describe = (token: string): string => JSON.stringify(token.length > 64 ? token.slice(0, 64) + "…" : token)

// whitespace (incl. unicode spaces), C0/C1 controls, DEL, and unicode line/paragraph separators
const whitespace = /\s/u
// eslint-disable-next-line no-control-regex
const control = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufeff]/u

/**
 * Check one token: non-empty, at most {@link maxTokenLength} long, and free of
 * `.`, `*`, `>`, whitespace, control characters and lone surrogates (which
 * UTF-8 cannot carry). Other unicode is allowed.
 *
 * @example
 * ```ts
 * import { Either } from "effect"
 * import { Subject } from "effect-nats"
 *
 * Either.isRight(Subject.validateToken("inv-42"))   // true
 * Either.isLeft(Subject.validateToken("a.b"))      // true
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const validateToken = (token: string): Either.Either<string, InvalidSubjectError> => {
  const fail = (reason: InvalidReason, why: string) =>
    Either.left(new InvalidSubjectError({ token, reason, message: `invalid subject token ${describe(token)}: ${why}` }))
  if (token.length === 0) return fail("Empty", "empty")
  if (token.length > maxTokenLength) return fail("TooLong", `longer than ${maxTokenLength} characters`)
  if (token.includes(".")) return fail("Separator", "contains '.'")
  if (token.includes("*") || token.includes(">")) return fail("Wildcard", "contains a wildcard ('*' or '>')")
  if (control.test(token)) return fail("Control", "contains a control character")
  if (whitespace.test(token)) return fail("Whitespace", "contains whitespace")
  // a lone surrogate cannot be encoded as UTF-8: on the wire it becomes U+FFFD, i.e. another subject
  if (!token.isWellFormed()) return fail("Encoding", "contains a lone UTF-16 surrogate (not encodable as UTF-8)")
  return Either.right(token)
}

/**
 * Validate a token as an Effect.
 *
 * @since 0.1.0
 * @category validation
 */
export const token = (value: string): Effect.Effect<string, InvalidSubjectError> => validateToken(value)

/**
 * Join validated tokens into a subject.
 *
 * @example
 * ```ts
 * import { Subject } from "effect-nats"
 *
 * // fails with InvalidSubjectError on a token such as "a.b", "*" or ""
 * const subjectOf = (userSuppliedId: string) => Subject.make("billing", "invoice", userSuppliedId)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (...tokens: ReadonlyArray<string>): Effect.Effect<string, InvalidSubjectError> =>
  Effect.map(Effect.forEach(tokens, token), (ts) => ts.join("."))

type Params<T extends string> = T extends `${string}{${infer P}}${infer Rest}` ? P | Params<Rest> : never

/**
 * A subject template such as `"tenants.{tenantId}.orders.{orderId}"`. The
 * placeholders are typed; each value is validated as a token.
 *
 * @example
 * ```ts
 * import { Subject } from "effect-nats"
 *
 * const orderSubject = Subject.template("tenants.{tenant}.orders.{order}")
 * const subject = orderSubject({ tenant: "acme", order: "o-1" }) // Effect<"tenants.acme.orders.o-1">
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const template = <const T extends string>(pattern: T) => {
  const parts = pattern.split(".")
  for (const part of parts) {
    if (!/^\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(part)) assertName(part, "template")
  }
  return (params: { readonly [K in Params<T>]: string }): Effect.Effect<string, InvalidSubjectError> =>
    Effect.suspend(() => {
      const values = params as Readonly<Record<string, string>>
      return make(...parts.map((part) => part.startsWith("{") ? values[part.slice(1, -1)] ?? "" : part))
    })
}

const conventionToken = /^[a-z0-9][a-z0-9_-]*$/

/**
 * Check a name made by a developer (an event type, a service or command name):
 * dot-separated lowercase tokens of `a-z`, `0-9`, `-`, `_`. Returns the
 * problem, if any.
 *
 * @since 0.1.0
 * @category validation
 */
export const validateName = (name: string, tokens?: number): Either.Either<string, InvalidSubjectError> => {
  const parts = name.split(".")
  if (tokens !== undefined && parts.length !== tokens) {
    return Either.left(new InvalidSubjectError({
      token: name,
      reason: "Convention",
      message: `${describe(name)} must have ${tokens} dot-separated tokens (e.g. <context>.<aggregate>.<event>)`
    }))
  }
  for (const part of parts) {
    const checked = validateToken(part)
    if (Either.isLeft(checked)) return Either.left(checked.left)
    if (!conventionToken.test(part)) {
      return Either.left(new InvalidSubjectError({
        token: name,
        reason: "Convention",
        message: `${describe(name)}: token ${describe(part)} must be lowercase a-z, 0-9, '-' or '_'`
      }))
    }
  }
  return Either.right(name)
}

/**
 * Like {@link validateName}, but throws the {@link InvalidSubjectError} (its
 * message prefixed with `what`): for definitions made at module load, where a
 * bad name is a programming error.
 *
 * @example
 * ```ts
 * import { Subject } from "effect-nats"
 *
 * Subject.assertName("billing.invoice.issued", "Event.make type", 3) // ok
 * Subject.assertName("Billing.Invoice", "Event.make type", 3)        // throws InvalidSubjectError
 * ```
 *
 * @since 0.1.0
 * @category validation
 */
export const assertName = (name: string, what: string, tokens?: number): string =>
  Either.getOrThrowWith(
    validateName(name, tokens),
    (e) => new InvalidSubjectError({ token: e.token, reason: e.reason, message: `${what}: ${e.message}` })
  )

/** One FNV-1a step: the hash after one more byte. */
const fnv = (hash: number, byte: number): number => Math.imul(hash ^ byte, 0x01000193)

/**
 * The partition (`0 ≤ p < partitions`) of a key: FNV-1a (32 bits) of its
 * UTF-8 bytes, modulo `partitions` — the function nats-server's subject
 * mapping `{{partition(n, ...)}}` applies to a subject's wildcard tokens, so
 * that a publisher outside the toolkit can reach the same partition with the
 * server mapping `"a.b.events.*": "a.b.events.{{partition(8,1)}}.{{wildcard(1)}}"`.
 * (A test publishes through such a mapping and checks that both agree.)
 *
 * @example
 * ```ts
 * import { Subject } from "effect-nats"
 *
 * Subject.partition("u-42", 8) // a number in 0..7, the same on every run and for the server
 * ```
 *
 * @since 0.2.0
 * @category partitions
 */
export const partition = (key: string, partitions: number): number => {
  if (!Number.isInteger(partitions) || partitions < 1) {
    throw new RangeError(`partitions must be a positive integer, got ${partitions}`)
  }
  // FNV-1a over the UTF-8 bytes, encoded on the fly (no allocation: the consumer routes every message with it)
  let hash = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    let c = key.charCodeAt(i)
    if (c < 0x80) {
      hash = fnv(hash, c)
      continue
    }
    if (c < 0x800) {
      hash = fnv(hash, 0xc0 | (c >> 6))
      hash = fnv(hash, 0x80 | (c & 0x3f))
      continue
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = key.charCodeAt(i + 1)
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00)
        i++
        hash = fnv(hash, 0xf0 | (c >> 18))
        hash = fnv(hash, 0x80 | ((c >> 12) & 0x3f))
        hash = fnv(hash, 0x80 | ((c >> 6) & 0x3f))
        hash = fnv(hash, 0x80 | (c & 0x3f))
        continue
      }
      c = 0xfffd // a lone surrogate is encoded as U+FFFD, as TextEncoder does
    }
    hash = fnv(hash, 0xe0 | (c >> 12))
    hash = fnv(hash, 0x80 | ((c >> 6) & 0x3f))
    hash = fnv(hash, 0x80 | (c & 0x3f))
  }
  return (hash >>> 0) % partitions
}

/**
 * The literal token between an aggregate's name and its id in the subject of
 * an event-sourced aggregate's events (see {@link aggregateEvents}).
 *
 * @since 0.2.0
 * @category constants
 */
export const aggregateEventsToken = "events"

/**
 * The subject of one event-sourced aggregate's events: the naming convention
 * extended with the aggregate id, `<context>.<aggregate>.events.<aggregateId>`
 * (four tokens: it never clashes with an event's three-token subject; all
 * the aggregates of a type are `<context>.<aggregate>.events.*`). All events
 * of one aggregate go to this one subject, so that JetStream can check the
 * subject's last sequence on append. The id is validated as any token
 * (`a.b`, `*`, `>`, whitespace are refused).
 *
 * With `partitions` (a positive integer), the aggregate's
 * {@link partition} comes before its id:
 * `<context>.<aggregate>.events.<partition>.<aggregateId>` (all the
 * aggregates of a type are then `<context>.<aggregate>.events.*.*`, one
 * partition `<context>.<aggregate>.events.<partition>.*`).
 *
 * @example
 * ```ts
 * import { Subject } from "effect-nats"
 *
 * const subject = Subject.aggregateEvents("accounts", "user", "u-42") // Effect<"accounts.user.events.u-42">
 * const partitioned = Subject.aggregateEvents("accounts", "user", "u-42", 8) // Effect<"accounts.user.events.<0..7>.u-42">
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const aggregateEvents = (
  context: string,
  aggregate: string,
  aggregateId: string,
  partitions?: number | undefined
): Effect.Effect<string, InvalidSubjectError> =>
  partitions === undefined
    ? make(context, aggregate, aggregateEventsToken, aggregateId)
    : Effect.flatMap(
      token(aggregateId),
      (id) => make(context, aggregate, aggregateEventsToken, String(partition(id, partitions)), id)
    )
