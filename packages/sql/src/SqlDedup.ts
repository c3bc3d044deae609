/**
 * Dedup (an inbox table) on SQL: SQLite (`@effect/sql-sqlite-node`) and
 * Postgres (`@effect/sql-pg`), for exactly-once effects.
 *
 * The consumer runs the handler and the commit in ONE transaction
 * (`transaction` = `sql.withTransaction`), so the handler's own SQL writes
 * (through the same `SqlClient`) and the inbox row `effect_nats_inbox(dedup_key)`
 * commit together or not at all. A committed inbox row means "handled":
 *
 * - `claim` looks the key up: a committed row is a `Duplicate`, otherwise
 *   `Claimed`. There is no lease: the open transaction is the claim, and a
 *   crashed worker's transaction rolls back, leaving the key free;
 * - `commit` inserts the row inside the handler's transaction. The primary
 *   key is the arbiter between workers handling the same key at once: on
 *   Postgres the second insert waits for the first transaction and, once it
 *   commits, inserts nothing; on SQLite transactions run one at a time. The
 *   loser fails with `DedupError` `reason: "Conflict"`, so its transaction,
 *   with the handler's writes, rolls back; the consumer retries the message,
 *   whose claim is then a `Duplicate` (acked, counted, not handled);
 * - `release` does nothing: a failed transaction has already rolled back.
 *
 * Effects outside the database (an HTTP call, a publish) are not covered by
 * the transaction: they may repeat when a concurrent duplicate loses the race.
 * Inbox rows are deleted `retention` after they were handled.
 *
 * @since 0.1.0
 */
import type * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Duration, Effect, Layer, type Scope } from "effect"
import * as Dedup from "effect-nats/Dedup"
import * as SqlMigrations from "./SqlMigrations.js"

/**
 * Options of the SQL dedup store.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Key strategy (default `"id"`). */
  readonly key?: Dedup.KeyStrategy | undefined
  /** Prefix of every key; give each consumer sharing the inbox table its own (see `Dedup.Options`). */
  readonly namespace?: string | undefined
  /** How long a handled key is remembered (default 24 hours). */
  readonly retention?: Duration.DurationInput | undefined
  /** How often keys older than `retention` are deleted (default 10 minutes). */
  readonly cleanupInterval?: Duration.DurationInput | undefined
  /** Run the migrations on start (default true). */
  readonly migrate?: boolean | undefined
}

const storeError = (method: string) => (cause: SqlError) =>
  new Dedup.DedupError({ reason: "Store", method, message: `SqlDedup.${method}: ${cause.message}`, cause })

/** A failure of the effect run in `transaction`, kept apart from the transaction's own errors. */
class Inner<E> {
  constructor(readonly error: E) {}
}

/**
 * Build the store (and run the migrations unless `migrate: false`); a fiber
 * in the scope deletes expired keys.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<Dedup.Dedup["Type"], SqlError | Migrator.MigrationError, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    if (options.migrate !== false) yield* SqlMigrations.run
    const retentionMs = Duration.toMillis(options.retention ?? "24 hours")

    const claim = (key: string) =>
      sql`SELECT 1 AS handled FROM effect_nats_inbox WHERE dedup_key = ${key}`.pipe(
        Effect.map((rows): Dedup.ClaimResult => rows.length > 0 ? "Duplicate" : "Claimed"),
        Effect.mapError(storeError("claim"))
      )

    const commit = (key: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        sql`INSERT INTO effect_nats_inbox (dedup_key, handled_at) VALUES (${key}, ${now})
          ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key`).pipe(
          Effect.mapError(storeError("commit")),
          Effect.flatMap((rows) =>
            rows.length === 1 ? Effect.void : Effect.fail(
              new Dedup.DedupError({
                reason: "Conflict",
                method: "commit",
                message: `SqlDedup.commit: ${key} was handled by a concurrent worker; rolling back`
              })
            )
          )
        )

    const transaction = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | Dedup.DedupError, R> =>
      sql.withTransaction(Effect.mapError(self, (error) => new Inner(error))).pipe(
        Effect.mapError((error): E | Dedup.DedupError =>
          error instanceof Inner ? (error.error as E) : storeError("transaction")(error)
        )
      )

    yield* Effect.flatMap(Clock.currentTimeMillis, (now) =>
      sql`DELETE FROM effect_nats_inbox WHERE handled_at < ${now - retentionMs}`).pipe(
        Effect.catchAll((e) => Effect.logWarning(`SqlDedup: cleanup failed: ${e.message}`)),
        Effect.delay(options.cleanupInterval ?? "10 minutes"),
        Effect.forever,
        Effect.forkScoped
      )

    return Dedup.make({
      key: Dedup.keyOf(options.key ?? "id", options.namespace),
      claim,
      commit,
      release: () => Effect.void,
      transaction
    })
  })

/**
 * The SQL dedup store as a layer; needs the `SqlClient` the handlers write
 * with.
 *
 * @example
 * ```ts
 * import { SqlClient } from "@effect/sql"
 * import { Effect, Layer } from "effect"
 * import { Consumer, Handler } from "effect-nats"
 * import { SqlDedup } from "@effect-nats/sql"
 * import { InvoiceIssued } from "./events.js"
 *
 * // the payment row and the inbox row commit together: one payment per invoice event
 * const onIssued = Handler.make(InvoiceIssued, (e) =>
 *   Effect.flatMap(SqlClient.SqlClient, (sql) =>
 *     sql`INSERT INTO payments ${sql.insert({ invoice_id: e.data.invoiceId, amount: e.data.amount })}`))
 *
 * const PaymentsLive = Consumer.layer({ stream: "BILLING", durable: "payments", handlers: [onIssued] }).pipe(
 *   Layer.provide(SqlDedup.layer({ retention: "7 days" }))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<Dedup.Dedup, SqlError | Migrator.MigrationError, SqlClient.SqlClient> =>
  Layer.scoped(Dedup.Dedup, make(options))
