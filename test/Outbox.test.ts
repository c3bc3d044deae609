import { Effect } from "effect"
import * as Outbox from "../src/Outbox.js"
import { outboxConformance } from "./OutboxConformance.js"
import { PipelineLive } from "./utils.js"

outboxConformance({
  name: "memory",
  layer: PipelineLive,
  fresh: Effect.map(Outbox.makeMemoryStore, (store) => ({ store, rowCount: store.size })),
  transaction: undefined
})
