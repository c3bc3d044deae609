/**
 * Scenario 8 — hostile payloads.
 *
 * Generated bodies (fast-check, seeded): nesting up to 200 000 levels (arrays,
 * objects, inside a request's payload or an envelope's `data`), strings up to
 * ~900 KB, invalid UTF-8, duplicate keys, `__proto__` / `constructor` keys,
 * numbers such as `1e400` and `-0`, lone surrogates (escaped and raw), empty
 * bodies, random JSON and JSON-like noise; and hostile header values
 * (`traceparent`, `Nats-Msg-Id`, `Aggregate-Id`, ...). Each one goes to:
 *
 * - a `CommandService` with default options (as a request);
 * - a `CommandClient` (as the reply of a raw responder);
 * - a `Consumer` with default options but a short ack wait (published raw,
 *   and as the `data` of a valid envelope);
 * - the DLQ (published as a record), then read by `DeadLetter.list/get/replay`
 *   and by `effect-nats dlq show`.
 *
 * Guarantee shown: every request gets an answer (a 400 for what does not
 * decode) and a valid request keeps getting its answer after each batch
 * (services silenced: 0); the client returns a typed error, never a defect;
 * every message is settled (acked, or dead-lettered with its reason) and none
 * is left ack-pending (stuck: 0); DLQ tools return entries or typed errors;
 * no uncaught exception or unhandled rejection, no polluted prototype, RSS
 * bounded.
 */
import { Cli } from "@effect-nats/cli"
import { NodeContext } from "@effect/platform-node"
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core"
import { Cause, Console, Effect, Exit, Layer, Metric, Schedule, Schema } from "effect"
import { Command, CommandClient, CommandService, Consumer, DeadLetter, Event, Handler, JetStream, Metrics, NatsClient } from "effect-nats"
import * as fc from "fast-check"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { natsLayer, Report, type Result, seed, waitUntil } from "../lib/harness.js"

export interface Options {
  /** Hostile inputs to generate; each goes to every entry point. */
  readonly inputs: number
}

export const name = "hostile-payloads"

// (command subjects stay outside the stream's `hostile.>`)
const Echo = Command.make({
  service: "hostilesvc",
  aggregate: "thing",
  name: "echo",
  payload: Schema.Struct({ n: Schema.Number, s: Schema.optional(Schema.String) }),
  success: Schema.Struct({ n: Schema.Number })
})

/** Served by a raw responder that answers with the hostile bodies. */
const Hostile = Command.make({
  service: "hostilereply",
  aggregate: "thing",
  name: "ask",
  payload: Schema.Struct({}),
  success: Schema.Struct({ n: Schema.Number })
})

const ItemCreated = Event.make({
  type: "hostile.item.created",
  aggregate: "Item",
  schema: Schema.Struct({ n: Schema.Number, s: Schema.optional(Schema.String) })
})

/** One generated input: a body, and header values to send with it. */
export interface Input {
  readonly kind: string
  readonly body: Uint8Array
  /** JSON text that can stand as a value inside another document (`undefined`: not JSON). */
  readonly json: string | undefined
  readonly headers: ReadonlyArray<readonly [string, string]>
}

const utf8 = new TextEncoder()
const text = (kind: string, json: string, isJson = true) => ({ kind, body: utf8.encode(json), json: isJson ? json : undefined })

const deepArray = (d: number) => "[".repeat(d) + "]".repeat(d)
const deepObject = (d: number) => "{\"a\":".repeat(d) + "1" + "}".repeat(d)
const depth = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 129, max: 2_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 2_000, max: 200_000 }) }
)

/** Bodies, by kind. */
const bodies: fc.Arbitrary<Omit<Input, "headers">> = fc.oneof(
  depth.map((d) => text("deep-array", deepArray(d))),
  depth.map((d) => text("deep-object", deepObject(Math.min(d, 100_000)))),
  depth.map((d) => text("deep-in-payload", `{"payload":{"n":1,"x":${deepArray(d)}}}`)),
  depth.map((d) => text("deep-payload", `{"payload":${deepArray(d)}}`)),
  fc.integer({ min: 1_000, max: 900_000 }).map((n) => text("huge-string", `{"payload":{"n":1,"s":"${"x".repeat(n)}"}}`)),
  fc.uint8Array({ minLength: 0, maxLength: 256 }).map((b) => {
    const bytes = new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, ...b, 0xed, 0xa0, 0x80])
    return { kind: "invalid-utf8", body: bytes, json: undefined }
  }),
  fc.constantFrom(
    text("duplicate-keys", `{"payload":{"n":1},"payload":{"n":"x"},"aggregateId":"a","aggregateId":"b"}`),
    text(
      "proto-keys",
      `{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}},"payload":{"n":1,"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}}`
    ),
    text("number-1e400", `{"payload":{"n":1e400}}`),
    text("number-minus-zero", `{"payload":{"n":-0}}`),
    text("number-tiny", `{"payload":{"n":1e-400}}`),
    text("number-huge-int", `{"payload":{"n":123456789012345678901234567890123456789}}`),
    text("lone-surrogate-escaped", `{"payload":{"n":1,"s":"\\ud800"},"metadata":{"requestId":"\\udfff"}}`),
    { kind: "lone-surrogate-raw", body: new Uint8Array([...utf8.encode(`{"payload":{"n":1,"s":"`), 0xed, 0xa0, 0x80, ...utf8.encode(`"}}`)]), json: undefined },
    { kind: "empty", body: new Uint8Array(0), json: undefined },
    text("null", "null"),
    text("metadata-hostile", `{"payload":{"n":1},"metadata":{"timestamp":"not a date","correlationId":"","userId":{"a":[]}}}`)
  ),
  fc.json({ maxDepth: 6 }).map((j) => text("random-json", j)),
  fc.string({ unit: fc.constantFrom(..."[]{}\",:0123456789eE.-+\\ntrufalsn \u0000\ud800"), maxLength: 2_000 }).map((s) =>
    text("json-noise", s, false)
  )
)

const headerValue = fc.oneof(
  fc.string({ maxLength: 64 }),
  fc.string({ unit: "grapheme", maxLength: 64 }),
  fc.constantFrom("", " ", "00-" + "0".repeat(32) + "-" + "0".repeat(16) + "-01", "00-zz-yy-01", "ff-".repeat(200), "\u0000", "a\u2028b"),
  fc.integer({ min: 1_000, max: 8_000 }).map((n) => "v".repeat(n))
)
const headerNames = ["traceparent", "tracestate", "Nats-Msg-Id", "Aggregate-Id", "Correlation-Id", "Tenant-Id", "Content-Type", "X-Anything"]
const headerList = fc.array(fc.tuple(fc.constantFrom(...headerNames), headerValue), { maxLength: 4 })

/** Inputs of a run, generated a batch at a time (deterministic for a seed); a large run never holds them all. */
export function* generate(n: number, seedValue: number, batch = 25): Generator<Input> {
  for (let start = 0, k = 0; start < n; start += batch, k++) {
    const inputs = fc.sample(fc.record({ b: bodies, headers: headerList }), {
      seed: (seedValue + k * 0x9e3779b1) | 0,
      numRuns: Math.min(batch, n - start)
    })
    for (const { b, headers } of inputs) yield { ...b, headers }
  }
}

/** NATS headers from generated values; values nats.js refuses (CR, LF, ...) are left out. */
const toHeaders = (pairs: ReadonlyArray<readonly [string, string]>): MsgHdrs | undefined => {
  if (pairs.length === 0) return undefined
  const h = natsHeaders()
  for (const [k, v] of pairs) {
    try {
      h.append(k, v)
    } catch {
      // not a header value nats.js sends
    }
  }
  return h
}

/** A full garbage collection (made available at run time), so that heap figures say what is still referenced. */
const collect = (): (() => void) => {
  v8.setFlagsFromString("--expose-gc")
  return vm.runInNewContext("gc") as () => void
}

/** Run the scenario (its clock starts when it runs). */
export const run = (options: Options): Effect.Effect<Result> => Effect.suspend(() => runNow(options))

const runNow = (options: Options): Effect.Effect<Result> => {
  const report = new Report(name)
  let uncaught = 0
  const onUncaught = (e: unknown) => {
    uncaught++
    report.note(`uncaught: ${String(e).slice(0, 200)}`)
  }
  const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort().join(",")
  return Effect.gen(function*() {
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        process.on("uncaughtException", onUncaught)
        process.on("unhandledRejection", onUncaught)
      }),
      () =>
        Effect.sync(() => {
          process.off("uncaughtException", onUncaught)
          process.off("unhandledRejection", onUncaught)
        })
    )
    const nats = yield* NatsClient.NatsClient
    const js = yield* JetStream.JetStream
    const dlq = yield* DeadLetter.DeadLetter
    const nc = nats.connection
    const total = options.inputs
    const rssStart = process.memoryUsage().rss
    let rssPeak = rssStart
    // the heap once warm (after a tenth of the inputs), after a full GC: what it grows by after that is a leak
    const gc = collect()
    let heapWarm = 0

    // the entry points
    yield* CommandService.make({
      name: "hostilesvc",
      version: "1.0.0",
      commands: [CommandService.handler(Echo, (p) => Effect.succeed({ n: p.n }))]
    })
    const client = yield* CommandClient.make({ timeout: "5 seconds" })
    let nextReply: Uint8Array = new Uint8Array(0)
    let replyHeaders: MsgHdrs | undefined
    const responder = nc.subscribe(Hostile.subject, {
      callback: (err, msg) => {
        if (err === null) msg.respond(nextReply, replyHeaders === undefined ? undefined : { headers: replyHeaders })
      }
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => responder.unsubscribe()))

    const stream = "CHAOS_HOSTILE"
    yield* js.ensureStream({ name: stream, subjects: ["hostile.>"], storage: "file" })
    let handled = 0
    let goodSent = 0
    const deadLetteredBefore = yield* Metric.value(Metrics.deadLettered)
    yield* Consumer.make({
      stream,
      durable: "hostile",
      handlers: [Handler.make(ItemCreated, (e) => Effect.sync(() => void (e.data.s === "good" && handled++)))],
      ackWait: "5 seconds",
      redelivery: Schedule.spaced("100 millis")
    })

    const request = (body: Uint8Array, headers: MsgHdrs | undefined) =>
      Effect.either(nats.request(Echo.subject, body, { timeout: "5 seconds", headers }))
    const valid = utf8.encode(JSON.stringify({ payload: { n: 42 } }))
    const validAnswered = Effect.map(request(valid, undefined), (r) => {
      const ok = r._tag === "Right" && r.right.string().includes("\"n\":42")
      if (!ok) report.note(r._tag === "Right" ? r.right.string().slice(0, 300) : r.left.message)
      return ok
    })

    let answered = 0
    let unanswered = 0
    let silenced = 0
    let clientTyped = 0
    let clientOk = 0
    let clientDefects = 0
    let published = 0
    const dlqSubject = dlq.subjectFor("hostile")
    const injected: Array<number> = []
    const kinds: Record<string, number> = {}

    let i = 0
    for (const input of generate(total, seed ^ 0x4057)) {
      i++
      kinds[input.kind] = (kinds[input.kind] ?? 0) + 1
      const headers = toHeaders(input.headers)

      // 1. the command service answers everything
      const answer = yield* request(input.body, headers)
      if (answer._tag === "Right") answered++
      else {
        unanswered++
        report.note(`no answer to ${input.kind} (${input.body.length} bytes): ${answer.left.message}`)
      }

      // 2. the client reads a hostile reply: a typed error or a success, never a defect
      nextReply = input.body
      replyHeaders = headers
      const exit = yield* Effect.exit(client.execute(Hostile, undefined, {}))
      if (Exit.isSuccess(exit)) clientOk++
      else if (Cause.isFailure(exit.cause) && !Cause.isDie(exit.cause)) clientTyped++
      else {
        clientDefects++
        report.note(`client defect on ${input.kind}: ${Cause.pretty(exit.cause).slice(0, 300)}`)
      }

      // 3. the consumer: the body as it is, and (JSON) as the data of a valid envelope
      const subject = ItemCreated.type
      const ack = yield* Effect.either(Effect.tryPromise(() => js.client.publish(subject, input.body, headers ? { headers } : {})))
      if (ack._tag === "Right") published++
      if (input.json !== undefined) {
        const envelope = `{"id":"h-${i}","type":"${ItemCreated.type}","timestamp":"${new Date().toISOString()}",` +
          `"correlationId":"c-${i}","aggregateId":"a-${i}","aggregateType":"Item","version":0,"data":${input.json}}`
        const wrapped = yield* Effect.either(Effect.tryPromise(() => js.client.publish(subject, envelope, headers ? { headers } : {})))
        if (wrapped._tag === "Right") published++
      }

      // 4. a hostile DLQ record (one input in ten)
      if (i % 10 === 0) {
        const stored = yield* Effect.either(Effect.tryPromise(() => js.client.publish(dlqSubject, input.body)))
        if (stored._tag === "Right") injected.push(stored.right.seq)
      }

      // after each batch: a valid request still gets its answer, a valid event is still handled
      if (i % 25 === 0 || i === total) {
        const good = `{"id":"good-${i}","type":"${ItemCreated.type}","timestamp":"${new Date().toISOString()}",` +
          `"correlationId":"g-${i}","aggregateId":"g-${i}","aggregateType":"Item","version":0,"data":{"n":${i},"s":"good"}}`
        yield* Effect.promise(() => js.client.publish(ItemCreated.type, good))
        goodSent++
        if (!(yield* validAnswered)) {
          silenced++
          report.note(`a valid request got no answer after input ${i} (${input.kind})`)
        }
        rssPeak = Math.max(rssPeak, process.memoryUsage().rss)
        if (i === Math.ceil(total / 250) * 25) {
          gc()
          heapWarm = process.memoryUsage().heapUsed
        }
        if (i % 500 === 0 || i === total) report.log(`${i}/${total} inputs`)
      }
    }

    // every message settled: nothing pending, nothing ack-pending, within the ack wait (plus redeliveries)
    const consumerState = Effect.map(
      Effect.promise(() => js.manager.consumers.info(stream, "hostile")),
      (c) => ({ pending: c.num_pending, ackPending: c.num_ack_pending })
    )
    const settledStart = performance.now()
    const settled = yield* waitUntil(Effect.map(consumerState, (s) => s.pending === 0 && s.ackPending === 0), "20 seconds", "100 millis")
    const state = yield* consumerState
    // the heap now (before the DLQ tools below read their records)
    gc()
    const heapEnd = process.memoryUsage().heapUsed
    const stuck = state.pending + state.ackPending
    report.check(settled && stuck === 0, `${stuck} message(s) not settled (${state.ackPending} ack-pending)`)

    // the DLQ tools on hostile records: entries or typed errors
    let dlqTyped = 0
    let dlqDefects = 0
    const listed = yield* Effect.exit(dlq.list({ context: "hostile", limit: 100_000 }))
    if (Exit.isFailure(listed) && Cause.isDie(listed.cause)) dlqDefects++
    for (const seq of injected) {
      const ops: ReadonlyArray<Effect.Effect<unknown, DeadLetter.DeadLetterError>> = [
        dlq.get(seq),
        dlq.replay(seq, { keep: true, to: "hostile-replayed.none" })
      ]
      for (const op of ops) {
        const e = yield* Effect.exit(op)
        if (Exit.isFailure(e) && (Cause.isDie(e.cause) || !Cause.isFailure(e.cause))) {
          dlqDefects++
          report.note(`DLQ defect on ${seq}: ${Cause.pretty(e.cause).slice(0, 300)}`)
        } else dlqTyped++
      }
    }
    let cliRuns = 0
    const base = yield* Effect.console
    const quiet: Console.Console = {
      ...base,
      log: () => Effect.void,
      error: () => Effect.void,
      unsafe: { ...base.unsafe, log: () => undefined, error: () => undefined }
    }
    for (const seq of injected.slice(0, 20)) {
      const e = yield* Cli.run(["--server", nats.servers, "dlq", "show", String(seq)]).pipe(
        Effect.withConsole(quiet),
        Effect.provide(NodeContext.layer),
        Effect.exit
      )
      cliRuns++
      if (Exit.isFailure(e) && Cause.isDie(e.cause)) {
        dlqDefects++
        report.note(`dlq show ${seq} died: ${Cause.pretty(e.cause).slice(0, 300)}`)
      }
    }

    const deadLettered = (yield* Metric.value(Metrics.deadLettered)).count - deadLetteredBefore.count
    const rssEnd = process.memoryUsage().rss
    rssPeak = Math.max(rssPeak, rssEnd)
    const polluted = Object.getOwnPropertyNames(Object.prototype).sort().join(",") !== protoBefore ||
      (({}) as Record<string, unknown>)["polluted"] !== undefined

    report.sent = total
    report.effects = handled
    report.set("inputs", total)
    report.set("answered", answered)
    report.set("unanswered", unanswered)
    report.set("servicesSilenced", silenced)
    report.set("clientTypedErrors", clientTyped)
    report.set("clientSuccesses", clientOk)
    report.set("clientDefects", clientDefects)
    report.set("published", published)
    report.set("validEventsHandled", `${handled}/${goodSent}`)
    report.set("deadLettered", deadLettered)
    report.set("stuck", stuck)
    report.set("settledMs", Math.round(performance.now() - settledStart))
    report.set("dlqRecordsInjected", injected.length)
    report.set("dlqTypedResults", dlqTyped)
    report.set("dlqDefects", dlqDefects)
    report.set("cliShowRuns", cliRuns)
    report.set("uncaught", uncaught)
    report.set("prototypePolluted", polluted)
    report.set("rssMb", { start: mb(rssStart), peak: mb(rssPeak), end: mb(rssEnd) })
    report.set("heapAfterGcMb", { warm: mb(heapWarm), end: mb(heapEnd) })
    report.note(`kinds: ${JSON.stringify(kinds)}`)

    report.check(unanswered === 0, `${unanswered} request(s) got no answer`)
    report.check(silenced === 0, `the service was silenced ${silenced} time(s)`)
    report.check(clientDefects === 0, `${clientDefects} client defect(s)`)
    report.check(dlqDefects === 0, `${dlqDefects} DLQ tool defect(s)`)
    report.check(uncaught === 0, `${uncaught} uncaught exception(s) or unhandled rejection(s)`)
    report.check(!polluted, "Object.prototype was polluted")
    report.check(heapEnd - heapWarm < 64 * 1024 * 1024, `the heap grew by ${mb(heapEnd - heapWarm)} MB after the first tenth`)
    report.check(rssPeak < 3 * 1024 * 1024 * 1024, `RSS reached ${mb(rssPeak)} MB`)
    report.check(handled === goodSent, `${handled} of ${goodSent} valid events handled among the hostile ones`)
    report.check(deadLettered > 0, "nothing was dead-lettered")
    return report.result()
  }).pipe(
    Effect.scoped,
    Effect.provide(
      DeadLetter.layer().pipe(Layer.provideMerge(natsLayer({}, { pingInterval: "2 seconds" })))
    ),
    Effect.catchAllCause((cause) => {
      report.check(false, `the scenario failed: ${Cause.pretty(cause).slice(0, 2000)}`)
      return Effect.succeed(report.result())
    })
  )
}

const mb = (bytes: number) => Math.round(bytes / 1024 / 1024)
