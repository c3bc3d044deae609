/**
 * 6. Rebuild: a `Projection` from the beginning over n stored events (JSON,
 * Schema decode, a handler folding a sum), against a raw nats.js ordered
 * consumer reading the same n messages and parsing their JSON. Live events
 * are published while the toolkit side rebuilds; the note says whether the
 * sequences it saw ran on across the switch to live with no gap and no
 * double.
 */
import { Effect, Schedule } from "effect"
import { Handler, JetStream, Projection, Publisher } from "effect-nats"
import { interleave, Item, logRow, pad, quick, type Row, row } from "../lib.js"
import { freshStream } from "./publish.js"

export const rebuild = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const n = quick ? 20_000 : 100_000
  const live = 2_000
  yield* freshStream
  const publisher = yield* Publisher.make({ window: 1000 })
  yield* publisher.publishAll(Array.from({ length: n }, (_, i) => Publisher.entry(Item, { i, pad })))
  let switches = 0
  let clean = 0

  const raw = Effect.promise(async () => {
    const consumer = await js.client.consumers.get("BENCH", { filter_subjects: "bench.>" })
    const t0 = performance.now()
    const messages = await consumer.consume({ max_messages: 1000 })
    let seen = 0
    let sum = 0
    for await (const m of messages) {
      sum += (JSON.parse(m.string()) as { data: { i: number } }).data.i
      if (++seen >= n) break
    }
    return { rate: n / (performance.now() - t0) * 1000, sum }
  })

  const toolkit = Effect.scoped(Effect.gen(function*() {
    const ids = new Set<string>()
    let sum = 0
    const t0 = performance.now()
    const projection = yield* Projection.make({
      stream: "BENCH",
      filterSubject: "bench.>",
      handlers: [Handler.make(Item, (e) =>
        Effect.sync(() => {
          sum += e.data.i
          ids.add(e.id)
        }))]
    })
    // live events while the history is read
    const writer = yield* Effect.fork(publisher.publishAll(Array.from({ length: live }, (_, i) => Publisher.entry(Item, { i: -1 - i, pad }))))
    const atSwitch = yield* projection.live
    const rate = atSwitch.done / (performance.now() - t0) * 1000
    yield* writer.await
    // every stored message once: as many distinct envelopes as the stream holds, and no more reads
    const stored = (yield* js.streamInfo("BENCH")).state.messages
    const caughtUp = (yield* projection.progress).done >= stored
    const waited = caughtUp ? true : yield* Effect.repeat(
      Effect.map(projection.progress, (p) => p.done >= stored),
      { until: (ok) => ok, schedule: Schedule.spaced("20 millis") }
    ).pipe(Effect.timeoutTo({ duration: "20 seconds", onTimeout: () => false, onSuccess: () => true }))
    const last = yield* projection.progress
    switches++
    if (waited && last.done === stored && ids.size === stored) clean++
    return { rate, sum }
  }))

  const result = yield* interleave(raw, toolkit)
  const r: Row = row(
    "rebuild (projection from the beginning)",
    "msg/s",
    result.raw("rate"),
    result.toolkit("rate"),
    undefined,
    `${n}+ stored messages; ${live} live ones published during each toolkit run: ${clean}/${switches} switches with no gap and no double`
  )
  yield* logRow(r)
  return [r]
})
