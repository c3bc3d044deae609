/**
 * Scenario 3 — nats-server restarts.
 *
 * A publisher and a consumer (this process) run against a nats-server whose
 * JetStream store is a directory on disk. While messages are published at a
 * steady rate and consumed, the server is restarted on the same store dir:
 * once gracefully (SIGTERM), once by SIGKILL. The connection is never
 * re-created by hand: nats.js reconnects, the publisher's retry Schedule
 * covers the outage (a timed-out publish is retried with the same msgID), the
 * pull consumer resumes.
 *
 * Guarantee shown: every publish that returned a PubAck is consumed; with a
 * Dedup layer no message is handled twice (redeliveries of messages whose ack
 * was lost in the outage are skipped).
 */
import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Fiber, Layer, Metric, Schedule, Stream } from "effect"
import { Consumer, DeadLetter, Dedup, Handler, JetStream, Metrics, NatsClient, Publisher } from "effect-nats"
import { OrderPlaced } from "../lib/events.js"
import { natsLayer, Report, type Result, since, spread, waitUntil } from "../lib/harness.js"

export interface Options {
  readonly messages: number
  /** Published per second (the outages must fall while publishing). */
  readonly rate: number
  /** Outages: "restart" = SIGTERM + start, "kill" = SIGKILL + start. */
  readonly outages: ReadonlyArray<"restart" | "kill">
  /** Time the server stays down (ms). */
  readonly downMs?: number
}

export const name = "server-restart"

/** The publisher's retry: exponential from 100 ms, capped at 1 s, for up to 30 s (covers an outage of seconds). */
export const outageRetry = Schedule.exponential("100 millis").pipe(
  Schedule.either(Schedule.spaced("1 second")),
  Schedule.upTo("30 seconds")
)

/** Run the scenario (its clock starts when it runs). */
export const run = (options: Options): Effect.Effect<Result> => Effect.suspend(() => runNow(options))

const runNow = (options: Options): Effect.Effect<Result> => {
  const report = new Report(name)
  return Effect.gen(function*() {
    const server = yield* NatsTestServer.NatsTestServer
    const nats = yield* NatsClient.NatsClient
    const js = yield* JetStream.JetStream
    const stream = "CHAOS_RESTART"
    const durable = "restart-orders"
    yield* js.ensureStream({ name: stream, subjects: ["chaos.order.>"], storage: "file" })
    report.set("server", `${yield* server.serverVersion}, file store ${server.storeDir === "" ? "(container)" : "on disk"}`)

    // connection events, counted
    const events: Record<string, number> = {}
    yield* nats.status.pipe(
      Stream.runForEach((s) => Effect.sync(() => void (events[s.type] = (events[s.type] ?? 0) + 1))),
      Effect.forkScoped
    )

    // the consumer: memory dedup, short ack wait (unacked messages of the outage come back soon)
    const handled = new Map<string, number>()
    const dupBefore = (yield* Metric.value(Metrics.duplicatesSkipped)).count
    yield* Consumer.make({
      stream,
      durable,
      ackWait: "3 seconds",
      handlers: [Handler.make(OrderPlaced, (e) => Effect.sync(() => void handled.set(e.id, (handled.get(e.id) ?? 0) + 1)))]
    }).pipe(Effect.provide(Layer.mergeAll(Dedup.layerMemory(), DeadLetter.layer())))

    // the publisher: steady rate, a few in flight, retried through the outage
    const publisher = yield* Publisher.make({ retry: outageRetry, window: 16, timeout: "2 seconds" })
    const acked = new Set<string>()
    const latencies: Array<number> = []
    const failures: Array<string> = []
    const interval = 1000 / options.rate
    const started = performance.now()
    const publishing = yield* Effect.forEach(
      Array.from({ length: options.messages }, (_, n) => n),
      (n) =>
        Effect.gen(function*() {
          const due = started + n * interval - performance.now()
          if (due > 1) yield* Effect.sleep(due)
          const t0 = performance.now()
          yield* publisher.publish(OrderPlaced, { orderId: `order-${n % 101}`, n }).pipe(
            Effect.match({
              onFailure: (e) => void failures.push(e.message),
              onSuccess: (ack) => {
                acked.add(ack.id)
                latencies.push(performance.now() - t0)
              }
            })
          )
        }),
      { concurrency: 16, discard: true }
    ).pipe(Effect.fork)

    // the outages, spread over the publishing time
    const total = (options.messages / options.rate) * 1000
    const downMs = options.downMs ?? 1500
    const outages: Array<{ how: string; downMs: number; reconnectMs: number; resumeMs: number; consumedBefore: number }> = []
    for (let i = 0; i < options.outages.length; i++) {
      const at = started + ((i + 1) / (options.outages.length + 1)) * total
      const wait = at - performance.now()
      if (wait > 0) yield* Effect.sleep(wait)
      const how = options.outages[i]!
      const consumedBefore = handled.size
      const reconnectsBefore = events["reconnect"] ?? 0
      const t0 = performance.now()
      yield* how === "kill" ? server.kill : server.stop
      yield* Effect.sleep(downMs)
      yield* server.start
      const downFor = since(t0)
      // the connection comes back by itself, then the consumer goes on
      const reconnected = yield* waitUntil(Effect.sync(() => (events["reconnect"] ?? 0) > reconnectsBefore), "30 seconds")
      report.check(reconnected, `the connection did not come back after outage ${i + 1}`)
      const reconnectMs = since(t0) - downFor
      const consumedAtReconnect = handled.size
      const resumed = yield* waitUntil(Effect.sync(() => handled.size > consumedAtReconnect), "30 seconds")
      report.check(resumed, `the consumer did not resume after outage ${i + 1}`)
      outages.push({ how, downMs: downFor, reconnectMs, resumeMs: since(t0) - downFor, consumedBefore })
      report.log(`${how === "kill" ? "SIGKILL" : "SIGTERM"} + start: down ${downFor} ms, reconnected ${reconnectMs} ms later`)
    }
    yield* Fiber.join(publishing)
    report.sent = acked.size
    report.check(failures.length === 0, `${failures.length} publishes failed after the retries: ${failures.slice(0, 3).join("; ")}`)

    const all = yield* waitUntil(
      Effect.sync(() => [...acked].every((id) => handled.has(id))),
      "60 seconds",
      "200 millis"
    )
    report.check(all, "some acknowledged messages were not consumed within 60 s")
    const info = yield* js.streamInfo(stream)
    report.effects = [...handled.values()].reduce((a, b) => a + b, 0)
    report.lost = [...acked].filter((id) => !handled.has(id)).length
    report.duplicateEffects = [...handled.values()].filter((c) => c > 1).length
    report.set("publishFailures", failures.length)
    report.set("outages", outages.map((o) => `${o.how}: down ${o.downMs} ms, reconnected +${o.reconnectMs} ms, consuming +${o.resumeMs} ms`))
    report.set("publishLatencyMs", spread(latencies))
    report.set("publishesWaitingThroughOutage", latencies.filter((l) => l > downMs / 2).length)
    report.set("storedOnStream", info.state.messages)
    report.set("redeliveriesSkippedByDedup", (yield* Metric.value(Metrics.duplicatesSkipped)).count - dupBefore)
    report.set("connectionEvents", events)
    report.check((events["reconnect"] ?? 0) >= options.outages.length, `reconnects seen: ${events["reconnect"] ?? 0}`)
  }).pipe(
    // the scope (children, consumers, clients) closes before the server goes away
    Effect.scoped,
    Effect.provide(natsLayer({}, { reconnectTimeWait: "250 millis", reconnectJitter: "50 millis" })),
    Effect.catchAllCause((cause) => Effect.sync(() => void report.check(false, `scenario crashed: ${cause}`))),
    Effect.map(() => report.result())
  )
}
