import { describe, expect, layer } from "@effect/vitest"
import { NatsTestServer } from "@effect-nats/testing"
import type { Msg } from "@nats-io/nats-core"
import { Cause, DateTime, Effect, Exit, Fiber, FiberRef, Layer, Logger, Option, Ref, Schedule, Schema, Scope, Tracer } from "effect"
import { Envelope, JetStream, NatsClient, Publisher } from "effect-nats"
import * as Command from "../src/Command.js"
import * as CommandClient from "../src/CommandClient.js"
import * as CommandService from "../src/CommandService.js"
import { billingStream, eventually, InvoiceIssued, unique } from "./utils.js"

// --- definitions -------------------------------------------------------------

class InvoiceNotFound extends Schema.TaggedError<InvoiceNotFound>()("InvoiceNotFound", { invoiceId: Schema.String }) {
  readonly code = "404"
}

class AmountTooLarge extends Schema.TaggedError<AmountTooLarge>()("AmountTooLarge", {
  max: Schema.Number,
  message: Schema.String
}) {
  readonly code = "AMOUNT_TOO_LARGE"
}

const IssueInvoice = Command.make({
  service: "billing",
  aggregate: "invoice",
  name: "issue",
  payload: Schema.Struct({ amount: Schema.Number, currency: Schema.String }),
  success: Schema.Struct({ invoiceId: Schema.String, total: Schema.Number }),
  failure: Schema.Union(InvoiceNotFound, AmountTooLarge)
})

/** An older client's idea of the same command: its payload no longer matches. */
const IssueInvoiceV0 = Command.make({
  service: "billing",
  aggregate: "invoice",
  name: "issue",
  payload: Schema.Struct({ amount: Schema.String }),
  success: Schema.Struct({ invoiceId: Schema.String, total: Schema.Number }),
  failure: Schema.Union(InvoiceNotFound, AmountTooLarge)
})

const Whoami = Command.query({
  service: "billing",
  aggregate: "session",
  name: "whoami",
  success: Schema.Struct({
    requestId: Schema.String,
    correlationId: Schema.String,
    causationId: Schema.optional(Schema.String),
    userId: Schema.optional(Schema.String),
    aggregateId: Schema.optional(Schema.String),
    timestamp: Schema.String,
    causation: Schema.Struct({ id: Schema.String, correlationId: Schema.String }),
    subject: Schema.String
  })
})

const Nobody = Command.make({
  service: "nobody",
  aggregate: "thing",
  name: "poke",
  payload: Schema.Struct({}),
  success: Schema.Struct({})
})

const issue = CommandService.handler(IssueInvoice, (payload, request) =>
  Effect.gen(function*() {
    const invoiceId = request.aggregateId ?? "new"
    if (invoiceId === "missing") return yield* new InvoiceNotFound({ invoiceId })
    if (invoiceId === "crash") return yield* Effect.die(new Error("secret: db password is hunter2"))
    if (invoiceId.startsWith("slow")) yield* Effect.sleep("300 millis")
    if (payload.amount > 1000) return yield* new AmountTooLarge({ max: 1000, message: `amount ${payload.amount} exceeds 1000` })
    return { invoiceId, total: payload.amount }
  }))

const whoami = CommandService.handler(Whoami, (_, request) =>
  Effect.gen(function*() {
    const context = yield* CommandService.RequestContext
    const causation = yield* FiberRef.get(Envelope.current)
    return {
      requestId: context.id,
      correlationId: context.correlationId,
      causationId: context.causationId,
      userId: context.userId,
      aggregateId: request.aggregateId,
      timestamp: DateTime.formatIso(context.timestamp),
      causation: Option.getOrThrow(causation),
      subject: context.subject
    }
  }))

// --- helpers -----------------------------------------------------------------

const enc = new TextEncoder()

/** A raw request, as a non-TypeScript client would send it. */
const raw = (subject: string, body: string) =>
  Effect.flatMap(NatsClient.NatsClient, (nats) => nats.request(subject, enc.encode(body), { timeout: "2 seconds" }))

const errorHeaders = (msg: Msg) => ({
  code: msg.headers?.get(CommandService.ErrorHeaders.code),
  message: msg.headers?.get(CommandService.ErrorHeaders.message)
})

/** Start a service in its own scope, so a test can stop it. */
const startService = <const H extends ReadonlyArray<CommandService.AnyHandler>>(options: CommandService.Options<H>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const instance = yield* CommandService.make(options).pipe(Scope.extend(scope))
    return { scope, instance }
  })

/** A tracer that records the spans it creates (wrapping the current one). */
const capturingTracer = Effect.gen(function*() {
  const native = yield* Effect.tracer
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = native.span(name, parent, context, links, startTime, kind, options)
      spans.push(span)
      return span
    },
    context: (f, fiber) => native.context(f, fiber)
  })
  return { tracer, spans }
})

const Live = Layer.mergeAll(CommandClient.layer({ timeout: "3 seconds" }), Publisher.layer({ source: "billing" })).pipe(
  Layer.provideMerge(NatsTestServer.layerJetStream())
)

describe("CommandService + CommandClient", () => {
  layer(Live, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("typed success; request metadata flows into the handler's context and the response", () =>
      Effect.gen(function*() {
        yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [issue, whoami] })
        const client = yield* CommandClient.CommandClient

        const issued = yield* client.execute(IssueInvoice, "inv-1", { amount: 42, currency: "EUR" })
        expect(issued).toEqual({ invoiceId: "inv-1", total: 42 })

        const response = yield* client.executeWithMetadata(Whoami, "sess-1", {}, {
          requestId: "req-1",
          correlationId: "flow-1",
          causationId: "evt-0",
          userId: "alice"
        })
        expect(response.result).toMatchObject({
          requestId: "req-1",
          correlationId: "flow-1",
          causationId: "evt-0",
          userId: "alice",
          aggregateId: "sess-1",
          causation: { id: "req-1", correlationId: "flow-1" },
          subject: "billing.query.session.whoami"
        })
        expect(Date.now() - Date.parse(response.result.timestamp)).toBeLessThan(10_000)
        expect(response.metadata.requestId).toBe("req-1")
        expect(response.metadata.correlationId).toBe("flow-1")
        expect(response.metadata.durationMs).toBeGreaterThan(0)
        expect(response.metadata.durationMs).toBeLessThan(1000)

        // without options: a fresh request id that is also the correlation id; inside a handled
        // message (Envelope.current), the correlation and causation carry over
        const fresh = yield* client.query(Whoami, undefined, {})
        expect(fresh.correlationId).toBe(fresh.requestId)
        expect(fresh.causationId).toBeUndefined()
        const inherited = yield* client.query(Whoami, undefined, {}).pipe(
          Envelope.withCausation({ id: "evt-7", correlationId: "flow-7" })
        )
        expect(inherited).toMatchObject({ correlationId: "flow-7", causationId: "evt-7" })
      }))

    it.scoped("a typed failure comes back as the same tagged class, with its code in the micro headers", () =>
      Effect.gen(function*() {
        yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [issue] })
        const client = yield* CommandClient.CommandClient

        const notFound = yield* Effect.flip(client.execute(IssueInvoice, "missing", { amount: 1, currency: "EUR" }))
        expect(notFound).toBeInstanceOf(InvoiceNotFound)
        if (!(notFound instanceof InvoiceNotFound)) throw new Error("unreachable")
        expect(notFound.code).toBe("404")
        expect(notFound.invoiceId).toBe("missing")

        const tooLarge = yield* client.execute(IssueInvoice, "inv-2", { amount: 5000, currency: "EUR" }).pipe(
          Effect.catchTag("AmountTooLarge", (e) => Effect.succeed(e))
        )
        expect(tooLarge).toBeInstanceOf(AmountTooLarge)
        expect(tooLarge).toMatchObject({ code: "AMOUNT_TOO_LARGE", max: 1000, message: "amount 5000 exceeds 1000" })

        const msg = yield* raw(IssueInvoice.subject, JSON.stringify({ aggregateId: "missing", payload: { amount: 1, currency: "EUR" } }))
        expect(errorHeaders(msg)).toEqual({ code: "404", message: "InvoiceNotFound { invoiceId: \"missing\" }" })
        expect(msg.json()).toMatchObject({
          success: false,
          error: { code: "404", details: { _tag: "InvoiceNotFound", invoiceId: "missing" } }
        })
      }))

    it.scoped("a handler that returns Effect.succeed / Effect.fail directly is answered like any other", () =>
      Effect.gen(function*() {
        const direct = CommandService.handler(IssueInvoice, (payload, request) =>
          payload.amount > 1000
            ? Effect.fail(new AmountTooLarge({ max: 1000, message: `amount ${payload.amount} exceeds 1000` }))
            : payload.amount < 0
            // does not match the success schema: a 500
            ? Effect.succeed({ invoiceId: request.aggregateId ?? "new", total: "minus" as unknown as number })
            : Effect.succeed({ invoiceId: request.aggregateId ?? "new", total: payload.amount }))
        const instance = yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [direct] })
        const client = yield* CommandClient.CommandClient

        const ok = yield* client.executeWithMetadata(IssueInvoice, "inv-9", { amount: 9, currency: "EUR" }, { requestId: "req-9" })
        expect(ok.result).toEqual({ invoiceId: "inv-9", total: 9 })
        expect(ok.metadata).toMatchObject({ requestId: "req-9", correlationId: "req-9" })
        const tooLarge = yield* Effect.flip(client.execute(IssueInvoice, "inv-2", { amount: 5000, currency: "EUR" }))
        expect(tooLarge).toBeInstanceOf(AmountTooLarge)
        expect(tooLarge).toMatchObject({ code: "AMOUNT_TOO_LARGE", max: 1000 })
        const bad = yield* Effect.flip(client.execute(IssueInvoice, "inv-3", { amount: -1, currency: "EUR" }))
        expect(bad).toMatchObject({ _tag: "CommandServiceError", code: "500", message: "internal error" })

        const stats = (yield* instance.stats).endpoints[0]!
        expect(stats).toMatchObject({ num_requests: 3, num_errors: 2, last_error: "500:internal error" })
      }))

    it.scoped("a malformed request gets a 400 naming every invalid field; the service keeps serving", () =>
      Effect.gen(function*() {
        yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [issue] })
        const client = yield* CommandClient.CommandClient

        const bad = yield* raw(
          IssueInvoice.subject,
          JSON.stringify({ payload: { amount: "ten" }, metadata: { timestamp: "yesterday" } })
        )
        expect(errorHeaders(bad).code).toBe("400")
        const body = bad.json<{ error: { message: string; details: { issues: Array<{ path: Array<string> }> } } }>()
        expect(body.error.details.issues.map((i) => i.path.join("."))).toEqual([
          "payload.amount",
          "payload.currency",
          "metadata.timestamp"
        ])
        expect(body.error.message).toContain("payload.amount: Expected number, actual \"ten\"")
        expect(errorHeaders(bad).message).toContain("payload.currency")

        const notJson = yield* raw(IssueInvoice.subject, "{nope")
        expect(errorHeaders(notJson).code).toBe("400")
        expect(errorHeaders(notJson).message).toContain("invalid JSON")

        // a client whose schema drifted gets a CommandServiceError, not a crash
        const drift = yield* Effect.flip(client.execute(IssueInvoiceV0, "inv-3", { amount: "3" }))
        expect(drift).toBeInstanceOf(CommandClient.CommandServiceError)
        expect(drift).toMatchObject({ code: "400", subject: IssueInvoice.subject })

        expect(yield* client.execute(IssueInvoice, "inv-3", { amount: 3, currency: "EUR" })).toEqual({
          invoiceId: "inv-3",
          total: 3
        })
      }))

    it.scoped("the request envelope decodes as Command.request says, in every form a client may send", () =>
      Effect.gen(function*() {
        yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [whoami] })
        const ask = (body: unknown) => raw(Whoami.subject, JSON.stringify(body))
        const answer = (msg: Msg) => msg.json<{ success: boolean; result: { timestamp: string; requestId: string } }>()

        // the usual form, and others the Schema accepts (an offset, no fraction); unknown keys are ignored
        const usual = yield* ask({ payload: {}, metadata: { requestId: "r-1", timestamp: "2026-01-02T03:04:05.678Z", extra: 1 } })
        expect(answer(usual).result).toMatchObject({ requestId: "r-1", timestamp: "2026-01-02T03:04:05.678Z" })
        const offset = yield* ask({ payload: {}, metadata: { requestId: "r-2", timestamp: "2026-01-02T03:04:05+01:00" } })
        expect(answer(offset).result).toMatchObject({ requestId: "r-2", timestamp: "2026-01-02T02:04:05.000Z" })
        const noFraction = yield* ask({ payload: {}, aggregateId: "s-1", metadata: { timestamp: "2026-01-02T03:04:05Z" } })
        expect(answer(noFraction).result).toMatchObject({ timestamp: "2026-01-02T03:04:05.000Z" })

        // what the Schema refuses is a 400 naming the field
        const refused = (body: unknown) =>
          Effect.map(ask(body), (msg) => {
            expect(errorHeaders(msg).code).toBe("400")
            return msg.json<{ error: { details: { issues: Array<{ path: Array<string> }> } } }>().error.details.issues.map((
              i
            ) => i.path.join("."))
          })
        expect(yield* refused({ payload: {}, metadata: { requestId: "" } })).toEqual(["metadata.requestId"])
        expect(yield* refused({ payload: {}, metadata: { correlationId: 7, userId: null } })).toEqual([
          "metadata.correlationId",
          "metadata.userId"
        ])
        expect(yield* refused({ payload: {}, metadata: { timestamp: "2026-13-45T00:00:00.000Z" } })).toEqual([
          "metadata.timestamp"
        ])
        expect(yield* refused({ payload: {}, metadata: null })).toEqual(["metadata"])
        expect(yield* refused({ payload: {}, aggregateId: 12 })).toEqual(["aggregateId"])
        expect(yield* refused({ metadata: {} })).toEqual(["payload"])
        expect(yield* refused([])).toEqual([""])
      }))

    it.scoped("a defect is a 500 without internals, and is logged", () =>
      Effect.gen(function*() {
        const logs: Array<string> = []
        const logger = Logger.make(({ cause, message }) => {
          logs.push(`${String(message)} ${Cause.pretty(cause)}`)
        })
        yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [issue] }).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, logger))
        )
        const client = yield* CommandClient.CommandClient
        const error = yield* Effect.flip(client.execute(IssueInvoice, "crash", { amount: 1, currency: "EUR" }))
        expect(error).toBeInstanceOf(CommandClient.CommandServiceError)
        expect(error).toMatchObject({ code: "500", message: "internal error" })

        const msg = yield* raw(IssueInvoice.subject, JSON.stringify({ aggregateId: "crash", payload: { amount: 1, currency: "EUR" } }))
        expect(errorHeaders(msg)).toEqual({ code: "500", message: "internal error" })
        expect(msg.string()).not.toContain("hunter2")
        expect(logs.some((l) => l.includes("billing.command.invoice.issue failed unexpectedly") && l.includes("hunter2")))
          .toBe(true)
        // still serving
        expect(yield* client.execute(IssueInvoice, "inv-4", { amount: 4, currency: "EUR" })).toEqual({ invoiceId: "inv-4", total: 4 })

        // a result that encodes to something JSON cannot carry is a 500 too
        const Count = Command.query({ service: "billing", aggregate: "invoice", name: "count", success: Schema.BigIntFromSelf })
        yield* CommandService.make({
          name: "billing-count",
          version: "1.0.0",
          commands: [CommandService.handler(Count, () => Effect.succeed(42n))]
        }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
        const count = yield* Effect.flip(client.query(Count, undefined, {}))
        expect(count).toMatchObject({ _tag: "CommandServiceError", code: "500", message: "internal error" })
        expect(logs.some((l) => l.includes("the response of billing.query.invoice.count is not JSON"))).toBe(true)
      }))

    it.scoped("a slow handler times out on the client; a retry resends the same request id", () =>
      Effect.gen(function*() {
        const seen = yield* Ref.make<Array<string>>([])
        const recording = CommandService.handler(IssueInvoice, (payload, request) =>
          Effect.gen(function*() {
            yield* Ref.update(seen, (xs) => [...xs, request.id])
            if (request.aggregateId === "big") return yield* new AmountTooLarge({ max: 1000, message: "too large" })
            yield* Effect.sleep("400 millis")
            return { invoiceId: request.aggregateId ?? "", total: payload.amount }
          }))
        yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [recording] })
        const client = yield* CommandClient.CommandClient

        const started = Date.now()
        const timedOut = yield* Effect.flip(client.execute(IssueInvoice, "slow-1", { amount: 1, currency: "EUR" }, { timeout: "100 millis" }))
        expect(timedOut).toBeInstanceOf(CommandClient.CommandTransportError)
        expect(timedOut).toMatchObject({ reason: "Timeout", subject: IssueInvoice.subject })
        expect(Date.now() - started).toBeLessThan(400)

        const retried = yield* Effect.flip(client.execute(IssueInvoice, "slow-2", { amount: 1, currency: "EUR" }, {
          timeout: "100 millis",
          retry: Schedule.recurs(2),
          requestId: "req-retry"
        }))
        expect(retried).toMatchObject({ _tag: "CommandTransportError", reason: "Timeout" })
        yield* eventually(Effect.map(Ref.get(seen), (xs) => xs.filter((x) => x === "req-retry").length === 3))
        // a typed failure is not retried
        const calls = (yield* Ref.get(seen)).length
        yield* client.execute(IssueInvoice, "big", { amount: 5000, currency: "EUR" }, { retry: Schedule.recurs(3) }).pipe(Effect.flip)
        expect((yield* Ref.get(seen)).length).toBe(calls + 1)
      }))

    it.scoped("no responders fails fast with a transport error", () =>
      Effect.gen(function*() {
        const client = yield* CommandClient.CommandClient
        const started = Date.now()
        const error = yield* Effect.flip(client.execute(Nobody, undefined, {}, { retry: Schedule.recurs(2) }))
        expect(error).toBeInstanceOf(CommandClient.CommandTransportError)
        expect(error).toMatchObject({ reason: "NoResponders", subject: "nobody.command.thing.poke" })
        expect(Date.now() - started).toBeLessThan(1000)
      }))

    it.scoped("three instances in one queue group share the load; each request is handled once", () =>
      Effect.gen(function*() {
        const server = yield* NatsTestServer.NatsTestServer
        const handled = yield* Ref.make<Array<{ readonly instance: number; readonly request: string }>>([])
        for (const instance of [0, 1, 2]) {
          const nats = yield* NatsClient.make({ servers: server.url, name: `billing-${instance}` })
          const counting = CommandService.handler(IssueInvoice, (payload, request) =>
            Effect.as(
              Ref.update(handled, (xs) => [...xs, { instance, request: request.id }]),
              { invoiceId: request.aggregateId ?? "", total: payload.amount }
            ))
          yield* CommandService.make({ name: "billing", version: "1.0.0", queueGroup: "billing-workers", commands: [counting] })
            .pipe(Effect.provideService(NatsClient.NatsClient, nats))
        }
        const client = yield* CommandClient.CommandClient
        const results = yield* Effect.forEach(
          Array.from({ length: 90 }, (_, i) => i),
          (i) => client.execute(IssueInvoice, `inv-${i}`, { amount: i, currency: "EUR" }),
          { concurrency: 10 }
        )
        expect(results.map((r) => r.total)).toEqual(Array.from({ length: 90 }, (_, i) => i))
        const all = yield* Ref.get(handled)
        expect(all.length).toBe(90)
        expect(new Set(all.map((h) => h.request)).size).toBe(90)
        for (const instance of [0, 1, 2]) {
          expect(all.filter((h) => h.instance === instance).length).toBeGreaterThan(0)
        }
        const infos = yield* client.info({ service: "billing", maxResponses: 3, window: "2 seconds" })
        expect(infos.map((i) => i.endpoints[0]!.queue_group)).toEqual(["billing-workers", "billing-workers", "billing-workers"])
      }))

    it.scoped("$SRV.PING / INFO / STATS answer per the micro protocol; stats count requests and errors", () =>
      Effect.gen(function*() {
        const a = yield* CommandService.make({
          name: "billing",
          version: "1.2.3",
          description: "invoices",
          metadata: { team: "payments" },
          commands: [issue, whoami]
        })
        const b = yield* CommandService.make({ name: "billing", version: "1.2.3", commands: [issue, whoami] })
        const client = yield* CommandClient.CommandClient

        const pings = yield* client.ping({ service: "billing", maxResponses: 2, window: "2 seconds" })
        expect(pings.map((p) => p.id).sort()).toEqual([a.id, b.id].sort())
        expect(pings[0]).toMatchObject({ type: "io.nats.micro.v1.ping_response", name: "billing", version: "1.2.3" })
        expect((yield* client.ping({ window: "300 millis" })).length).toBeGreaterThanOrEqual(2)
        expect(yield* client.ping({ service: "billing", id: a.id, window: "300 millis" })).toHaveLength(1)

        const [info] = yield* client.info({ service: "billing", id: a.id, maxResponses: 1 })
        expect(info).toEqual({
          type: "io.nats.micro.v1.info_response",
          name: "billing",
          id: a.id,
          version: "1.2.3",
          metadata: { team: "payments" },
          description: "invoices",
          endpoints: [
            {
              name: "invoice_issue",
              subject: "billing.command.invoice.issue",
              queue_group: "q",
              metadata: { kind: "command", aggregate: "invoice", command: "issue", request_schema: expect.any(String), response_schema: expect.any(String) }
            },
            {
              name: "session_whoami_query",
              subject: "billing.query.session.whoami",
              queue_group: "q",
              metadata: { kind: "query", aggregate: "session", command: "whoami", request_schema: expect.any(String), response_schema: expect.any(String) }
            }
          ]
        })

        const statsSubject = `$SRV.STATS.billing.${a.id}`
        const before = (yield* client.stats({ service: "billing", id: a.id, maxResponses: 1 }))[0]!
        expect(before.endpoints[0]).toMatchObject({ num_requests: 0, num_errors: 0, last_error: "", processing_time: 0 })
        expect(Date.parse(before.started)).toBeGreaterThan(Date.now() - 60_000)

        // both instances share the load: sum the endpoint stats of the two
        yield* client.execute(IssueInvoice, "s-1", { amount: 1, currency: "EUR" })
        yield* client.execute(IssueInvoice, "s-2", { amount: 2, currency: "EUR" })
        yield* Effect.flip(client.execute(IssueInvoice, "missing", { amount: 1, currency: "EUR" }))
        yield* raw(IssueInvoice.subject, "{}")
        yield* Effect.flip(client.execute(IssueInvoice, "crash", { amount: 1, currency: "EUR" }))

        const stats = yield* client.stats({ service: "billing", maxResponses: 2, window: "2 seconds" })
        expect(stats).toHaveLength(2)
        const issueStats = stats.map((s) => s.endpoints.find((e) => e.name === "invoice_issue")!)
        const sum = (f: (e: CommandService.StatsResponse["endpoints"][number]) => number) =>
          issueStats.reduce((n, e) => n + f(e), 0)
        expect(sum((e) => e.num_requests)).toBe(5)
        expect(sum((e) => e.num_errors)).toBe(3)
        for (const e of issueStats) {
          expect(Number.isInteger(e.processing_time)).toBe(true)
          expect(e.average_processing_time).toBe(e.num_requests === 0 ? 0 : Math.floor(e.processing_time / e.num_requests))
          if (e.num_requests > 0) expect(e.processing_time).toBeGreaterThan(1000) // nanoseconds
        }
        expect(issueStats.map((e) => e.last_error)).toContain("500:internal error")
        expect(stats.every((s) => s.type === "io.nats.micro.v1.stats_response")).toBe(true)

        const rawStats = (yield* raw(statsSubject, "")).json<Record<string, unknown>>()
        expect(Object.keys(rawStats).sort()).toEqual(["endpoints", "id", "metadata", "name", "started", "type", "version"])
        expect(Object.keys((rawStats["endpoints"] as Array<Record<string, unknown>>)[0]!).sort()).toEqual([
          "average_processing_time",
          "last_error",
          "name",
          "num_errors",
          "num_requests",
          "processing_time",
          "queue_group",
          "subject"
        ])
        const local = (yield* a.stats).endpoints[0]!
        expect(local.num_requests).toBe(issueStats[stats.findIndex((s) => s.id === a.id)]!.num_requests)
      }))

    it.scoped("graceful stop: requests in flight are all answered, then nobody responds", () =>
      Effect.gen(function*() {
        const started = yield* Ref.make(0)
        const slow = CommandService.handler(IssueInvoice, (payload, request) =>
          Effect.gen(function*() {
            yield* Ref.update(started, (n) => n + 1)
            yield* Effect.sleep("500 millis")
            return { invoiceId: request.aggregateId ?? "", total: payload.amount }
          }))
        const { scope } = yield* startService({ name: "billing", version: "1.0.0", commands: [slow] })
        const client = yield* CommandClient.CommandClient
        const inFlight = yield* Effect.forEach(
          Array.from({ length: 10 }, (_, i) => i),
          (i) => Effect.fork(client.execute(IssueInvoice, `g-${i}`, { amount: i, currency: "EUR" })),
          { concurrency: "unbounded" }
        )
        yield* eventually(Effect.map(Ref.get(started), (n) => n === 10))
        const closing = Date.now()
        yield* Scope.close(scope, Exit.void)
        expect(Date.now() - closing).toBeLessThan(2000)
        const results = yield* Effect.forEach(inFlight, Fiber.join)
        expect(results.map((r) => r.total)).toEqual(Array.from({ length: 10 }, (_, i) => i))
        const after = yield* Effect.flip(client.execute(IssueInvoice, "late", { amount: 1, currency: "EUR" }))
        expect(after).toMatchObject({ _tag: "CommandTransportError", reason: "NoResponders" })
        expect(yield* client.ping({ service: "billing", window: "300 millis" })).toHaveLength(0)
      }))

    it.scoped("graceful stop is bounded: a handler still running after stopTimeout is interrupted and answered 503", () =>
      Effect.gen(function*() {
        const started = yield* Ref.make(0)
        const stuck = CommandService.handler(IssueInvoice, () =>
          Effect.zipRight(Ref.update(started, (n) => n + 1), Effect.never))
        const { scope } = yield* startService({ name: "billing", version: "1.0.0", stopTimeout: "200 millis", commands: [stuck] })
        const client = yield* CommandClient.CommandClient
        const pending = yield* Effect.fork(client.execute(IssueInvoice, "stuck", { amount: 1, currency: "EUR" }))
        yield* eventually(Effect.map(Ref.get(started), (n) => n === 1))
        const closing = Date.now()
        yield* Scope.close(scope, Exit.void)
        expect(Date.now() - closing).toBeLessThan(1500)
        const error = yield* Effect.flip(Fiber.join(pending))
        expect(error).toMatchObject({ _tag: "CommandServiceError", code: "503", message: "service stopping" })
      }))

    it.scoped("the handler publishes events caused by the request, with its correlation id; subscribe sees them", () =>
      Effect.gen(function*() {
        // a stream on `billing.>` would also capture `billing.command.…` (see the next test)
        const js = yield* JetStream.JetStream
        const stream = unique("INVOICES")
        yield* Effect.acquireRelease(
          js.ensureStream({ name: stream, subjects: ["billing.invoice.>"], storage: "memory" }),
          () => Effect.promise(() => js.manager.streams.delete(stream).catch(() => false))
        )
        const publishing = CommandService.handler(IssueInvoice, (payload, request) =>
          Effect.gen(function*() {
            const publisher = yield* Publisher.Publisher
            const invoiceId = request.aggregateId ?? "new"
            yield* Effect.orDie(publisher.publish(InvoiceIssued, { invoiceId, amount: payload.amount }))
            return { invoiceId, total: payload.amount }
          }))
        yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [publishing] })
        const client = yield* CommandClient.CommandClient
        const received = yield* Ref.make<Array<Envelope.Envelope<{ readonly invoiceId: string; readonly amount: number }>>>([])
        yield* client.subscribe(InvoiceIssued, (e) => Ref.update(received, (xs) => [...xs, e]))

        const response = yield* client.executeWithMetadata(IssueInvoice, "inv-77", { amount: 77, currency: "EUR" }, {
          correlationId: "flow-77",
          userId: "bob"
        })
        const requestId = response.metadata.requestId!
        const stored = yield* Effect.promise(() => js.manager.streams.getMessage(stream, { last_by_subj: InvoiceIssued.subject }))
        const envelope = stored!.json<Envelope.Encoded<{ invoiceId: string; amount: number }>>()
        expect(envelope).toMatchObject({
          type: "billing.invoice.issued",
          source: "billing",
          correlationId: "flow-77",
          causationId: requestId,
          aggregateId: "inv-77",
          data: { invoiceId: "inv-77", amount: 77 }
        })
        expect(stored!.header.get(Envelope.HeaderNames.correlationId)).toBe("flow-77")

        yield* eventually(Effect.map(Ref.get(received), (xs) => xs.length === 1))
        const [seen] = yield* Ref.get(received)
        expect(seen!.id).toBe(envelope.id)
        expect(seen!.causationId).toBe(requestId)
        expect(seen!.data.amount).toBe(77)
      }))

    it.scoped("a JetStream stream that captures the command subject is reported, not decoded as a result", () =>
      Effect.gen(function*() {
        yield* billingStream // subjects: billing.>
        const client = yield* CommandClient.CommandClient
        const error = yield* Effect.flip(client.execute(IssueInvoice, "inv-js", { amount: 1, currency: "EUR" }))
        expect(error).toMatchObject({ _tag: "CommandTransportError", reason: "MalformedResponse" })
        expect(error.message).toContain("captured the request on billing.command.invoice.issue")
      }))

    it.scoped("spans: CLIENT `send <subject>` and a SERVER span parented on it through traceparent", () =>
      Effect.gen(function*() {
        const { spans, tracer } = yield* capturingTracer
        // both decide when built (Tracing.isRecording): built with the tracer, they trace every request
        yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [issue] }).pipe(Effect.withTracer(tracer))
        const client = yield* CommandClient.make().pipe(Effect.withTracer(tracer))
        yield* client.execute(IssueInvoice, "inv-t", { amount: 1, currency: "EUR" }, { correlationId: "flow-t" }).pipe(
          Effect.withTracer(tracer)
        )
        yield* Effect.flip(client.execute(IssueInvoice, "missing", { amount: 1, currency: "EUR" })).pipe(Effect.withTracer(tracer))
        // a client built without a recording tracer creates no span, whatever the tracer of the call
        const untraced = yield* CommandClient.CommandClient
        yield* untraced.execute(IssueInvoice, "inv-u", { amount: 1, currency: "EUR" }).pipe(Effect.withTracer(tracer))
        yield* eventually(Effect.sync(() => spans.filter((s) => s.kind === "server" && s.status._tag === "Ended").length === 3))
        const sends = spans.filter((s) => s.name === `send ${IssueInvoice.subject}`)
        expect(sends).toHaveLength(2)
        const [send, sendFailed] = sends
        const [process, processFailed] = spans.filter((s) => s.name === IssueInvoice.subject)
        expect(send!.kind).toBe("client")
        expect(process!.kind).toBe("server")
        expect(process!.traceId).toBe(send!.traceId)
        expect(Option.map(process!.parent, (p) => p.spanId)).toEqual(Option.some(send!.spanId))
        expect(process!.attributes.get("messaging.message.conversation_id")).toBe("flow-t")
        expect(process!.attributes.get("messaging.consumer.group.name")).toBe("q")
        expect(processFailed!.traceId).toBe(sendFailed!.traceId)
        expect(processFailed!.attributes.get("error.type")).toBe("404:InvoiceNotFound { invoiceId: \"missing\" }")
      }))
  })
})
