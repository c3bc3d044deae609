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

    it.effect("keeps at most maxPayloadBytes of an oversize payload, says so, and refuses to replay it", () =>
      Effect.gen(function*() {
        const dlq = yield* DeadLetter.DeadLetter
        const big = new Uint8Array(3 * 1024 * 1024).fill(65) // 3 MiB: more than a message may carry
        const seq = yield* dlq.send({ ...failure(7), data: big, reason: "Oversize", errorMessage: "x".repeat(100_000) })
        const entry = yield* dlq.get(seq)
        expect(entry.record.payloadTruncated).toBe(true)
        expect(entry.record.payloadBytes).toBe(big.byteLength)
        expect(Buffer.from(entry.record.payload, "base64").byteLength).toBe(1024)
        expect(entry.record.errorMessage.length).toBeLessThan(17 * 1024)
        const refused = yield* Effect.flip(dlq.replay(seq))
        expect(refused).toMatchObject({ _tag: "DeadLetterError", reason: "Truncated" })
        // still there: a refused replay deletes nothing
        expect((yield* dlq.get(seq)).seq).toBe(seq)

        // a payload within the limit is kept whole and replays
        const small = yield* dlq.send(failure(8))
        const kept = yield* dlq.get(small)
        expect(kept.record.payloadTruncated).toBeUndefined()
        expect(kept.record.payloadBytes).toBe(4)
        expect(Buffer.from(kept.record.payload, "base64").toString()).toBe("{bad")
      }).pipe(Effect.provide(DeadLetter.layer({ stream: "TRUNC_DLQ", prefix: "trunc", maxPayloadBytes: 1024 }))))
  })
})
