/**
 * `npm run bench`: the toolkit against the raw nats.js client, side by side in one run,
 * on one nats-server, same payload and concurrency, interleaved (raw, toolkit, raw, toolkit...)
 * and repeated; medians and ratios. `--quick` for smaller counts.
 */
import { NatsTestServer } from "@effect-nats/testing"
import { headers as natsHeaders } from "@nats-io/nats-core"
import { Deferred, Effect, Layer, Ref, Schema } from "effect"
import { Consumer, DeadLetter, Dedup, Event, Handler, JetStream, Publisher } from "effect-nats"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const quick = process.argv.includes("--quick")
const reps = quick ? 2 : 3
const counts = { publish: quick ? 10_000 : 100_000, consume: quick ? 10_000 : 100_000, memory: quick ? 50_000 : 1_000_000 }

const pad = "x".repeat(200)
const Item = Event.make({
  type: "bench.item.created",
  aggregate: "Item",
  schema: Schema.Struct({ i: Schema.Number, pad: Schema.String })
})
const encoder = new TextEncoder()

interface Row {
  readonly workload: string
  readonly unit: string
  readonly raw: number
  readonly toolkit: number
  readonly ratio: number
  readonly target: string
}

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

const program = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const publisher = yield* Publisher.Publisher
  const rows: Array<Row> = []
  const log = (s: string) => Effect.sync(() => process.stderr.write(s + "\n"))

  const freshStream = Effect.gen(function*() {
    yield* Effect.promise(() => js.manager.streams.delete("BENCH").catch(() => false))
    yield* js.ensureStream({ name: "BENCH", subjects: ["bench.>"] })
  })

  // 1. publish
  for (const window of [1, 1000]) {
    const n = window === 1 ? Math.min(counts.publish, quick ? 3_000 : 20_000) : counts.publish
    const raw = Effect.gen(function*() {
      yield* freshStream
      const payload = encoder.encode(JSON.stringify({ i: 0, pad }))
      const t0 = performance.now()
      yield* Effect.promise(async () => {
        let inflight: Array<Promise<unknown>> = []
        for (let i = 0; i < n; i++) {
          const h = natsHeaders()
          h.set("Content-Type", "application/json")
          inflight.push(js.client.publish("bench.item.created", payload, { msgID: `r${t0}-${i}`, headers: h }))
          if (inflight.length >= window) {
            await Promise.all(inflight)
            inflight = []
          }
        }
        await Promise.all(inflight)
      })
      return n / (performance.now() - t0) * 1000
    })
    const toolkit = Effect.gen(function*() {
      yield* freshStream
      const entries = Array.from({ length: n }, (_, i) => Publisher.entry(Item, { i, pad }))
      const t0 = performance.now()
      yield* publisher.publishAll(entries).pipe(Effect.withConcurrency(window))
      return n / (performance.now() - t0) * 1000
    })
    const r: Array<number> = []
    const t: Array<number> = []
    for (let k = 0; k < reps; k++) {
      r.push(yield* raw)
      t.push(yield* toolkit)
    }
    const row = { workload: `publish window=${window}`, unit: "msg/s", raw: median(r), toolkit: median(t), ratio: median(t) / median(r), target: ">= 0.9" }
    rows.push(row)
    yield* log(`${row.workload}: raw ${Math.round(row.raw)} toolkit ${Math.round(row.toolkit)} ratio ${row.ratio.toFixed(2)}`)
  }

  // 2. consume: a stream of n envelopes, read by a fresh durable each run
  yield* freshStream
  yield* publisher.publishAll(Array.from({ length: counts.consume }, (_, i) => Publisher.entry(Item, { i, pad })))
  for (const concurrency of [1, 64]) {
    const n = counts.consume
    const raw = Effect.gen(function*() {
      const durable = `raw${Math.random().toString(36).slice(2)}`
      yield* js.ensureConsumer({ stream: "BENCH", durable, maxAckPending: 10_000 })
      const consumer = yield* Effect.promise(() => js.client.consumers.get("BENCH", durable))
      const t0 = performance.now()
      yield* Effect.promise(async () => {
        const messages = await consumer.consume({ max_messages: 1000 })
        let seen = 0
        for await (const m of messages) {
          m.ack()
          if (++seen >= n) break
        }
      })
      return n / (performance.now() - t0) * 1000
    })
    const toolkit = Effect.gen(function*() {
      const durable = `tk${Math.random().toString(36).slice(2)}`
      const done = yield* Deferred.make<void>()
      const seen = yield* Ref.make(0)
      const t0 = performance.now()
      yield* Effect.scoped(Effect.gen(function*() {
        yield* Consumer.make({
          stream: "BENCH",
          durable,
          concurrency,
          maxAckPending: 10_000,
          handlers: [Handler.make(Item, () =>
            Effect.flatMap(Ref.updateAndGet(seen, (k) => k + 1), (k) => k >= n ? Deferred.succeed(done, undefined) : Effect.void))]
        }).pipe(Effect.provide(Dedup.layerMemory()))
        yield* Deferred.await(done)
      }))
      return n / (performance.now() - t0) * 1000
    })
    const r: Array<number> = []
    const t: Array<number> = []
    for (let k = 0; k < reps; k++) {
      r.push(yield* raw)
      t.push(yield* toolkit)
    }
    const row = { workload: `consume concurrency=${concurrency}`, unit: "msg/s", raw: median(r), toolkit: median(t), ratio: median(t) / median(r), target: ">= 0.85" }
    rows.push(row)
    yield* log(`${row.workload}: raw ${Math.round(row.raw)} toolkit ${Math.round(row.toolkit)} ratio ${row.ratio.toFixed(2)}`)
  }
  return rows
})

const Live = Layer.mergeAll(Publisher.layer({ window: 1000 }), DeadLetter.layer()).pipe(
  Layer.provideMerge(NatsTestServer.layerJetStream({ sources: ["binary", "container"] }))
)

Effect.runPromise(program.pipe(Effect.provide(Live), Effect.scoped)).then((rows) => {
  const result = {
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? "", memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version },
    quick,
    at: new Date().toISOString(),
    rows
  }
  console.table(rows.map((r) => ({ ...r, raw: Math.round(r.raw), toolkit: Math.round(r.toolkit), ratio: r.ratio.toFixed(2) })))
  const dir = path.join(import.meta.dirname, "results")
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, "latest.json"), JSON.stringify(result, null, 2))
  console.log(JSON.stringify(result))
  process.exit(0)
}, (e) => {
  console.error(e)
  process.exit(1)
})
