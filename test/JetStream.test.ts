import { describe, expect, layer } from "@effect/vitest"
import { NatsTestServer } from "@effect-nats/testing"
import { nanos } from "@nats-io/nats-core"
import { Cause, Effect, Layer } from "effect"
import { JetStream, NatsClient, NatsError } from "effect-nats"
import { unique } from "./utils.js"

/** A stream name and a subject space of its own. */
const names = () => {
  const name = unique("JS")
  return { name, subject: `${name.toLowerCase()}.>` }
}

describe("JetStream", () => {
  describe("on a server without JetStream", () => {
    layer(NatsTestServer.layer({ jetstream: false }), { excludeTestServices: true, timeout: "30 seconds" })((it) => {
      it.scoped("building the layer fails with a typed error that says JetStream is not available", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const error = yield* Effect.flip(Layer.build(JetStream.layer.pipe(
            Layer.provide(NatsClient.layer({ servers: server.url, maxReconnectAttempts: 0, drainTimeout: "1 second" }))
          )))
          expect(NatsError.isNatsError(error)).toBe(true)
          if (NatsError.isNatsError(error)) expect(error.message).toMatch(/JetStream/i)
        }))
    })
  })

  describe("provisioning", () => {
    layer(NatsTestServer.layerJetStream(), { excludeTestServices: true, timeout: "30 seconds" })((it) => {
      describe("ensureStream", () => {
        it.effect("creates, then leaves an identical stream unchanged", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name, subject } = names()
            const spec: JetStream.StreamSpec = {
              name,
              subjects: [subject],
              maxAge: "365 days",
              maxMsgs: 1000,
              duplicateWindow: "1 minute",
              discard: "old",
              description: "orders"
            }
            const first = yield* js.ensureStream(spec)
            expect(first._tag).toBe("Created")
            expect(first.info.config.name).toBe(name)
            expect(first.info.config.max_age).toBe(nanos(365 * 24 * 3600 * 1000))
            expect(first.info.config.storage).toBe("file")

            const second = yield* js.ensureStream(spec)
            expect(second._tag).toBe("Unchanged")
            // the server really has it
            const info = yield* js.streamInfo(name)
            expect(info.config.subjects).toEqual([subject])
            expect(info.config.duplicate_window).toBe(nanos(60_000))
          }))

        it.effect("an updatable change is applied: Updated, with the changed fields, and read back", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name, subject } = names()
            yield* js.ensureStream({ name, subjects: [subject], maxAge: "1 hour" })
            const updated = yield* js.ensureStream({ name, subjects: [subject], maxAge: "2 hours" })
            expect(updated._tag).toBe("Updated")
            if (updated._tag === "Updated") expect(updated.changed).toEqual(["max_age"])
            expect(updated.info.config.max_age).toBe(nanos(2 * 3600 * 1000))
            expect((yield* js.streamInfo(name)).config.max_age).toBe(nanos(2 * 3600 * 1000))
            // and now it is the current state
            expect((yield* js.ensureStream({ name, subjects: [subject], maxAge: "2 hours" }))._tag).toBe("Unchanged")
          }))

        it.effect("changing storage is an IncompatibleChange naming the field; the stream is left alone", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name, subject } = names()
            yield* js.ensureStream({ name, subjects: [subject], storage: "file" })
            const error = yield* Effect.flip(js.ensureStream({ name, subjects: [subject], storage: "memory", maxMsgs: 5 }))
            expect(error._tag).toBe("JetStreamProvisionError")
            if (error._tag === "JetStreamProvisionError") {
              expect(error.reason).toBe("IncompatibleChange")
              expect(error.kind).toBe("stream")
              expect(error.fields).toEqual(["storage"])
              expect(error.message).toContain("storage")
              expect(error.message).toContain(name)
            }
            const info = yield* js.streamInfo(name)
            expect(info.config.storage).toBe("file")
            expect(info.config.max_msgs).toBe(-1) // nothing of the rejected spec was applied
          }))

        it.effect("changing retention is an IncompatibleChange", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name, subject } = names()
            yield* js.ensureStream({ name, subjects: [subject] })
            const error = yield* Effect.flip(js.ensureStream({ name, subjects: [subject], retention: "workqueue" }))
            expect(error._tag === "JetStreamProvisionError" && error.fields).toEqual(["retention"])
          }))

        it.effect("a configuration the server refuses is a Rejected provisioning error", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name, subject } = names()
            yield* js.ensureStream({ name, subjects: [subject] })
            const other = unique("JS")
            const error = yield* Effect.flip(js.ensureStream({ name: other, subjects: [subject] })) // overlapping subjects
            expect(error._tag).toBe("JetStreamProvisionError")
            if (error._tag === "JetStreamProvisionError") {
              expect(error.reason).toBe("Rejected")
              expect(error.message).toContain(other)
            }
          }))

        it.effect("an update the server refuses fails typed, with the server's reason in the message", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const a = names()
            const b = names()
            yield* js.ensureStream({ name: a.name, subjects: [a.subject] })
            yield* js.ensureStream({ name: b.name, subjects: [b.subject] })
            // moving B onto A's subjects is refused by the server (subjects overlap)
            const error = yield* Effect.flip(js.ensureStream({ name: b.name, subjects: [a.subject] }))
            expect(error._tag).toBe("JetStreamProvisionError")
            if (error._tag === "JetStreamProvisionError") {
              expect(error.kind).toBe("stream")
              expect(error.fields).toEqual(["subjects"])
              expect(error.message).toContain(b.name)
              expect(error.message).toMatch(/overlap/i)
              expect(error.cause).toBeDefined()
            }
            expect((yield* js.streamInfo(b.name)).config.subjects).toEqual([b.subject])
          }))

        it.effect("provisioning errors print as JetStreamProvisionError (the resource name does not replace the error name)", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name, subject } = names()
            yield* js.ensureStream({ name, subjects: [subject] })
            const error = yield* Effect.flip(js.ensureStream({ name, subjects: [subject], storage: "memory" }))
            expect(String(error)).toMatch(/^JetStreamProvisionError: /)
            expect(Cause.pretty(Cause.fail(error))).toMatch(/^JetStreamProvisionError: /)
          }))

        it.effect("streamInfo of a missing stream: NatsRequestError with errCode 10059", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const error = yield* Effect.flip(js.streamInfo(unique("MISSING")))
            expect(error._tag).toBe("NatsRequestError")
            if (error._tag === "NatsRequestError") {
              expect(error.errCode).toBe(10059)
              expect(error.code).toBe(404)
            }
            expect(NatsError.isTransient(error)).toBe(false)
          }))
      })

      describe("ensureConsumer", () => {
        it.effect("creates, leaves unchanged, updates ackWait, refuses a deliverPolicy change", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name: stream, subject } = names()
            yield* js.ensureStream({ name: stream, subjects: [subject], storage: "memory" })
            const durable = unique("c")
            const spec: JetStream.ConsumerSpec = {
              stream,
              durable,
              ackWait: "30 seconds",
              maxDeliver: 5,
              maxAckPending: 50,
              filterSubject: subject,
              description: "billing projector"
            }

            const first = yield* js.ensureConsumer(spec)
            expect(first._tag).toBe("Created")
            expect(first.info.config.durable_name).toBe(durable)
            expect(first.info.config.ack_policy).toBe("explicit")
            expect(first.info.config.max_deliver).toBe(5)

            expect((yield* js.ensureConsumer(spec))._tag).toBe("Unchanged")

            const updated = yield* js.ensureConsumer({ ...spec, ackWait: "45 seconds" })
            expect(updated._tag).toBe("Updated")
            if (updated._tag === "Updated") expect(updated.changed).toEqual(["ack_wait"])
            expect(updated.info.config.ack_wait).toBe(nanos(45_000))
            expect((yield* js.consumerInfo(stream, durable)).config.ack_wait).toBe(nanos(45_000))

            const error = yield* Effect.flip(js.ensureConsumer({ ...spec, ackWait: "45 seconds", deliverPolicy: "new" }))
            expect(error._tag).toBe("JetStreamProvisionError")
            if (error._tag === "JetStreamProvisionError") {
              expect(error.reason).toBe("IncompatibleChange")
              expect(error.kind).toBe("consumer")
              expect(error.fields).toEqual(["deliver_policy"])
              expect(error.message).toContain(durable)
            }
            expect((yield* js.consumerInfo(stream, durable)).config.deliver_policy).toBe("all")
          }))

        it.effect("a consumer spec of only defaults (and replicas: 1) is Unchanged on the second ensure", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name: stream, subject } = names()
            yield* js.ensureStream({ name: stream, subjects: [subject], storage: "memory", replicas: 1 })
            expect((yield* js.ensureStream({ name: stream, subjects: [subject], storage: "memory", replicas: 1 }))._tag)
              .toBe("Unchanged")
            const plain = { stream, durable: unique("c") }
            const created = yield* js.ensureConsumer(plain)
            expect(created._tag).toBe("Created")
            expect(created.info.config.ack_wait).toBe(nanos(30_000))
            expect(created.info.config.max_ack_pending).toBe(1000)
            expect((yield* js.ensureConsumer(plain))._tag).toBe("Unchanged")
            const r1 = { stream, durable: unique("c"), replicas: 1 }
            expect((yield* js.ensureConsumer(r1))._tag).toBe("Created")
            expect((yield* js.ensureConsumer(r1))._tag).toBe("Unchanged")
          }))

        it.effect("a consumer with a server-side backoff can be provisioned idempotently", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name: stream, subject } = names()
            yield* js.ensureStream({ name: stream, subjects: [subject], storage: "memory" })
            // the server sets ack_wait to backoff[0] when a backoff is given (nats-server 2.9+)
            const spec: JetStream.ConsumerSpec = { stream, durable: unique("c"), maxDeliver: 5, backoff: ["1 second", "5 seconds"] }
            const first = yield* js.ensureConsumer(spec)
            expect(first._tag).toBe("Created")
            expect(first.info.config.backoff).toEqual([nanos(1000), nanos(5000)])
            expect((yield* js.ensureConsumer(spec))._tag).toBe("Unchanged")
            const longer = yield* js.ensureConsumer({ ...spec, backoff: ["1 second", "10 seconds"] })
            expect(longer._tag).toBe("Updated")
            expect(longer.info.config.backoff).toEqual([nanos(1000), nanos(10_000)])
          }))

        it.effect("consumerInfo of a missing consumer: errCode 10014; ensureConsumer on a missing stream: errCode 10059", () =>
          Effect.gen(function*() {
            const js = yield* JetStream.JetStream
            const { name: stream, subject } = names()
            yield* js.ensureStream({ name: stream, subjects: [subject], storage: "memory" })
            const missing = yield* Effect.flip(js.consumerInfo(stream, "nobody"))
            expect(missing._tag === "NatsRequestError" && missing.errCode).toBe(10014)

            const noStream = yield* Effect.flip(js.ensureConsumer({ stream: unique("NOSTREAM"), durable: "c" }))
            expect(noStream._tag).toBe("NatsRequestError")
            expect(noStream._tag === "NatsRequestError" && noStream.errCode).toBe(10059)
          }))
      })
    })
  })
})
