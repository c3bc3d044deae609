/**
 * 1. JetStream publish: the typed `Publisher` (envelope, Schema encode,
 * headers, span when recorded) against raw `js.publish` with a msgID and a
 * Content-Type header, at the same number of publishes in flight.
 */
import { Effect } from "effect"
import { headers as natsHeaders } from "@nats-io/nats-core"
import { JetStream, Publisher } from "effect-nats"
import { interleave, Item, logRow, pad, quick, rawPayload, type Row, row } from "../lib.js"

export const freshStream = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  yield* Effect.promise(() => js.manager.streams.delete("BENCH").catch(() => false))
  yield* js.ensureStream({ name: "BENCH", subjects: ["bench.>"] })
})

export const publish = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const rows: Array<Row> = []
  for (const window of [1, 1000]) {
    const n = quick ? (window === 1 ? 3_000 : 20_000) : 100_000
    const publisher = yield* Publisher.make({ window })
    const raw = Effect.gen(function*() {
      yield* freshStream
      const t0 = performance.now()
      // a sliding window: the next publish starts as soon as one of the `window` in flight is acked
      yield* Effect.promise(() =>
        new Promise<void>((resolve, reject) => {
          let next = 0
          let acked = 0
          const pump = () => {
            while (next - acked < window && next < n) {
              const h = natsHeaders()
              h.set("Content-Type", "application/json")
              js.client.publish(Item.subject, rawPayload, { msgID: `r${t0}-${next++}`, headers: h }).then(() => {
                if (++acked === n) resolve()
                else pump()
              }, reject)
            }
          }
          pump()
        })
      )
      return { rate: n / (performance.now() - t0) * 1000 }
    })
    const toolkit = Effect.gen(function*() {
      yield* freshStream
      const entries = Array.from({ length: n }, (_, i) => Publisher.entry(Item, { i, pad }))
      const t0 = performance.now()
      yield* publisher.publishAll(entries)
      return { rate: n / (performance.now() - t0) * 1000 }
    })
    const result = yield* interleave(raw, toolkit)
    const r = row(`publish window=${window}`, "msg/s", result.raw("rate"), result.toolkit("rate"), { better: "higher", bound: 0.9 }, `${n} messages`)
    rows.push(r)
    yield* logRow(r)
  }
  return rows
})
