import { NatsTestServer } from "@effect-nats/testing"
import { type Duration, Effect, Layer, Schedule, Schema } from "effect"
import { DeadLetter, Event, JetStream, Publisher } from "effect-nats"

/** A real nats-server, a client connected to it, and JetStream. */
export const NatsLive = NatsTestServer.layerJetStream

/** NatsLive + DeadLetter + Publisher. */
export const PipelineLive = NatsLive().pipe(
  (nats) => Layer.mergeAll(DeadLetter.layer(), Publisher.layer()).pipe(Layer.provideMerge(nats))
)

let counter = 0
/** A unique, valid name for streams and consumers. */
export const unique = (prefix: string) => `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter++}`

export const InvoiceIssued = Event.make({
  type: "billing.invoice.issued",
  aggregate: "Invoice",
  schema: Schema.Struct({ invoiceId: Schema.String, amount: Schema.Number }),
  aggregateId: (d) => d.invoiceId
})

export const PaymentReceived = Event.make({
  type: "billing.payment.received",
  aggregate: "Payment",
  schema: Schema.Struct({ invoiceId: Schema.String, paid: Schema.Number })
})

/** A stream on `billing.>` for the duration of the scope (deleted after, so the next test can have its own). */
export const billingStream = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const name = unique("BILLING")
  yield* Effect.acquireRelease(
    js.ensureStream({ name, subjects: ["billing.>"], storage: "memory" }),
    () => Effect.promise(() => js.manager.streams.delete(name).catch(() => false))
  )
  return name
})

/** Wait until `check` holds (live clock); dies after `timeout`. */
export const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, timeout: Duration.DurationInput = "10 seconds") =>
  check.pipe(
    Effect.filterOrFail((ok) => ok, () => new Error("condition not met in time")),
    Effect.retry({ schedule: Schedule.spaced("20 millis") }),
    Effect.timeout(timeout),
    Effect.orDie,
    Effect.asVoid
  )
