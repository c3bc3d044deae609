import { Effect, Option, Schema, Schedule } from "effect"
import { Event, Handler, Middleware, Dedup } from "effect-nats"
import { headers } from "@nats-io/nats-core"
const Ev = Event.make({ type: "bench.item.created", aggregate: "Item", schema: Schema.Struct({ i: Schema.Number, pad: Schema.String }) })
const enc = new TextEncoder()
const N = 50000
const msgs = Array.from({ length: N }, (_, i) => {
  const data = enc.encode(JSON.stringify({ id: `x${i}`, type: "bench.item.created", timestamp: new Date().toISOString(), correlationId: "c", aggregateId: "a", aggregateType: "Item", version: 0, data: { i, pad: "x".repeat(200) } }))
  const h = headers(); h.set("Nats-Msg-Id", `x${i}`)
  return { data, headers: h, subject: "bench.item.created", ack() {}, nak() {}, term() {}, working() {}, info: { stream: "S", consumer: "c", streamSequence: i, deliveryCount: 1 } }
})
const which = process.argv[2] ?? "all"
Effect.runPromise(Effect.gen(function*() {
  const dedup = yield* Dedup.makeMemory()
  const handlers = new Map([[Ev.type, Handler.make(Ev, () => Effect.void) as Handler.Any]])
  const settings: Middleware.Settings = { stream: "S", durable: "c", handlers, maxDeliver: 5, retry: Schedule.recurs(2), redelivery: Schedule.spaced("1 second"), isPermanent: () => false, unknownType: "ack", maxMessageBytes: 1e6, ack: "fast", termWithReason: false, tracing: which.includes("trace"), deadLetter: null as never, dedup: which.includes("nodedup") ? Option.none() : Option.some(dedup) }
  const d = Middleware.defaults(settings)
  const list = which.startsWith("only:") ? which.slice(5).split(",").map((k) => (d as any)[k]) : Middleware.defaultPipeline(d)
  const step = Middleware.compose(list, Middleware.handle)
  for (let round = 0; round < 3; round++) {
    const t0 = performance.now()
    for (const m of msgs) {
      yield* step({ msg: m as never, subject: m.subject, stream: "S", consumer: "c", streamSequence: m.info.streamSequence, deliveryCount: 1 })
    }
    console.log(which, Math.round(N / (performance.now() - t0) * 1000), "msg/s")
    if (round === 0) (yield* Dedup.makeMemory()) // noop
  }
}))
