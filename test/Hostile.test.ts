/**
 * Hostile input: the cases that once silenced a service (a 200 000-level
 * request, events whose data nests 100 000+ levels), the limits, the
 * watchdog, a dead connection reader, and the fuzz suite (a small run of the
 * chaos scenario `hostile-payloads`).
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Either, Layer, Logger, LogLevel, Metric, Option, Schedule, Schema } from "effect"
import {
  Command,
  CommandClient,
  CommandService,
  Consumer,
  DeadLetter,
  Handler,
  JetStream,
  Limits,
  Metrics,
  NatsClient
} from "effect-nats"
import * as fc from "fast-check"
import * as HostilePayloads from "../chaos/scenarios/hostilePayloads.js"
import { billingStream, eventually, InvoiceIssued, unique } from "./utils.js"

const quiet = Logger.withMinimumLogLevel(LogLevel.None)
const utf8 = new TextEncoder()

const Echo = Command.make({
  service: "hostileecho",
  aggregate: "thing",
  name: "echo",
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Struct({ n: Schema.Number })
})
const echo = CommandService.handler(Echo, (p) => Effect.succeed({ n: p.n }))

const deep = (levels: number) => "[".repeat(levels) + "]".repeat(levels)

const envelopeText = (id: string, data: string) =>
  `{"id":"${id}","type":"${InvoiceIssued.type}","timestamp":"${new Date().toISOString()}","correlationId":"c",` +
  `"aggregateId":"a","aggregateType":"Invoice","version":0,"data":${data}}`

/** Publish an envelope written by hand (its `data` as JSON text) on the invoice subject. */
const publishEnvelope = (id: string, data: string) =>
  Effect.flatMap(JetStream.JetStream, (js) => Effect.promise(() => js.client.publish(InvoiceIssued.type, envelopeText(id, data))))

/** The client refuses the service's response with a `MalformedResponse` that says why. */
const refusedResponse = (client: CommandClient.CommandClient["Type"], why: string) =>
  Effect.gen(function*() {
    const error = yield* Effect.flip(client.execute(Echo, undefined, { n: 1 }))
    expect(error).toMatchObject({ _tag: "CommandTransportError", reason: "MalformedResponse" })
    expect(error.message).toContain(why)
  })

/** The dead letters of a stream, once there are `n` of them. */
const deadLetters = (dlq: DeadLetter.DeadLetter["Type"], stream: string, n: number) =>
  Effect.map(dlq.list({ context: "billing", limit: 1_000 }), (es) => es.filter((e) => e.record.stream === stream)).pipe(
    Effect.filterOrFail((es) => es.length >= n, () => new Error(`fewer than ${n} dead letters`)),
    Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 150 }),
    Effect.orDie
  )

/** The depth of a JSON value, by recursion (the reference the byte scanner must agree with). */
const depthOf = (u: unknown): number =>
  Array.isArray(u)
    ? 1 + Math.max(0, ...u.map(depthOf))
    : typeof u === "object" && u !== null
    ? 1 + Math.max(0, ...Object.values(u).map(depthOf))
    : 0

describe("Limits", () => {
  it("the byte scanner agrees with the depth of the parsed value, strings and escapes included", () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 12 }), fc.integer({ min: 1, max: 14 }), (value, maxDepth) => {
        const bytes = utf8.encode(JSON.stringify(value))
        const refused = Limits.check(bytes, { maxDepth })
        expect(Option.isSome(refused)).toBe(depthOf(value) > maxDepth)
      }),
      { numRuns: 2_000 }
    )
  })

  it("parseJson: TooDeep and TooLarge before parsing, InvalidJson after", () => {
    const refused = (s: string, limits: Limits.Shape) =>
      Either.match(Limits.parseJson(utf8.encode(s), limits), { onLeft: (e) => e.reason, onRight: () => "ok" })
    expect(refused(deep(200_000), { maxDepth: 128 })).toBe("TooDeep")
    expect(refused(deep(128), { maxDepth: 128 })).toBe("ok")
    expect(refused(deep(129), { maxDepth: 128 })).toBe("TooDeep")
    expect(refused(`"${"[".repeat(1000)}"`, { maxDepth: 2 })).toBe("ok")
    expect(refused(`{"a":"\\"[[[["}`, { maxDepth: 1 })).toBe("ok")
    expect(refused(`[1,2,3]`, { maxDepth: 8, maxBytes: 4 })).toBe("TooLarge")
    expect(refused(`{"a":`, { maxDepth: 8 })).toBe("InvalidJson")
  })
})

describe("hostile input", () => {
  const Live = DeadLetter.layer().pipe(Layer.provideMerge(NatsTestServer.layerJetStream()))
  layer(Live, { excludeTestServices: true, timeout: "30 seconds" })((it) => {
    it.scoped("a request nesting 200 000 levels gets a 400 TooDeep; the service answers the next request", () =>
      Effect.gen(function*() {
        const nats = yield* NatsClient.NatsClient
        yield* CommandService.make({ name: "hostileecho", version: "1.0.0", commands: [echo] })
        const hostile = yield* nats.request(Echo.subject, utf8.encode(deep(200_000)), { timeout: "5 seconds" })
        expect(hostile.headers?.get(CommandService.ErrorHeaders.code)).toBe("400")
        expect(hostile.json()).toMatchObject({
          success: false,
          error: { code: "400", message: "request refused: nesting deeper than 128 levels", details: { reason: "TooDeep" } }
        })
        const client = yield* CommandClient.make()
        expect(yield* client.execute(Echo, undefined, { n: 7 })).toEqual({ n: 7 })
      }))

    it.scoped("Limits.layer: a smaller maxBytes refuses larger requests (400 TooLarge) and larger replies", () =>
      Effect.gen(function*() {
        const nats = yield* NatsClient.NatsClient
        // the service reads at most 1 000 bytes, the client 32
        yield* CommandService.make({ name: "hostileecho", version: "1.0.0", commands: [echo] }).pipe(
          Effect.provide(Limits.layer({ maxBytes: 1_000 }))
        )
        const big = utf8.encode(JSON.stringify({ payload: { n: 1 }, pad: "x".repeat(2_000) }))
        const refused = yield* nats.request(Echo.subject, big, { timeout: "5 seconds" })
        expect(refused.json()).toMatchObject({ error: { code: "400", details: { reason: "TooLarge" } } })
        const client = yield* CommandClient.make().pipe(Effect.provide(Limits.layer({ maxBytes: 32 })))
        yield* refusedResponse(client, "exceeds the limit of 32")
      }))

    it.scoped("a reply nesting 100 000 levels is a MalformedResponse for the client, not a crash", () =>
      Effect.gen(function*() {
        const nats = yield* NatsClient.NatsClient
        const sub = nats.connection.subscribe(Echo.subject, {
          callback: (_err, msg) => {
            msg.respond(utf8.encode(`{"success":true,"result":${deep(100_000)}}`))
          }
        })
        yield* Effect.addFinalizer(() => Effect.sync(() => sub.unsubscribe()))
        const client = yield* CommandClient.make()
        yield* refusedResponse(client, "nesting deeper than 128 levels")
      }))

    it.scoped("events whose data nests 100 000-200 000 levels are dead-lettered TooDeep at once; nothing stays ack-pending", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const dlq = yield* DeadLetter.DeadLetter
        const stream = yield* billingStream
        const durable = unique("deep")
        let handled = 0
        yield* Consumer.make({
          stream,
          durable,
          handlers: [Handler.make(InvoiceIssued, () => Effect.sync(() => void handled++))],
          ackWait: "5 seconds"
        }).pipe(quiet)
        for (const [i, levels] of [100_000, 150_000, 200_000].entries()) {
          yield* publishEnvelope(`deep-${i}`, deep(levels))
        }
        yield* publishEnvelope("deep-in-field", `{"invoiceId":"i","amount":1,"x":${deep(150_000)}}`)
        yield* publishEnvelope("fine", `{"invoiceId":"i","amount":1}`)
        yield* eventually(Effect.sync(() => handled === 1))
        const info = () => Effect.promise(() => js.manager.consumers.info(stream, durable))
        yield* eventually(Effect.map(info(), (c) => c.num_ack_pending === 0 && c.num_pending === 0), "5 seconds")
        const mine = (yield* dlq.list({ context: "billing", limit: 1_000 })).filter((e) => e.record.stream === stream)
        expect(mine.map((e) => [e.record.reason, e.record.errorTag, e.record.attempts])).toEqual(
          Array.from({ length: 4 }, () => ["TooDeep", "TooDeep", 1])
        )
        expect(mine[0]!.record.errorMessage).toBe("payload refused: nesting deeper than 128 levels")
        // the record keeps the bytes (replayable), not a decoded envelope
        expect(mine[0]!.record.envelope).toBeUndefined()
        expect(Buffer.from(mine[0]!.record.payload, "base64").length).toBeGreaterThan(200_000)
      }))

    it.scoped("watchdog: a handler that never resumes is nak'ed, then dead-lettered (Timeout); its worker is replaced", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const dlq = yield* DeadLetter.DeadLetter
        const stream = yield* billingStream
        const durable = unique("stuck")
        const timeoutsBefore = (yield* Metric.value(Metrics.handlerTimeouts)).count
        const handled: Array<string> = []
        yield* Consumer.make({
          stream,
          durable,
          concurrency: 1,
          maxDeliver: 2,
          ackWait: "3 seconds",
          handlerTimeout: "1 second",
          redelivery: Schedule.spaced("100 millis"),
          handlers: [
            Handler.make(InvoiceIssued, (e) =>
              e.data.invoiceId === "stuck"
                // never resumes, and cannot even be interrupted
                ? Effect.uninterruptible(Effect.never)
                : Effect.sync(() => void handled.push(e.data.invoiceId)))
          ]
        }).pipe(quiet)
        yield* publishEnvelope("stuck-1", `{"invoiceId":"stuck","amount":1}`)
        yield* publishEnvelope("after-1", `{"invoiceId":"after","amount":1}`)
        // first delivery: the watchdog naks it and replaces the only worker; second: dead-lettered, reason Timeout
        yield* eventually(Effect.sync(() => handled.includes("after")), "15 seconds")
        const mine = yield* deadLetters(dlq, stream, 1)
        expect(mine.map((e) => [e.record.reason, e.record.errorTag, e.record.attempts])).toEqual([["Timeout", "HandlerTimeout", 2]])
        expect((yield* Metric.value(Metrics.handlerTimeouts)).count - timeoutsBefore).toBe(2)
        // nothing is kept alive by the stuck fibers
        const info = yield* Effect.promise(() => js.manager.consumers.info(stream, durable))
        expect(info.num_ack_pending).toBe(0)
      }), { timeout: 40_000 })

    it.scoped("a pipeline that throws while building its effect: the worker survives, the message is dead-lettered", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetter.DeadLetter
        const stream = yield* billingStream
        const durable = unique("throws")
        const handled: Array<string> = []
        yield* Consumer.make({
          stream,
          durable,
          concurrency: 1,
          maxDeliver: 2,
          redelivery: Schedule.spaced("100 millis"),
          handlers: [Handler.make(InvoiceIssued, (e) => Effect.sync(() => void handled.push(e.data.invoiceId)))],
          pipeline: (m) => [
            m.settle,
            (next) => (d) => {
              if (d.msg.data.includes(0x21)) throw new Error("a bug in a middleware")
              return next(d)
            },
            m.decode,
            m.retry,
            m.dedup
          ]
        }).pipe(quiet)
        yield* publishEnvelope("bang", `{"invoiceId":"!","amount":1}`)
        yield* publishEnvelope("ok", `{"invoiceId":"ok","amount":1}`)
        yield* eventually(Effect.sync(() => handled.includes("ok")))
        const mine = yield* deadLetters(dlq, stream, 1)
        expect(mine[0]!.record).toMatchObject({ reason: "MaxDeliveries", errorTag: "PipelineDefect", attempts: 2 })
        expect(mine[0]!.record.errorMessage).toContain("a bug in a middleware")
      }))
  })

  layer(NatsTestServer.layerJetStream({}, { pingInterval: "300 millis", maxPingOut: 2 }), { excludeTestServices: true })(
    (it) => {
      it.scoped("a reader ended by someone else's throwing callback: the stale connection is noticed and the service answers again", () =>
        Effect.gen(function*() {
          const nats = yield* NatsClient.NatsClient
          yield* CommandService.make({ name: "hostileecho", version: "1.0.0", commands: [echo] })
          const client = yield* CommandClient.make({ timeout: "1 second" })
          expect(yield* client.execute(Echo, undefined, { n: 1 })).toEqual({ n: 1 })
          // user code on the raw connection throws in its callback: nats.js's reader ends
          const sub = nats.connection.subscribe("hostile.bomb", {
            callback: () => {
              throw new RangeError("Maximum call stack size exceeded (simulated)")
            }
          })
          yield* Effect.addFinalizer(() => Effect.sync(() => sub.unsubscribe()))
          yield* nats.publish("hostile.bomb", new Uint8Array(0))
          // deaf for a moment, then the missing PONGs make nats.js reconnect and subscribe again
          const answered = yield* client.execute(Echo, undefined, { n: 2 }).pipe(
            Effect.retry({ schedule: Schedule.spaced("200 millis"), times: 40 }),
            Effect.timeout("15 seconds")
          )
          expect(answered).toEqual({ n: 2 })
        }).pipe(quiet), { timeout: 30_000 })
    }
  )

  it.live("fuzz: every request answered, every message settled, no defect, no pollution", () =>
    Effect.gen(function*() {
      const r = yield* HostilePayloads.run({ inputs: 300 }).pipe(quiet)
      expect(r.failures).toEqual([])
      expect(r.figures["stuck"]).toBe(0)
      expect(r.figures["servicesSilenced"]).toBe(0)
      expect(r.figures["answered"]).toBe(300)
      expect(r.figures["clientDefects"]).toBe(0)
      expect(r.figures["dlqDefects"]).toBe(0)
    }), 120_000)
})
