import { describe, expect, it } from "@effect/vitest"
import { DateTime, Effect, Either, Exit, ParseResult, Schema } from "effect"
import { Envelope, Event, Handler } from "effect-nats"
import * as fc from "fast-check"

// The consumer decodes envelopes on a fast path (Envelope.decodeMetadata + the data Schema, in
// Handler.make) and falls back to the envelope Schema. These check both give the Schema's answer.

const Data = Schema.Struct({ text: Schema.String, count: Schema.Int, note: Schema.optional(Schema.String) })
const Thing = Event.make({ type: "things.thing.happened", aggregate: "Thing", schema: Data })
const decodeFull = Schema.decodeUnknownEither(Thing.envelope, { errors: "all" })
const decodeMetadataBySchema = Schema.decodeUnknownEither(Envelope.Unknown, { errors: "all" })

const valid = {
  id: "0190a6e0-0000-7000-8000-000000000000",
  type: "things.thing.happened",
  source: "svc",
  timestamp: "2026-01-01T00:00:00.000Z",
  correlationId: "c-1",
  causationId: "x",
  aggregateId: "t-1",
  aggregateType: "Thing",
  version: 1,
  tenantId: "acme",
  schemaVersion: 2,
  data: { text: "hello", count: 1 }
} as const

const keys = Object.keys(valid) as Array<keyof typeof valid>

/** Values that break (or not) a field: wrong types, edge strings and numbers, odd timestamps. */
const oddValue = fc.oneof(
  fc.constantFrom(
    undefined, null, "", " ", "a b", " lead", "trail ", "x\ny", 0, -1, 1.5, -0, Number.MAX_SAFE_INTEGER + 2, true, [], {},
    "2026-01-01T00:00:00Z", "2026-01-01T00:00Z", "2026-01-01T00:00:00.123456+02:00", "2026-01-01T00:00:00+0200",
    "2026-13-01T00:00:00Z", "2026-01-01T25:00:00Z", "2026-01-01", "2026-01-01T00:00:00", "20260101T000000Z",
    { text: "t", count: 1 }, { text: "t", count: 1.5 }, { text: 1, count: 1 }, { text: "t", count: 1, note: "n", extra: 1 }
  ),
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.double()
)

/** A valid envelope with some fields replaced, removed, or extra keys added. */
const arbInput = fc.record({
  replace: fc.array(fc.tuple(fc.constantFrom(...keys), oddValue), { maxLength: 3 }),
  remove: fc.array(fc.constantFrom(...keys), { maxLength: 2 }),
  extra: fc.boolean()
}).map(({ extra, remove, replace }) => {
  const o: Record<string, unknown> = { ...valid, data: { ...valid.data } }
  for (const [k, v] of replace) o[k] = v
  for (const k of remove) delete o[k]
  if (extra) o.unknownField = 1
  return o
})

/** Same value, same key order, DateTime compared by instant and zone. */
const shape = (u: unknown): unknown =>
  DateTime.isDateTime(u)
    ? { millis: DateTime.toEpochMillis(u), utc: DateTime.isUtc(u) }
    : typeof u === "object" && u !== null && !Array.isArray(u)
    ? Object.entries(u).map(([k, v]) => [k, shape(v)])
    : u

describe("envelope fast decode", () => {
  it("property: Envelope.decodeMetadata accepts exactly what the Schema accepts, with the same value", () => {
    fc.assert(
      fc.property(arbInput, (input) => {
        const fast = Envelope.decodeMetadata(input)
        const bySchema = decodeMetadataBySchema(input)
        if (Either.isRight(bySchema)) {
          expect(fast).toBeDefined()
          expect(shape(fast)).toEqual(shape(bySchema.right))
        } else {
          expect(fast).toBeUndefined()
        }
      }),
      { numRuns: 2000 }
    )
  })

  it("property: Handler.make's decode gives the envelope Schema's result (value or error message)", () => {
    const handler = Handler.make(Thing, () => Effect.void)
    fc.assert(
      fc.property(arbInput, (input) => {
        const exit = Effect.runSyncExit(handler.decode(input))
        const expected = decodeFull(input)
        if (Either.isRight(expected)) {
          expect(Exit.isSuccess(exit)).toBe(true)
          if (Exit.isSuccess(exit)) expect(shape(exit.value)).toEqual(shape(expected.right))
        } else {
          expect(Exit.isFailure(exit)).toBe(true)
          if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
            expect(ParseResult.TreeFormatter.formatErrorSync(exit.cause.error as ParseResult.ParseError))
              .toBe(ParseResult.TreeFormatter.formatErrorSync(expected.left))
          }
        }
      }),
      { numRuns: 2000 }
    )
  })

  it("the fast path runs for a valid envelope (its result is a plain Either)", () => {
    const handler = Handler.make(Thing, () => Effect.void)
    const result = handler.decode(JSON.parse(JSON.stringify(valid)))
    expect(Either.isEither(result) && Either.isRight(result)).toBe(true)
  })

  it("property: with past versions, Handler.make's decode gives the union envelope Schema's result, or UnsupportedVersion", () => {
    // v1 wrote `count` as a string; the current version (2) is `Data`
    const V1 = Schema.Struct({ text: Schema.String, count: Schema.NumberFromString })
    const Versioned = Event.make({
      type: "things.thing.happened",
      aggregate: "Thing",
      schema: Data,
      versions: Event.history(V1, (v1) => ({ text: v1.text, count: v1.count }))
    })
    const handler = Handler.make(Versioned, () => Effect.void)
    const decodeUnion = Schema.decodeUnknownEither(Versioned.envelope, { errors: "all" })
    const arbVersioned = fc.record({
      input: arbInput,
      schemaVersion: fc.constantFrom<unknown>("absent", 1, 2, 3, 0, "2", 1.5),
      data: fc.constantFrom<unknown>({ text: "t", count: 1 }, { text: "t", count: "2" }, { text: "t", count: "x" }, { text: 1 })
    }).map(({ data, input, schemaVersion }) => {
      const o: Record<string, unknown> = { ...input, data }
      if (schemaVersion === "absent") delete o.schemaVersion
      else o.schemaVersion = schemaVersion
      return o
    })
    fc.assert(
      fc.property(arbVersioned, (input) => {
        const exit = Effect.runSyncExit(handler.decode(input))
        if (typeof input.schemaVersion === "number" && Number.isSafeInteger(input.schemaVersion) && input.schemaVersion > 2) {
          expect(Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error._tag).toBe("UnsupportedVersionError")
          return
        }
        const expected = decodeUnion(input)
        if (Either.isRight(expected)) {
          expect(Exit.isSuccess(exit)).toBe(true)
          if (Exit.isSuccess(exit)) expect(shape(exit.value)).toEqual(shape(expected.right))
        } else {
          expect(Exit.isFailure(exit)).toBe(true)
        }
      }),
      { numRuns: 2000 }
    )
  })
})
