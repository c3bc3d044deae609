/**
 * The services the fixtures run, as layers, so a scenario can also run one in
 * its own process (the focused tests do, to save a child's start-up time).
 */
import * as fs from "node:fs"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { SqlDedup, SqlOutbox } from "@effect-nats/sql"
import { Effect, Layer, Schedule } from "effect"
import { Consumer, DeadLetter, Handler, JetStream, NatsClient, Outbox, OutboxRelay, Publisher } from "effect-nats"
import { JobQueued, OrderConfirmed, OrderPlaced } from "./events.js"

/** Settings of the scenario 1 consumer. */
export interface OrdersConfig {
  readonly url: string
  readonly db: string
  readonly stream: string
  readonly durable: string
  readonly ackWaitMs: number
  readonly concurrency?: number | undefined
  /**
   * Scenario 10: `orderBy: "aggregate"`, no in-process retries, redelivery
   * after 300 ms, and every 25th message (by `n`) fails its first delivery in
   * each process.
   */
  readonly ordered?: boolean | undefined
  /**
   * Scenario 11: the durables this instance reads (each with its filter),
   * instead of the one `durable`: one per partition it owns.
   */
  readonly consumers?: ReadonlyArray<{ readonly durable: string; readonly filterSubject?: string | undefined }> | undefined
  /** The server's limit of unacked messages per durable (default: the Consumer's). */
  readonly maxAckPending?: number | undefined
  /** With `ordered`: which messages (every n-th) fail their first delivery in this process (default 25; 0 = none). */
  readonly failEvery?: number | undefined
  /**
   * Scenario 11: every n-th message (`n % stallEvery === 7`) blocks the
   * process's event loop for 2.5 s while it is handled (synchronous work),
   * each time it is delivered once the process's consumers are up (default 0:
   * never).
   */
  readonly stallEvery?: number | undefined
}

/** The effect table: one row per handled message, no unique key (so a second effect would show). */
export const createEffects = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql`CREATE TABLE IF NOT EXISTS effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT, msg_id TEXT NOT NULL, n INTEGER NOT NULL, pid INTEGER NOT NULL)`)

/** Block the event loop for `ms` (what synchronous work or a starved CPU does to a process). */
const blockFor = (ms: number) => {
  const until = performance.now() + ms
  while (performance.now() < until) {
    // busy
  }
}

// an effect row and an outbox row, in the batch's transaction (each message in its own savepoint);
// a message for which `fails` is true fails instead; one for which `stalls` is true first blocks the event loop
const onPlaced = (fails: (n: number) => boolean, stalls: (n: number) => boolean) =>
  Handler.make(OrderPlaced, (e) => {
    if (stalls(e.data.n)) blockFor(2_500)
    return fails(e.data.n)
      ? Effect.fail(new Error(`message ${e.data.n} fails`))
      : Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql`INSERT INTO effects (msg_id, n, pid) VALUES (${e.id}, ${e.data.n}, ${process.pid})`).pipe(
          Effect.zipRight(Effect.flatMap(Outbox.Outbox, (outbox) => outbox.enqueue(OrderConfirmed, { source: e.id, n: e.data.n })))
        )
  })

/**
 * Scenario 1: a consumer with exactly-once effects on a SQLite file. SqlDedup
 * commits batches of messages (the default): each message's effect row,
 * outbox row and inbox row in its own savepoint, one commit per batch.
 */
export const OrdersConsumer = (config: OrdersConfig) => {
  const consumer = Layer.scopedDiscard(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // durable against a process crash (the WAL is in the OS page cache); not against a power cut
    yield* sql`PRAGMA synchronous = NORMAL`
    yield* createEffects
    // scenario 10: every 25th message fails its first delivery in this process
    const failed = new Set<number>()
    const failEvery = config.failEvery ?? 25
    const stallEvery = config.stallEvery ?? 0
    let started = false
    const failsFirst = (n: number) => {
      if (config.ordered !== true || failEvery === 0 || n % failEvery !== 0 || failed.has(n)) return false
      failed.add(n)
      return true
    }
    yield* Effect.forEach(config.consumers ?? [{ durable: config.durable }], ({ durable, filterSubject }) =>
      Consumer.make({
        stream: config.stream,
        durable,
        filterSubject,
        // stalls only once every consumer is up: a stall during start-up would time out its own requests (ensure consumer)
        handlers: [onPlaced(failsFirst, (n) => started && stallEvery > 0 && n % stallEvery === 7)],
        ...(config.ordered === true
          ? { orderBy: "aggregate" as const, retry: Schedule.stop, redelivery: Schedule.spaced("300 millis") }
          : {}),
        concurrency: config.concurrency ?? 16,
        ackWait: config.ackWaitMs,
        maxDeliver: 1000,
        maxAckPending: config.maxAckPending,
        drainTimeout: "5 seconds"
      }), { discard: true })
    started = true
  }))
  return consumer.pipe(
    Layer.provide(Layer.mergeAll(SqlDedup.layer(), DeadLetter.layer(), Outbox.layer().pipe(Layer.provide(SqlOutbox.layer())))),
    Layer.provideMerge(SqliteClient.layer({ filename: config.db })),
    Layer.provide(JetStream.layer),
    Layer.provide(NatsClient.layer({ servers: config.url, name: `chaos-orders-${process.pid}`, reconnectTimeWait: "250 millis" }))
  )
}

/** Settings of the scenario 2 relay. */
export interface RelayConfig {
  readonly url: string
  readonly db: string
  /** SIGKILL this process once this many PubAcks are in: after the batch that reaches the count is published, before it is marked; 0 = never. */
  readonly exitAfterPubAcks?: number | undefined
  /** Called after every PubAck: whether JetStream reported it as a duplicate. */
  readonly onAck?: ((duplicate: boolean) => void) | undefined
}

/**
 * Scenario 2: the outbox relay on a SQLite file, with a stable owner (a
 * restarted relay takes its lease back at once).
 */
export const Relay = (config: RelayConfig) => {
  let acks = 0
  const exitAfter = config.exitAfterPubAcks ?? 0
  const publisher = Layer.effect(
    Publisher.Publisher,
    Effect.map(Publisher.make(), (p) => ({
      ...p,
      // the relay publishes through `publishMessages`: count its acks, crash after the batch that reaches the count
      publishMessages: (messages: Iterable<Publisher.OutgoingMessage>, options?: { readonly window?: number | undefined }) =>
        Effect.tap(p.publishMessages(messages, options), (published) =>
          Effect.sync(() => {
            for (const ack of published.acks) {
              acks++
              config.onAck?.(ack.duplicate)
            }
            if (exitAfter > 0 && acks >= exitAfter) process.kill(process.pid, "SIGKILL")
          }))
    }))
  )
  return OutboxRelay.layer({
    owner: "chaos-relay",
    pollInterval: "100 millis",
    leaseTtl: "5 seconds",
    retry: Schedule.exponential("50 millis").pipe(Schedule.either(Schedule.spaced("1 second")))
  }).pipe(
    Layer.provide(SqlOutbox.layer()),
    Layer.provide(SqliteClient.layer({ filename: config.db })),
    Layer.provide(publisher),
    Layer.provide(JetStream.layer),
    Layer.provide(NatsClient.layer({ servers: config.url, name: `chaos-relay-${process.pid}`, reconnectTimeWait: "250 millis" }))
  )
}

/** Settings of the scenario 4 service. */
export interface JobsConfig {
  readonly url: string
  readonly stream: string
  readonly durable: string
  /** File the handler appends `T <id> <epoch ms>` (taken, before the work) and `H <id> <epoch ms>` (handled, after it) to. */
  readonly log: string
  readonly concurrency: number
  readonly drainTimeoutMs: number
  readonly ackWaitMs: number
}

/**
 * Scenario 4: a service whose handler works `workMs` on each job. The lines
 * are appended synchronously, so they are on disk whatever happens next.
 */
export const JobsService = (config: JobsConfig) => {
  // one open-append-close per line: nothing to release, nothing lost whatever happens next
  const write = (line: string) => fs.appendFileSync(config.log, `${line}\n`)
  const onJob = Handler.make(JobQueued, (e) =>
    Effect.sync(() => write(`T ${e.id} ${Date.now()}`)).pipe(
      Effect.zipRight(Effect.sleep(e.data.workMs)),
      Effect.zipRight(Effect.sync(() => write(`H ${e.id} ${Date.now()}`)))
    ))
  return Consumer.layer({
    stream: config.stream,
    durable: config.durable,
    handlers: [onJob],
    concurrency: config.concurrency,
    maxAckPending: 1000,
    ackWait: config.ackWaitMs,
    drainTimeout: config.drainTimeoutMs
  }).pipe(
    Layer.provide(DeadLetter.layer()),
    Layer.provide(JetStream.layer),
    Layer.provide(NatsClient.layer({ servers: config.url, name: `chaos-jobs-${process.pid}`, drainTimeout: "5 seconds" }))
  )
}
