import { describe, expect, it, layer } from "@effect/vitest"
import { NatsTestServer } from "@effect-nats/testing"
import { Effect } from "effect"
import { JetStream, Subject } from "effect-nats"
import * as fc from "fast-check"
import { unique } from "./utils.js"

// nats-server's own partition function, through a subject mapping: what `Subject.partition` must agree with
const partitions = 7
const mapping = `mappings = {\n  "ptest.events.*": "ptest.events.{{partition(${partitions},1)}}.{{wildcard(1)}}"\n}`

/** Valid tokens: any unicode the subject rules allow, plus plain ids. */
const tokens = fc.oneof(
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 24 }),
  fc.string({ unit: fc.constantFrom("a", "Z", "0", "-", "_", "é", "日", "😀", "$", ":"), minLength: 1, maxLength: 64 }),
  fc.uuid()
).filter((t) => t.length <= Subject.maxTokenLength && t.isWellFormed() && Subject.validateToken(t)._tag === "Right")

/** The specification: FNV-1a (32 bits) of `TextEncoder`'s UTF-8 bytes, modulo n. */
const reference = (key: string, n: number): number => {
  let hash = 0x811c9dc5
  for (const byte of new TextEncoder().encode(key)) hash = Math.imul(hash ^ byte, 0x01000193)
  return (hash >>> 0) % n
}

describe("Subject.partition", () => {
  it("is FNV-1a of the UTF-8 bytes for every string (astral characters, lone surrogates included)", () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: "binary" }), fc.string({ unit: "grapheme" }), fc.string()),
        fc.integer({ min: 1, max: 1 << 20 }),
        (key, n) => Subject.partition(key, n) === reference(key, n)
      ),
      { numRuns: 2_000 }
    )
    // the edges of each UTF-8 length, and surrogates alone, reversed and paired
    for (const key of ["\u007f", "\u0080", "\u07ff", "\u0800", "\uffff", "\ud7ff", "\ue000", "\ud800", "\udfff", "\udc00\ud800", "\ud83d\ude00", "a\ud800b"]) {
      expect(Subject.partition(key, 0x7fffffff), JSON.stringify(key)).toBe(reference(key, 0x7fffffff))
    }
  })


  it("is in 0..n-1 and refuses a partition count that is not a positive integer", () => {
    fc.assert(fc.property(fc.string(), fc.integer({ min: 1, max: 1000 }), (key, n) => {
      const p = Subject.partition(key, n)
      return Number.isInteger(p) && p >= 0 && p < n
    }))
    expect(() => Subject.partition("a", 0)).toThrow(RangeError)
    expect(() => Subject.partition("a", 2.5)).toThrow(RangeError)
  })

  it("Subject.aggregateEvents with partitions puts the id's partition before it; a hostile id is refused first", () => {
    fc.assert(fc.property(tokens, fc.integer({ min: 1, max: 64 }), (id, n) =>
      Effect.runSync(Subject.aggregateEvents("a", "b", id, n)) === `a.b.events.${Subject.partition(id, n)}.${id}`))
    expect(Effect.runSync(Subject.aggregateEvents("a", "b", "x"))).toBe("a.b.events.x")
    for (const id of ["a.b", "*", ">", ""]) {
      expect(Effect.runSync(Effect.flip(Subject.aggregateEvents("a", "b", id, 4)))._tag).toBe("InvalidSubjectError")
    }
  })

  layer(NatsTestServer.layerJetStream({ extraConfig: mapping }), { excludeTestServices: true })((it) => {
    it.effect("agrees with nats-server's {{partition(n,1)}} subject mapping on every valid token", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const stream = unique("PTEST")
        yield* js.ensureStream({ name: stream, subjects: ["ptest.events.*.*"], storage: "memory" })
        const keys = [...new Set(fc.sample(tokens, { numRuns: 400, seed: 42 }))]
        for (const key of keys) {
          const ack = yield* Effect.promise(() => js.client.publish(`ptest.events.${key}`, "x"))
          const stored = yield* Effect.promise(() => js.manager.streams.getMessage(stream, { seq: ack.seq }))
          expect(stored?.subject, JSON.stringify(key)).toBe(`ptest.events.${Subject.partition(key, partitions)}.${key}`)
        }
        expect(keys.length).toBeGreaterThan(300)
      }))
  })
})
