import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, DateTime, Either, FastCheck as fc, Schema } from "effect"
import * as Command from "../src/Command.js"
import * as Codec from "../src/internal/commandCodec.js"

// The command envelope is read and written by hand on the round trip's hot path
// (src/internal/commandCodec.ts). These check each function against its Schema: valid values
// generated from the Schema (Arbitrary.make), then encoded, sent through JSON, and mutated.

const decodeRequestBySchema = Schema.decodeUnknownEither(Codec.RequestEnvelope)
const encodeRequestBySchema = Schema.encodeEither(Codec.RequestEnvelope)
const decodeResponseBySchema = Schema.decodeUnknownEither(Command.Response)
const encodeResponseBySchema = Schema.encodeEither(Command.Response)

/** Same value, same key order, a DateTime compared by instant and zone. */
const shape = (u: unknown): unknown =>
  DateTime.isDateTime(u)
    ? { millis: DateTime.toEpochMillis(u), utc: DateTime.isUtc(u) }
    : Array.isArray(u)
    ? u.map(shape)
    : typeof u === "object" && u !== null
    ? Object.entries(u).map(([k, v]) => [k, shape(v)])
    : u

const json = (u: unknown): unknown => JSON.parse(JSON.stringify(u) ?? "null")

/** Values that break (or not) a field: wrong types, edge strings and numbers, other timestamp forms. */
const oddValue = fc.oneof(
  fc.constantFrom(
    undefined, null, "", " ", "x", 0, -1, 1.5, true, false, [], {},
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123456789Z", "2026-01-01T00:00Z", "2026-01-01T00:00:00+02:00",
    "2026-13-01T00:00:00.000Z", "2026-01-01T25:00:00Z", "2026-01-01", "yesterday", "1",
    { code: "400", message: "m" }, { code: "400", message: "m", details: null }, { code: 400, message: "m" }
  ),
  fc.string({ maxLength: 8 }),
  fc.double()
)

/** Replace, remove or add fields at the top level and one level down (`metadata`, `error`). */
const mutate = (base: fc.Arbitrary<unknown>, keys: ReadonlyArray<string>) =>
  fc.tuple(
    base,
    fc.array(fc.tuple(fc.constantFrom(...keys), fc.constantFrom("top", "nested"), fc.constantFrom("replace", "remove"), oddValue), {
      minLength: 1,
      maxLength: 3
    })
  ).map(([value, edits]) => {
    const out: Record<string, unknown> = typeof value === "object" && value !== null ? structuredClone(value) as never : {}
    for (const [key, where, what, odd] of edits) {
      const target = where === "top"
        ? out
        : Object.values(out).find((v): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v))
      if (target === undefined) continue
      if (what === "remove") delete target[key]
      // a copy: the constants are shared between runs, and a later edit may go into this one
      else target[key] = structuredClone(odd)
    }
    return out
  })

const requestKeys = ["aggregateId", "payload", "metadata", "requestId", "correlationId", "causationId", "userId", "timestamp", "extra"]
const responseKeys = [
  "success", "result", "error", "metadata", "requestId", "correlationId", "timestamp", "durationMs", "code", "message", "details", "extra"
]

const requests = Arbitrary.make(Codec.RequestEnvelope)
const responses = Arbitrary.make(Command.Response)
const encodedRequests = requests.map((r) => Either.getOrThrow(encodeRequestBySchema(r)))
const encodedResponses = responses.map((r) => encodeResponseBySchema(r).pipe(Either.getOrThrow))

/** The decoders and their Schemas, with valid encoded values and the keys to mutate. */
const decoders = [
  {
    name: "decodeRequest",
    byHand: Codec.decodeRequestByHand as (u: unknown) => unknown,
    combined: Codec.decodeRequest as (u: unknown) => Either.Either<unknown, unknown>,
    bySchema: decodeRequestBySchema as (u: unknown) => Either.Either<unknown, unknown>,
    encoded: encodedRequests as fc.Arbitrary<unknown>,
    keys: requestKeys
  },
  {
    name: "decodeResponse",
    byHand: Codec.decodeResponseByHand,
    combined: Codec.decodeResponse,
    bySchema: decodeResponseBySchema,
    encoded: encodedResponses,
    keys: responseKeys
  }
]

describe("command codec (hand-written forms against their Schemas)", () => {
  for (const { byHand, bySchema, combined, encoded, keys, name } of decoders) {
    /** The Schema's answer: the same value (by hand too, when it takes the input), or a failure. */
    const check = (input: unknown) => {
      const expected = bySchema(input)
      const hand = byHand(input)
      const result = combined(input)
      if (Either.isRight(expected)) {
        expect(Either.isRight(result)).toBe(true)
        if (Either.isRight(result)) expect(shape(result.right)).toEqual(shape(expected.right))
        if (hand !== undefined) expect(shape(hand)).toEqual(shape(expected.right))
      } else {
        expect(hand).toBeUndefined()
        expect(Either.isLeft(result)).toBe(true)
      }
    }

    it(`${name}: what the Schema encoded, sent as JSON, is decoded by hand to the Schema's value`, () => {
      fc.assert(
        fc.property(encoded, (value) => {
          const input = json(value)
          // (what JSON cannot carry, e.g. an infinite number, the Schema refuses too)
          if (Either.isRight(bySchema(input))) expect(byHand(input)).toBeDefined()
          check(input)
        }),
        { numRuns: 1000 }
      )
    })

    it(`${name}: accepts, rejects and produces what the Schema does on mutated and arbitrary inputs`, () => {
      fc.assert(fc.property(mutate(encoded.map(json), keys), check), { numRuns: 3000 })
      fc.assert(fc.property(fc.anything(), check), { numRuns: 1000 })
    })
  }

  it("encodeRequest: writes what the Schema writes, and fails where it fails", () => {
    fc.assert(
      fc.property(requests, (request) => {
        const expected = encodeRequestBySchema(request)
        const result = Codec.encodeRequest(request)
        expect(Either.isRight(result)).toBe(Either.isRight(expected))
        if (Either.isRight(expected) && Either.isRight(result)) {
          expect(Codec.encodeRequestByHand(request)).toBeDefined()
          expect(shape(result.right)).toEqual(shape(expected.right))
        }
      }),
      { numRuns: 1000 }
    )
    const empty = { payload: 1, metadata: { requestId: "" } }
    expect(Codec.encodeRequestByHand(empty)).toBeUndefined()
    expect(Either.isLeft(Codec.encodeRequest(empty))).toBe(true)
  })

  it("encodeResponse: writes what the Schema writes", () => {
    fc.assert(
      fc.property(responses, (response) => {
        expect(shape(Codec.encodeResponse(response))).toEqual(shape(Either.getOrThrow(encodeResponseBySchema(response))))
      }),
      { numRuns: 1000 }
    )
  })
})
