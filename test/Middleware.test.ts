import { describe, expect, it } from "@effect/vitest"
import { headers } from "@nats-io/nats-core"
import { Effect, FiberRef, Metric, Option, Schedule, Schema } from "effect"
import { Consumer, DeadLetter, Dedup, Envelope, Event, Handler, Metrics, Middleware } from "effect-nats"

const Job = Event.make({ type: "test.job.done", aggregate: "Job", schema: Schema.Struct({ n: Schema.Number }) })

/** What a fake message saw: its acks, naks and terms, in order. */
type Call = string

const encoder = new TextEncoder()

/** A JetStream message double recording what the pipeline does with it. */
const message = (calls: Array<Call>, body: string, deliveryCount: number, seq: number) => {
  const h = headers()
  const info = { stream: "S", consumer: "c", streamSequence: seq, deliveryCount, timestampNanos: 1_700_000_000_000_000_000 }
  return {
    data: encoder.encode(body),
    headers: h,
    subject: Job.subject,
    info,
    ack: () => void calls.push(`${seq}:ack`),
    nak: (millis?: number) => void calls.push(`${seq}:nak(${millis})`),
    term: (reason?: string) => void calls.push(`${seq}:term(${reason ?? ""})`),
    working: () => void calls.push(`${seq}:working`)
  }
}

const envelope = (id: string, n: number, type: string = Job.type) =>
  JSON.stringify({
    id,
    type,
    timestamp: "2026-01-01T00:00:00.000Z",
    correlationId: `corr-${id}`,
    aggregateId: "job-1",
    aggregateType: "Job",
    version: 0,
    data: { n }
  })

/** The messages of the scenario: body and delivery count. */
const scenario: ReadonlyArray<readonly [string, number]> = [
  [envelope("m1", 1), 1], // handled
  [envelope("m1", 1), 1], // duplicate (memory dedup)
  [envelope("m2", 1, "test.other.thing"), 1], // no handler: acked, counted
  ["{not json", 1], // dead-lettered: InvalidJson
  [JSON.stringify({ type: Job.type, data: { n: 1 } }), 1], // dead-lettered: ParseError
  [envelope("m3", 2), 1], // fails once, the in-process retry succeeds
  [envelope("m4", 3), 1], // always fails: nak with the redelivery delay
  [envelope("m5", 3), 3], // always fails, last delivery: dead-lettered
  [envelope("m6", 4), 1], // permanent: dead-lettered at once
  [envelope("m7", 5), 1], // the handler throws instead of returning an effect: a defect, retried, nak
  [envelope("m8", 6), 1], // dies: retried, nak
  [envelope("m3", 2), 1] // handled before: duplicate
]

const counters = [
  Metrics.acked,
  Metrics.retried,
  Metrics.redelivered,
  Metrics.deadLettered,
  Metrics.duplicatesSkipped,
  Metrics.unhandled
] as const

const metricCounts = Effect.forEach(counters, (m) => Effect.map(Metric.value(m), (s) => s.count))
const handledCount = Effect.map(Metric.value(Metrics.handlerDuration), (s) => s.count)

/** Run the scenario through the default pipeline built from fresh settings; everything observable, in order. */
const run = (dedup: Dedup.Dedup["Type"]) =>
  Effect.gen(function*() {
    const calls: Array<Call> = []
    const sent: Array<string> = []
    const seen: Array<string> = []
    const attempts = new Map<string, number>()
    const handler = Handler.make(Job, (e) => {
      if (e.data.n === 5) throw new Error("thrown")
      return Effect.flatMap(FiberRef.get(Envelope.current), (current): Effect.Effect<void, unknown> => {
        seen.push(`${e.id}:${Option.match(current, { onNone: () => "none", onSome: (c) => `${c.id}/${c.correlationId}` })}`)
        const attempt = (attempts.get(e.id) ?? 0) + 1
        attempts.set(e.id, attempt)
        switch (e.data.n) {
          case 2:
            return attempt === 1 ? Effect.fail(new Error("first attempt fails")) : Effect.void
          case 3:
            return Effect.fail({ _tag: "Unavailable", message: `down (${e.id})` })
          case 4:
            return Effect.fail(new Handler.PermanentError({ message: "never" }))
          case 6:
            return Effect.die("died")
          default:
            return Effect.void
        }
      })
    })
    const deadLetter = DeadLetter.DeadLetter.of({
      stream: "DLQ",
      subjectFor: (context) => `dlq.${context}`,
      send: (failure) =>
        Effect.sync(() => {
          sent.push(`${failure.sequence}:${failure.reason}:${failure.errorTag}:${failure.attempts}`)
          return 1
        }),
      list: () => Effect.dieMessage("not used"),
      get: () => Effect.dieMessage("not used"),
      replay: () => Effect.dieMessage("not used")
    })
    const settings: Middleware.Settings = {
      stream: "S",
      durable: "c",
      handlers: new Map([[Job.type, handler as Handler.Any]]),
      maxDeliver: 3,
      retry: Schedule.recurs(1),
      redelivery: Consumer.defaultRedelivery,
      isPermanent: (e) => typeof e === "object" && e !== null && "_tag" in e && e._tag === "PermanentError",
      unknownType: "ack",
      maxMessageBytes: 1024 * 1024,
      maxDepth: 128,
      ack: "fast",
      termWithReason: true,
      tracing: false,
      deadLetter,
      dedup: Option.some(dedup)
    }
    const step = Middleware.compose(Middleware.defaultPipeline(Middleware.defaults(settings)), Middleware.handle)
    const before = yield* metricCounts
    const handledBefore = yield* handledCount
    const outcomes: Array<string> = []
    let seq = 0
    for (const [body, deliveryCount] of scenario) {
      const msg = message(calls, body, deliveryCount, ++seq)
      const outcome = yield* step({
        msg: msg as never,
        subject: msg.subject
      })
      outcomes.push(`${seq}:${outcome._tag}:${outcome._tag === "DeadLetter" ? outcome.reason : outcome.reason}`)
    }
    const after = yield* metricCounts
    return {
      calls,
      sent,
      seen,
      outcomes,
      metrics: after.map((n, i) => n - before[i]!),
      handled: (yield* handledCount) - handledBefore,
      // what the fiber is handling once the step is done
      current: Option.isNone(yield* FiberRef.get(Envelope.current))
    }
  })

describe("Middleware default pipeline", () => {
  it.effect("settles each kind of message as documented", () =>
    Effect.gen(function*() {
      const result = yield* run(yield* Dedup.makeMemory())
      expect(result.outcomes).toEqual([
        "1:Ack:Handled",
        "2:Ack:Duplicate",
        "3:Ack:Unhandled",
        "4:DeadLetter:Decode",
        "5:DeadLetter:Decode",
        "6:Ack:Handled",
        expect.stringMatching(/^7:Nak:down \(m4\)$/),
        "8:DeadLetter:MaxDeliveries",
        "9:DeadLetter:Permanent",
        expect.stringMatching(/^10:Nak:Error: thrown$/),
        expect.stringMatching(/^11:Nak:died$/),
        "12:Ack:Duplicate"
      ])
      expect(result.calls).toEqual([
        "1:ack",
        "2:ack",
        "3:ack",
        expect.stringMatching(/^4:term\(Decode: invalid JSON/),
        expect.stringMatching(/^5:term\(Decode: test\.job\.done: /),
        "6:ack",
        "7:nak(1000)",
        expect.stringMatching(/^8:term\(MaxDeliveries: failed 3 deliveries/),
        "9:term(Permanent: never)",
        "10:nak(1000)",
        "11:nak(1000)",
        "12:ack"
      ])
      expect(result.sent).toEqual([
        "4:Decode:InvalidJson:1",
        "5:Decode:ParseError:1",
        "8:MaxDeliveries:Unavailable:3",
        "9:Permanent:PermanentError:1"
      ])
      // the handler runs as the handling of its message, each attempt; the fiber handles nothing afterwards
      expect(result.seen.slice(0, 3)).toEqual(["m1:m1/corr-m1", "m3:m3/corr-m3", "m3:m3/corr-m3"])
      expect(result.current).toBe(true)
      // acked, retried, redelivered, dead-lettered, duplicates, unhandled; handler durations (successes)
      expect(result.metrics).toEqual([5, 5, 3, 4, 2, 1])
      expect(result.handled).toBe(2)
    }))

  it.effect("runs the handler and the commit in the store's transaction; a failure releases the claim", () =>
    Effect.gen(function*() {
      const memory = yield* Dedup.makeMemory()
      const log: Array<string> = []
      const store = Dedup.make({
        key: memory.key,
        claim: (key) => Effect.tap(memory.claim(key), (r) => Effect.sync(() => log.push(`claim ${key}: ${r}`))),
        commit: (key) => Effect.zipRight(Effect.sync(() => log.push(`commit ${key}`)), memory.commit(key)),
        release: (key) => Effect.zipRight(Effect.sync(() => log.push(`release ${key}`)), memory.release(key)),
        transaction: (self) =>
          Effect.sync(() => log.push("begin")).pipe(
            Effect.zipRight(self),
            Effect.onExit((exit) => Effect.sync(() => log.push(exit._tag === "Success" ? "end" : "rollback")))
          )
      })
      yield* run(store)
      // m1 handled and committed inside the transaction; m3 failed once (rolled back, released), then committed
      expect(log.slice(0, 4)).toEqual(["claim m1: Claimed", "begin", "commit m1", "end"])
      expect(log).toContain("claim m1: Duplicate")
      // m3 fails once: rolled back and released, then handled and committed by the in-process retry
      const m3 = log.indexOf("claim m3: Claimed")
      expect(log.slice(m3, m3 + 8)).toEqual([
        "claim m3: Claimed",
        "begin",
        "rollback",
        "release m3",
        "claim m3: Claimed",
        "begin",
        "commit m3",
        "end"
      ])
    }))
})
