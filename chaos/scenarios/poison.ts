/**
 * Scenario 5 — poison input.
 *
 * Good messages are published with poison ones interleaved: invalid JSON,
 * valid JSON of the wrong schema, an envelope that is not an envelope, an
 * unknown event type, oversize payloads (over the consumer's limit, one of
 * them close to the server's max_payload), messages without any header, a
 * message missing metadata its handler requires, and an event whose handler
 * always throws (a defect).
 *
 * Guarantee shown: each poison message is dead-lettered with a readable
 * reason within its allowed deliveries (decode problems at the first), never
 * handled; the consumer keeps going and every good message is handled
 * exactly once. Header-less messages with a valid envelope are handled: the
 * body is authoritative, headers are a routing aid.
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core"
import { Effect, Layer, Schedule } from "effect"
import { Consumer, DeadLetter, Envelope, Handler, JetStream, Publisher } from "effect-nats"
import { PaymentCaptured, PaymentRefunded } from "../lib/events.js"
import { natsLayer, Report, type Result, rng, seed, waitUntil } from "../lib/harness.js"

export interface Options {
  readonly good: number
  /** Copies of each poison kind. */
  readonly perKind: number
}

export const name = "poison"

/** What a poison message must become in the DLQ. */
interface Expect {
  readonly kind: string
  readonly reason: string
  readonly errorTag: string
  /** a piece of the error message a reader needs (the field, the type, the size, ...) */
  readonly mentions: string
}

const maxDeliver = 3
const maxMessageBytes = 64 * 1024

const envelopeOf = (type: string, data: unknown, extra: Record<string, unknown> = {}) => ({
  id: Envelope.makeId(Date.now()),
  type,
  timestamp: new Date().toISOString(),
  correlationId: "poison-flow",
  aggregateId: "p-1",
  aggregateType: "Payment",
  version: 0,
  data,
  ...extra
})

/** Run the scenario (its clock starts when it runs). */
export const run = (options: Options): Effect.Effect<Result> => Effect.suspend(() => runNow(options))

const runNow = (options: Options): Effect.Effect<Result> => {
  const report = new Report(name)
  return Effect.gen(function*() {
    const random = rng(seed ^ 0x55)
    const js = yield* JetStream.JetStream
    const dlq = yield* DeadLetter.DeadLetter
    const stream = "CHAOS_POISON"
    yield* js.ensureStream({ name: stream, subjects: ["poison.>"], storage: "file" })

    // handlers: count good ones; the refund handler has a bug (a defect, every time)
    const handled = new Map<string, number>()
    let defectRuns = 0
    const captured = Handler.make(PaymentCaptured, (e) =>
      e.data.paymentId.startsWith("needs-tenant") && e.tenantId === undefined
        ? Handler.permanent(Effect.fail(new Error(`payment ${e.data.paymentId}: missing Tenant-Id (required metadata)`)))
        : Effect.sync(() => void handled.set(e.id, (handled.get(e.id) ?? 0) + 1)))
    const refunded = Handler.make(PaymentRefunded, (e) =>
      Effect.sync(() => {
        defectRuns++
        throw new TypeError(`cannot read properties of undefined (reading 'amount') in refund ${e.data.paymentId}`)
      }))
    yield* Consumer.make({
      stream,
      durable: "payments",
      handlers: [captured, refunded],
      concurrency: 16,
      maxDeliver,
      retry: Schedule.recurs(1),
      redelivery: Schedule.spaced("100 millis"),
      unknownType: "deadLetter",
      maxMessageBytes
    })

    // the poison kinds: [payload, headers, expectation]
    const h = (envelope: Record<string, unknown>): MsgHdrs => {
      const out = natsHeaders()
      out.set("Nats-Msg-Id", String(envelope["id"]))
      out.set("Content-Type", "application/json")
      return out
    }
    const bytes = (s: string) => new TextEncoder().encode(s)
    type Poison = { readonly data: Uint8Array; readonly headers: MsgHdrs | undefined; readonly expect: Expect | "handled" }
    const kinds: ReadonlyArray<() => Poison> = [
      () => ({
        data: bytes(`{"id": "x", "type": "poison.payment.captured", "data": {${random.int(0, 1e6)}`),
        headers: undefined,
        expect: { kind: "invalid-json", reason: "Decode", errorTag: "InvalidJson", mentions: "JSON" }
      }),
      () => {
        const env = envelopeOf("poison.payment.captured", { paymentId: 42, amount: "ten" })
        return {
          data: bytes(JSON.stringify(env)),
          headers: h(env),
          expect: { kind: "wrong-schema", reason: "Decode", errorTag: "ParseError", mentions: "paymentId" }
        }
      },
      () => ({
        data: bytes(JSON.stringify({ hello: "world", n: random.int(0, 1e6) })),
        headers: undefined,
        expect: { kind: "not-an-envelope", reason: "Decode", errorTag: "NotAnEnvelope", mentions: "type" }
      }),
      () => {
        const env = envelopeOf("poison.payment.disputed", { paymentId: "p-1" })
        return {
          data: bytes(JSON.stringify(env)),
          headers: h(env),
          expect: { kind: "unknown-type", reason: "UnknownType", errorTag: "UnknownType", mentions: "poison.payment.disputed" }
        }
      },
      () => {
        const env = envelopeOf("poison.payment.captured", { paymentId: "big", amount: 1, note: "x".repeat(100 * 1024) })
        return {
          data: bytes(JSON.stringify(env)),
          headers: h(env),
          expect: { kind: "oversize-100k", reason: "TooLarge", errorTag: "TooLarge", mentions: String(maxMessageBytes) }
        }
      },
      () => {
        // close to the server's max_payload (1 MB): the dead letter must still fit
        const env = envelopeOf("poison.payment.captured", { paymentId: "huge", amount: 1, note: "y".repeat(900 * 1024) })
        return {
          data: bytes(JSON.stringify(env)),
          headers: h(env),
          expect: { kind: "oversize-900k", reason: "TooLarge", errorTag: "TooLarge", mentions: String(maxMessageBytes) }
        }
      },
      () => {
        // a valid envelope without any header: handled (the body is authoritative)
        const env = envelopeOf("poison.payment.captured", { paymentId: `headerless-${random.int(0, 1e6)}`, amount: 1 })
        return { data: bytes(JSON.stringify(env)), headers: undefined, expect: "handled" }
      },
      () => {
        // the handler requires a tenant (header Tenant-Id / envelope tenantId): a permanent failure
        const env = envelopeOf("poison.payment.captured", { paymentId: `needs-tenant-${random.int(0, 1e6)}`, amount: 1 })
        return {
          data: bytes(JSON.stringify(env)),
          headers: h(env),
          expect: { kind: "missing-header", reason: "Permanent", errorTag: "PermanentError", mentions: "Tenant-Id" }
        }
      },
      () => {
        const env = envelopeOf("poison.payment.refunded", { paymentId: `r-${random.int(0, 1e6)}` })
        return {
          data: bytes(JSON.stringify(env)),
          headers: h(env),
          expect: { kind: "handler-defect", reason: "MaxDeliveries", errorTag: "HandlerDefect", mentions: "TypeError" }
        }
      }
    ]

    // interleave: poison at random positions among the good ones
    const plan: Array<number | "good"> = Array.from({ length: options.good }, () => "good" as const)
    for (let k = 0; k < kinds.length; k++) {
      for (let c = 0; c < options.perKind; c++) plan.splice(random.int(0, plan.length), 0, k)
    }
    const dlqInfo = Effect.map(js.streamInfo(dlq.stream), (info) => info.state.messages).pipe(Effect.orElseSucceed(() => 0))
    const dlqBefore = yield* dlqInfo
    const publisher = yield* Publisher.make({ window: 256 })
    const goodIds = new Set<string>()
    const poisonSeqs = new Map<number, Expect>()
    const headerless = new Set<string>()
    let i = 0
    // in runs: the good ones in windows, each poison one on its own (so we know its stream sequence)
    while (i < plan.length) {
      const item = plan[i]!
      if (item === "good") {
        let j = i
        while (j < plan.length && plan[j] === "good") j++
        const acks = yield* publisher.publishAll(
          Array.from({ length: j - i }, (_, n) => Publisher.entry(PaymentCaptured, { paymentId: `pay-${i + n}`, amount: i + n }))
        )
        for (const a of acks) goodIds.add(a.id)
        i = j
      } else {
        const p = kinds[item]!()
        const ack = yield* Effect.promise(() =>
          js.client.publish("poison.payment.captured", p.data, p.headers === undefined ? {} : { headers: p.headers })
        )
        if (p.expect === "handled") headerless.add(JSON.parse(new TextDecoder().decode(p.data)).id as string)
        else poisonSeqs.set(ack.seq, p.expect)
        i++
      }
    }
    report.sent = goodIds.size + headerless.size
    report.set("poisonSent", poisonSeqs.size)

    // wait for the good ones and for the dead letters
    const allGood = () => [...goodIds, ...headerless].every((id) => handled.has(id))
    // done when everything arrived; or given up when the good ones are in and no dead letter came for 8 s
    // (with maxDeliver 3 and 100 ms redeliveries, every poison message is settled within a second or two)
    let last = { count: -1, at: performance.now() }
    const settled = Effect.map(dlqInfo, (n) => {
      const now = performance.now()
      if (n !== last.count) last = { count: n, at: now }
      return allGood() && (n - dlqBefore >= poisonSeqs.size || now - last.at > 8_000)
    })
    const done = (yield* waitUntil(settled, "60 seconds", "250 millis")) &&
      (yield* dlqInfo) - dlqBefore >= poisonSeqs.size
    report.check(done, "not every good message was handled and every poison one dead-lettered within 60 s")
    // a moment more: a late second dead letter of the same message would show
    yield* Effect.sleep("300 millis")

    const entries = yield* dlq.list({ context: "poison", limit: poisonSeqs.size * 2 + 10 })
    const mine = entries.filter((e) => e.record.stream === stream)
    const bySeq = new Map<number, Array<(typeof mine)[number]>>()
    for (const e of mine) {
      const seq = e.record.sequence ?? -1
      bySeq.set(seq, [...(bySeq.get(seq) ?? []), e])
    }
    const perKind: Record<string, { sent: number; deadLettered: number; ok: number; example?: string }> = {}
    for (const [seq, expect] of poisonSeqs) {
      const k = (perKind[expect.kind] ??= { sent: 0, deadLettered: 0, ok: 0 })
      k.sent++
      const records = bySeq.get(seq) ?? []
      if (records.length > 0) k.deadLettered++
      const r = records[0]?.record
      const good = records.length === 1 && r !== undefined &&
        r.reason === expect.reason && r.errorTag === expect.errorTag &&
        r.errorMessage.includes(expect.mentions) && r.errorMessage.length < 2000 &&
        r.attempts <= maxDeliver
      if (good) k.ok++
      if (r !== undefined && k.example === undefined) k.example = `${r.reason}/${r.errorTag}: ${r.errorMessage.slice(0, 140)}`
      if (!good) {
        report.check(
          false,
          `${expect.kind} #${seq}: ${records.length} dead letter(s)` +
            (r === undefined ? "" : ` ${r.reason}/${r.errorTag} after ${r.attempts} deliveries: ${r.errorMessage.slice(0, 160)}`)
        )
      }
    }
    const good = [...goodIds, ...headerless]
    report.effects = [...handled.values()].reduce((a, b) => a + b, 0)
    report.lost = good.filter((id) => !handled.has(id)).length
    report.duplicateEffects = [...handled.values()].filter((c) => c > 1).length
    const handledPoison = [...handled.keys()].filter((id) => !goodIds.has(id) && !headerless.has(id)).length
    report.check(handledPoison === 0, `${handledPoison} poison message(s) were handled`)
    report.set("good", goodIds.size)
    report.set("headerlessHandled", [...headerless].filter((id) => handled.has(id)).length)
    report.set("deadLettered", mine.length)
    report.set("perKind", perKind)
    report.set("defectHandlerRuns", defectRuns)
    report.set("maxDeliver", maxDeliver)
  }).pipe(
    // the scope (children, consumers, clients) closes before the server goes away
    Effect.scoped,
    Effect.provide(Layer.mergeAll(DeadLetter.layer()).pipe(Layer.provideMerge(natsLayer()))),
    Effect.catchAllCause((cause) => Effect.sync(() => void report.check(false, `scenario crashed: ${cause}`))),
    Effect.map(() => report.result())
  )
}
