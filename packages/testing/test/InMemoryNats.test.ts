/**
 * The in-memory transport beyond the conformance suite (test/Conformance*.ts
 * in the core project runs the shared cases against it and nats-server).
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { JetStreamApiError, type JsMsg } from "@nats-io/jetstream"
import { headers as natsHeaders, type Msg } from "@nats-io/nats-core"
import { Clock, Context, Effect, Exit, Fiber, Layer, Option, Queue, Ref, Schema, TestClock } from "effect"
import { Consumer, DeadLetter, Dedup, Event, Handler, JetStream, Metrics, NatsClient, NatsError, Publisher } from "effect-nats"
import { Capture, InMemoryNats } from "@effect-nats/testing"

const InvoiceIssued = Event.make({
  type: "billing.invoice.issued",
  aggregate: "Invoice",
  schema: Schema.Struct({ invoiceId: Schema.String, amount: Schema.Number }),
  aggregateId: (d) => d.invoiceId
})

const enc = new TextEncoder()
const Nats = InMemoryNats.layer()
const Pipeline = Layer.mergeAll(DeadLetter.layer(), Publisher.layer()).pipe(Layer.provideMerge(Nats))

const within = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  self.pipe(Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => new Error("timed out") }), Effect.withClock(live))
const live = Clock.make()

/** Messages of a pull consumer in a queue. */
const pull = (stream: string, durable: string, maxMessages = 16) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const queue = yield* Queue.unbounded<JsMsg>()
    const consumer = yield* Effect.promise(() => js.client.consumers.get(stream, durable))
    yield* Effect.acquireRelease(
      Effect.promise(() =>
        consumer.consume({
          max_messages: maxMessages,
          callback: (m) => {
            Queue.unsafeOffer(queue, m)
          }
        })
      ),
      (m) => Effect.promise(() => m.close())
    )
    return { queue, take: within(Queue.take(queue)) }
  })

const settle = Effect.promise(() => new Promise<void>((r) => setTimeout(r, 5)))

describe("InMemoryNats", () => {
  describe("a test double", () => {
    it.effect("refuses to start outside a test runner unless allowed", () =>
      Effect.gen(function*() {
        const saved = { VITEST: process.env["VITEST"], NODE_ENV: process.env["NODE_ENV"] }
        delete process.env["VITEST"]
        delete process.env["NODE_ENV"]
        try {
          const refused = yield* Effect.exit(Effect.scoped(Layer.build(InMemoryNats.layer())))
          expect(Exit.isFailure(refused)).toBe(true)
          expect(String(Exit.isFailure(refused) ? refused.cause : "")).toContain("test double")
          const allowed = yield* Effect.exit(Effect.scoped(Layer.build(InMemoryNats.layer({ allowOutsideTests: true }))))
          expect(Exit.isSuccess(allowed)).toBe(true)
        } finally {
          Object.assign(process.env, saved)
        }
      }))

    it.scoped("reports the configured server version", () =>
      Effect.gen(function*() {
        const nats = yield* NatsClient.NatsClient
        expect(yield* nats.serverAtLeast("2.10.4")).toBe(false)
        expect(Option.map(yield* nats.serverInfo, (i) => i.version)).toEqual(Option.some("2.9.10"))
      }).pipe(Effect.provide(InMemoryNats.layer({ serverVersion: "2.9.10" }))))
  })

  describe("core NATS", () => {
    it.scoped("wildcards, queue groups (one member per message), replies, iterators", () =>
      Effect.gen(function*() {
        const nats = yield* NatsClient.NatsClient
        const nc = nats.connection
        const got: Array<string> = []
        const star = nc.subscribe("a.*.c", { callback: (_, m) => void got.push(`star:${m.subject}`) })
        const tail = nc.subscribe("a.>", { callback: (_, m) => void got.push(`tail:${m.subject}`) })
        const q1: Array<string> = []
        const q2: Array<string> = []
        nc.subscribe("work.>", { queue: "w", callback: (_, m) => void q1.push(m.subject) })
        nc.subscribe("work.>", { queue: "w", callback: (_, m) => void q2.push(m.subject) })
        const iterated = nc.subscribe("it.x", { max: 2 })
        nc.publish("a.b.c", "1")
        nc.publish("a.b", "2")
        nc.publish("a.b.c.d", "3")
        nc.publish("b.b.c", "4")
        for (let i = 0; i < 10; i++) nc.publish(`work.${i}`)
        for (let i = 0; i < 3; i++) nc.publish("it.x", `${i}`)
        yield* nats.flush
        expect(got.sort()).toEqual(["star:a.b.c", "tail:a.b", "tail:a.b.c", "tail:a.b.c.d"])
        expect(q1.length + q2.length).toBe(10)
        expect(q1.length).toBeGreaterThan(0)
        expect(q2.length).toBeGreaterThan(0)
        const seen: Array<string> = []
        yield* Effect.promise(async () => {
          for await (const m of iterated) seen.push(m.string())
        })
        expect(seen).toEqual(["0", "1"])
        expect(iterated.isClosed()).toBe(true)
        star.unsubscribe()
        tail.unsubscribe()
        nc.publish("a.b.c", "after")
        yield* nats.flush
        expect(got.length).toBe(4)
      }).pipe(Effect.provide(Nats)))

    it.scoped("a publish with a reply nobody takes is answered with a 503 status; requests time out on the Clock", () =>
      Effect.gen(function*() {
        const nats = yield* NatsClient.NatsClient
        const statuses: Array<Msg> = []
        nats.connection.subscribe("_INBOX.me", { callback: (_, m) => void statuses.push(m) })
        yield* nats.publish("nobody.here", "?", { reply: "_INBOX.me" })
        yield* nats.flush
        expect(statuses.length).toBe(1)
        expect(statuses[0]!.data.length).toBe(0)
        expect(statuses[0]!.headers?.code).toBe(503)
        nats.connection.subscribe("slow.service", { callback: () => {} })
        const request = yield* Effect.fork(Effect.flip(nats.request("slow.service", "?", { timeout: "1 hour" })))
        yield* TestClock.adjust("59 minutes")
        expect(Option.isNone(yield* Fiber.poll(request))).toBe(true)
        yield* TestClock.adjust("1 minute")
        expect((yield* within(Fiber.join(request)))._tag).toBe("NatsTimeoutError")
      }).pipe(Effect.provide(Nats)))

    it.scoped("invalid subjects, oversize payloads and a closed connection fail as nats.js fails", () =>
      Effect.gen(function*() {
        const server = yield* InMemoryNats.InMemoryNats
        const nats = yield* NatsClient.NatsClient
        expect((yield* Effect.flip(nats.publish("bad..subject", "x")))._tag).toBe("NatsRequestError")
        expect((yield* Effect.flip(nats.publish("ok.subject", new Uint8Array(2048))))._tag).toBe("NatsRequestError")
        const other = yield* Effect.scoped(Effect.map(server.connect, (ctx) => Context.get(ctx, NatsClient.NatsClient)))
        expect(other.connection.isClosed()).toBe(true)
        expect((yield* Effect.flip(other.publish("x.y", "1")))).toMatchObject({ _tag: "NatsConnectionError", reason: "Closed" })
      }).pipe(Effect.provide(InMemoryNats.layer({ maxPayload: 1024 }))))
  })

  describe("streams", () => {
    it.scoped("limits: max_msgs (discard old / new), max_msgs_per_subject, max_age on the Clock", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const publish = (subject: string) => Effect.promise(() => js.client.publish(subject, "x"))
        yield* js.ensureStream({ name: "OLD", subjects: ["old.>"], maxMsgs: 2 })
        for (const s of ["old.a", "old.b", "old.c"]) yield* publish(s)
        expect((yield* js.streamInfo("OLD")).state).toMatchObject({ messages: 2, first_seq: 2, last_seq: 3 })
        yield* js.ensureStream({ name: "NEW", subjects: ["new.>"], maxMsgs: 1, discard: "new" })
        yield* publish("new.a")
        const refused = yield* Effect.tryPromise({ try: () => js.client.publish("new.b", "x"), catch: (e) => e })
          .pipe(Effect.flip)
        expect(refused).toBeInstanceOf(JetStreamApiError)
        expect((refused as JetStreamApiError).code).toBe(10077)
        yield* Effect.promise(() =>
          js.manager.streams.add({ name: "PER", subjects: ["per.>"], max_msgs_per_subject: 1 })
        )
        for (const s of ["per.a", "per.a", "per.b"]) yield* publish(s)
        expect((yield* js.streamInfo("PER")).state.messages).toBe(2)
        const last = yield* Effect.promise(() => js.manager.streams.getMessage("PER", { last_by_subj: "per.a" }))
        expect(last?.seq).toBe(2)
        yield* js.ensureStream({ name: "AGE", subjects: ["age.>"], maxAge: "1 minute" })
        const info = yield* js.streamInfo("AGE")
        // the duplicate window is capped by max_age
        expect(info.config.duplicate_window).toBe(60_000_000_000)
        yield* publish("age.a")
        yield* TestClock.adjust("30 seconds")
        yield* publish("age.b")
        yield* TestClock.adjust("31 seconds")
        expect((yield* js.streamInfo("AGE")).state).toMatchObject({ messages: 1, first_seq: 2 })
        yield* TestClock.adjust("30 seconds")
        expect((yield* js.streamInfo("AGE")).state).toMatchObject({ messages: 0, first_seq: 3, last_seq: 2 })
      }).pipe(Effect.provide(Nats)))

    it.scoped("purge, delete message, info with subjects, expectations, a core publish stored with its PubAck", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const nats = yield* NatsClient.NatsClient
        yield* js.ensureStream({ name: "P", subjects: ["p.>"] })
        for (const s of ["p.a", "p.b", "p.a", "p.c"]) yield* Effect.promise(() => js.client.publish(s, s))
        const info = yield* Effect.promise(() => js.manager.streams.info("P", { subjects_filter: ">" }))
        expect(info.state.subjects).toEqual({ "p.a": 2, "p.b": 1, "p.c": 1 })
        expect(yield* Effect.promise(() => js.manager.streams.deleteMessage("P", 2))).toBe(true)
        expect((yield* js.streamInfo("P")).state).toMatchObject({ messages: 3, num_deleted: 1 })
        const purged = yield* Effect.promise(() => js.manager.streams.purge("P", { filter: "p.a" }))
        expect(purged).toEqual({ success: true, purged: 2 })
        // expected last subject sequence (what KV update uses)
        const h = natsHeaders()
        h.set("Nats-Expected-Last-Subject-Sequence", "3")
        const wrong = yield* Effect.tryPromise({ try: () => js.client.publish("p.c", "x", { headers: h }), catch: (e) => e })
          .pipe(Effect.flip)
        expect((wrong as JetStreamApiError).code).toBe(10071)
        // a core request on a stream subject gets the PubAck
        const ack = yield* nats.request("p.d", "core", { timeout: "1 second" })
        expect(ack.json()).toEqual({ stream: "P", seq: 5 })
      }).pipe(Effect.provide(Nats)))

    it.scoped("interest retention keeps a message until every consumer acked it", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "I", subjects: ["i.>"], retention: "interest" })
        yield* Effect.promise(() => js.client.publish("i.lost", "nobody listens"))
        expect((yield* js.streamInfo("I")).state.messages).toBe(0)
        yield* js.ensureConsumer({ stream: "I", durable: "a" })
        yield* js.ensureConsumer({ stream: "I", durable: "b" })
        yield* Effect.promise(() => js.client.publish("i.x", "1"))
        const a = yield* pull("I", "a")
        const b = yield* pull("I", "b")
        ;(yield* a.take).ack()
        yield* settle
        expect((yield* js.streamInfo("I")).state.messages).toBe(1)
        ;(yield* b.take).ack()
        yield* settle
        expect((yield* js.streamInfo("I")).state.messages).toBe(0)
      }).pipe(Effect.provide(Nats)))
  })

  describe("consumers", () => {
    it.scoped("max_ack_pending holds new messages back, not redeliveries; consume() calls share the work", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "M", subjects: ["m.>"] })
        yield* js.ensureConsumer({ stream: "M", durable: "d", maxAckPending: 2 })
        for (let i = 1; i <= 4; i++) yield* Effect.promise(() => js.client.publish("m.x", `${i}`))
        const one = yield* pull("M", "d")
        const two = yield* pull("M", "d")
        yield* settle
        const first = [...(yield* Queue.takeAll(one.queue)), ...(yield* Queue.takeAll(two.queue))]
        expect(first.map((m) => m.seq).sort()).toEqual([1, 2])
        first.find((m) => m.seq === 1)!.nak()
        yield* settle
        const redelivered = [...(yield* Queue.takeAll(one.queue)), ...(yield* Queue.takeAll(two.queue))]
        expect(redelivered.map((m) => [m.seq, m.info.deliveryCount])).toEqual([[1, 2]])
        redelivered[0]!.ack()
        first.find((m) => m.seq === 2)!.ack()
        yield* settle
        const rest = [...(yield* Queue.takeAll(one.queue)), ...(yield* Queue.takeAll(two.queue))]
        expect(rest.map((m) => m.seq).sort()).toEqual([3, 4])
        const info = yield* js.consumerInfo("M", "d")
        expect(info).toMatchObject({ num_ack_pending: 2, num_pending: 0, num_waiting: 2 })
        expect(info.delivered).toMatchObject({ stream_seq: 4, consumer_seq: 5 })
      }).pipe(Effect.provide(Nats)))

    it.scoped("backoff: ack_wait follows the backoff entries; a nak of an hour waits an hour", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "B", subjects: ["b.>"] })
        yield* js.ensureConsumer({ stream: "B", durable: "d", backoff: ["1 second", "10 seconds"], maxDeliver: 5 })
        yield* Effect.promise(() => js.client.publish("b.x", "1"))
        const { queue, take } = yield* pull("B", "d")
        yield* take
        yield* TestClock.adjust("1 second")
        expect((yield* take).info.deliveryCount).toBe(2)
        yield* TestClock.adjust("9 seconds")
        yield* settle
        expect(Option.isNone(yield* Queue.poll(queue))).toBe(true)
        yield* TestClock.adjust("1 second")
        const third = yield* take
        expect(third.info.deliveryCount).toBe(3)
        yield* js.ensureConsumer({ stream: "B", durable: "plain" })
        const plain = yield* pull("B", "plain")
        const m = yield* plain.take
        m.nak(3_600_000)
        yield* TestClock.adjust("59 minutes")
        yield* settle
        expect(Option.isNone(yield* Queue.poll(plain.queue))).toBe(true)
        yield* TestClock.adjust("1 minute")
        expect((yield* plain.take).info.deliveryCount).toBe(2)
      }).pipe(Effect.provide(Nats)))

    it.scoped("deliver policies, filters, ordered consumers, ackAck", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "D", subjects: ["d.>"] })
        for (const s of ["d.a", "d.b", "d.a"]) yield* Effect.promise(() => js.client.publish(s, s))
        yield* js.ensureConsumer({ stream: "D", durable: "new", deliverPolicy: "new" })
        yield* js.ensureConsumer({ stream: "D", durable: "last", deliverPolicy: "last" })
        yield* js.ensureConsumer({ stream: "D", durable: "only-b", filterSubject: "d.b" })
        const refused = yield* Effect.flip(js.ensureConsumer({ stream: "D", durable: "elsewhere", filterSubject: "x.>" }))
        expect(refused._tag).toBe("JetStreamProvisionError")
        yield* Effect.promise(() => js.client.publish("d.b", "later"))
        const fresh = yield* pull("D", "new")
        expect((yield* fresh.take).seq).toBe(4)
        const last = yield* pull("D", "last")
        expect((yield* last.take).seq).toBe(3)
        const onlyB = yield* pull("D", "only-b")
        const b1 = yield* onlyB.take
        expect([b1.seq, (yield* onlyB.take).seq]).toEqual([2, 4])
        expect(yield* Effect.promise(() => b1.ackAck())).toBe(true)
        // an ordered consumer (no name), read as an iterator, as chaos/lib/harness readStream does
        const ordered = yield* Effect.promise(() => js.client.consumers.get("D"))
        const seqs = yield* Effect.promise(async () => {
          const out: Array<number> = []
          const messages = await ordered.consume({ max_messages: 2 })
          for await (const m of messages) {
            out.push(m.seq)
            if (m.seq >= 4) break
          }
          return out
        })
        expect(seqs).toEqual([1, 2, 3, 4])
      }).pipe(Effect.provide(Nats)))

    it.scoped("many messages: acked ones leave no timers behind (advancing TestClock past their ack_wait is cheap)", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "MANY", subjects: ["many.>"] })
        yield* js.ensureConsumer({ stream: "MANY", durable: "d", ackWait: "30 seconds", maxAckPending: 5000 })
        const { take } = yield* pull("MANY", "d", 5000)
        for (let i = 0; i < 2000; i++) yield* Effect.promise(() => js.client.publish("many.x", `${i}`))
        for (let i = 0; i < 2000; i++) (yield* take).ack()
        const started = performance.now()
        yield* TestClock.adjust("1 minute")
        expect(performance.now() - started).toBeLessThan(1000)
        const info = yield* js.consumerInfo("MANY", "d")
        expect(info).toMatchObject({ num_ack_pending: 0, num_redelivered: 0, num_pending: 0 })
        expect(info.delivered.stream_seq).toBe(2000)
      }).pipe(Effect.provide(Nats)))

    it.scoped("a connection that goes away: its unacked messages come back after ack_wait to another client", () =>
      Effect.gen(function*() {
        const server = yield* InMemoryNats.InMemoryNats
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "C", subjects: ["c.>"] })
        yield* js.ensureConsumer({ stream: "C", durable: "d", ackWait: "30 seconds" })
        yield* Effect.promise(() => js.client.publish("c.x", "1"))
        yield* Effect.scoped(Effect.gen(function*() {
          const other = Context.get(yield* server.connect, JetStream.JetStream)
          const consumer = yield* Effect.promise(() => other.client.consumers.get("C", "d"))
          const got = yield* Queue.unbounded<JsMsg>()
          yield* Effect.promise(() =>
            consumer.consume({
              callback: (m) => {
                Queue.unsafeOffer(got, m)
              }
            })
          )
          yield* within(Queue.take(got)) // taken, never acked: the client goes away
        }))
        const { take } = yield* pull("C", "d")
        yield* TestClock.adjust("30 seconds")
        const again = yield* take
        expect(again.info).toMatchObject({ deliveryCount: 2, streamSequence: 1 })
      }).pipe(Effect.provide(Nats)))
  })

  describe("KV", () => {
    it.scoped("create is atomic, update checks the revision, deletes leave a marker, TTL follows the Clock", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const kv = yield* Effect.promise(() => js.kvm.create("bucket", { history: 1, ttl: 60_000 }))
        const r1 = yield* Effect.promise(() => kv.create("k", "v1"))
        const dup = yield* Effect.tryPromise({ try: () => kv.create("k", "v2"), catch: (e) => e }).pipe(Effect.flip)
        expect((dup as JetStreamApiError).code).toBe(10071)
        const r2 = yield* Effect.promise(() => kv.update("k", "v2", r1))
        const stale = yield* Effect.tryPromise({ try: () => kv.update("k", "v3", r1), catch: (e) => e }).pipe(Effect.flip)
        expect((stale as JetStreamApiError).code).toBe(10071)
        expect((yield* Effect.promise(() => kv.get("k")))?.string()).toBe("v2")
        yield* Effect.promise(() => kv.delete("k", { previousSeq: r2 }))
        expect((yield* Effect.promise(() => kv.get("k")))?.operation).toBe("DEL")
        const r4 = yield* Effect.promise(() => kv.create("k", "v4"))
        expect(r4).toBeGreaterThan(r2)
        yield* TestClock.adjust("61 seconds")
        expect(yield* Effect.promise(() => kv.get("k"))).toBeNull()
        // the bucket is a stream, as nats.js lays it out; the capture leaves `$KV` subjects out by default
        expect((yield* js.streamInfo("KV_bucket")).config.subjects).toEqual(["$KV.bucket.>"])
      }).pipe(Effect.provide(Nats)))

    it.scoped("Dedup.layerKv: a redelivered message is acked as a duplicate", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "BILLING", subjects: ["billing.>"] })
        const handled = yield* Ref.make(0)
        const capture = yield* Capture.Capture
        const dedup = yield* Dedup.makeKv({ bucket: "dedup" })
        yield* Consumer.make({
          stream: "BILLING",
          durable: "once",
          handlers: [Handler.make(InvoiceIssued, () => Ref.update(handled, (n) => n + 1))]
        }).pipe(Effect.provideService(Dedup.Dedup, dedup))
        const publisher = yield* Publisher.Publisher
        yield* publisher.publish(InvoiceIssued, { invoiceId: "i", amount: 1 }, { id: "same" })
        // the same envelope id after the JetStream duplicate window: stored again, skipped by Dedup
        yield* TestClock.adjust("3 minutes")
        yield* publisher.publish(InvoiceIssued, { invoiceId: "i", amount: 1 }, { id: "same" })
        yield* Capture.eventually(Effect.map(capture.counter(Metrics.duplicatesSkipped), (n) => n === 1))
        expect(yield* Ref.get(handled)).toBe(1)
        expect((yield* capture.published("billing.>")).length).toBe(2)
        expect((yield* capture.events(InvoiceIssued)).length).toBe(1)
      }).pipe(Effect.provide(Pipeline)))
  })

  describe("capture", () => {
    it.scoped("published messages by subject and event; dead letters; counters; spans linked through traceparent", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const capture = yield* Capture.Capture
        const publisher = yield* Publisher.Publisher
        yield* js.ensureStream({ name: "BILLING", subjects: ["billing.>"] })
        yield* Consumer.make({
          stream: "BILLING",
          durable: "strict",
          handlers: [
            Handler.make(InvoiceIssued, (e) =>
              e.data.amount < 0 ? Effect.fail(new Handler.PermanentError({ message: "negative amount" })) : Effect.void)
          ]
        })
        yield* publisher.publish(InvoiceIssued, { invoiceId: "ok", amount: 1 })
        yield* publisher.publish(InvoiceIssued, { invoiceId: "bad", amount: -1 })
        yield* Effect.promise(() => js.client.publish("billing.invoice.issued", enc.encode("{not json")))
        const events = yield* capture.awaitEvents(InvoiceIssued, 2)
        expect(events.map((e) => e.data.invoiceId)).toEqual(["ok", "bad"])
        expect((yield* capture.awaitMessages("billing.invoice.*", 3)).map((m) => m.seq)).toEqual([1, 2, 3])
        const permanent = yield* capture.awaitDeadLetter({ reason: "Permanent" })
        expect(permanent.errorMessage).toContain("negative amount")
        const decode = yield* capture.awaitDeadLetter({ reason: "Decode", context: "billing" })
        expect(decode.errorTag).toBe("InvalidJson")
        expect((yield* capture.deadLetters()).length).toBe(2)
        yield* Capture.eventually(Effect.map(capture.counter(Metrics.acked), (n) => n === 1))
        expect(yield* capture.counter(Metrics.deadLettered)).toBe(2)
        const publish = (yield* capture.spans("publish billing.invoice.issued"))[0]!
        expect(publish.kind).toBe("producer")
        yield* Capture.eventually(Effect.map(capture.spans("process billing.invoice.issued"), (s) => s.length === 3))
        const process = (yield* capture.spans("process billing.invoice.issued"))[0]!
        expect(process.kind).toBe("consumer")
        expect(process.traceId).toBe(publish.traceId)
        expect(process.parentSpanId).toBe(publish.spanId)
        expect(process.attributes["messaging.system"]).toBe("nats")
        const failed = yield* Effect.flip(capture.awaitMessages("nothing.>", 1, { timeout: "50 millis" }))
        expect(failed.message).toBe("expected 1 messages on nothing.>, saw 0")
        yield* capture.clear
        expect(yield* capture.published()).toEqual([])
        expect(yield* capture.counter(Metrics.deadLettered)).toBe(0)
      }).pipe(Effect.provide(Pipeline)))

    it.scoped("core subjects are captured only when asked for", () =>
      Effect.gen(function*() {
        const nats = yield* NatsClient.NatsClient
        const capture = yield* Capture.Capture
        yield* nats.publish("audit.login", "alice")
        const received = yield* capture.awaitReceived("audit.>", 1)
        expect(received[0]!.text()).toBe("alice")
        expect(received[0]!.stream).toBeUndefined()
        // the capture's subscription is a responder: a request to a captured subject does not get "no responders"
        const error = yield* Effect.flip(nats.request("audit.x", "?", { timeout: "10 millis" }).pipe(
          Effect.fork,
          Effect.tap(() => TestClock.adjust("10 millis")),
          Effect.flatMap(Fiber.join)
        ))
        expect(error._tag).toBe("NatsTimeoutError")
        const other = yield* Effect.flip(nats.request("other.x", "?"))
        expect(NatsError.isNatsError(other) && other._tag).toBe("NatsNoRespondersError")
      }).pipe(Effect.provide(InMemoryNats.layer({ capture: { subjects: ["audit.>"] } }))))
  })
})

describe("InMemoryNats shared by a describe", () => {
  layer(Pipeline)((it) => {
    it.scoped("the layer's timers run on the tests' TestClock", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "SHARED", subjects: ["shared.>"] })
        yield* js.ensureConsumer({ stream: "SHARED", durable: "d", ackWait: "1 minute" })
        yield* Effect.promise(() => js.client.publish("shared.x", "1"))
        const { take } = yield* pull("SHARED", "d")
        yield* take
        yield* TestClock.adjust("1 minute")
        expect((yield* take).info.deliveryCount).toBe(2)
      }))

    it.scoped("layerClient: a second client on the same server", () =>
      Effect.gen(function*() {
        const first = yield* NatsClient.NatsClient
        const second = Context.get(yield* Layer.build(InMemoryNats.layerClient), NatsClient.NatsClient)
        expect(second.connection).not.toBe(first.connection)
        const got: Array<string> = []
        second.connection.subscribe("hello.*", { callback: (_, m) => void got.push(m.subject) })
        yield* first.publish("hello.world", "hi")
        yield* first.flush
        expect(got).toEqual(["hello.world"])
      }))
  })
})
