/**
 * The memory workload, in its own process (started by bench/workloads/memory.ts
 * with --expose-gc): publish warm-up + N envelopes to the BENCH stream, consume
 * them through the default pipeline (memory dedup, no-op handler, ack), and
 * print heap and RSS after a forced GC at the end of the warm-up and at the end
 * of the run, as one JSON line.
 */
import { Deferred, Effect, Exit, Layer } from "effect"
import { Consumer, DeadLetter, Dedup, Handler, JetStream, NatsClient } from "effect-nats"
import { Item, pad } from "./lib.js"

const url = process.env.BENCH_NATS_URL!
const warmup = Number(process.env.BENCH_WARMUP)
const n = Number(process.env.BENCH_N)
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with --expose-gc")

const snapshot = () => {
  gc()
  gc()
  const m = process.memoryUsage()
  return { heapUsed: m.heapUsed, rss: m.rss }
}

const program = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  // raw publishes of distinct envelopes: the setup is not what is measured
  const encoder = new TextEncoder()
  const now = new Date().toISOString()
  yield* Effect.promise(() =>
    new Promise<void>((resolve, reject) => {
      const total = warmup + n
      let next = 0
      let acked = 0
      const pump = () => {
        while (next - acked < 1000 && next < total) {
          const i = next++
          const id = `m-${i}-${Math.random().toString(36).slice(2, 10)}`
          const body = `{"id":"${id}","type":"${Item.type}","timestamp":"${now}","correlationId":"${id}","aggregateId":"${id}","aggregateType":"Item","version":0,"data":{"i":${i},"pad":"${pad}"}}`
          js.client.publish(Item.subject, encoder.encode(body)).then(() => {
            if (++acked === total) resolve()
            else pump()
          }, reject)
        }
      }
      pump()
    })
  )

  const warm = yield* Deferred.make<void>()
  const done = yield* Deferred.make<void>()
  let seen = 0
  const onItem = Handler.make(Item, () =>
    Effect.sync(() => {
      seen++
      if (seen === warmup) Deferred.unsafeDone(warm, Exit.void)
      if (seen === warmup + n) Deferred.unsafeDone(done, Exit.void)
    }))
  return yield* Effect.scoped(Effect.gen(function*() {
    yield* Consumer.make({ stream: "BENCH", durable: "memory", maxAckPending: 10_000, handlers: [onItem] })
    yield* Deferred.await(warm)
    const before = snapshot()
    const t0 = performance.now()
    yield* Deferred.await(done)
    const rate = n / (performance.now() - t0) * 1000
    const after = snapshot()
    return { before, after, rate }
  }))
})

const Live = Layer.mergeAll(DeadLetter.layer(), Dedup.layerMemory({ maxSize: 10_000 })).pipe(
  Layer.provideMerge(JetStream.layer),
  Layer.provideMerge(NatsClient.layer({ servers: url }))
)

Effect.runPromise(program.pipe(Effect.provide(Live), Effect.scoped)).then((result) => {
  process.stdout.write(JSON.stringify(result) + "\n")
  process.exit(0)
}, (e) => {
  console.error(e)
  process.exit(1)
})
