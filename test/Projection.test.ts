import { describe, expect, layer } from "@effect/vitest"
import { Effect, Exit, Fiber, Schema, Scope } from "effect"
import { Consumer, Event, Handler, JetStream, Projection, Publisher } from "effect-nats"
import { eventually, PipelineLive, unique } from "./utils.js"

const Deposited = Event.make({
  type: "ledger.account.deposited",
  aggregate: "Account",
  schema: Schema.Struct({ account: Schema.String, amount: Schema.Number }),
  aggregateId: (d) => d.account
})

const ledgerStream = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const name = unique("LEDGER")
  yield* Effect.acquireRelease(
    js.ensureStream({ name, subjects: ["ledger.>"], storage: "memory" }),
    () => Effect.promise(() => js.manager.streams.delete(name).catch(() => false))
  )
  return name
})

const deposits = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => Publisher.entry(Deposited, { account: `a-${(from + i) % 100}`, amount: from + i }))

/** A fold into balances, recording the stream sequences it saw. */
const balances = () => {
  const state = new Map<string, number>()
  const sequences: Array<number> = []
  const apply = (e: { readonly data: typeof Deposited.schema.Type }) =>
    Effect.sync(() => {
      state.set(e.data.account, (state.get(e.data.account) ?? 0) + e.data.amount)
    })
  const handler = Handler.make(Deposited, apply)
  return { state, sequences, apply, handler }
}

describe("Projection", () => {
  layer(PipelineLive, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.scoped("rebuilds over 100 000 events while new ones arrive: no gap, no double, final state = a from-scratch fold", () =>
      Effect.gen(function*() {
        const stream = yield* ledgerStream
        const publisher = yield* Publisher.Publisher
        for (let i = 0; i < 100_000; i += 10_000) yield* publisher.publishAll(deposits(i, 10_000))

        const fold = balances()
        const seen: Array<number> = []
        const projection = yield* Projection.make({
          stream,
          handlers: [Handler.make(Deposited, (e) => Effect.zipRight(Effect.sync(() => seen.push(e.data.amount)), fold.apply(e)))],
          progressEvery: 5_000
        })
        // live events arrive while the history is folded
        const writer = yield* Effect.fork(Effect.forEach([100_000, 101_000, 102_000], (i) => publisher.publishAll(deposits(i, 1_000)), { discard: true }))
        const atSwitch = yield* projection.live
        expect(atSwitch.total).toBeGreaterThanOrEqual(100_000)
        expect(atSwitch.done).toBe(atSwitch.total)
        expect(atSwitch.live).toBe(true)
        expect(atSwitch.rate).toBeGreaterThan(0)
        yield* Fiber.join(writer)
        yield* eventually(Effect.sync(() => seen.length === 103_000), "30 seconds")
        // every event once, in stream order, across the switch
        expect(seen).toEqual(Array.from({ length: 103_000 }, (_, i) => i))

        // a fresh projection over the whole stream folds to the same state
        const scratch = balances()
        const again = yield* Projection.make({ stream, handlers: [scratch.handler] })
        const whole = yield* again.live
        expect(whole.total).toBe(103_000)
        expect(scratch.state).toEqual(fold.state)
        expect((yield* projection.progress).live).toBe(true)
      }))

    it.scoped("replays from a time or a sequence; a durable consumer can start at a time too", () =>
      Effect.gen(function*() {
        const stream = yield* ledgerStream
        const publisher = yield* Publisher.Publisher
        yield* publisher.publishAll(deposits(0, 50))
        yield* Effect.sleep("50 millis")
        const since = new Date()
        yield* Effect.sleep("50 millis")
        yield* publisher.publishAll(deposits(50, 30))

        const byTime = balances()
        const p1 = yield* Projection.make({ stream, handlers: [byTime.handler], from: { startTime: since } })
        expect((yield* p1.live).total).toBe(30)
        expect([...byTime.state.values()].reduce((a, b) => a + b, 0)).toBe(Array.from({ length: 30 }, (_, i) => 50 + i).reduce((a, b) => a + b, 0))

        const bySeq = balances()
        const p2 = yield* Projection.make({ stream, handlers: [bySeq.handler], from: { startSequence: 71 } })
        expect((yield* p2.live).total).toBe(10)

        // an empty window is live at once
        const none = yield* Projection.make({ stream, handlers: [], from: "new" })
        expect(yield* none.live).toMatchObject({ done: 0, total: 0, live: true })

        // a durable consumer from a time
        const got: Array<number> = []
        const scope = yield* Scope.make()
        yield* Consumer.make({
          stream,
          durable: unique("since"),
          deliverPolicy: { startTime: since },
          handlers: [Handler.make(Deposited, (e) => Effect.sync(() => got.push(e.data.amount)))]
        }).pipe(Scope.extend(scope))
        yield* eventually(Effect.sync(() => got.length === 30))
        expect(Math.min(...got)).toBe(50)
        yield* Scope.close(scope, Exit.void)

        // provisioning at a time or a sequence is idempotent (the server rewrites the time in its own format)
        const js = yield* JetStream.JetStream
        const at = new Date(Date.UTC(2026, 0, 1, 0, 0, 0, 100))
        const spec = { stream, durable: unique("at"), deliverPolicy: { startTime: at } }
        expect((yield* js.ensureConsumer(spec))._tag).toBe("Created")
        expect((yield* js.ensureConsumer(spec))._tag).toBe("Unchanged")
        const moved = yield* Effect.flip(js.ensureConsumer({ ...spec, deliverPolicy: { startSequence: 3 } }))
        expect(moved._tag).toBe("JetStreamProvisionError")
      }))

    it.scoped("a failing handler stops the projection with a ProjectionError naming the message", () =>
      Effect.gen(function*() {
        const stream = yield* ledgerStream
        const publisher = yield* Publisher.Publisher
        yield* publisher.publishAll(deposits(0, 5))
        const projection = yield* Projection.make({
          stream,
          handlers: [Handler.make(Deposited, (e) => e.data.amount === 3 ? Effect.fail("boom") : Effect.void)]
        })
        const error = yield* Effect.flip(projection.await)
        expect(error._tag).toBe("ProjectionError")
        if (error._tag === "ProjectionError") expect(error.sequence).toBe(4)
        expect((yield* Effect.flip(projection.live))._tag).toBe("ProjectionError")
      }))
  })
})
