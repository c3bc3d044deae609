/**
 * Dedup (an inbox table) on SQL: SQLite (`@effect/sql-sqlite-node`) and
 * Postgres (`@effect/sql-pg`), for exactly-once effects.
 *
 * The consumer runs the handler and the inbox row in ONE transaction, so the
 * handler's own SQL writes (through the same `SqlClient`) and the inbox row
 * `effect_nats_inbox(dedup_key)` commit together or not at all. A committed
 * inbox row means "handled".
 *
 * The consumer's path is `guard`: it inserts the inbox row first (`ON
 * CONFLICT DO NOTHING`), then runs the handler in the same transaction. A
 * key that has its row is a duplicate (acked, counted, not handled); the
 * primary key is the arbiter between workers: on Postgres a second insert of
 * the same key waits for the first transaction and inserts nothing if it
 * commits; on SQLite transactions run one at a time. A failure rolls the row
 * back with the handler's writes. There is no lease: the open transaction is
 * the claim, and a crashed worker's transaction rolls back, leaving the key
 * free.
 *
 * Batches (default on, see `Dedup.Batch` and {@link Options.batch}): the
 * consumer commits many messages in one transaction, each in its own
 * savepoint (released when it succeeds, rolled back when it fails), and acks
 * them after the commit.
 *
 * The four operations of `Dedup.make` are there too: `claim` looks the key
 * up; `commit` inserts the row (a key committed meanwhile by a concurrent
 * worker fails with `DedupError` `reason: "Conflict"`, rolling back the
 * transaction); `release` does nothing (a failed transaction has already
 * rolled back).
 *
 * Effects outside the database (an HTTP call, a publish) are not covered by
 * the transaction: they may repeat when a concurrent duplicate loses the race.
 * Inbox rows are deleted `retention` after they were handled.
 *
 * @since 0.1.0
 */
import type * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { Clock, Duration, Effect, Exit, Layer, Option, type Scope } from "effect"
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
  /**
   * Commit many messages in one transaction (see `Dedup.Batch`): each
   * message in its own savepoint, one commit per batch, acks after it.
   * Default on: up to 100 messages, taking in more for at most 20 ms.
   * `false`: one transaction per message.
   */
  readonly batch?:
    | false
    | { readonly maxMessages?: number | undefined; readonly maxDelay?: Duration.DurationInput | undefined }
    | undefined
}

/**
 * The default batch: up to 100 messages, taking in more for at most 20 ms.
 *
 * @example
 * ```ts
 * import { SqlDedup } from "@effect-nats/sql"
 *
 * // half the default size, same window
 * const DedupLive = SqlDedup.layer({ batch: { maxMessages: SqlDedup.defaultBatch.maxMessages / 2 } })
 * ```
 *
 * @since 0.2.0
 * @category constants
 */
export const defaultBatch = { maxMessages: 100, maxDelay: Duration.millis(20) } as const

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

    // the inbox row, unless the key has one: whether it was written (on Postgres, a row another open
    // transaction is writing waits for it: none if it commits, ours if it rolls back)
    const insertKey = (key: string, method: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        sql`INSERT INTO effect_nats_inbox (dedup_key, handled_at) VALUES (${key}, ${now})
          ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key`).pipe(
          Effect.map((rows) => rows.length === 1),
          Effect.mapError(storeError(method))
        )

    const commit = (key: string) =>
      insertKey(key, "commit").pipe(
          Effect.flatMap((inserted) =>
            inserted ? Effect.void : Effect.fail(
              new Dedup.DedupError({
                reason: "Conflict",
                method: "commit",
                message: `SqlDedup.commit: ${key} was handled by a concurrent worker; rolling back`
              })
            )
          )
        )

    // a message's own savepoint in a batch's transaction, released when it succeeds: Effect's nested
    // `withTransaction` keeps every savepoint until the commit, and SQLite journals a page again for each
    // savepoint still open (a batch of 100 was 3 times slower per message)
    const savepoint = <A, E, R>(self: Effect.Effect<A, E | SqlError, R>): Effect.Effect<A, E | SqlError, R> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.zipRight(
          sql`SAVEPOINT effect_nats_message`,
          Effect.flatMap(Effect.exit(restore(self)), (exit) =>
            Effect.zipRight(
              Exit.isSuccess(exit)
                ? sql`RELEASE SAVEPOINT effect_nats_message`
                : Effect.zipRight(sql`ROLLBACK TO SAVEPOINT effect_nats_message`, sql`RELEASE SAVEPOINT effect_nats_message`),
              exit
            ))
        )
      )

    // one transaction, or a savepoint in the batch's
    const transaction = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E | Dedup.DedupError, R> =>
      Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (open) => {
        const inner = Effect.mapError(self, (error) => new Inner(error))
        return Option.isSome(open) ? savepoint(inner) : sql.withTransaction(inner)
      }).pipe(
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

    const batch = options.batch === false ? undefined : {
      maxMessages: Math.max(1, options.batch?.maxMessages ?? defaultBatch.maxMessages),
      maxDelay: Duration.decode(options.batch?.maxDelay ?? defaultBatch.maxDelay),
      // the transactions inside it (`transaction`, and the handlers' own) are savepoints
      run: <A, E, R>(self: Effect.Effect<A, E, R>) =>
        transaction(self).pipe(
          // a COMMIT that fails (a deferred constraint) is a defect of `withTransaction`, and on SQLite it leaves
          // the transaction open: roll it back (on Postgres it is over already), and fail as the store
          Effect.catchAllDefect((defect) =>
            Effect.zipRight(
              Effect.ignore(sql`ROLLBACK`),
              Effect.fail(storeError("commit")(defect instanceof SqlError ? defect : new SqlError({ cause: defect })))
            )
          )
        )
    }

    const store = Dedup.make({
      key: Dedup.keyOf(options.key ?? "id", options.namespace),
      claim,
      commit,
      release: () => Effect.void,
      transaction,
      batch
    })
    return Dedup.Dedup.of({
      ...store,
      // what `make` builds (claim, handle, commit), in fewer statements: the inbox row first, then the handler,
      // in one transaction (or savepoint); a key that has its row is a duplicate, and a failure rolls the row back
      guard: <A, E, R>(key: string, self: Effect.Effect<A, E, R>) =>
        transaction(
          Effect.flatMap(
            insertKey(key, "claim"),
            (inserted): Effect.Effect<A | Dedup.NotClaimed, E | Dedup.DedupError, R> =>
              inserted ? self : Effect.succeed(Dedup.NotClaimed.Duplicate)
          )
        )
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
