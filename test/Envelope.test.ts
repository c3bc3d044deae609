import { describe, expect, it, layer } from "@effect/vitest"
import { NatsTestServer } from "@effect-nats/testing"
import type { Msg } from "@nats-io/nats-core"
import { DateTime, Deferred, Effect, Either, Exit, FiberRef, Option, ParseResult, Schema } from "effect"
import { Envelope, NatsClient } from "effect-nats"
import * as fc from "fast-check"

const Data = Schema.Struct({
  text: Schema.String,
  count: Schema.Int,
  tags: Schema.Array(Schema.String),
  note: Schema.optional(Schema.String)
})
const S = Envelope.schema(Data)
type E = Envelope.Envelope<typeof Data.Type>

const unicode = fc.string({ unit: "binary", maxLength: 30 })
const nonEmpty = fc.string({ unit: "binary", minLength: 1, maxLength: 30 })

const arbData = fc.record(
  { text: unicode, count: fc.integer(), tags: fc.array(unicode, { maxLength: 3 }), note: unicode },
  { requiredKeys: ["text", "count", "tags"] }
)

const arbTimestamp = fc.date({
  min: new Date("0001-01-01T00:00:00.000Z"),
  max: new Date("9999-12-31T23:59:59.999Z"),
  noInvalidDate: true
}).map(DateTime.unsafeFromDate)

/** Arbitrary envelopes: ids (UUIDs and free text), unicode strings, ints, optional fields present or absent. */
const arbEnvelope: fc.Arbitrary<E> = fc.record(
  {
    // ids travel as the Nats-Msg-Id header too: no CR/LF, no surrounding whitespace
    id: fc.oneof(fc.uuid(), nonEmpty.filter((s) => /^\S(?:[^\r\n]*\S)?$/u.test(s))),
    type: nonEmpty,
    source: unicode,
    timestamp: arbTimestamp,
    correlationId: nonEmpty,
    causationId: unicode,
    aggregateId: unicode,
    aggregateType: unicode,
    version: fc.nat(),
    tenantId: unicode,
    schemaVersion: fc.integer(),
    data: arbData
  },
  { requiredKeys: ["id", "type", "timestamp", "correlationId", "aggregateId", "aggregateType", "version", "data"] }
)

/** Comparable form: the DateTime as its ISO string and epoch millis. */
const comparable = (e: E) => ({
  ...e,
  timestamp: { iso: DateTime.formatIso(e.timestamp), millis: DateTime.toEpochMillis(e.timestamp), utc: DateTime.isUtc(e.timestamp) }
})

const valid: Envelope.Encoded<typeof Data.Encoded> = {
  id: "0190a6e0-0000-7000-8000-000000000000",
  type: "billing.invoice.issued",
  timestamp: "2026-01-01T00:00:00.000Z",
  correlationId: "c-1",
  aggregateId: "inv-1",
  aggregateType: "Invoice",
  version: 1,
  data: { text: "hello", count: 1, tags: [] }
}

/** The paths of the problems `input` has, or "ok". */
const problems = (input: unknown): ReadonlyArray<string> | "ok" =>
  Either.match(Schema.decodeUnknownEither(S, { errors: "all" })(input), {
    onLeft: (e) => ParseResult.ArrayFormatter.formatErrorSync(e).map((i) => i.path.join(".")),
    onRight: () => "ok"
  })

describe("Envelope", () => {
  it.effect("withCausation: the causation is current inside, and the previous one is back after success and failure", () =>
    Effect.gen(function*() {
      const outer = { id: "outer", correlationId: "c-outer" }
      const inner = { id: "inner", correlationId: "c-inner" }
      const idOf = Effect.map(FiberRef.get(Envelope.current), (c) => c.pipe(Option.map((c) => c.id), Option.getOrUndefined))
      expect(yield* idOf).toBeUndefined()
      yield* Effect.gen(function*() {
        expect(yield* Envelope.withCausation(idOf, inner)).toBe("inner")
        expect(yield* idOf).toBe("outer")
        const failed = yield* Effect.exit(Envelope.withCausation(Effect.zipRight(idOf, Effect.fail("boom")), inner))
        expect(Exit.isFailure(failed)).toBe(true)
        expect(yield* idOf).toBe("outer")
        const died = yield* Effect.exit(Envelope.withCausation(Effect.die("defect"), inner))
        expect(Exit.isFailure(died)).toBe(true)
        expect(yield* idOf).toBe("outer")
      }).pipe(Envelope.withCausation(outer))
      expect(yield* idOf).toBeUndefined()
    }))

  describe("schema", () => {
    it("property: decode(encode(e)) is e, directly and through JSON", () => {
      const encode = Schema.encodeSync(S)
      const decode = Schema.decodeUnknownSync(S)
      fc.assert(
        fc.property(arbEnvelope, (e) => {
          const encoded = encode(e)
          expect(typeof encoded.timestamp).toBe("string")
          expect(encoded.timestamp).toBe(DateTime.toDateUtc(e.timestamp).toISOString())
          expect(comparable(decode(encoded))).toEqual(comparable(e))
          const wire = JSON.parse(JSON.stringify(encoded)) as unknown
          expect(comparable(decode(wire))).toEqual(comparable(e))
          // absent optional fields stay absent (no `"source": null` or `undefined` keys appear)
          for (const k of ["source", "causationId", "tenantId", "schemaVersion"] as const) {
            expect(k in (wire as object)).toBe(k in e)
          }
        }),
        { numRuns: 300 }
      )
    })

    it("the JSON form has the documented field names and an ISO 8601 UTC timestamp", () => {
      const e = Schema.decodeUnknownSync(S)(valid)
      const json = JSON.parse(JSON.stringify(Schema.encodeSync(S)(e))) as Record<string, unknown>
      expect(json).toEqual(valid)
      expect(DateTime.toEpochMillis(e.timestamp)).toBe(Date.UTC(2026, 0, 1))
    })

    it("Envelope.Unknown keeps data undecoded", () => {
      const e = Schema.decodeUnknownSync(Envelope.Unknown)({ ...valid, data: { anything: [1, "x"] } })
      expect(e.data).toEqual({ anything: [1, "x"] })
    })

    it("decoding rejects a missing or empty id, a bad timestamp, a bad version, naming the field", () => {
      const { id: _id, ...noId } = valid
      expect(problems(noId)).toEqual(["id"])
      expect(problems({ ...valid, id: "" })).toEqual(["id"])
      expect(problems({ ...valid, timestamp: "yesterday" })).toEqual(["timestamp"])
      expect(problems({ ...valid, timestamp: 1767225600000 })).toEqual(["timestamp"])
      expect(problems({ ...valid, version: -1 })).toEqual(["version"])
      expect(problems({ ...valid, version: 1.5 })).toEqual(["version"])
      expect(problems({ ...valid, version: "1" })).toEqual(["version"])
      expect(problems({ ...valid, correlationId: "" })).toEqual(["correlationId"])
      expect(problems({ ...valid, data: { text: 1, count: 1, tags: [] } })).toEqual(["data.text"])
      // all problems at once (for dead-letter reasons)
      expect(problems({ ...valid, id: undefined, version: -2 })).toEqual(["id", "version"])
      const message = Either.match(Schema.decodeUnknownEither(S)({ ...valid, version: -1 }), {
        onLeft: (e) => ParseResult.TreeFormatter.formatErrorSync(e),
        onRight: () => ""
      })
      expect(message).toContain("version")
    })

    it("decoding rejects timestamps that are not ISO 8601 (no Date.parse leniency)", () => {
      // JS Date parsing accepts all of these; the wire format says ISO 8601, and
      // "01/02/2026" is 2 January here but 1 February to a European reader.
      for (const ts of ["1", "0", "01/02/2026", "January 1, 2026", "Thu Jan 01 2026 00:00:00 GMT+0100"]) {
        expect(problems({ ...valid, timestamp: ts }), ts).toEqual(["timestamp"])
      }
      // ISO 8601 with an offset is fine
      expect(problems({ ...valid, timestamp: "2026-01-01T01:00:00+01:00" })).toBe("ok")
      expect(problems({ ...valid, timestamp: "2026-01-01T00:00:00Z" })).toBe("ok")
    })
  })

  describe("makeId", () => {
    const uuidV7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
    const maxMillis = 2 ** 48 - 1

    it("property: an RFC 9562 UUID v7 whose first 48 bits are the given unix millis", () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: maxMillis }), (millis) => {
          const id = Envelope.makeId(millis)
          expect(id).toMatch(uuidV7)
          expect(Number.parseInt(id.replace(/-/g, "").slice(0, 12), 16)).toBe(millis)
        }),
        { numRuns: 1000 }
      )
      expect(Envelope.makeId(Date.UTC(2026, 0, 1)).slice(0, 13)).toBe("019b76da-a800")
    })

    it("property: ids sort by time (for increasing millis)", () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: maxMillis - 1 }), fc.integer({ min: 1, max: 1000 }), (a, delta) => {
          const b = Math.min(maxMillis, a + delta)
          expect(Envelope.makeId(a) < Envelope.makeId(b)).toBe(true)
        }),
        { numRuns: 1000 }
      )
      const ids = Array.from({ length: 1000 }, (_, i) => Envelope.makeId(1_700_000_000_000 + i))
      expect([...ids].sort()).toEqual(ids)
    })

    it("ids made in the same millisecond are distinct (across random pool refills)", () => {
      const ids = Array.from({ length: 20_000 }, () => Envelope.makeId(1_700_000_000_000))
      expect(new Set(ids).size).toBe(ids.length)
      for (const id of ids.slice(0, 300)) expect(id).toMatch(uuidV7)
    })
  })

  describe("toHeaders", () => {
    const envelope: E = {
      id: "0190a6e0-0000-7000-8000-000000000001",
      type: "billing.invoice.issued",
      timestamp: DateTime.unsafeMake(0),
      correlationId: "corr-1",
      causationId: "cause-1",
      aggregateId: "inv-1",
      aggregateType: "Invoice",
      version: 3,
      tenantId: "acme",
      data: { text: "x", count: 1, tags: [] }
    }

    it("sets Nats-Msg-Id, Content-Type, trace and metadata headers", () => {
      const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
      const h = Envelope.toHeaders(envelope, { traceparent, tracestate: "k=v" })
      expect(h.get("Nats-Msg-Id")).toBe(envelope.id)
      expect(h.get("Content-Type")).toBe("application/json")
      expect(h.get("traceparent")).toBe(traceparent)
      expect(h.get("tracestate")).toBe("k=v")
      expect(h.get("Event-Type")).toBe("billing.invoice.issued")
      expect(h.get("Correlation-Id")).toBe("corr-1")
      expect(h.get("Causation-Id")).toBe("cause-1")
      expect(h.get("Aggregate-Id")).toBe("inv-1")
      expect(h.get("Aggregate-Type")).toBe("Invoice")
      expect(h.get("Tenant-Id")).toBe("acme")
      expect(Envelope.HeaderNames.msgId).toBe("Nats-Msg-Id")
    })

    it("leaves out absent fields and values that are not printable ASCII", () => {
      const { causationId: _c, tenantId: _t, ...noOptional } = envelope
      const h1 = Envelope.toHeaders(noOptional)
      expect(h1.has("Causation-Id")).toBe(false)
      expect(h1.has("Tenant-Id")).toBe(false)
      expect(h1.has("traceparent")).toBe(false)

      const h2 = Envelope.toHeaders({
        ...envelope,
        aggregateId: "inv\r\n1",
        tenantId: "café",
        correlationId: "c\u0000d",
        causationId: "x".repeat(5000)
      })
      expect(h2.has("Aggregate-Id")).toBe(false)
      expect(h2.has("Tenant-Id")).toBe(false)
      expect(h2.has("Correlation-Id")).toBe(false)
      expect(h2.has("Causation-Id")).toBe(false)
      expect(h2.get("Nats-Msg-Id")).toBe(envelope.id)
      expect(h2.get("Event-Type")).toBe(envelope.type)
    })

    const headerText = fc.string({
      unit: fc.constantFrom("a", "Z", "7", "-", " ", "\t", "\n", "\r", "é", "\u0000", "😀", ":"),
      maxLength: 12
    })
    const isValid = Schema.is(S)

    it("property: for every schema-valid envelope, toHeaders does not throw and Nats-Msg-Id is exactly the id", () => {
      fc.assert(
        fc.property(headerText, (id) => {
          const e: E = { ...envelope, id }
          fc.pre(isValid(e))
          const h = Envelope.toHeaders(e)
          // JetStream dedups on this header: it must be the envelope id, byte for byte
          expect(h.get("Nats-Msg-Id")).toBe(e.id)
        }),
        { numRuns: 300 }
      )
    })

    it("property: a metadata header is either left out or carries exactly the envelope's value", () => {
      const arb = fc.record({ correlationId: headerText, aggregateId: headerText, tenantId: headerText, causationId: headerText })
      const checks = [
        ["Correlation-Id", "correlationId"],
        ["Aggregate-Id", "aggregateId"],
        ["Tenant-Id", "tenantId"],
        ["Causation-Id", "causationId"]
      ] as const
      fc.assert(
        fc.property(arb, (fields) => {
          const e: E = { ...envelope, ...fields }
          fc.pre(isValid(e))
          const h = Envelope.toHeaders(e)
          for (const [name, key] of checks) {
            const value = e[key]
            if (h.has(name)) expect(h.get(name), name).toBe(value)
            // visible ASCII always makes it into the header
            if (value !== undefined && /^[\x21-\x7e]+$/.test(value)) expect(h.get(name), name).toBe(value)
          }
        }),
        { numRuns: 300 }
      )
    })
  })

  describe("on the wire", () => {
    layer(NatsTestServer.layerJetStream(), { excludeTestServices: true, timeout: "30 seconds" })((it) => {
      it.scoped("a message whose unsafe metadata headers were left out still publishes and decodes", () =>
        Effect.gen(function*() {
          const nats = yield* NatsClient.NatsClient
          const e: E = {
            id: Envelope.makeId(Date.now()),
            type: "billing.invoice.issued",
            timestamp: DateTime.unsafeMake(Date.now()),
            correlationId: "corr\n2",
            aggregateId: "inv\r\nPUB evil 1",
            aggregateType: "Invoice",
            version: 0,
            tenantId: "café",
            data: { text: "ünïcödé 😀", count: 2, tags: ["a"] }
          }
          const got = yield* Deferred.make<Msg>()
          const sub = nats.connection.subscribe("envelope.wire", {
            max: 1,
            callback: (err, msg) => {
              if (err === null) Deferred.unsafeDone(got, Exit.succeed(msg))
            }
          })
          yield* Effect.addFinalizer(() => Effect.sync(() => sub.unsubscribe()))
          yield* nats.flush
          const payload = JSON.stringify(Schema.encodeSync(S)(e))
          yield* nats.publish("envelope.wire", payload, { headers: Envelope.toHeaders(e) })
          yield* nats.flush
          const msg = yield* Deferred.await(got).pipe(Effect.timeout("5 seconds"))
          expect(msg.headers?.get("Nats-Msg-Id")).toBe(e.id)
          expect(msg.headers?.get("Content-Type")).toBe("application/json")
          expect(msg.headers?.get("Event-Type")).toBe("billing.invoice.issued")
          expect(msg.headers?.get("Aggregate-Type")).toBe("Invoice")
          expect(msg.headers?.has("Aggregate-Id")).toBe(false)
          expect(msg.headers?.has("Correlation-Id")).toBe(false)
          expect(msg.headers?.has("Tenant-Id")).toBe(false)
          const decoded = Schema.decodeUnknownSync(Schema.parseJson(S))(msg.string())
          expect(comparable(decoded)).toEqual(comparable(e))
        }))
    })
  })
})
