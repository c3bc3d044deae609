/**
 * Security: hostile subject tokens (the chaos suite's 10k generated strings
 * as aggregate ids, command names and message ids, checked with a `>`
 * subscriber), and authentication, permissions and TLS against real
 * nats-servers (certificates made with the openssl CLI).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Logger, LogLevel } from "effect"
import * as AuthTls from "../chaos/scenarios/authTls.js"
import * as HostileSubjects from "../chaos/scenarios/hostileSubjects.js"

const quiet = Logger.withMinimumLogLevel(LogLevel.Error)

describe("security", () => {
  it.live("hostile tokens: refused with a typed error or used as they are; none reaches another subject", () =>
    Effect.gen(function*() {
      const r = yield* HostileSubjects.run({ strings: 10_000 }).pipe(quiet)
      expect(r.failures).toEqual([])
      expect(r.figures["misrouted"]).toBe(0)
      expect(r.figures["distinctIdsDroppedAsDuplicates"]).toBe(0)
      expect(r.lost).toBe(0)
    }), 60_000)

  it.live("auth, permissions and TLS: typed refusals, a denied subject does not poison the connection", () =>
    Effect.gen(function*() {
      const r = yield* AuthTls.run().pipe(quiet)
      expect(r.failures).toEqual([])
      expect(r.figures["checksPassed"]).toBeGreaterThanOrEqual(20)
    }), 60_000)
})
