/**
 * The transactional outbox: `Outbox.enqueue` writes a fully built message
 * (id, subject, headers, JSON envelope) into a store inside the caller's
 * current transaction, so the business rows and the message commit together
 * or not at all. {@link OutboxRelay} then publishes the committed rows to
 * JetStream.
 *
 * The store is an {@link OutboxStore}: {@link layerMemoryStore} here (tests,
 * no transactions), SQLite and Postgres in `@effect-nats/sql`.
 *
 * @since 0.1.0
 */
import { Clock, Context, Data, Duration, Effect, Layer, Option, PubSub, type Queue, type Scope } from "effect"
import type * as Event from "./Event.js"
import * as Publisher from "./Publisher.js"

/**
 * An outbox store failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutboxError extends Data.TaggedError("OutboxError")<{
  readonly method: string
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * What the store holds about its pending rows (for the `outboxPending` and
 * `outboxLag` metrics).
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Rows not yet published. */
  readonly pending: number
  /** When the oldest pending row was enqueued (epoch millis). */
  readonly oldestPendingAt: Option.Option<number>
}

/**
 * Where outbox rows live. Rows are kept in enqueue order (for SQL stores:
 * the order of an auto-increment column, which is commit order for rows of
 * one aggregate as long as the writes of an aggregate are serialized, as they
 * must be for its versions to mean anything).
 *
 * @since 0.1.0
 * @category tags
 */
export class OutboxStore extends Context.Tag("effect-nats/OutboxStore")<OutboxStore, {
  /** Append messages; a SQL store writes them in the caller's current transaction. */
  readonly append: (messages: ReadonlyArray<Publisher.OutgoingMessage>) => Effect.Effect<void, OutboxError>
  /** Up to `limit` unpublished messages, oldest first. */
  readonly pending: (limit: number) => Effect.Effect<ReadonlyArray<Publisher.OutgoingMessage>, OutboxError>
  /** Mark messages as published (by id). */
  readonly markPublished: (ids: ReadonlyArray<string>) => Effect.Effect<void, OutboxError>
  /** Delete messages published more than `retention` ago; returns how many. */
  readonly cleanup: (retention: Duration.Duration) => Effect.Effect<number, OutboxError>
  readonly stats: Effect.Effect<Stats, OutboxError>
  /**
   * Take or renew the relay lease for `owner` (for `ttl`); `true` when
   * `owner` holds it. At most one owner holds the lease at a time.
   */
  readonly acquireLease: (owner: string, ttl: Duration.Duration) => Effect.Effect<boolean, OutboxError>
  /** Give the lease up (if `owner` holds it), so another relay can take over at once. */
  readonly releaseLease: (owner: string) => Effect.Effect<void, OutboxError>
  /**
   * Wake-up signals: the queue receives a value when committed rows may be
   * waiting (an enqueue in this process, or a notification from the
   * database). Listening has started when the effect returns.
   */
  readonly listen: Effect.Effect<Queue.Dequeue<void>, OutboxError, Scope.Scope>
}>() {}

/**
 * Options of the outbox.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** `source` written in every envelope (the service name). */
  readonly source?: string | undefined
}

/**
 * The outbox service.
 *
 * @example
 * ```ts
 * import { SqlClient } from "@effect/sql"
 * import { Effect } from "effect"
 * import { Outbox } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const issue = (invoiceId: string, amount: number) =>
 *   Effect.gen(function*() {
 *     const sql = yield* SqlClient.SqlClient
 *     const outbox = yield* Outbox.Outbox
 *     yield* sql.withTransaction(Effect.gen(function*() {
 *       yield* sql`INSERT INTO invoices ${sql.insert({ id: invoiceId, amount })}`
 *       // same transaction: the invoice and its event commit together, or neither does
 *       yield* outbox.enqueue(InvoiceIssued, { invoiceId, amount })
 *     }))
 *   })
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class Outbox extends Context.Tag("effect-nats/Outbox")<Outbox, {
  /**
   * Build the message (envelope, headers with the current trace context,
   * correlation from the message being handled) and append it to the store in
   * the current transaction. Returns the stored message; its `id` is the
   * JetStream msgID the relay publishes it with.
   */
  readonly enqueue: <A, I, R>(
    event: Event.Event<string, A, I, R>,
    data: A,
    meta?: Publisher.Meta
  ) => Effect.Effect<Publisher.OutgoingMessage, Publisher.PublishError | OutboxError, R>
}>() {}

/**
 * Build the outbox service on a store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Outbox["Type"], never, OutboxStore> =>
  Effect.map(OutboxStore, (store) =>
    Outbox.of({
      enqueue: (event, data, meta) =>
        Effect.tap(Publisher.build(event, data, meta, options.source), (message) => store.append([message]))
    }))

/**
 * The outbox layer; needs an {@link OutboxStore}.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { Outbox, OutboxRelay, Publisher } from "effect-nats"
 * import { SqlOutbox } from "@effect-nats/sql"
 *
 * const OutboxLive = Layer.mergeAll(Outbox.layer({ source: "billing" }), OutboxRelay.layer()).pipe(
 *   Layer.provideMerge(SqlOutbox.layer()),
 *   Layer.provide(Publisher.layer())
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Outbox, never, OutboxStore> =>
  Layer.effect(Outbox, make(options))

/**
 * The in-memory store, plus `size` (rows held, pending and published) for
 * tests.
 *
 * @since 0.1.0
 * @category models
 */
export type MemoryStore = OutboxStore["Type"] & { readonly size: Effect.Effect<number> }

/**
 * An in-memory store for one process (tests): no transactions (an append is
 * visible at once), wake-up on every append, a lease shared by the relays of
 * this store, times from the Effect `Clock`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemoryStore: Effect.Effect<MemoryStore> = Effect.gen(function*() {
  const rows = new Map<string, { message: Publisher.OutgoingMessage; createdAt: number; publishedAt?: number }>()
  const wake = yield* PubSub.sliding<void>(1)
  let lease: { owner: string; expiresAt: number } | undefined
  return {
    append: (messages) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.suspend(() => {
          const duplicate = messages.find((m) => rows.has(m.id))
          if (duplicate !== undefined) {
            return Effect.fail(new OutboxError({ method: "append", message: `message ${duplicate.id} is already in the outbox` }))
          }
          for (const message of messages) rows.set(message.id, { message, createdAt: now })
          return PubSub.publish(wake, undefined)
        })),
    pending: (limit) =>
      Effect.sync(() => {
        const out: Array<Publisher.OutgoingMessage> = []
        for (const row of rows.values()) {
          if (out.length >= limit) break
          if (row.publishedAt === undefined) out.push(row.message)
        }
        return out
      }),
    markPublished: (ids) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        for (const id of ids) {
          const row = rows.get(id)
          if (row !== undefined) row.publishedAt = now
        }
      }),
    cleanup: (retention) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        let deleted = 0
        for (const [id, row] of rows) {
          if (row.publishedAt !== undefined && row.publishedAt <= now - Duration.toMillis(retention)) {
            rows.delete(id)
            deleted++
          }
        }
        return deleted
      }),
    stats: Effect.sync(() => {
      let pending = 0
      let oldest: number | undefined
      for (const row of rows.values()) {
        if (row.publishedAt !== undefined) continue
        pending++
        if (oldest === undefined || row.createdAt < oldest) oldest = row.createdAt
      }
      return { pending, oldestPendingAt: Option.fromNullable(oldest) }
    }),
    acquireLease: (owner, ttl) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (lease !== undefined && lease.owner !== owner && lease.expiresAt > now) return false
        lease = { owner, expiresAt: now + Duration.toMillis(ttl) }
        return true
      }),
    releaseLease: (owner) =>
      Effect.sync(() => {
        if (lease?.owner === owner) lease = undefined
      }),
    listen: PubSub.subscribe(wake),
    size: Effect.sync(() => rows.size)
  }
})

/**
 * The in-memory store as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemoryStore: Layer.Layer<OutboxStore> = Layer.effect(OutboxStore, makeMemoryStore)
