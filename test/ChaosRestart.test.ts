/**
 * The chaos suite's server-restart scenario, small: nats-server SIGKILLed and
 * started again on the same store while publishing and consuming.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, LogLevel } from "effect"
import * as ServerRestart from "../chaos/scenarios/serverRestart.js"

describe("chaos: server restart", () => {
  it.live("every publish that returned a PubAck is consumed once; the connection and the consumer recover by themselves", () =>
    Effect.gen(function*() {
      const r = yield* ServerRestart.run({ messages: 1_200, rate: 400, outages: ["kill"], downMs: 1_000 }).pipe(
        Logger.withMinimumLogLevel(LogLevel.Error)
      )
      expect(r.failures).toEqual([])
      expect(r.sent).toBe(1_200)
      expect(r.lost).toBe(0)
      expect(r.duplicateEffects).toBe(0)
      expect(r.figures["publishFailures"]).toBe(0)
    }), 60_000)
})
