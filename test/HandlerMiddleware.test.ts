/**
 * The handler middleware library (`Handler.timeout`, `circuitBreaker`,
 * `rateLimit`, `filter`, `route`, `recoverDefects`, `poison`, `instantAck`,
 * `withConcurrency`) and the per-handler policies, each case on both
 * transports: the in-memory one on TestClock, and a real nats-server on the
 * live clock.
 */
import { describe, expect, expectTypeOf, it, layer } from "@effect/vitest"
import { Capture, InMemoryNats, NatsTestServer } from "@effect-nats/testing"
import {
  Clock,
  Context,
  Data,
  Duration,
  Effect,
  Layer,
  Match,
  Metric,
  Predicate,
  RateLimiter,
  Ref,
  Schedule,
  Schema,
  type Scope,
  TestClock
} from "effect"
import { Consumer, DeadLetter, Event, Handler, JetStream, Metrics, type NatsClient, Publisher } from "effect-nats"

const live = Clock.make()
const sleepLive = (d: Duration.DurationInput) => Effect.sleep(d).pipe(Effect.withClock(live))

/** Wait until `check` holds, polling on the live clock (dies after 10 s). */
const eventually = <E, R>(check: Effect.Effect<boolean, E, R>) =>
  check.pipe(
    Effect.filterOrFail((ok) => ok, () => new Error("condition not met in time")),
    Effect.retry(Schedule.spaced("10 millis")),
    Effect.timeout("10 seconds"),
    Effect.withClock(live),
    Effect.orDie,
    Effect.asVoid
  )

type Services = NatsClient.NatsClient | JetStream.JetStream | Publisher.Publisher | DeadLetter.DeadLetter | Capture.Capture

/** How a transport lets time pass. */
interface Transport {
  readonly name: string
  /** Let `d` pass for the server and the handlers: TestClock in steps in memory, a real sleep on a server. */
  readonly advance: (d: Duration.DurationInput) => Effect.Effect<void>
}

const Job = Schema.Struct({ id: Schema.String, n: Schema.Number })

let counter = 0
const unique = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter++}`

/** A stream for the scope (deleted afterwards) and an event on it. */
const setup = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const name = unique("MW")
  const prefix = name.toLowerCase()
  yield* Effect.acquireRelease(
    js.ensureStream({ name, subjects: [`${prefix}.>`], storage: "memory" }),
    () => Effect.promise(() => js.manager.streams.delete(name).catch(() => false))
  )
  const Done = Event.make({ type: `${prefix}.job.done`, aggregate: "Job", schema: Job, aggregateId: (d) => d.id })
  const publisher = yield* Publisher.Publisher
  const publish = (id: string, n = 0, tenantId?: string) => publisher.publish(Done, { id, n }, { tenantId })
  return { name, prefix, Done, publish, js, capture: yield* Capture.Capture }
})

/** Everything settled: nothing pending, nothing waiting for an ack. */
const drained = (name: string, durable: string) =>
  eventually(Effect.map(
    Effect.flatMap(JetStream.JetStream, (js) => Effect.orDie(js.consumerInfo(name, durable))),
    (info) => info.num_pending === 0 && info.num_ack_pending === 0
  ))

class GatewayDown extends Data.TaggedError("GatewayDown")<{ readonly message: string }> {}
class InvalidCard extends Data.TaggedError("InvalidCard")<{ readonly message: string }> {}
class Limit extends Context.Tag("test/Limit")<Limit, RateLimiter.RateLimiter>() {}

const gauge = (breaker: string) =>
  Effect.map(Metric.value(Metric.tagged(Metrics.circuitState, Metrics.MetricAttributes.breaker, breaker)), (s) => s.value)

const cases = (t: Transport, test: (name: string, body: () => Effect.Effect<void, unknown, Services | Scope.Scope>) => void) => {
  test("timeout: a typed failure on the retry path, with the handler's own retry and redelivery", () =>
    Effect.gen(function*() {
      const { Done, capture, name, publish } = yield* setup
      const attempts = yield* Ref.make(0)
      yield* Consumer.make({
        stream: name,
        durable: "slow",
        maxDeliver: 2,
        // the consumer's default retries twice: the handler's own policy retries once
        handlers: [
          Handler.make(Done, () => Effect.zipRight(Ref.update(attempts, (n) => n + 1), Effect.never)).pipe(
            Handler.timeout("300 millis"),
            Handler.retry(Schedule.recurs(1)),
            Handler.redelivery(Schedule.spaced("200 millis"))
          )
        ]
      })
      yield* publish("j1")
      yield* t.advance("2 seconds")
      const dead = yield* capture.awaitDeadLetter({ subject: Done.subject, reason: "MaxDeliveries" })
      expect(dead).toMatchObject({ errorTag: "HandlerTimeout", attempts: 2 })
      expect(dead.errorMessage).toContain("timed out after 300ms")
      // 2 deliveries x (1 try + 1 retry)
      expect(yield* Ref.get(attempts)).toBe(4)
    }))

  test("circuit breaker: opens after N failures, naks while open, a probe closes it", () =>
    Effect.gen(function*() {
      const { Done, name, publish } = yield* setup
      const breaker = unique("gateway")
      const down = yield* Ref.make(true)
      const calls = yield* Ref.make(0)
      const handled = yield* Ref.make(0)
      const charge = Effect.zipRight(
        Ref.update(calls, (n) => n + 1),
        Effect.flatMap(Ref.get(down), (isDown) =>
          isDown ? Effect.fail(new GatewayDown({ message: "gateway down" })) : Ref.update(handled, (n) => n + 1))
      )
      yield* Consumer.make({
        stream: name,
        durable: "guarded",
        concurrency: 1,
        maxDeliver: 10,
        retry: Schedule.stop,
        redelivery: Schedule.spaced("100 millis"),
        handlers: [
          Handler.make(Done, () => charge).pipe(
            Handler.circuitBreaker({ name: breaker, maxFailures: 2, window: "10 seconds", resetAfter: "1 second" })
          )
        ]
      })
      yield* publish("j1")
      yield* publish("j2")
      yield* publish("j3")
      // two failures open the circuit; the third message is not tried
      yield* eventually(Effect.map(gauge(breaker), (state) => state === 2))
      yield* t.advance("400 millis")
      expect(yield* Ref.get(calls)).toBe(2)
      expect(yield* gauge(breaker)).toBe(2)
      // the gateway is back: after resetAfter, a probe closes the circuit and every message is handled once
      yield* Ref.set(down, false)
      yield* t.advance("2 seconds")
      yield* eventually(Effect.map(Ref.get(handled), (n) => n === 3))
      expect(yield* Ref.get(calls)).toBe(5)
      expect(yield* gauge(breaker)).toBe(0)
      yield* drained(name, "guarded")
    }))

  test("rate limit: a RateLimiter service (in the handler's R) paces the attempts", () =>
    Effect.gen(function*() {
      const { Done, name, publish } = yield* setup
      const handled = yield* Ref.make(0)
      const started = yield* Clock.currentTimeMillis
      // 2 per window of 500 ms, the first window from the first attempt
      const limiter = yield* RateLimiter.make({ limit: 2, interval: "500 millis", algorithm: "fixed-window" })
      const handler = Handler.make(Done, () => Ref.update(handled, (n) => n + 1)).pipe(Handler.rateLimit(Limit))
      expectTypeOf(handler).toEqualTypeOf<Handler.Handler<never, Limit>>()
      yield* Consumer.make({ stream: name, durable: "paced", handlers: [handler] }).pipe(Effect.provideService(Limit, limiter))
      yield* Effect.forEach(["j1", "j2", "j3", "j4", "j5"], (id) => publish(id))
      yield* eventually(Effect.map(Ref.get(handled), (n) => n === 2))
      yield* t.advance("500 millis")
      yield* eventually(Effect.map(Ref.get(handled), (n) => n >= 4))
      yield* t.advance("500 millis")
      yield* eventually(Effect.map(Ref.get(handled), (n) => n === 5))
      // 5 attempts at 2 per window need 3 windows
      expect((yield* Clock.currentTimeMillis) - started).toBeGreaterThanOrEqual(1000)
    }))

  test("filter and route by tenant: by envelope field and by header; what no one takes is acked", () =>
    Effect.gen(function*() {
      const { Done, name, publish } = yield* setup
      const seen = yield* Ref.make<ReadonlyArray<string>>([])
      const record = (by: string) => (e: { readonly data: { readonly id: string } }) =>
        Ref.update(seen, (s) => [...s, `${by}:${e.data.id}`])
      yield* Consumer.make({
        stream: name,
        durable: "routed",
        handlers: [
          Handler.route((envelope) => envelope.tenantId, {
            acme: Handler.make(Done, record("acme")),
            globex: Handler.make(Done, record("globex"))
          })
        ]
      })
      yield* Consumer.make({
        stream: name,
        durable: "filtered",
        handlers: [
          Handler.make(Done, record("header")).pipe(Handler.filter((_, d) => d.msg.headers?.get("Tenant-Id") === "acme"))
        ]
      })
      yield* publish("j1", 0, "acme")
      yield* publish("j2", 0, "globex")
      yield* publish("j3", 0, "initech")
      yield* publish("j4")
      yield* t.advance("100 millis")
      yield* drained(name, "routed")
      yield* drained(name, "filtered")
      expect([...(yield* Ref.get(seen))].sort()).toEqual(["acme:j1", "globex:j2", "header:j1"])
    }))

  test("recover defects into a typed failure, mapped by onError to a dead letter", () =>
    Effect.gen(function*() {
      const { Done, capture, name, publish } = yield* setup
      const attempts = yield* Ref.make(0)
      const handler = Handler.make(Done, () =>
        Effect.zipRight(Ref.update(attempts, (n) => n + 1), Effect.sync(() => JSON.parse("{oops") as unknown))).pipe(
          Handler.recoverDefects(),
          Handler.onError((e) => e._tag === "HandlerDefect" ? Handler.Disposition.deadLetter : undefined)
        )
      expectTypeOf(handler).toEqualTypeOf<Handler.Handler<Handler.HandlerDefect, never>>()
      yield* Consumer.make({ stream: name, durable: "strict", handlers: [handler] })
      yield* publish("j1")
      yield* t.advance("100 millis")
      const dead = yield* capture.awaitDeadLetter({ subject: Done.subject, reason: "Permanent" })
      expect(dead).toMatchObject({ errorTag: "HandlerDefect", attempts: 1 })
      expect(dead.errorMessage).toContain("SyntaxError")
      expect(yield* Ref.get(attempts)).toBe(1)
    }))

  test("poison: matching failures are dead-lettered at once, others retried", () =>
    Effect.gen(function*() {
      const { Done, capture, name, publish } = yield* setup
      const attempts = yield* Ref.make(0)
      yield* Consumer.make({
        stream: name,
        durable: "poisoned",
        retry: Schedule.recurs(2),
        handlers: [
          Handler.make(Done, (e) =>
            Effect.zipRight(
              Ref.update(attempts, (n) => n + 1),
              Effect.fail<InvalidCard | GatewayDown>(
                e.data.n === 1 ? new InvalidCard({ message: "card expired" }) : new GatewayDown({ message: "down" })
              )
            )).pipe(Handler.poison(Predicate.isTagged("InvalidCard")))
        ]
      })
      yield* publish("j1", 1)
      yield* t.advance("100 millis")
      const dead = yield* capture.awaitDeadLetter({ subject: Done.subject, reason: "Permanent" })
      expect(dead).toMatchObject({ errorTag: "InvalidCard", attempts: 1 })
      expect(yield* Ref.get(attempts)).toBe(1)
      yield* publish("j2", 2)
      // 1 try + 2 in-process retries, then nak
      yield* eventually(Effect.map(Ref.get(attempts), (n) => n === 4))
    }))

  test("onError: an error mapped to ack is acked at once, not retried, counted as skipped", () =>
    Effect.gen(function*() {
      const { Done, capture, name, publish } = yield* setup
      const attempts = yield* Ref.make(0)
      yield* Consumer.make({
        stream: name,
        durable: "acked",
        retry: Schedule.recurs(2),
        handlers: [
          Handler.make(Done, () =>
            Effect.zipRight(Ref.update(attempts, (n) => n + 1), Effect.fail(new InvalidCard({ message: "stale" })))).pipe(
              Handler.onError((e) => e._tag === "InvalidCard" ? Handler.Disposition.ack : undefined)
            )
        ]
      })
      yield* publish("j1")
      yield* t.advance("100 millis")
      yield* drained(name, "acked")
      expect(yield* Ref.get(attempts)).toBe(1)
      expect(yield* capture.counter(Metrics.unhandled)).toBe(1)
    }))

  test("instant ack: acked before handling, a failure is not retried (at-most-once)", () =>
    Effect.gen(function*() {
      const { Done, capture, name, publish } = yield* setup
      const attempts = yield* Ref.make(0)
      yield* Consumer.make({
        stream: name,
        durable: "fireforget",
        maxDeliver: 2,
        redelivery: Schedule.spaced("100 millis"),
        handlers: [
          Handler.make(Done, () =>
            Effect.zipRight(Ref.update(attempts, (n) => n + 1), Effect.fail(new GatewayDown({ message: "down" })))).pipe(
              Handler.instantAck
            )
        ]
      })
      yield* publish("j1")
      yield* t.advance("1 second")
      yield* drained(name, "fireforget")
      expect(yield* Ref.get(attempts)).toBe(1)
      expect(yield* capture.deadLetters({ subject: Done.subject })).toEqual([])
    }))

  test("withConcurrency: at most n attempts of the handler at once", () =>
    Effect.gen(function*() {
      const { Done, name, publish } = yield* setup
      const running = yield* Ref.make(0)
      const most = yield* Ref.make(0)
      const handled = yield* Ref.make(0)
      yield* Consumer.make({
        stream: name,
        durable: "narrow",
        concurrency: 8,
        handlers: [
          Handler.make(Done, () =>
            Ref.updateAndGet(running, (n) => n + 1).pipe(
              Effect.flatMap((n) => Ref.update(most, (m) => Math.max(m, n))),
              Effect.zipRight(Effect.sleep("200 millis")),
              Effect.zipRight(Ref.update(running, (n) => n - 1)),
              Effect.zipRight(Ref.update(handled, (n) => n + 1))
            )).pipe(Handler.withConcurrency(2))
        ]
      })
      yield* Effect.forEach(["j1", "j2", "j3", "j4", "j5", "j6"], (id) => publish(id))
      yield* t.advance("1 second")
      yield* eventually(Effect.map(Ref.get(handled), (n) => n === 6))
      expect(yield* Ref.get(most)).toBe(2)
    }))
}

const services = Layer.mergeAll(DeadLetter.layer(), Publisher.layer())

describe("handler middleware: in memory", () => {
  const MemoryLive = services.pipe(Layer.provideMerge(InMemoryNats.layer()))
  cases(
    {
      name: "in memory",
      // in steps, letting the handlers and the server's timers run between them
      advance: (d) =>
        Effect.forEach(
          Array.from({ length: 20 }),
          () => Effect.zipRight(TestClock.adjust(Duration.toMillis(d) / 20), sleepLive("2 millis")),
          { discard: true }
        )
    },
    (name, body) => it.scoped(name, () => body().pipe(Effect.provide(MemoryLive)))
  )
})

describe("handler middleware: nats-server", () => {
  const ServerLive = Layer.mergeAll(services, Capture.layer()).pipe(Layer.provideMerge(NatsTestServer.layerJetStream()))
  layer(ServerLive, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    cases({ name: "nats-server", advance: (d) => Effect.sleep(d) }, (name, body) => it.scoped(name, body, 30_000))
  })
})

describe("handler middleware: types", () => {
  it("a middleware's error and service show in the handler's type", () => {
    const Done = Event.make({ type: "types.job.done", aggregate: "Job", schema: Job })
    const base = Handler.make(Done, () => Effect.fail(new GatewayDown({ message: "down" })))
    const composed = base.pipe(
      Handler.timeout("5 seconds"),
      Handler.circuitBreaker({ name: "types", maxFailures: 5, window: "10 seconds", resetAfter: "30 seconds" }),
      Handler.rateLimit(Limit),
      Handler.withConcurrency(4)
    )
    expectTypeOf(composed).toEqualTypeOf<Handler.Handler<GatewayDown | Handler.HandlerTimeout | Handler.CircuitOpen, Limit>>()
    expectTypeOf(base.pipe(Handler.instantAck)).toEqualTypeOf<Handler.Handler<never, never>>()
    // a route's errors and services are those of its routes
    const routed = Handler.route((e) => e.tenantId, { acme: base, globex: base.pipe(Handler.rateLimit(Limit)) })
    expectTypeOf(routed).toEqualTypeOf<Handler.Handler<GatewayDown, Limit>>()
    // onError with Match.valueTags is exhaustive over the handler's errors
    composed.pipe(Handler.onError(Match.valueTags({
      GatewayDown: () => Handler.Disposition.retry,
      HandlerTimeout: () => Handler.Disposition.nak("1 second"),
      CircuitOpen: () => undefined
    })))
    // @ts-expect-error CircuitOpen is not mapped
    composed.pipe(Handler.onError(Match.valueTags({
      GatewayDown: () => Handler.Disposition.retry,
      HandlerTimeout: () => Handler.Disposition.nak("1 second")
    })))
    expect(composed.type).toBe("types.job.done")
  })
})
