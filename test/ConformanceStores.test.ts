/**
 * The Dedup and Outbox conformance suites run unchanged on the in-memory
 * transport: the dedup stores (memory and NATS KV) and the outbox relay do not
 * know which transport they are on. The transport shares the cases' TestClock
 * (one per suite), so every wait is simulated time (see `StoreTime`).
 */
import { InMemoryNats } from "@effect-nats/testing"
import { Effect, Layer } from "effect"
import { DeadLetter, Dedup, Outbox, Publisher } from "effect-nats"
import { dedupConformance } from "./DedupConformance.js"
import { outboxConformance } from "./OutboxConformance.js"
import { unique } from "./utils.js"

const MemoryPipeline = Layer.mergeAll(DeadLetter.layer(), Publisher.layer()).pipe(
  Layer.provideMerge(InMemoryNats.layer())
)

dedupConformance({
  name: "memory store, in-memory transport",
  layer: MemoryPipeline,
  make: (options) => Dedup.makeMemory(options),
  leases: true
})

dedupConformance({
  name: "NATS KV, in-memory transport",
  layer: MemoryPipeline,
  make: (options) => Dedup.makeKv({ ...options, bucket: unique("dedup") }),
  leases: true
})

outboxConformance({
  name: "memory store, in-memory transport",
  layer: MemoryPipeline,
  fresh: Effect.map(Outbox.makeMemoryStore, (store) => ({ store, rowCount: store.size })),
  transaction: undefined
})
