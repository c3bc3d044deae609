/**
 * The chaos suite's graceful-drain scenario, small: SIGTERM to a service run
 * with NodeRuntime.runMain while it has messages in flight.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, LogLevel } from "effect"
import * as GracefulDrain from "../chaos/scenarios/gracefulDrain.js"

describe("chaos: graceful drain", () => {
  it.live("SIGTERM: exits within the drain timeout, what a handler took is handled and acked, the rest handed back at once", () =>
    Effect.gen(function*() {
      const r = yield* GracefulDrain.run({
        messages: 300,
        inFlight: 100,
        concurrency: 8,
        drainTimeoutMs: 2_000,
        workMs: [100, 600],
        ackWaitMs: 10_000,
        nextInProcess: true
      }).pipe(Logger.withMinimumLogLevel(LogLevel.Error))
      expect(r.failures).toEqual([])
      expect(r.lost).toBe(0)
      expect(r.duplicateEffects).toBe(0)
      expect(r.figures["exitCode"]).toBe(0)
      expect(r.figures["redeliveredToNext"]).toBe(0)
    }), 60_000)
})
