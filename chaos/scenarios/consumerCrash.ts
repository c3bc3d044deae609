/**
 * Scenario 1 — consumer crash.
 *
 * A consumer in a child process (chaos/fixtures/consumer.ts) handles a stream
 * with SqlDedup on a SQLite file: its handler inserts one `effects` row per
 * message in the same transaction as the inbox row. While the stream is being
 * published and consumed, the process is SIGKILLed at random moments (each
 * after it made progress past a random point of the stream) and restarted.
 *
 * Guarantee shown: every acknowledged publish has exactly one effect row;
 * nothing is lost, nothing happens twice.
 *
 * Scenario 10 (`ordered`, named `ordered-crash`) is the same with
 * `orderBy: "aggregate"` over few aggregates, published in order, no
 * in-process retries, redelivery after 300 ms, and every 25th message failing
 * its first delivery: it also counts per-aggregate inversions (an effect
 * committed after a later message of its aggregate), reported as `inversions`.
 */
import * as path from "node:path"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { NatsTestServer } from "@effect-nats/testing"
import { Context, Effect, Fiber, Layer, Option } from "effect"
import { JetStream, Publisher } from "effect-nats"
import { OrderPlaced } from "../lib/events.js"
import { createEffects, OrdersConsumer } from "../lib/services.js"
import { type Child, natsLayer, Report, type Result, rng, seed, since, spawnFixture, spread, tempDir, waitUntil } from "../lib/harness.js"

export interface Options {
  readonly messages: number
  readonly kills: number
  /** Server ack wait of the durable: how soon a killed worker's messages come back (ms). */
  readonly ackWaitMs?: number
  /** Run the last instance (after the kills) in this process instead of a child (faster tests). */
  readonly finishInProcess?: boolean
  /** Scenario 10: ordered by aggregate, over `aggregates` aggregates (default 10), with failing first deliveries. */
  readonly ordered?: boolean
  readonly aggregates?: number
}

export const name = "consumer-crash"
export const orderedName = "ordered-crash"

/** Run the scenario (its clock starts when it runs). */
export const run = (options: Options): Effect.Effect<Result> => Effect.suspend(() => runNow(options))

const runNow = (options: Options): Effect.Effect<Result> => {
  const ordered = options.ordered === true
  const aggregates = ordered ? options.aggregates ?? 10 : 997
  const report = new Report(ordered ? orderedName : name)
  return Effect.gen(function*() {
    const random = rng(seed ^ 0x51)
    const server = yield* NatsTestServer.NatsTestServer
    const js = yield* JetStream.JetStream
    const dir = yield* tempDir("consumer")
    const db = path.join(dir, "consumer.db")
    const stream = "CHAOS_CONSUMER"
    const durable = "orders"
    const ackWaitMs = options.ackWaitMs ?? 3000
    yield* js.ensureStream({ name: stream, subjects: ["chaos.order.>"], storage: "file" })

    const sqlContext = yield* Layer.build(SqliteClient.layer({ filename: db }))
    const sql = Context.get(sqlContext, SqlClient.SqlClient)
    yield* createEffects.pipe(Effect.provideService(SqlClient.SqlClient, sql))
    const effectRows = Effect.map(sql<{ n: number }>`SELECT COUNT(*) AS n FROM effects`, (r) => Number(r[0]?.n ?? 0)).pipe(Effect.orDie)

    // publish the whole stream in the background, while the consumer runs and dies
    const publisher = yield* Publisher.make({ window: 256 })
    const acked = new Set<string>()
    let publishFailures = 0
    const publishing = yield* Effect.forEach(
      chunks(options.messages, 1000),
      ([from, to]) =>
        Effect.forEach(
          Array.from({ length: to - from }, (_, i) => from + i),
          (n) =>
            publisher.publish(OrderPlaced, { orderId: `order-${n % aggregates}`, n }).pipe(
              Effect.match({
                onFailure: () => void publishFailures++,
                onSuccess: (ack) => void acked.add(ack.id)
              })
            ),
          // ordered: one at a time, so that stream order is the order of `n`
          { concurrency: ordered ? 1 : 256, discard: true }
        ),
      { discard: true }
    ).pipe(Effect.fork)

    const env = {
      NATS_URL: server.url,
      CHAOS_DB: db,
      CHAOS_STREAM: stream,
      CHAOS_DURABLE: durable,
      CHAOS_ACK_WAIT_MS: String(ackWaitMs),
      CHAOS_CONCURRENCY: "16",
      CHAOS_ORDERED: ordered ? "1" : "0"
    }
    let instances = 0
    const duplicatesSkipped: Array<number> = []
    // per instance: batches committed and the messages they settled
    const batches: Array<{ commits: number; batched: number }> = []
    const start = Effect.gen(function*() {
      let ready = false
      const instance = instances++
      const child = yield* spawnFixture("consumer", env, (line) => {
        if (line === "READY") ready = true
        else if (line.startsWith("STATS ")) {
          const stats = JSON.parse(line.slice(6)) as { duplicates: number; commits: number; batched: number }
          duplicatesSkipped[instance] = stats.duplicates
          batches[instance] = { commits: stats.commits, batched: stats.batched }
        }
      })
      const up = yield* waitUntil(Effect.sync(() => ready || !child.running()), "60 seconds", "20 millis")
      if (!up || !child.running()) {
        return yield* Effect.dieMessage(`the consumer did not start:\n${child.tail()}`)
      }
      return child
    })

    // kill points: random positions of the stream, in order
    const points = Array.from({ length: options.kills }, () => 0.05 + random.next() * 0.9).sort((a, b) => a - b)
      .map((f) => Math.floor(f * options.messages))
    const killedAt: Array<number> = []
    const recoveries: Array<number> = []
    let child: Child = yield* start
    for (const point of points) {
      const before = yield* effectRows
      const target = Math.max(point, before + 1 + random.int(0, 50))
      const reached = yield* waitUntil(Effect.map(effectRows, (n) => n >= target), "120 seconds", "10 millis")
      if (!reached) {
        report.check(false, `no progress to ${target} effects before the kill:\n${child.tail()}`)
        break
      }
      yield* Effect.sleep(random.int(0, 40))
      const at = yield* effectRows
      const exit = yield* child.kill
      report.check(exit.signal === "SIGKILL", `the consumer exited with ${JSON.stringify(exit)} instead of SIGKILL`)
      killedAt.push(at)
      report.log(`SIGKILL #${killedAt.length} at ${at}/${options.messages} effects`)
      const restarted = performance.now()
      if (options.finishInProcess === true && killedAt.length === points.length) break
      child = yield* start
      const after = yield* effectRows
      yield* waitUntil(Effect.map(effectRows, (n) => n > after), "60 seconds", "10 millis")
      recoveries.push(since(restarted))
    }

    yield* Fiber.join(publishing)
    report.sent = acked.size
    report.check(publishFailures === 0, `${publishFailures} publishes failed`)

    if (options.finishInProcess === true && !child.running()) {
      // the last instance runs here: same consumer, same database
      yield* Layer.launch(OrdersConsumer({ url: server.url, db, stream, durable, ackWaitMs, ordered })).pipe(Effect.forkScoped)
    }

    // let the last instance finish the stream
    const drained = yield* waitUntil(
      Effect.gen(function*() {
        const info = yield* js.consumerInfo(stream, durable)
        const rows = yield* sql<{ n: number }>`SELECT COUNT(DISTINCT msg_id) AS n FROM effects`
        return Number(rows[0]?.n ?? 0) >= acked.size && info.num_pending === 0 && info.num_ack_pending === 0
      }).pipe(Effect.orElseSucceed(() => false)),
      "180 seconds",
      "200 millis"
    )
    report.check(drained, "the last instance did not finish the stream in time")
    if (child.running()) {
      yield* child.signal("SIGTERM")
      const exit = yield* child.awaitExit("20 seconds")
      report.check(Option.isSome(exit) && exit.value.code === 0, `the last instance did not stop cleanly: ${JSON.stringify(exit)}`)
    }

    const rows = yield* sql<{ msg_id: string; c: number }>`SELECT msg_id, COUNT(*) AS c FROM effects GROUP BY msg_id`.pipe(Effect.orDie)
    const inbox = yield* sql<{ n: number }>`SELECT COUNT(*) AS n FROM effect_nats_inbox`.pipe(Effect.orDie)
    const total = rows.reduce((sum, r) => sum + Number(r.c), 0)
    const seen = new Set(rows.map((r) => r.msg_id))
    report.effects = total
    report.duplicateEffects = total - seen.size
    report.lost = [...acked].filter((id) => !seen.has(id)).length
    const unexpected = [...seen].filter((id) => !acked.has(id)).length
    report.check(unexpected === 0, `${unexpected} effects for messages that were never acknowledged`)
    report.check(Number(inbox[0]?.n ?? 0) === seen.size, `inbox rows (${inbox[0]?.n}) != handled messages (${seen.size})`)
    // the outbox row each handled message enqueued in the same savepoint: exactly one per effect
    const outbox = yield* sql<{ aggregate_id: string; c: number }>`SELECT aggregate_id, COUNT(*) AS c FROM effect_nats_outbox GROUP BY aggregate_id`.pipe(
      Effect.orDie
    )
    const outboxFor = new Set(outbox.map((r) => r.aggregate_id))
    const outboxTwice = outbox.filter((r) => Number(r.c) > 1).length
    const outboxMissing = [...seen].filter((id) => !outboxFor.has(id)).length
    report.check(outboxTwice === 0, `${outboxTwice} handled messages enqueued their outbox row more than once`)
    report.check(outboxMissing === 0, `${outboxMissing} handled messages have no outbox row`)
    report.check(outbox.length === seen.size, `outbox rows for ${outbox.length} messages != handled messages (${seen.size})`)
    if (ordered) {
      // effects in commit order: an inversion is an effect committed after a later message of its aggregate
      const committed = yield* sql<{ n: number }>`SELECT n FROM effects ORDER BY id`.pipe(Effect.orDie)
      const last = new Map<number, number>()
      let inversions = 0
      for (const { n } of committed) {
        const aggregate = Number(n) % aggregates
        if (Number(n) < (last.get(aggregate) ?? -1)) inversions++
        else last.set(aggregate, Number(n))
      }
      report.set("aggregates", aggregates)
      report.set("inversions", inversions)
      report.check(inversions === 0, `${inversions} effects committed after a later message of their aggregate`)
    }
    report.check(killedAt.length === options.kills, `${killedAt.length} of ${options.kills} kills done`)
    const info = yield* js.consumerInfo(stream, durable)
    report.set("kills", killedAt.length)
    report.set("killedAtEffects", killedAt)
    report.set("recoveryMs", spread(recoveries))
    report.set("redeliveredAtEnd", info.num_redelivered)
    // every delivery the server made (first ones and redeliveries): what the failures and kills cost
    report.set("deliveries", info.delivered.consumer_seq)
    // redeliveries of messages whose effect had committed before the kill: acked, not handled again
    report.set("duplicatesSkippedByDedup", duplicatesSkipped.reduce((a, b) => a + (b ?? 0), 0))
    report.set("inboxRows", Number(inbox[0]?.n ?? 0))
    report.set("outboxRows", outbox.reduce((sum, r) => sum + Number(r.c), 0))
    const commits = batches.reduce((a, b) => a + (b?.commits ?? 0), 0)
    const batched = batches.reduce((a, b) => a + (b?.batched ?? 0), 0)
    // from the children (a SIGKILL loses at most the last 200 ms of these figures)
    report.set("batchCommits", commits)
    report.set("messagesPerBatch", commits === 0 ? 0 : Math.round(batched / commits * 10) / 10)
    report.set("store", "SQLite file (WAL), SqlDedup batches: effect row + outbox row + inbox row per message in its own savepoint, one commit per batch")
  }).pipe(
    // the scope (children, consumers, clients) closes before the server goes away
    Effect.scoped,
    Effect.provide(natsLayer()),
    Effect.catchAllCause((cause) => Effect.sync(() => void report.check(false, `scenario crashed: ${cause}`))),
    Effect.map(() => report.result())
  )
}

/** [from, to) ranges of `size` covering 0..n. */
const chunks = (n: number, size: number): Array<readonly [number, number]> =>
  Array.from({ length: Math.ceil(n / size) }, (_, i) => [i * size, Math.min(n, (i + 1) * size)] as const)
