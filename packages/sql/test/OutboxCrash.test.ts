import * as ChildProcess from "node:child_process"
import * as path from "node:path"
import { NatsTestServer } from "@effect-nats/testing"
import { expect, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer, Schema } from "effect"
import { Event, JetStream, type Publisher } from "effect-nats"
import * as Outbox from "effect-nats/Outbox"
import { SqlOutbox } from "../src/index.js"
import { readStream } from "../../../test/OutboxConformance.js"
import { eventually, unique } from "../../../test/utils.js"
import { inTransaction, SqliteFile, SqliteLive } from "./layers.js"

const OrderPlaced = Event.make({
  type: "crash.order.placed",
  aggregate: "Order",
  schema: Schema.Struct({ orderId: Schema.String, line: Schema.Number }),
  aggregateId: (d) => d.orderId
})

const repo = path.resolve(import.meta.dirname, "../../..")
const fixture = path.resolve(import.meta.dirname, "fixtures/relay.ts")

/** Run the relay in a child process; resolves with how it ended. */
const spawnRelay = (env: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = ChildProcess.spawn(process.execPath, ["--conditions=source", "--import", "tsx", fixture], {
        cwd: repo,
        env: { ...process.env, ...env },
        stdio: ["ignore", "inherit", "inherit"]
      })
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.once("exit", (code, signal) => resolve({ code, signal }))
      )
      return { child, exited: Effect.promise(() => exited) }
    }),
    ({ child, exited }) =>
      Effect.suspend(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
        return Effect.timeoutOption(exited, "10 seconds")
      })
  )

const pendingCount = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(sql<{ n: number }>`SELECT COUNT(*) AS n FROM effect_nats_outbox WHERE published_at IS NULL`, (rows) => rows[0]!.n))

const CrashLive = Layer.mergeAll(
  NatsTestServer.layerJetStream({ sources: ["binary"] }),
  SqliteLive
)

layer(CrashLive, { excludeTestServices: true, timeout: "90 seconds" })("OutboxRelay crash safety (SQLite file, relay process SIGKILLed)", (it) => {
  it.scoped("killed between publish and mark, then restarted: every committed row is on the stream exactly once; a rollback publishes nothing", () =>
    Effect.gen(function*() {
      const js = yield* JetStream.JetStream
      const server = yield* NatsTestServer.NatsTestServer
      const { filename } = yield* SqliteFile
      const stream = unique("CRASH")
      // the default duplicate window (2 minutes): a re-publish after the restart is dropped by msgID
      yield* js.ensureStream({ name: stream, subjects: ["crash.>"] })

      const store = yield* SqlOutbox.make()
      const outbox = yield* Outbox.make().pipe(Effect.provideService(Outbox.OutboxStore, store))
      const enqueued: Array<Publisher.OutgoingMessage> = []
      for (let t = 0; t < 10; t++) {
        const batch = yield* inTransaction(Effect.forEach([0, 1], (i) =>
          outbox.enqueue(OrderPlaced, { orderId: `order-${(t + i) % 3}`, line: t * 2 + i })))
        enqueued.push(...batch)
      }
      const rolledBack = yield* inTransaction(Effect.gen(function*() {
        yield* outbox.enqueue(OrderPlaced, { orderId: "order-0", line: 99 }, { id: "rolled-back" })
        return yield* Effect.fail("rollback" as const)
      })).pipe(Effect.flip)
      expect(rolledBack).toBe("rollback")
      expect(yield* pendingCount).toBe(20)

      const env = { NATS_URL: server.url, OUTBOX_DB: filename, RELAY_OWNER: "relay-1" }

      // 1. batches of 5: the first batch is published and marked; the process dies on the 7th PubAck,
      //    before the second batch is marked
      const first = yield* spawnRelay({ ...env, EXIT_AFTER_PUBLISHES: "7" })
      expect(yield* first.exited).toEqual({ code: null, signal: "SIGKILL" })
      const afterCrash = (yield* readStream(stream)).length
      expect(afterCrash).toBeGreaterThanOrEqual(7)
      expect(afterCrash).toBeLessThanOrEqual(10)
      expect(yield* pendingCount).toBe(15)
      // so at least 2 rows are on the stream but not marked: the next relay publishes them again
      expect(afterCrash - 5).toBeGreaterThanOrEqual(2)

      // 2. crash again, on the 4th PubAck of the new process: it re-published what was not marked
      const second = yield* spawnRelay({ ...env, EXIT_AFTER_PUBLISHES: "4" })
      expect(yield* second.exited).toEqual({ code: null, signal: "SIGKILL" })

      // 3. restart for good: it takes its lease back at once (same owner) and publishes the rest
      yield* spawnRelay(env)
      yield* eventually(Effect.map(pendingCount, (n) => n === 0), "30 seconds")

      const stored = yield* readStream(stream)
      expect(stored.length).toBe(20)
      const ids = stored.map((m) => m.id)
      expect(new Set(ids).size).toBe(20)
      expect([...ids].sort()).toEqual(enqueued.map((m) => m.id).sort())
      expect(ids).not.toContain("rolled-back")
      // per-order sequence kept across the crashes
      const perOrder = (xs: ReadonlyArray<{ id: string; aggregateId: string }>) => {
        const out: Record<string, Array<string>> = {}
        for (const x of xs) (out[x.aggregateId] ??= []).push(x.id)
        return out
      }
      expect(perOrder(stored)).toEqual(perOrder(enqueued))
    }))
})
