/**
 * Event definitions: plain values that carry the event's type (also its
 * subject), its aggregate, and the Schema used to encode and decode its data.
 *
 * @since 0.1.0
 */
import { Data, ParseResult, Schema } from "effect"
import { type Pipeable, pipeArguments } from "effect/Pipeable"
import * as Envelope from "./Envelope.js"
import * as Subject from "./Subject.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-nats/Event")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * An event definition.
 *
 * @since 0.1.0
 * @category models
 */
export interface Event<Type extends string, A, I = A, R = never> extends Pipeable {
  readonly [TypeId]: TypeId
  /** `<context>.<aggregate>.<event>`, lowercase, past tense; also the NATS subject. */
  readonly type: Type
  /** The first token of the type: the bounded context (used for `dlq.<context>`). */
  readonly context: string
  /** The aggregate type, e.g. `"Invoice"`. */
  readonly aggregate: string
  /** The subject the event is published on (the type). */
  readonly subject: string
  /** The Schema of the current version: what the publisher writes and every handler sees. */
  readonly schema: Schema.Schema<A, I, R>
  /** The current version (with past {@link versions}: their count + 1; else as given, or none). */
  readonly schemaVersion?: number | undefined
  /**
   * Every version the event knows, oldest first; the last one is the current
   * {@link schema}. Each has its wire Schema (for JSON Schema, e.g.
   * `JSONSchema.make(v.schema)`) and the Schema that decodes it and migrates
   * it to the current type.
   */
  readonly versions: ReadonlyArray<Version<A, R>>
  /**
   * The full envelope Schema for this event. With past versions it is a
   * union, one member per `schemaVersion`: decoding migrates the data to the
   * current type (the envelope keeps the `schemaVersion` it was written at);
   * encoding writes the current version.
   */
  readonly envelope: Schema.Schema<Envelope.Envelope<A>, Envelope.Encoded<I>, R>
  /** Derives the aggregate id from the data when the publisher is not given one. */
  readonly aggregateId?: ((data: A) => string) | undefined
}

/**
 * One version of an event's data.
 *
 * @example
 * ```ts
 * import { JSONSchema } from "effect"
 * import { InvoiceIssued } from "./events.js"
 *
 * const contracts = InvoiceIssued.versions.map((v) => ({ version: v.schemaVersion, schema: JSONSchema.make(v.schema) }))
 * ```
 *
 * @since 0.2.0
 * @category models
 */
export interface Version<A, R = never> {
  readonly schemaVersion: number
  /** The data as written at this version (its wire shape; types erased). */
  readonly schema: Schema.Schema<unknown, unknown, R>
  /** Decodes data written at this version and migrates it, step by step, to the current type. */
  readonly toCurrent: Schema.Schema<A, unknown, R>
}

/**
 * The past versions of an event's data, oldest first: each a Schema plus the
 * migration of its (decoded) value to the next version's type. Made by
 * {@link history} and extended with {@link andThen}; passed to
 * {@link make} as `versions`. `A` is what the last migration produces.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Event } from "effect-nats"
 *
 * const V1 = Schema.Struct({ userId: Schema.String, name: Schema.String })
 * const V2 = Schema.Struct({ userId: Schema.String, firstName: Schema.String, lastName: Schema.String })
 *
 * // v1 -> v2 -> current
 * const past = Event.history(V1, (v1) => ({ userId: v1.userId, firstName: v1.name, lastName: "" })).pipe(
 *   Event.andThen(V2, (v2) => ({ ...v2, email: null }))
 * )
 * ```
 *
 * @since 0.2.0
 * @category models
 */
export interface History<out A, out R = never> extends Pipeable {
  readonly _A: (_: never) => A
  readonly _R: (_: never) => R
  readonly steps: ReadonlyArray<HistoryStep>
}

/**
 * One past version in a {@link History}: its Schema and its migration to the next version.
 *
 * @since 0.2.0
 * @category models
 */
export interface HistoryStep {
  readonly schema: Schema.Schema<unknown, unknown, unknown>
  readonly migrate: (value: unknown) => unknown
}

const HistoryProto = {
  pipe() {
    return pipeArguments(this, arguments)
  }
}

const makeHistory = <A, R>(steps: ReadonlyArray<HistoryStep>): History<A, R> => {
  const h = Object.create(HistoryProto) as { steps: ReadonlyArray<HistoryStep> }
  h.steps = steps
  return h as unknown as History<A, R>
}

/**
 * Start a {@link History} with version 1: its Schema and the migration of a
 * decoded v1 value to the next version's type (a plain function; it runs as a
 * Schema transformation, and its result is checked against the next
 * version's Schema).
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Event } from "effect-nats"
 *
 * const V1 = Schema.Struct({ name: Schema.String })
 * const past = Event.history(V1, (v1) => ({ name: v1.name, email: null }))
 * ```
 *
 * @since 0.2.0
 * @category versioning
 */
export const history = <V, I, R, B>(schema: Schema.Schema<V, I, R>, migrate: (value: V) => B): History<B, R> =>
  makeHistory([{ schema: schema as Schema.Schema<unknown, unknown, unknown>, migrate: migrate as (value: unknown) => unknown }])

/**
 * Add the next past version to a {@link History}: its Schema (whose type the
 * previous migration must produce) and its migration to the version after it.
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Event } from "effect-nats"
 *
 * const V1 = Schema.Struct({ name: Schema.String })
 * const V2 = Schema.Struct({ name: Schema.String, email: Schema.NullOr(Schema.String) })
 * const past = Event.history(V1, (v1) => ({ ...v1, email: null })).pipe(
 *   Event.andThen(V2, (v2) => ({ ...v2, verified: false }))
 * )
 * ```
 *
 * @since 0.2.0
 * @category versioning
 */
export const andThen = <V, I, R2, B>(schema: Schema.Schema<V, I, R2>, migrate: (value: V) => B) =>
<R>(self: History<V, R>): History<B, R | R2> =>
  makeHistory([...self.steps, {
    schema: schema as Schema.Schema<unknown, unknown, unknown>,
    migrate: migrate as (value: unknown) => unknown
  }])

/**
 * A message was written at a `schemaVersion` newer than this code knows. The
 * consumer dead-letters it with reason `UnsupportedVersion` (deploy the code
 * that knows the version, then replay the dead letter).
 *
 * @since 0.2.0
 * @category errors
 */
export class UnsupportedVersionError extends Data.TaggedError("UnsupportedVersionError")<{
  readonly type: string
  readonly schemaVersion: number
  /** The newest version this code reads. */
  readonly current: number
  readonly message: string
}> {}

/**
 * Any event definition.
 *
 * @since 0.1.0
 * @category models
 */
export interface Any extends Pipeable {
  readonly [TypeId]: TypeId
  readonly type: string
  readonly context: string
  readonly aggregate: string
  readonly subject: string
  readonly schemaVersion?: number | undefined
  /** The Schema of `data`. */
  readonly schema: Schema.Schema.Any
  /** Every version, oldest first, each with its wire Schema (see {@link Event}'s `versions`). */
  readonly versions: ReadonlyArray<{ readonly schemaVersion: number; readonly schema: Schema.Schema.Any }>
  /** The full envelope Schema. */
  readonly envelope: Schema.Schema.Any
}

/** A migration as a Schema transformation: the previous version's type to the next one's (decode only). */
const migration = (
  from: Schema.Schema<unknown, unknown, unknown>,
  to: Schema.Schema<unknown, unknown, unknown>,
  migrate: (value: unknown) => unknown
): Schema.Schema<unknown, unknown, unknown> =>
  Schema.transformOrFail(Schema.typeSchema(from), Schema.typeSchema(to), {
    strict: true,
    decode: (value) => ParseResult.succeed(migrate(value)),
    encode: (value, _, ast) =>
      ParseResult.fail(new ParseResult.Forbidden(ast, value, "an event is only written at its current version"))
  })

/** Every version (oldest first) with the Schema that decodes it to the current type. */
const versionsOf = <A, R>(
  current: Schema.Schema<A, unknown, R>,
  currentVersion: number,
  steps: ReadonlyArray<HistoryStep>
): ReadonlyArray<Version<A, R>> => {
  const schemas = [...steps.map((s) => s.schema), current as Schema.Schema<unknown, unknown, unknown>]
  const first = currentVersion - steps.length
  return schemas.map((schema, i) => {
    let toCurrent = schema
    for (let k = i; k < steps.length; k++) {
      toCurrent = Schema.compose(toCurrent, migration(schemas[k]!, schemas[k + 1]!, steps[k]!.migrate))
    }
    return {
      schemaVersion: first + i,
      schema: schema as Schema.Schema<unknown, unknown, R>,
      toCurrent: toCurrent as Schema.Schema<A, unknown, R>
    }
  })
}

/**
 * The decoded data type of an event definition.
 *
 * @since 0.1.0
 * @category type-level
 */
export type Data<E> = E extends Event<string, infer A, infer _I, infer _R> ? A : never

/**
 * The Schema context an event definition needs.
 *
 * @since 0.1.0
 * @category type-level
 */
export type Context<E> = E extends Event<string, infer _A, infer _I, infer R> ? R : never

const Proto = {
  [TypeId]: TypeId,
  pipe() {
    return pipeArguments(this, arguments)
  }
}

/**
 * Define an event. The type must follow `<context>.<aggregate>.<event>`
 * (three lowercase tokens); a bad name throws at definition time.
 *
 * With `versions` (see {@link history}) the event reads every past version:
 * the current `schemaVersion` is their count + 1 (a different explicit
 * `schemaVersion` throws), the publisher writes the current version, and a
 * handler decodes any stored version and migrates it, so it only ever sees
 * the current type. A message without `schemaVersion` is read as the oldest
 * version; one newer than the current is refused ({@link UnsupportedVersionError}).
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { Event } from "effect-nats"
 *
 * export const InvoiceIssued = Event.make({
 *   type: "billing.invoice.issued",
 *   aggregate: "Invoice",
 *   schema: Schema.Struct({ invoiceId: Schema.String, amount: Schema.Number }),
 *   aggregateId: (data) => data.invoiceId
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const Type extends string, A, I, R = never>(options: {
  readonly type: Type
  readonly aggregate: string
  readonly schema: Schema.Schema<A, I, R>
  readonly schemaVersion?: number | undefined
  /** The past versions, oldest first (version 1 first). */
  readonly versions?: History<NoInfer<A>, R> | undefined
  readonly aggregateId?: ((data: A) => string) | undefined
}): Event<Type, A, I, R> => {
  Subject.assertName(options.type, "Event.make", 3)
  const steps = options.versions?.steps ?? []
  if (steps.length > 0 && options.schemaVersion !== undefined && options.schemaVersion !== steps.length + 1) {
    throw new Error(
      `Event.make ${options.type}: schemaVersion ${options.schemaVersion} does not follow its ${steps.length} past version(s) (expected ${
        steps.length + 1
      })`
    )
  }
  const schemaVersion = steps.length > 0 ? steps.length + 1 : options.schemaVersion
  const versions = versionsOf(options.schema as Schema.Schema<A, unknown, R>, schemaVersion ?? 1, steps)
  const event = Object.create(Proto) as { -readonly [K in keyof Event<Type, A, I, R>]: Event<Type, A, I, R>[K] }
  event.type = options.type
  event.context = options.type.split(".")[0]!
  event.aggregate = options.aggregate
  event.subject = options.type
  event.schema = options.schema
  event.schemaVersion = schemaVersion
  event.versions = versions
  event.envelope = steps.length === 0
    ? Envelope.schema(options.schema)
    : Schema.Union(
      ...versions.map((v, i) =>
        i === versions.length - 1
          ? Envelope.versioned(options.schema as Schema.Schema<unknown, unknown, R>, v.schemaVersion)
          : Envelope.versioned(v.toCurrent as Schema.Schema<unknown, unknown, R>, v.schemaVersion)
      )
    ) as unknown as Schema.Schema<Envelope.Envelope<A>, Envelope.Encoded<I>, R>
  event.aggregateId = options.aggregateId
  return event
}

/**
 * Is this value an event definition?
 *
 * @since 0.1.0
 * @category guards
 */
export const isEvent = (u: unknown): u is Any => typeof u === "object" && u !== null && TypeId in u
