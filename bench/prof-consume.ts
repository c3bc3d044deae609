import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Layer, Schema, Deferred, Ref } from "effect"
import { Consumer, DeadLetter, Dedup, Event, Handler, JetStream } from "effect-nats"
const N = Number(process.env.N ?? 30000)
const Ev = Event.make({ type: "bench.item.created", aggregate: "Item", schema: Schema.Struct({ i: Schema.Number, pad: Schema.String }) })
const program = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  yield* js.ensureStream({ name: "BENCH", subjects: ["bench.>"] })
  const enc = new TextEncoder()
  const payloadFor = (i: number) => enc.encode(JSON.stringify({ id: `x${i}`, type: "bench.item.created", timestamp: new Date().toISOString(), correlationId: "c", aggregateId: "a", aggregateType: "Item", version: 0, data: { i: 1, pad: "x".repeat(200) } }))
  let inflight: Array<Promise<unknown>> = []
  for (let i = 0; i < N; i++) { inflight.push(js.client.publish("bench.item.created", payloadFor(i))); if (inflight.length >= 1000) { yield* Effect.promise(() => Promise.all(inflight)); inflight = [] } }
  yield* Effect.promise(() => Promise.all(inflight))
  const done = yield* Deferred.make<void>()
  const count = yield* Ref.make(0)
  const t0 = performance.now()
  yield* Effect.scoped(Effect.gen(function*() {
    yield* Consumer.make({ stream: "BENCH", durable: "c1", concurrency: Number(process.env.C ?? 64), maxAckPending: 10000, handlers: [Handler.make(Ev, () => Ref.updateAndGet(count, (n) => n + 1).pipe(Effect.flatMap((n) => n >= N ? Deferred.succeed(done, undefined) : Effect.void)))] })
    yield* Deferred.await(done)
  }))
  console.log(`consume toolkit: ${Math.round(N / (performance.now() - t0) * 1000)} msg/s`)
})
const Live = Layer.mergeAll(DeadLetter.layer(), Dedup.layerMemory()).pipe(Layer.provideMerge(NatsTestServer.layerJetStream()))
Effect.runPromise(program.pipe(Effect.provide(Live), Effect.scoped)).then(() => process.exit(0))
