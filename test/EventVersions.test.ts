import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Either, JSONSchema, Ref, Schema } from "effect"
import { Consumer, DeadLetter, Envelope, Event, Handler, JetStream, Publisher } from "effect-nats"
import { eventually, PipelineLive, unique } from "./utils.js"

// three generations of one event, as three deployments of the code define it
const V1 = Schema.Struct({ userId: Schema.String, name: Schema.String })
const V2 = Schema.Struct({ userId: Schema.String, firstName: Schema.String, lastName: Schema.String })
const V3 = Schema.Struct({
  userId: Schema.String,
  firstName: Schema.String,
  lastName: Schema.String,
  email: Schema.NullOr(Schema.String)
})
const type = "accounts.user.registered"

const AtV1 = Event.make({ type, aggregate: "User", schema: V1 })
const AtV2 = Event.make({
  type,
  aggregate: "User",
  schema: V2,
  versions: Event.history(V1, (v1) => {
    const [firstName = "", ...rest] = v1.name.split(" ")
    return { userId: v1.userId, firstName, lastName: rest.join(" ") }
  })
})
const AtV3 = Event.make({
  type,
  aggregate: "User",
  schema: V3,
  versions: Event.history(V1, (v1) => {
    const [firstName = "", ...rest] = v1.name.split(" ")
    return { userId: v1.userId, firstName, lastName: rest.join(" ") }
  }).pipe(Event.andThen(V2, (v2) => ({ ...v2, email: null })))
})

const envelopeAt = (schemaVersion: number | undefined, data: unknown) => ({
  id: `id-${schemaVersion}`,
  type,
  timestamp: "2026-01-01T00:00:00Z",
  correlationId: "c",
  aggregateId: "u",
  aggregateType: "User",
  version: 0,
  ...(schemaVersion === undefined ? {} : { schemaVersion }),
  data
})

describe("Event versions", () => {
  it("numbers the versions, oldest first, and exposes every version's JSON Schema", () => {
    expect(AtV1.schemaVersion).toBeUndefined()
    expect(AtV1.versions.map((v) => v.schemaVersion)).toEqual([1])
    expect(AtV3.schemaVersion).toBe(3)
    expect(AtV3.versions.map((v) => v.schemaVersion)).toEqual([1, 2, 3])
    const json = AtV3.versions.map((v) => JSONSchema.make(v.schema) as { required: Array<string> })
    expect(json.map((j) => j.required)).toEqual([
      ["userId", "name"],
      ["userId", "firstName", "lastName"],
      ["userId", "firstName", "lastName", "email"]
    ])
    // the envelope's JSON Schema: one member per version
    const envelope = JSONSchema.make(AtV3.envelope) as { anyOf: ReadonlyArray<unknown> }
    expect(envelope.anyOf).toHaveLength(3)
  })

  it("refuses an explicit schemaVersion that does not follow the history", () => {
    expect(() => Event.make({ type, aggregate: "User", schema: V2, schemaVersion: 5, versions: Event.history(V1, (v) => ({ userId: v.userId, firstName: v.name, lastName: "" })) })).toThrow(/expected 2/)
  })

  it("the envelope Schema migrates on decode and writes the current version on encode", () => {
    const decode = Schema.decodeUnknownSync(AtV3.envelope)
    expect(decode(envelopeAt(undefined, { userId: "u", name: "Ada Lovelace" })).data).toEqual({
      userId: "u",
      firstName: "Ada",
      lastName: "Lovelace",
      email: null
    })
    expect(decode(envelopeAt(2, { userId: "u", firstName: "A", lastName: "B" })).data).toMatchObject({ email: null })
    expect(decode(envelopeAt(3, { userId: "u", firstName: "A", lastName: "B", email: "a@b" })).data).toMatchObject({ email: "a@b" })
    const v3 = decode(envelopeAt(3, { userId: "u", firstName: "A", lastName: "B", email: "a@b" }))
    expect(Schema.encodeSync(AtV3.envelope)(v3).schemaVersion).toBe(3)
    // an old version cannot be written
    expect(() => Schema.encodeSync(AtV3.envelope)({ ...v3, schemaVersion: 1 })).toThrow()
    // a v2 body that does not fit v2 is a parse error naming it
    expect(() => decode(envelopeAt(2, { userId: "u", name: "x" }))).toThrow(/firstName/)
  })

  it("a handler decodes every known version to the current type and refuses a newer one with a typed error", () => {
    const handler = Handler.make(AtV3, () => Effect.void)
    const run = (u: unknown) => Effect.runSync(Effect.either(handler.decode(u)))
    const v1 = run(envelopeAt(1, { userId: "u", name: "Ada Lovelace" }))
    expect(Either.getOrThrow(v1).data).toEqual({ userId: "u", firstName: "Ada", lastName: "Lovelace", email: null })
    const v4 = run(envelopeAt(4, { anything: true }))
    expect(Either.isLeft(v4) && v4.left._tag).toBe("UnsupportedVersionError")
    // the slow path (metadata the fast path does not take) migrates too
    const slow = run({ ...envelopeAt(1, { userId: "u", name: "Ada" }), extra: 1 })
    expect(Either.getOrThrow(slow).data).toMatchObject({ firstName: "Ada", email: null })
  })

  layer(PipelineLive, { excludeTestServices: true, timeout: "30 seconds" })((it) => {
    it.scoped("events stored as v1 and v2 in a stream are consumed by code at v3; v4 is dead-lettered UnsupportedVersion", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const dlq = yield* DeadLetter.DeadLetter
        const publisher = yield* Publisher.Publisher
        const stream = unique("ACCOUNTS")
        yield* Effect.acquireRelease(
          js.ensureStream({ name: stream, subjects: ["accounts.>"], storage: "memory" }),
          () => Effect.promise(() => js.manager.streams.delete(stream).catch(() => false))
        )
        // the v1 and v2 deployments wrote these
        yield* publisher.publish(AtV1, { userId: "u1", name: "Ada Lovelace" })
        yield* publisher.publish(AtV2, { userId: "u2", firstName: "Alan", lastName: "Turing" })
        yield* publisher.publish(AtV3, { userId: "u3", firstName: "Grace", lastName: "Hopper", email: "g@h" })
        // a deployment newer than the consumer
        const raw = new TextEncoder().encode(JSON.stringify(envelopeAt(4, { userId: "u4", fullName: "X" })))
        yield* Effect.promise(() => js.client.publish(type, raw))

        const stored = yield* Effect.promise(() => js.manager.streams.getMessage(stream, { seq: 2 }))
        expect(stored!.json<Envelope.Encoded<unknown>>().schemaVersion).toBe(2)

        const seen = yield* Ref.make<Array<{ readonly schemaVersion: number | undefined; readonly data: typeof V3.Type }>>([])
        yield* Consumer.make({
          stream,
          durable: unique("v3"),
          handlers: [Handler.make(AtV3, (e) => Ref.update(seen, (xs) => [...xs, { schemaVersion: e.schemaVersion, data: e.data }]))]
        })
        yield* eventually(Effect.map(Ref.get(seen), (xs) => xs.length === 3))
        expect(yield* Ref.get(seen)).toEqual([
          { schemaVersion: undefined, data: { userId: "u1", firstName: "Ada", lastName: "Lovelace", email: null } },
          { schemaVersion: 2, data: { userId: "u2", firstName: "Alan", lastName: "Turing", email: null } },
          { schemaVersion: 3, data: { userId: "u3", firstName: "Grace", lastName: "Hopper", email: "g@h" } }
        ])
        yield* eventually(Effect.map(dlq.list({ context: "accounts" }), (es) => es.some((e) => e.record.stream === stream)))
        const dead = (yield* dlq.list({ context: "accounts" })).filter((e) => e.record.stream === stream)
        expect(dead.map((e) => [e.record.reason, e.record.errorTag])).toEqual([["UnsupportedVersion", "UnsupportedVersionError"]])
        expect(dead[0]!.record.errorMessage).toMatch(/schemaVersion 4 is newer than this code reads \(3\)/)
      }))
  })
})
