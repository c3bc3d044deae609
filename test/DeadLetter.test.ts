import { NatsTestServer } from "@effect-nats/testing"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { DeadLetter, JetStream, Limits } from "effect-nats"

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

    it.effect("reads within the limits: an envelope as deep as maxDepth is kept; a deeper one is not decoded; a deeper record is refused", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const dlq = yield* DeadLetter.DeadLetter
        const withData = (data: string, sequence: number): DeadLetter.Failure => ({
          ...failure(sequence),
          data: new TextEncoder().encode(data)
        })
        // 4 levels (maxDepth): decoded into the record, which nests one level more and is still read
        const kept = yield* dlq.get(yield* dlq.send(withData(`{"a":{"b":{"c":[1]}}}`, 1)))
        expect(kept.record.envelope).toEqual({ a: { b: { c: [1] } } })
        // 5 levels: the payload is kept, not decoded
        const deeper = yield* dlq.get(yield* dlq.send(withData(`{"a":{"b":{"c":[[1]]}}}`, 2)))
        expect(deeper.record.envelope).toBeUndefined()
        expect(Buffer.from(deeper.record.payload, "base64").toString()).toBe(`{"a":{"b":{"c":[[1]]}}}`)
        // a message on the DLQ subjects nesting deeper than a record can: refused before it is parsed
        const ack = yield* Effect.promise(() =>
          js.client.publish("deep.billing", new TextEncoder().encode(`{"envelope":{"a":{"b":{"c":[[1]]}}}}`))
        )
        expect(yield* Effect.flip(dlq.get(ack.seq))).toMatchObject({
          _tag: "DeadLetterError",
          reason: "Malformed",
          message: `DLQ message ${ack.seq} is refused: nesting deeper than 5 levels`
        })
      }).pipe(
        Effect.provide(DeadLetter.layer({ stream: "DEEP_DLQ", prefix: "deep" }).pipe(Layer.provide(Limits.layer({ maxDepth: 4 }))))
      ))
  })
})
