/**
 * Event definitions: plain values that carry the event's type (also its
 * subject), its aggregate, and the Schema used to encode and decode its data.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"
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
  readonly schema: Schema.Schema<A, I, R>
  readonly schemaVersion?: number | undefined
  /** The full envelope Schema for this event. */
  readonly envelope: Schema.Schema<Envelope.Envelope<A>, Envelope.Encoded<I>, R>
  /** Derives the aggregate id from the data when the publisher is not given one. */
  readonly aggregateId?: ((data: A) => string) | undefined
}

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
  /** The full envelope Schema. */
  readonly envelope: Schema.Schema.Any
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
  readonly aggregateId?: ((data: A) => string) | undefined
}): Event<Type, A, I, R> => {
  Subject.assertName(options.type, "Event.make", 3)
  const event = Object.create(Proto) as { -readonly [K in keyof Event<Type, A, I, R>]: Event<Type, A, I, R>[K] }
  event.type = options.type
  event.context = options.type.split(".")[0]!
  event.aggregate = options.aggregate
  event.subject = options.type
  event.schema = options.schema
  event.schemaVersion = options.schemaVersion
  event.envelope = Envelope.schema(options.schema)
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
