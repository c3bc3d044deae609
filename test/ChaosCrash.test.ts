/**
 * The chaos suite's crash scenarios, small (`npm run chaos` runs them at full size):
 * a consumer with SQL dedup SIGKILLed mid-stream, an outbox relay SIGKILLed
 * between publish and mark. Real nats-server, SQLite files, child processes.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, LogLevel } from "effect"
import type { Result } from "../chaos/lib/harness.js"
import * as ConsumerCrash from "../chaos/scenarios/consumerCrash.js"
import * as OrderedInstances from "../chaos/scenarios/orderedInstances.js"
import * as OutboxCrash from "../chaos/scenarios/outboxCrash.js"

const quiet = Logger.withMinimumLogLevel(LogLevel.Error)

/** Every one of `n` messages handled once, in per-aggregate order, and every check of the scenario held. */
const expectOnceInOrder = (r: Result, n: number) => {
  expect(r.failures).toEqual([])
  expect(r.sent).toBe(n)
  expect(r.effects).toBe(n)
  expect(r.lost).toBe(0)
  expect(r.duplicateEffects).toBe(0)
  expect(r.figures["inversions"]).toBe(0)
}

describe("chaos: crashes", () => {
  it.live("a consumer SIGKILLed mid-stream and restarted: every message has exactly one effect row (SqlDedup, SQLite)", () =>
    Effect.gen(function*() {
      const r = yield* ConsumerCrash.run({ messages: 2_000, kills: 1, ackWaitMs: 1_500, finishInProcess: true }).pipe(quiet)
      expect(r.failures).toEqual([])
      expect(r.sent).toBe(2_000)
      expect(r.effects).toBe(2_000)
      expect(r.lost).toBe(0)
      expect(r.duplicateEffects).toBe(0)
      expect(r.figures["kills"]).toBe(1)
    }), 90_000)

  it.live("ordered by aggregate, every 25th message failing once, SIGKILLed mid-stream: no inversion, none lost, none twice", () =>
    Effect.gen(function*() {
      const r = yield* ConsumerCrash.run({ messages: 2_000, kills: 1, ackWaitMs: 1_500, finishInProcess: true, ordered: true }).pipe(quiet)
      expectOnceInOrder(r, 2_000)
      expect(r.figures["kills"]).toBe(1)
    }), 90_000)

  // two instances sharing the work: partitioned subjects, one durable per partition
  for (const mode of ["owned", "single"] as const) {
    const how = mode === "owned" ? "each partition read by one instance" : "every partition read by both, maxAckPending 1"
    it.live(`two instances, ${how}, every 25th message failing once, one SIGKILLed mid-stream: no inversion, none lost, none twice`, () =>
      Effect.gen(function*() {
        const r = yield* OrderedInstances.run({ mode, messages: 1_000, kills: 1 }).pipe(quiet)
        expectOnceInOrder(r, 1_000)
        expect(r.figures["kills"]).toBe(1)
        // both instances (and the restarted one) did part of the work
        expect(r.figures["instancesThatHandled"]).toBeGreaterThanOrEqual(2)
      }), 90_000)
  }

  it.live("two instances, each partition read by one instance, whose event loops stall 2.5 s at times (past a hold's expiry), one SIGKILLed: no inversion", () =>
    Effect.gen(function*() {
      const r = yield* OrderedInstances.run({ mode: "owned", messages: 1_000, kills: 1, stallEvery: 150 }).pipe(quiet)
      expectOnceInOrder(r, 1_000)
    }), 120_000)

  it.live("an outbox relay SIGKILLed while rows are committed: every committed row on the stream once, in per-aggregate order", () =>
    Effect.gen(function*() {
      const r = yield* OutboxCrash.run({ rows: 1_000, kills: 1, writeOverMs: 1_000, killMode: "after-puback", finishInProcess: true }).pipe(quiet)
      expect(r.failures).toEqual([])
      expect(r.effects).toBe(r.sent)
      expect(r.lost).toBe(0)
      expect(r.duplicateEffects).toBe(0)
      expect(r.figures["aggregatesOutOfOrder"]).toBe(0)
      expect(r.figures["inversions"]).toBe(0)
      expect(r.figures["killsAfterPubAck"]).toBe(1)
    }), 90_000)
})
