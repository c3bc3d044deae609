/**
 * One conformance suite for the transports effect-nats runs on: a real
 * nats-server (`NatsTestServer.layerJetStream()`) and the in-memory test double
 * (`InMemoryNats.layer()`). The cases are written once; where the two differ,
 * the in-memory one is wrong (or the case documents a server-only feature).
 *
 * Time: on the real server `advance(d)` sleeps `d`; in memory it is
 * `TestClock.adjust(d)`, which runs the server-side timers (nak delays,
 * ack_wait expiry, request timeouts) deterministically.
 */
import { expect } from "@effect/vitest"
import { Capture } from "@effect-nats/testing"
import { JetStreamApiError, type JsMsg, StorageType } from "@nats-io/jetstream"
import { headers as natsHeaders } from "@nats-io/nats-core"
import { Clock, Context, type Duration, Effect, Exit, Fiber, Metric, Option, Queue, Ref, Schedule, Schema, Scope } from "effect"
import {
  Aggregate,
  Command,
  CommandClient,
  CommandService,
  Consumer,
  DeadLetter,
  Event,
  Handler,
  JetStream,
  Metrics,
  NatsClient,
  NatsError,
  Projection,
  Publisher
} from "effect-nats"

/** What every case may use. */
export type Services =
  | NatsClient.NatsClient
  | JetStream.JetStream
  | DeadLetter.DeadLetter
  | Publisher.Publisher
  | CommandClient.CommandClient
  | Capture.Capture

/** A registered test: runs `body` with the transport's services. */
export type Register<R> = (
  name: string,
  body: () => Effect.Effect<void, unknown, Services | R | Scope.Scope>,
  timeout?: number
) => void

/** A transport under test. */
export interface Transport<R> {
  readonly name: string
  /** Register the cases (the transport decides how its layer is built and shared). */
  readonly describe: (cases: (test: Register<R>) => void) => void
  /** Let server-side time pass: `TestClock.adjust` in memory, a real sleep on a server. */
  readonly advance: (d: Duration.DurationInput) => Effect.Effect<void>
  /** Real time to let in-flight messages arrive before asserting that nothing did. */
  readonly settle: Duration.DurationInput
  /** A second, independent client (connection) on the same server, closed with the scope. */
  readonly connect: Effect.Effect<Context.Context<NatsClient.NatsClient | JetStream.JetStream>, unknown, R | Scope.Scope>
}

const live = Clock.make()
const enc = new TextEncoder()

let counter = 0
const unique = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter++}`

/** Wait until `check` holds, polling on the live clock. */
const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, timeout: Duration.DurationInput = "10 seconds") =>
  check.pipe(
    Effect.filterOrFail((ok) => ok, () => new Error("condition not met in time")),
    Effect.retry(Schedule.spaced("10 millis")),
    Effect.timeout(timeout),
    Effect.withClock(live),
    Effect.orDie,
    Effect.asVoid
  )

const sleepLive = (d: Duration.DurationInput) => Effect.sleep(d).pipe(Effect.withClock(live))

/** A stream on `<prefix>.>` for the scope (deleted afterwards). */
const tempStream = (
  options: Partial<Omit<JetStream.StreamSpec, "name" | "subjects">> & { readonly subjects?: ReadonlyArray<string> } = {}
) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const name = unique("CONF")
    const prefix = name.toLowerCase()
    yield* Effect.acquireRelease(
      js.ensureStream({ name, subjects: options.subjects ?? [`${prefix}.>`], storage: "memory", ...options }),
      () => Effect.promise(() => js.manager.streams.delete(name).catch(() => false))
    )
    return { name, prefix }
  })

/** Messages of a durable pull consumer, in a queue. */
const pull = (stream: string, durable: string, js?: JetStream.JetStream["Type"]) =>
  Effect.gen(function*() {
    const handle = js ?? (yield* JetStream.JetStream)
    const queue = yield* Queue.unbounded<JsMsg>()
    const consumer = yield* Effect.promise(() => handle.client.consumers.get(stream, durable))
    const messages = yield* Effect.acquireRelease(
      Effect.promise(() => consumer.consume({
          max_messages: 16,
          callback: (m) => {
            Queue.unsafeOffer(queue, m)
          }
        })),
      (m) => Effect.promise(() => m.close().then(() => undefined, () => undefined))
    )
    const take = Queue.take(queue).pipe(
      Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error(`no message on ${stream}/${durable}`) }),
      Effect.withClock(live)
    )
    return { queue, take, messages }
  })

/** JSON messages on a core subject, in a queue. */
const listen = (subject: string) =>
  Effect.gen(function*() {
    const nats = yield* NatsClient.NatsClient
    const queue = yield* Queue.unbounded<Record<string, unknown>>()
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        nats.connection.subscribe(subject, {
          callback: (err, m) => {
            if (err === null) Queue.unsafeOffer(queue, m.json<Record<string, unknown>>())
          }
        })
      ),
      (s) => Effect.sync(() => s.unsubscribe())
    )
    yield* nats.flush
    const take = Queue.take(queue).pipe(
      Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error(`nothing on ${subject}`) }),
      Effect.withClock(live)
    )
    return { queue, take }
  })

const Order = Schema.Struct({ orderId: Schema.String, n: Schema.Number })

/** Event definitions whose context is unique to a test (so their subjects are the test's own). */
const orderEvent = (context: string) =>
  Event.make({ type: `${context}.order.placed`, aggregate: "Order", schema: Order, aggregateId: (d) => d.orderId })

const Echo = Command.make({
  service: "confecho",
  aggregate: "text",
  name: "echo",
  payload: Schema.Struct({ text: Schema.String }),
  success: Schema.Struct({ text: Schema.String, by: Schema.String })
})

/** The cases. */
export const transportConformance = <R>(t: Transport<R>): void =>
  t.describe((test) => {
    // --- publish -------------------------------------------------------------------------------

    test("publish: sequences and PubAcks; a subject no stream captures has no responders", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        const a = yield* Effect.promise(() => js.client.publish(`${prefix}.a`, enc.encode("1")))
        const b = yield* Effect.promise(() => js.client.publish(`${prefix}.b`, enc.encode("2")))
        expect(a).toEqual({ stream: name, seq: 1, duplicate: false })
        expect(b).toEqual({ stream: name, seq: 2, duplicate: false })
        const failed = yield* Effect.tryPromise({
          try: () => js.client.publish(`nowhere.${prefix}`, enc.encode("x"), { timeout: 2000 }),
          catch: NatsError.fromCause("publish", `nowhere.${prefix}`)
        }).pipe(Effect.flip)
        expect(failed._tag).toBe("NatsNoRespondersError")
        const info = yield* js.streamInfo(name)
        expect(info.state).toMatchObject({ messages: 2, first_seq: 1, last_seq: 2 })
        const stored = yield* Effect.promise(() => js.manager.streams.getMessage(name, { seq: 2 }))
        expect(stored?.subject).toBe(`${prefix}.b`)
        expect(new TextDecoder().decode(stored!.data)).toBe("2")
        expect(yield* Effect.promise(() => js.manager.streams.getMessage(name, { seq: 9 }))).toBeNull()
      }))

    test("provisioning: a stream whose subjects overlap another's is rejected; ensure is idempotent", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        const again = yield* js.ensureStream({ name, subjects: [`${prefix}.>`], storage: "memory" })
        expect(again._tag).toBe("Unchanged")
        const other = unique("OVERLAP")
        const error = yield* js.ensureStream({ name: other, subjects: [`${prefix}.x.*`], storage: "memory" }).pipe(
          Effect.flip
        )
        expect(error).toMatchObject({ _tag: "JetStreamProvisionError", reason: "Rejected" })
        const updated = yield* js.ensureStream({ name, subjects: [`${prefix}.>`], storage: "memory", maxMsgs: 10 })
        expect(updated._tag).toBe("Updated")
        expect(updated.info.config.max_msgs).toBe(10)
        const consumer = yield* js.ensureConsumer({ stream: name, durable: "c", filterSubject: `${prefix}.a.*`, maxDeliver: 3 })
        expect(consumer._tag).toBe("Created")
        expect(consumer.info.config).toMatchObject({ durable_name: "c", filter_subject: `${prefix}.a.*`, max_deliver: 3 })
        expect((yield* js.ensureConsumer({ stream: name, durable: "c", filterSubject: `${prefix}.a.*`, maxDeliver: 3 }))._tag)
          .toBe("Unchanged")
        const outside = yield* js.ensureConsumer({ stream: name, durable: "d", filterSubject: `elsewhere.${prefix}` }).pipe(
          Effect.flip
        )
        expect(outside).toMatchObject({ _tag: "JetStreamProvisionError", reason: "Rejected" })
        const missing = yield* Effect.flip(js.consumerInfo(name, "nope"))
        expect(missing).toMatchObject({ _tag: "NatsRequestError", errCode: 10014 })
        const noStream = yield* Effect.flip(js.streamInfo(unique("NOPE")))
        expect(noStream).toMatchObject({ _tag: "NatsRequestError", errCode: 10059 })
      }))

    test("dedup: the same Nats-Msg-Id within the window is a duplicate with the original sequence; after it, stored again", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream({ duplicateWindow: "1 second" })
        const publish = (id: string) => Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode(id), { msgID: id }))
        expect(yield* publish("a")).toEqual({ stream: name, seq: 1, duplicate: false })
        expect(yield* publish("b")).toEqual({ stream: name, seq: 2, duplicate: false })
        expect(yield* publish("a")).toEqual({ stream: name, seq: 1, duplicate: true })
        yield* t.advance("2 seconds")
        expect(yield* publish("a")).toEqual({ stream: name, seq: 3, duplicate: false })
        expect((yield* js.streamInfo(name)).state.messages).toBe(3)
      }), 20_000)

    test("JetStream.publish (the Publisher's path): PubAcks, msgID dedup, no responders, a JetStream API error", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream({ maxMsgSize: 64 })
        const headers = (id: string) => {
          const h = natsHeaders()
          h.set("Nats-Msg-Id", id)
          return h
        }
        const publish = (subject: string, data: string, id?: string) =>
          Effect.tryPromise({
            try: () => js.publish(subject, enc.encode(data), id === undefined ? undefined : headers(id), 2000),
            catch: NatsError.fromCause("publish", subject)
          })
        expect(yield* publish(`${prefix}.a`, "1", "m-1")).toEqual({ stream: name, seq: 1, duplicate: false })
        expect(yield* publish(`${prefix}.b`, "2")).toEqual({ stream: name, seq: 2, duplicate: false })
        expect(yield* publish(`${prefix}.a`, "1", "m-1")).toEqual({ stream: name, seq: 1, duplicate: true })
        // many in flight at once: every one answered, in order of sequence
        const many = yield* Effect.all(Array.from({ length: 50 }, (_, i) => publish(`${prefix}.c`, `${i}`)), { concurrency: "unbounded" })
        expect(many.map((a) => a.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 3))
        expect((yield* Effect.flip(publish(`nowhere.${prefix}`, "x")))._tag).toBe("NatsNoRespondersError")
        const tooBig = yield* Effect.flip(publish(`${prefix}.a`, "x".repeat(100)))
        expect(tooBig).toMatchObject({ _tag: "NatsRequestError", code: 400 })
        expect((yield* js.streamInfo(name)).state.messages).toBe(52)
      }))

    test("Publisher.publishMessages: per-aggregate order; a failure stops its aggregate, the others go on", () =>
      Effect.gen(function*() {
        const { name, prefix } = yield* tempStream()
        // one immediate retry (no delay to wait for on either clock)
        const publisher = yield* Publisher.make({ retry: Schedule.recurs(1) })
        const js = yield* JetStream.JetStream
        const message = (aggregateId: string, n: number, subject = `${prefix}.${aggregateId}`): Publisher.OutgoingMessage => ({
          id: `${aggregateId}-${n}`,
          subject,
          headers: {},
          payload: `${n}`,
          type: "t",
          aggregateId
        })
        const published = yield* publisher.publishMessages([
          message("a", 1),
          message("b", 1),
          message("a", 2),
          message("b", 2, `nowhere.${prefix}`), // no stream: no responders, retried once, then fails
          message("b", 3),
          message("a", 3)
        ], { window: 2 })
        expect(published.acks.map((a) => a.id).filter((id) => id.startsWith("a"))).toEqual(["a-1", "a-2", "a-3"])
        expect(published.acks.map((a) => a.id).filter((id) => id.startsWith("b"))).toEqual(["b-1"])
        expect(published.failure).toMatchObject({ _tag: "PublishError", reason: "Failed", messageId: "b-2" })
        expect((yield* js.streamInfo(name)).state.messages).toBe(4)
      }), 30_000)

    test("Publisher: typed publish, a duplicate envelope id, capture by event", () =>
      Effect.gen(function*() {
        const { prefix } = yield* tempStream()
        const Placed = orderEvent(prefix)
        const publisher = yield* Publisher.Publisher
        const capture = yield* Capture.Capture
        const first = yield* publisher.publish(Placed, { orderId: "o-1", n: 1 }, { id: "fixed-1" })
        const again = yield* publisher.publish(Placed, { orderId: "o-1", n: 1 }, { id: "fixed-1" })
        expect(again).toMatchObject({ seq: first.seq, duplicate: true })
        yield* publisher.publish(Placed, { orderId: "o-2", n: 2 })
        const events = yield* capture.awaitEvents(Placed, 2)
        expect(events.map((e) => e.data.orderId)).toEqual(["o-1", "o-2"])
        expect(events[0]!.aggregateId).toBe("o-1")
        // stored: two messages (the duplicate was not stored)
        const stored = yield* capture.awaitMessages(Placed.subject, 2)
        expect(stored.map((m) => m.seq)).toEqual([first.seq, first.seq + 1])
        expect(stored[0]!.header("nats-msg-id")).toBe("fixed-1")
        expect((yield* capture.published(`${prefix}.>`)).length).toBe(2)
      }))

    test("limits and management: max_msgs (old / new), per subject, purge, delete, last by subject, subject counts", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const nats = yield* NatsClient.NatsClient
        const old = yield* tempStream({ maxMsgs: 2 })
        for (const x of ["a", "b", "c"]) yield* Effect.promise(() => js.client.publish(`${old.prefix}.${x}`, enc.encode(x)))
        expect((yield* js.streamInfo(old.name)).state).toMatchObject({ messages: 2, first_seq: 2, last_seq: 3 })
        const fresh = yield* tempStream({ maxMsgs: 1, discard: "new" })
        yield* Effect.promise(() => js.client.publish(`${fresh.prefix}.a`, enc.encode("a")))
        const refused = yield* Effect.tryPromise({
          try: () => js.client.publish(`${fresh.prefix}.b`, enc.encode("b")),
          catch: (e) => e
        }).pipe(Effect.flip)
        // a 503 API error, which the toolkit reports as "JetStream unavailable"
        expect(refused).toBeInstanceOf(JetStreamApiError)
        expect(refused).toMatchObject({ code: 10077, status: 503 })
        expect(NatsError.fromCause("publish")(refused)._tag).toBe("NatsNoRespondersError")
        const m = yield* tempStream()
        const publish = (x: string) => Effect.promise(() => js.client.publish(`${m.prefix}.${x}`, enc.encode(x)))
        for (const x of ["a", "b", "a", "c", "a"]) yield* publish(x)
        const info = yield* Effect.promise(() => js.manager.streams.info(m.name, { subjects_filter: ">" }))
        expect(info.state.subjects).toEqual({ [`${m.prefix}.a`]: 3, [`${m.prefix}.b`]: 1, [`${m.prefix}.c`]: 1 })
        const last = yield* Effect.promise(() => js.manager.streams.getMessage(m.name, { last_by_subj: `${m.prefix}.a` }))
        expect(last?.seq).toBe(5)
        expect(yield* Effect.promise(() => js.manager.streams.deleteMessage(m.name, 2))).toBe(true)
        const purged = yield* Effect.promise(() => js.manager.streams.purge(m.name, { filter: `${m.prefix}.a` }))
        expect(purged).toMatchObject({ success: true, purged: 3 })
        expect((yield* js.streamInfo(m.name)).state).toMatchObject({ messages: 1, first_seq: 4, last_seq: 5 })
        // a core request on a stream subject is answered with the PubAck
        const ack = yield* nats.request(`${m.prefix}.core`, enc.encode("core"), { timeout: "2 seconds" })
        expect(ack.json()).toEqual({ stream: m.name, seq: 6 })
        const per = unique("PER")
        yield* Effect.acquireRelease(
          Effect.promise(() =>
            js.manager.streams.add({ name: per, subjects: [`${per.toLowerCase()}.>`], max_msgs_per_subject: 1, storage: StorageType.Memory })
          ),
          () => Effect.promise(() => js.manager.streams.delete(per).catch(() => false))
        )
        for (const x of ["a", "a", "b"]) {
          yield* Effect.promise(() => js.client.publish(`${per.toLowerCase()}.${x}`, enc.encode(x)))
        }
        expect((yield* js.streamInfo(per)).state).toMatchObject({ messages: 2, first_seq: 2, last_seq: 3 })
      }))

    test("KV: create is atomic, update checks the revision, a delete leaves a marker that create replaces", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const bucket = unique("kv")
        const kv = yield* Effect.acquireRelease(
          Effect.promise(() => js.kvm.create(bucket, { history: 1, storage: StorageType.Memory })),
          () => Effect.promise(() => js.manager.streams.delete(`KV_${bucket}`).catch(() => false))
        )
        const code = (e: unknown) => (e instanceof JetStreamApiError ? e.code : undefined)
        const r1 = yield* Effect.promise(() => kv.create("k", "v1"))
        const dup = yield* Effect.tryPromise({ try: () => kv.create("k", "v2"), catch: code }).pipe(Effect.flip)
        expect(dup).toBe(10071)
        const r2 = yield* Effect.promise(() => kv.update("k", "v2", r1))
        expect(r2).toBe(r1 + 1)
        const stale = yield* Effect.tryPromise({ try: () => kv.update("k", "v3", r1), catch: code }).pipe(Effect.flip)
        expect(stale).toBe(10071)
        const entry = yield* Effect.promise(() => kv.get("k"))
        expect(entry).toMatchObject({ key: "k", revision: r2, operation: "PUT" })
        expect(entry?.string()).toBe("v2")
        yield* Effect.promise(() => kv.delete("k", { previousSeq: r2 }))
        expect((yield* Effect.promise(() => kv.get("k")))?.operation).toBe("DEL")
        const r4 = yield* Effect.promise(() => kv.create("k", "v4"))
        expect(r4).toBe(r2 + 2)
        expect(yield* Effect.promise(() => kv.get("missing"))).toBeNull()
      }))

    // --- consumers: settling -------------------------------------------------------------------

    test("ack: the message is not redelivered after ack_wait; consumer info shows it acked", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        yield* js.ensureConsumer({ stream: name, durable: "acker", ackWait: "1 second" })
        const { queue, take } = yield* pull(name, "acker")
        yield* Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode("1")))
        const m = yield* take
        expect(m.info).toMatchObject({ deliveryCount: 1, streamSequence: 1, redelivered: false, stream: name, consumer: "acker" })
        m.ack()
        yield* eventually(Effect.map(js.consumerInfo(name, "acker"), (i) => i.num_ack_pending === 0))
        yield* t.advance("1500 millis")
        yield* sleepLive(t.settle)
        expect(Option.isNone(yield* Queue.poll(queue))).toBe(true)
        const info = yield* js.consumerInfo(name, "acker")
        expect(info).toMatchObject({ num_pending: 0, num_ack_pending: 0, num_redelivered: 0 })
        expect(info.delivered.stream_seq).toBe(1)
        expect(info.ack_floor.stream_seq).toBe(1)
      }), 20_000)

    test("nak: without delay, redelivered at once with the delivery count increased", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        yield* js.ensureConsumer({ stream: name, durable: "naker" })
        const { take } = yield* pull(name, "naker")
        yield* Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode("1")))
        const first = yield* take
        first.nak()
        const second = yield* take
        expect(second.info).toMatchObject({ deliveryCount: 2, streamSequence: 1, redelivered: true })
        expect(second.redelivered).toBe(true)
        second.ack()
      }))

    test("nak with delay: not redelivered before the delay, redelivered after it", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        yield* js.ensureConsumer({ stream: name, durable: "delayed", ackWait: "10 seconds" })
        const { queue, take } = yield* pull(name, "delayed")
        yield* Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode("1")))
        const first = yield* take
        first.nak(1000)
        yield* t.advance("400 millis")
        yield* sleepLive(t.settle)
        expect(Option.isNone(yield* Queue.poll(queue))).toBe(true)
        yield* t.advance("1200 millis")
        const second = yield* take
        expect(second.info).toMatchObject({ deliveryCount: 2, streamSequence: 1 })
        second.ack()
      }), 20_000)

    test("term: never redelivered; a terminated advisory names the message", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        yield* js.ensureConsumer({ stream: name, durable: "termer", ackWait: "1 second" })
        const advisories = yield* listen(`$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.${name}.termer`)
        const { queue, take } = yield* pull(name, "termer")
        yield* Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode("1")))
        const m = yield* take
        m.term()
        const advisory = yield* advisories.take
        expect(advisory).toMatchObject({ stream: name, consumer: "termer", stream_seq: 1, deliveries: 1 })
        yield* eventually(Effect.map(js.consumerInfo(name, "termer"), (i) => i.num_ack_pending === 0))
        yield* t.advance("1500 millis")
        yield* sleepLive(t.settle)
        expect(Option.isNone(yield* Queue.poll(queue))).toBe(true)
        // limits retention: the message stays in the stream
        expect((yield* js.streamInfo(name)).state.messages).toBe(1)
      }), 20_000)

    test("workqueue retention: what is acked or termed leaves the stream", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream({ retention: "workqueue" })
        yield* js.ensureConsumer({ stream: name, durable: "worker" })
        const { take } = yield* pull(name, "worker")
        for (const n of ["1", "2", "3"]) yield* Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode(n)))
        const a = yield* take
        const b = yield* take
        const c = yield* take
        a.ack()
        b.term()
        yield* eventually(Effect.map(js.streamInfo(name), (i) => i.state.messages === 1))
        const info = yield* js.streamInfo(name)
        expect(info.state).toMatchObject({ messages: 1, first_seq: 3, last_seq: 3 })
        c.ack()
        yield* eventually(Effect.map(js.streamInfo(name), (i) => i.state.messages === 0))
        expect((yield* js.streamInfo(name)).state).toMatchObject({ messages: 0, first_seq: 4, last_seq: 3 })
      }))

    // --- consumers: time ----------------------------------------------------------------------

    test("ack_wait: an unacked message is redelivered after ack_wait; working() pushes the deadline back", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        yield* js.ensureConsumer({ stream: name, durable: "slow", ackWait: "1 second" })
        const { queue, take } = yield* pull(name, "slow")
        yield* Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode("1")))
        const m = yield* take
        yield* t.advance("600 millis")
        m.working()
        yield* t.advance("600 millis")
        yield* sleepLive(t.settle)
        // 1.2 s after delivery, 0.6 s after working(): not yet
        expect(Option.isNone(yield* Queue.poll(queue))).toBe(true)
        yield* t.advance("1 second")
        const again = yield* take
        expect(again.info).toMatchObject({ deliveryCount: 2, streamSequence: 1, redelivered: true })
        const info = yield* js.consumerInfo(name, "slow")
        expect(info.num_redelivered).toBe(1)
        expect(info.num_ack_pending).toBe(1)
        again.ack()
        yield* eventually(Effect.map(js.consumerInfo(name, "slow"), (i) => i.num_ack_pending === 0 && i.num_redelivered === 0))
      }), 20_000)

    test("backoff: ack_wait follows the backoff; nak(delay) on top of a backoff waits delay + (backoff[n] - backoff[0])", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        yield* js.ensureConsumer({ stream: name, durable: "backoff", backoff: ["500 millis", "2 seconds"], maxDeliver: 4 })
        const { queue, take } = yield* pull(name, "backoff")
        yield* Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode("1")))
        yield* take
        // first redelivery after backoff[0] (the ack wait)
        yield* t.advance("700 millis")
        const second = yield* take
        expect(second.info.deliveryCount).toBe(2)
        // nak(300 ms) of the 2nd delivery: 300 ms + (2 s - 500 ms) = 1.8 s
        second.nak(300)
        yield* t.advance("1 second")
        yield* sleepLive(t.settle)
        expect(Option.isNone(yield* Queue.poll(queue))).toBe(true)
        yield* t.advance("1200 millis")
        const third = yield* take
        expect(third.info.deliveryCount).toBe(3)
        third.ack()
      }), 20_000)

    test("max_deliver: delivery stops after max_deliver and the max-deliveries advisory names the message", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        yield* js.ensureConsumer({ stream: name, durable: "limited", ackWait: "1 second", maxDeliver: 2 })
        const advisories = yield* listen(`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${name}.limited`)
        const { queue, take } = yield* pull(name, "limited")
        yield* Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode("poison")))
        const first = yield* take
        first.nak()
        const second = yield* take
        expect(second.info.deliveryCount).toBe(2)
        second.nak()
        const advisory = yield* advisories.take
        expect(advisory).toMatchObject({ stream: name, consumer: "limited", stream_seq: 1, deliveries: 2 })
        yield* t.advance("1500 millis")
        yield* sleepLive(t.settle)
        expect(Option.isNone(yield* Queue.poll(queue))).toBe(true)
        yield* eventually(Effect.map(js.consumerInfo(name, "limited"), (i) => i.num_ack_pending === 0))
        // the consumer goes on with the next message
        yield* Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode("fine")))
        const next = yield* take
        expect(next.info).toMatchObject({ streamSequence: 2, deliveryCount: 1 })
        next.ack()
      }), 20_000)

    test("ordering: one consumer gets messages in stream order, per subject in publish order", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        yield* js.ensureConsumer({ stream: name, durable: "ordered" })
        for (let i = 0; i < 20; i++) {
          yield* Effect.promise(() => js.client.publish(`${prefix}.${i % 2 === 0 ? "a" : "b"}`, enc.encode(`${i}`)))
        }
        const { take } = yield* pull(name, "ordered")
        const got: Array<{ subject: string; n: number; seq: number }> = []
        for (let i = 0; i < 20; i++) {
          const m = yield* take
          got.push({ subject: m.subject, n: Number(m.string()), seq: m.seq })
          m.ack()
        }
        expect(got.map((g) => g.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
        expect(got.filter((g) => g.subject.endsWith(".a")).map((g) => g.n)).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16, 18])
        expect(got.filter((g) => g.subject.endsWith(".b")).map((g) => g.n)).toEqual([1, 3, 5, 7, 9, 11, 13, 15, 17, 19])
      }))

    test("restart: a new consume() (also on a new connection) resumes from the durable position", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const { name, prefix } = yield* tempStream()
        yield* js.ensureConsumer({ stream: name, durable: "resume", ackWait: "10 seconds" })
        const publish = (n: number) => Effect.promise(() => js.client.publish(`${prefix}.x`, enc.encode(`${n}`)))
        for (const n of [1, 2, 3]) yield* publish(n)
        yield* Effect.scoped(Effect.gen(function*() {
          const { take } = yield* pull(name, "resume")
          for (let i = 0; i < 3; i++) (yield* take).ack()
          yield* eventually(Effect.map(js.consumerInfo(name, "resume"), (i) => i.num_ack_pending === 0))
        }))
        for (const n of [4, 5]) yield* publish(n)
        const other = yield* t.connect
        const js2 = Context.get(other, JetStream.JetStream)
        const { queue, take } = yield* pull(name, "resume", js2)
        const a = yield* take
        const b = yield* take
        expect([a.seq, b.seq]).toEqual([4, 5])
        expect([a.info.deliveryCount, b.info.deliveryCount]).toEqual([1, 1])
        a.ack()
        b.ack()
        yield* sleepLive(t.settle)
        expect(Option.isNone(yield* Queue.poll(queue))).toBe(true)
        const info = yield* js.consumerInfo(name, "resume")
        expect(info.delivered.stream_seq).toBe(5)
      }))

    // --- the toolkit on top ----------------------------------------------------------------------

    test("Consumer: a failing handler is retried, redelivered with nak(delay), then dead-lettered with its reason", () =>
      Effect.gen(function*() {
        const { name, prefix } = yield* tempStream()
        const Placed = orderEvent(prefix)
        const publisher = yield* Publisher.Publisher
        const capture = yield* Capture.Capture
        const dlq = yield* DeadLetter.DeadLetter
        const attempts = yield* Ref.make(0)
        yield* Consumer.make({
          stream: name,
          durable: "failing",
          maxDeliver: 3,
          retry: Schedule.recurs(1),
          redelivery: Schedule.spaced("300 millis"),
          handlers: [
            Handler.make(Placed, (e) =>
              Effect.zipRight(
                Ref.update(attempts, (n) => n + 1),
                Effect.fail({ _tag: "WarehouseDown", message: `cannot reserve ${e.data.orderId}` })
              ))
          ]
        })
        const ack = yield* publisher.publish(Placed, { orderId: "o-9", n: 9 })
        yield* t.advance("2 seconds")
        const dead = yield* capture.awaitDeadLetter({ subject: Placed.subject, reason: "MaxDeliveries" })
        expect(dead).toMatchObject({
          reason: "MaxDeliveries",
          errorTag: "WarehouseDown",
          attempts: 3,
          stream: name,
          consumer: "failing",
          sequence: ack.seq
        })
        expect(dead.errorMessage).toContain("cannot reserve o-9")
        // 3 deliveries x (1 try + 1 in-process retry)
        expect(yield* Ref.get(attempts)).toBe(6)
        const listed = (yield* dlq.list({ context: prefix })).filter((e) => e.record.stream === name)
        expect(listed.map((e) => e.record.reason)).toEqual(["MaxDeliveries"])
        const js = yield* JetStream.JetStream
        yield* eventually(Effect.map(js.consumerInfo(name, "failing"), (i) => i.num_ack_pending === 0))
      }), 30_000)

    test("Consumer: a leader-elected advisory restarts the pull: nothing lost or handled twice; the drain closes the restarted pull", () =>
      Effect.gen(function*() {
        const { name, prefix } = yield* tempStream()
        const Placed = orderEvent(prefix)
        const publisher = yield* Publisher.Publisher
        const nats = yield* NatsClient.NatsClient
        const js = yield* JetStream.JetStream
        const handled = new Map<string, number>()
        const stalls = Metric.tagged(Metrics.consumerStalls, "signal", "advisory")
        const stallsBefore = (yield* Metric.value(stalls)).count
        const scope = yield* Scope.make()
        yield* Consumer.make({
          stream: name,
          durable: "restarted",
          handlers: [Handler.make(Placed, (e) => Effect.sync(() => void handled.set(e.id, (handled.get(e.id) ?? 0) + 1)))]
        }).pipe(Scope.extend(scope))
        const publish = (from: number, to: number) =>
          Effect.forEach(Array.from({ length: to - from }, (_, i) => from + i), (n) => publisher.publish(Placed, { orderId: `o-${n}`, n }))
        const handledAll = (n: number) =>
          Effect.zipRight(t.advance(t.settle), eventually(Effect.sync(() => handled.size === n)))
        yield* publish(0, 20)
        yield* handledAll(20)
        // what a new consumer leader's election says (no such advisory in memory, nor on one server)
        const advisory = `$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.${name}.restarted`
        yield* nats.publish(advisory, "{}")
        yield* publish(20, 30)
        yield* nats.publish(advisory, "{}")
        yield* publish(30, 40)
        yield* handledAll(40)
        expect([...handled.values()].every((c) => c === 1)).toBe(true)
        expect((yield* Metric.value(stalls)).count).toBeGreaterThan(stallsBefore)
        // the drain closes the pull that is current now: nothing is pulled after it
        yield* Scope.close(scope, Exit.void)
        yield* publish(40, 45)
        yield* t.advance("1 second")
        expect(handled.size).toBe(40)
        const info = yield* js.consumerInfo(name, "restarted")
        expect(info.num_ack_pending).toBe(0)
        expect(info.num_pending).toBe(5)
      }), 30_000)

    test("Consumer: what the server gives up on (a worker that never settles) reaches the DLQ through the advisory", () =>
      Effect.gen(function*() {
        const { name, prefix } = yield* tempStream()
        const Placed = orderEvent(prefix)
        const publisher = yield* Publisher.Publisher
        const capture = yield* Capture.Capture
        const deliveries = yield* Ref.make<Array<number>>([])
        yield* Consumer.make({
          stream: name,
          durable: "crashy",
          ackWait: "1 second",
          maxDeliver: 2,
          // no settle stage: like a worker that crashes on the message every time
          pipeline: (m) => [(next) => (d) => Effect.zipRight(Ref.update(deliveries, (xs) => [...xs, d.msg.info.deliveryCount]), next(d)), m.decode],
          handlers: [Handler.make(Placed, () => Effect.void)]
        })
        const ack = yield* publisher.publish(Placed, { orderId: "o-crash", n: 1 })
        for (let i = 0; i < 4; i++) yield* t.advance("1100 millis")
        const dead = yield* capture.awaitDeadLetter({ subject: Placed.subject })
        expect(dead).toMatchObject({ reason: "MaxDeliveries", sequence: ack.seq, attempts: 3, stream: name })
        // the server delivered max_deliver = maxDeliver + 1 times
        expect(yield* Ref.get(deliveries)).toEqual([1, 2, 3])
      }), 30_000)

    // --- request / reply --------------------------------------------------------------------------

    test("request/reply: wildcards, a queue group answers each request once, no responders, timeouts", () =>
      Effect.gen(function*() {
        const nats = yield* NatsClient.NatsClient
        const prefix = unique("rr")
        const handled = yield* Ref.make<Array<string>>([])
        for (const member of ["m1", "m2"]) {
          yield* Effect.acquireRelease(
            Effect.sync(() =>
              nats.connection.subscribe(`${prefix}.*.echo`, {
                queue: "workers",
                callback: (err, msg) => {
                  if (err !== null) return
                  Effect.runSync(Ref.update(handled, (xs) => [...xs, member]))
                  msg.respond(enc.encode(`${member}:${msg.subject}:${msg.string()}`))
                }
              })
            ),
            (s) => Effect.sync(() => s.unsubscribe())
          )
        }
        yield* Effect.acquireRelease(
          Effect.sync(() => nats.connection.subscribe(`${prefix}.silent`, { callback: () => {} })),
          (s) => Effect.sync(() => s.unsubscribe())
        )
        yield* nats.flush
        const replies = yield* Effect.forEach(
          Array.from({ length: 6 }, (_, i) => i),
          (i) => nats.request(`${prefix}.k${i}.echo`, enc.encode(`${i}`), { timeout: "2 seconds" })
        )
        expect(replies.map((r) => r.string().split(":").slice(1).join(":"))).toEqual(
          Array.from({ length: 6 }, (_, i) => `${prefix}.k${i}.echo:${i}`)
        )
        expect((yield* Ref.get(handled)).length).toBe(6)
        const none = yield* Effect.flip(nats.request(`${prefix}.nobody`, enc.encode("?"), { timeout: "2 seconds" }))
        expect(none._tag).toBe("NatsNoRespondersError")
        // a plain publish with a reply subject nobody takes: the reply subject gets an empty 503 status message
        const statuses = yield* Queue.unbounded<{ readonly size: number; readonly code: number | undefined }>()
        yield* Effect.acquireRelease(
          Effect.sync(() =>
            nats.connection.subscribe(`_INBOX.${prefix}`, {
              callback: (err, m) => {
                if (err === null) Queue.unsafeOffer(statuses, { size: m.data.length, code: m.headers?.code })
              }
            })
          ),
          (s) => Effect.sync(() => s.unsubscribe())
        )
        yield* nats.publish(`${prefix}.nobody`, enc.encode("?"), { reply: `_INBOX.${prefix}` })
        const status = yield* Queue.take(statuses).pipe(
          Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("no status") }),
          Effect.withClock(live)
        )
        expect(status).toEqual({ size: 0, code: 503 })
        const waiting = yield* Effect.fork(
          Effect.flip(nats.request(`${prefix}.silent`, enc.encode("?"), { timeout: "500 millis" }))
        )
        yield* t.advance("600 millis")
        const timedOut = yield* Fiber.join(waiting).pipe(
          Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("request did not time out") }),
          Effect.withClock(live)
        )
        expect(timedOut._tag).toBe("NatsTimeoutError")
      }))

    test("CommandService + CommandClient: typed round trip in a queue group; no responders is a transport error", () =>
      Effect.gen(function*() {
        for (const by of ["a", "b"]) {
          yield* CommandService.make({
            name: "confecho",
            version: "1.0.0",
            commands: [CommandService.handler(Echo, (p) => Effect.succeed({ text: p.text.toUpperCase(), by }))]
          })
        }
        const client = yield* CommandClient.CommandClient
        const results = yield* Effect.forEach(["x", "y", "z", "w"], (text) => client.execute(Echo, undefined, { text }))
        expect(results.map((r) => r.text)).toEqual(["X", "Y", "Z", "W"])
        expect(new Set(results.map((r) => r.by)).size).toBeGreaterThanOrEqual(1)
        const pings = yield* client.ping({ service: "confecho", maxResponses: 2, window: "2 seconds" })
        expect(pings.map((p) => p.name)).toEqual(["confecho", "confecho"])
        const Nobody = Command.make({
          service: "confnobody",
          aggregate: "thing",
          name: "poke",
          payload: Schema.Struct({}),
          success: Schema.Struct({})
        })
        const error = yield* Effect.flip(client.execute(Nobody, undefined, {}))
        expect(error).toMatchObject({ _tag: "CommandTransportError", reason: "NoResponders" })
      }))

    test("Aggregate and Projection: one writer wins a version (ConcurrencyConflict); a projection reads the history, then live events", () =>
      Effect.gen(function*() {
        const { name, prefix } = yield* tempStream()
        const Added = Event.make({ type: `${prefix}.counter.added`, aggregate: "Counter", schema: Schema.Struct({ n: Schema.Number }) })
        const Counter = Aggregate.make({
          events: [Added],
          initial: 0,
          evolve: (total, event) => total + event.data.n,
          decide: (n: number) => Effect.succeed([{ type: Added.type, data: { n } }])
        })
        const counters = yield* Aggregate.repository(Counter, { stream: name })
        yield* counters.execute("c-1", 1)
        const loaded = yield* counters.load("c-1")
        // another writer appends after the load: an append expecting the loaded sequence is refused
        yield* counters.execute("c-1", 2)
        const js = yield* JetStream.JetStream
        const late = natsHeaders()
        late.set("Nats-Expected-Last-Subject-Sequence", String(loaded.sequence))
        const refused = yield* Effect.flip(Effect.tryPromise({
          try: () => js.client.publish(`${prefix}.counter.events.c-1`, new TextEncoder().encode("{}"), { headers: late }),
          catch: NatsError.fromCause("test")
        }))
        expect(refused).toMatchObject({ _tag: "NatsRequestError", errCode: 10071 })
        expect(yield* counters.load("c-1")).toMatchObject({ state: 3, version: 2 })

        const seen: Array<number> = []
        const projection = yield* Projection.make({
          stream: name,
          handlers: [Handler.make(Added, (e) => Effect.sync(() => void seen.push(e.data.n)))]
        })
        expect(yield* projection.live).toMatchObject({ done: 2, total: 2, live: true })
        yield* counters.execute("c-2", 5)
        yield* Effect.repeat(Effect.sync(() => seen.length), { until: (n) => n === 3, schedule: Schedule.spaced("10 millis") }).pipe(
          Effect.timeout("5 seconds"),
          Effect.withClock(live)
        )
        expect(seen).toEqual([1, 2, 5])
      }))
  })
