/**
 * The outbox store on SQL: SQLite (`@effect/sql-sqlite-node`, the embedded
 * default) and Postgres (`@effect/sql-pg`).
 *
 * `append` writes through the `SqlClient` in context, so inside
 * `sql.withTransaction` the outbox rows commit or roll back with the
 * business rows. The relay is woken once that transaction is over:
 *
 * - Postgres: `append` runs `pg_notify` in the transaction; Postgres delivers
 *   it only on commit, to every listening relay (this process or another).
 *   A store LISTENs once (on the `@effect/sql-pg` client's listen connection)
 *   while at least one relay runs on it; a rollback notifies nobody;
 * - SQLite: `append` signals the relays of this process at once. Their next
 *   read waits for the writer: `@effect/sql-sqlite-node` has one connection,
 *   held by a transaction until it commits or rolls back, so the relay sees
 *   the committed rows, or none after a rollback. Writers in other processes
 *   are found by the relay's poll.
 *
 * The relay lease is a row of `effect_nats_outbox_lease` with an owner and an
 * expiry taken from the database clock, taken or renewed with one atomic
 * upsert. Times of rows are epoch millis from the Effect `Clock`.
 *
 * @since 0.1.0
 */
import { randomUUID } from "node:crypto"
import type * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Deferred, Duration, Effect, Layer, Option, PubSub, RcRef, Schedule, type Scope, Stream } from "effect"
import { OutboxError, OutboxStore } from "effect-nats/Outbox"
import type { OutgoingMessage } from "effect-nats/Publisher"
import * as SqlMigrations from "./SqlMigrations.js"

/**
 * Options of the SQL outbox store.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Run the migrations on start (default true). */
  readonly migrate?: boolean | undefined
  /** Postgres `NOTIFY` channel (default `"effect_nats_outbox"`). */
  readonly channel?: string | undefined
  /** The relay group whose lease this store uses (default `"relay"`). */
  readonly leaseName?: string | undefined
}

/** A Postgres client of `@effect/sql-pg` can `LISTEN`. */
interface Listening {
  readonly listen: (channel: string) => Stream.Stream<string, SqlError>
}

const canListen = (client: SqlClient.SqlClient): client is SqlClient.SqlClient & Listening =>
  "listen" in client && typeof client.listen === "function"

const fail = (method: string) => (cause: SqlError) =>
  new OutboxError({ method, message: `SqlOutbox.${method}: ${cause.message}`, cause })

interface Row {
  readonly id: string
  readonly subject: string
  readonly headers: string
  readonly payload: string
  readonly type: string
  readonly aggregate_id: string
}

/**
 * Build the store (and run the migrations unless `migrate: false`). On
 * Postgres, its LISTEN lives in the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<OutboxStore["Type"], SqlError | Migrator.MigrationError, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* SqlClient.SqlClient
    const sql = client.withoutTransforms()
    if (options.migrate !== false) yield* SqlMigrations.run
    const channel = options.channel ?? "effect_nats_outbox"
    const leaseName = options.leaseName ?? "relay"
    const listener: Option.Option<Listening> = sql.onDialectOrElse({
      pg: () => canListen(client) ? Option.some(client) : Option.none(),
      orElse: () => Option.none()
    })
    const notify = Option.isSome(listener)
    const local = yield* PubSub.sliding<void>(1)
    // the database clock, in epoch millis: one clock for every relay's lease
    const dbNow = sql.onDialectOrElse({
      pg: () => sql.literal("CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"),
      orElse: () => sql.literal("CAST(unixepoch('subsec') * 1000 AS INTEGER)")
    })

    const append = (messages: ReadonlyArray<OutgoingMessage>) =>
      Effect.gen(function*() {
        if (messages.length === 0) return
        const now = yield* Clock.currentTimeMillis
        yield* sql`INSERT INTO effect_nats_outbox ${
          sql.insert(messages.map((m) => ({
            id: m.id,
            subject: m.subject,
            headers: JSON.stringify(m.headers),
            payload: m.payload,
            type: m.type,
            aggregate_id: m.aggregateId,
            created_at: now
          })))
        }`
        if (notify) yield* sql`SELECT pg_notify(${channel}, 'enqueued')`
        else yield* PubSub.publish(local, undefined)
      }).pipe(Effect.mapError(fail("append")))

    const pending = (limit: number) =>
      sql<Row>`SELECT id, subject, headers, payload, type, aggregate_id FROM effect_nats_outbox
        WHERE published_at IS NULL ORDER BY seq LIMIT ${limit}`.pipe(
        Effect.map((rows) =>
          rows.map((r): OutgoingMessage => ({
            id: r.id,
            subject: r.subject,
            headers: JSON.parse(r.headers) as Record<string, string>,
            payload: r.payload,
            type: r.type,
            aggregateId: r.aggregate_id
          }))
        ),
        Effect.mapError(fail("pending"))
      )

    const markPublished = (ids: ReadonlyArray<string>) =>
      ids.length === 0 ? Effect.void : Effect.flatMap(Clock.currentTimeMillis, (now) =>
        sql`UPDATE effect_nats_outbox SET published_at = ${now} WHERE id IN ${sql.in(ids)}`).pipe(
          Effect.asVoid,
          Effect.mapError(fail("markPublished"))
        )

    const cleanup = (retention: Duration.Duration) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const cutoff = now - Duration.toMillis(retention)
        return sql.onDialectOrElse({
          pg: () =>
            sql<{ n: number | string }>`WITH deleted AS (
              DELETE FROM effect_nats_outbox WHERE published_at < ${cutoff} RETURNING 1
            ) SELECT COUNT(*) AS n FROM deleted`,
          orElse: () =>
            sql.withTransaction(
              Effect.zipRight(
                sql`DELETE FROM effect_nats_outbox WHERE published_at < ${cutoff}`,
                sql<{ n: number | string }>`SELECT changes() AS n`
              )
            )
        })
      }).pipe(
        Effect.map((rows) => Number(rows[0]?.n ?? 0)),
        Effect.mapError(fail("cleanup"))
      )

    const stats = sql<{ pending: number | string; oldest: number | string | null }>`
      SELECT COUNT(*) AS pending, MIN(created_at) AS oldest FROM effect_nats_outbox WHERE published_at IS NULL`.pipe(
      Effect.map((rows) => ({
        pending: Number(rows[0]?.pending ?? 0),
        oldestPendingAt: Option.map(Option.fromNullable(rows[0]?.oldest), Number)
      })),
      Effect.mapError(fail("stats"))
    )

    const acquireLease = (owner: string, ttl: Duration.Duration) => {
      const ttlMillis = Math.ceil(Duration.toMillis(ttl))
      return sql<{ owner: string }>`
        INSERT INTO effect_nats_outbox_lease (name, owner, expires_at)
        VALUES (${leaseName}, ${owner}, ${dbNow} + ${ttlMillis})
        ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
        WHERE effect_nats_outbox_lease.owner = excluded.owner OR effect_nats_outbox_lease.expires_at < ${dbNow}
        RETURNING owner`.pipe(
        Effect.map((rows) => rows.length === 1),
        Effect.mapError(fail("acquireLease"))
      )
    }

    const releaseLease = (owner: string) =>
      sql`UPDATE effect_nats_outbox_lease SET expires_at = 0 WHERE name = ${leaseName} AND owner = ${owner}`.pipe(
        Effect.asVoid,
        Effect.mapError(fail("releaseLease"))
      )

    // one LISTEN per store, shared by its relays: @effect/sql-pg runs every LISTEN of a client on one
    // connection, and a stream's UNLISTEN on close would silence the other streams of the channel
    const listenPg = (pg: Listening) =>
      RcRef.make({
        acquire: Effect.gen(function*() {
          const signals = yield* PubSub.sliding<void>(1)
          const token = `listening:${randomUUID()}`
          const ready = yield* Deferred.make<void>()
          yield* pg.listen(channel).pipe(
            Stream.runForEach((payload) =>
              payload === token ? Deferred.succeed(ready, undefined) : PubSub.publish(signals, undefined)
            ),
            Effect.tapError((e) => Effect.logWarning(`SqlOutbox: LISTEN ${channel} failed: ${e.message}; retrying`)),
            Effect.retry(Schedule.spaced("1 second")),
            Effect.forkScoped
          )
          // listening has started when the listener hears its own notification
          yield* sql`SELECT pg_notify(${channel}, ${token})`.pipe(
            Effect.zipRight(Effect.timeoutOption(Deferred.await(ready), "100 millis")),
            Effect.repeat({ until: Option.isSome }),
            Effect.mapError(fail("listen")),
            Effect.timeoutFail({
              duration: "10 seconds",
              onTimeout: () => new OutboxError({ method: "listen", message: `SqlOutbox: LISTEN ${channel} did not start` })
            })
          )
          return signals
        })
      })
    const signals = Option.isSome(listener) ? Option.some(yield* listenPg(listener.value)) : Option.none()

    return OutboxStore.of({
      append,
      pending,
      markPublished,
      cleanup,
      stats,
      acquireLease,
      releaseLease,
      listen: Option.match(signals, {
        onNone: () => PubSub.subscribe(local),
        onSome: (ref) => Effect.flatMap(RcRef.get(ref), PubSub.subscribe)
      })
    })
  })

/**
 * The SQL outbox store as a layer; needs a `SqlClient` (SQLite or Postgres).
 *
 * @example
 * ```ts
 * import { SqliteClient } from "@effect/sql-sqlite-node"
 * import { Layer } from "effect"
 * import { Outbox, OutboxRelay, Publisher } from "effect-nats"
 * import { SqlOutbox } from "@effect-nats/sql"
 *
 * const OutboxLive = Layer.mergeAll(Outbox.layer({ source: "billing" }), OutboxRelay.layer()).pipe(
 *   Layer.provideMerge(SqlOutbox.layer()),
 *   Layer.provideMerge(SqliteClient.layer({ filename: "billing.db" })),
 *   Layer.provide(Publisher.layer())
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<OutboxStore, SqlError | Migrator.MigrationError, SqlClient.SqlClient> =>
  Layer.scoped(OutboxStore, make(options))
