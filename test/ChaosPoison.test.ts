/**
 * The chaos suite's poison scenario at full size: 10k good messages with
 * poison ones interleaved (invalid JSON, wrong schema, unknown type, oversize,
 * missing headers, a handler that always throws).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, LogLevel } from "effect"
import * as Poison from "../chaos/scenarios/poison.js"

describe("chaos: poison input", () => {
  it.live("each poison message is dead-lettered with a readable reason within its deliveries; every good one is handled once", () =>
    Effect.gen(function*() {
      const r = yield* Poison.run({ good: 10_000, perKind: 5 }).pipe(Logger.withMinimumLogLevel(LogLevel.Error))
      expect(r.failures).toEqual([])
      expect(r.lost).toBe(0)
      expect(r.duplicateEffects).toBe(0)
      expect(r.figures["deadLettered"]).toBe(r.figures["poisonSent"])
    }), 90_000)
})
