import { NatsTestServer } from "@effect-nats/testing"
import { describe, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { DeadLetter, JetStream } from "effect-nats"

const failure = (sequence: number): DeadLetter.Failure => ({
  subject: "billing.invoice.issued",
  headers: undefined,
  data: new TextEncoder().encode("{bad"),
  reason: "Decode",
  errorTag: "InvalidJson",
  errorMessage: "invalid JSON",
  attempts: 1,
  stream: "BILLING",
  consumer: "payments",
  sequence
})

describe("DeadLetter", () => {
  layer(NatsTestServer.layerJetStream(), { excludeTestServices: true })((it) => {
    it.effect("provisions its stream by default; with provision: false it leaves the server alone", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        // provision: false on a missing stream: nothing is created, and sending fails typed
        const error = yield* Effect.flatMap(DeadLetter.DeadLetter, (dlq) => dlq.send(failure(1))).pipe(
          Effect.provide(DeadLetter.layer({ stream: "AUDIT_DLQ", prefix: "audit", provision: false })),
          Effect.flip
        )
        expect(error).toMatchObject({ _tag: "DeadLetterError", reason: "Transport" })
        expect(yield* Effect.flip(js.streamInfo("AUDIT_DLQ"))).toMatchObject({ errCode: 10059 })

        // the default provisions it, with the configured retention
        const seq = yield* Effect.flatMap(DeadLetter.DeadLetter, (dlq) => dlq.send(failure(2))).pipe(
          Effect.provide(DeadLetter.layer({ stream: "AUDIT_DLQ", prefix: "audit", maxAge: "1 day" }))
        )
        const info = yield* js.streamInfo("AUDIT_DLQ")
        expect(info.config.subjects).toEqual(["audit.>"])
        expect(info.config.max_age).toBe(24 * 3600 * 1e9)
        // the same source message is stored once (Nats-Msg-Id = <stream>:<sequence>)
        const again = yield* Effect.flatMap(DeadLetter.DeadLetter, (dlq) => dlq.send(failure(2))).pipe(
          Effect.provide(DeadLetter.layer({ stream: "AUDIT_DLQ", prefix: "audit", maxAge: "1 day" }))
        )
        expect(again).toBe(seq)
        expect((yield* js.streamInfo("AUDIT_DLQ")).state.messages).toBe(1)
      }))
  })
})
