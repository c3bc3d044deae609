/**
 * The payments consumer: collects every issued invoice from the customer's
 * card on file, then marks it paid.
 *
 * - **Exactly-once effect**: the handler runs inside the dedup store's SQLite
 *   transaction (`@effect-nats/sql` SqlDedup). The invoice update, the
 *   payment row, the `InvoicePaid` outbox row and the inbox row commit
 *   together, or not at all. The one effect outside the database, the card
 *   charge, carries an idempotency key, so a retried charge is not charged
 *   twice.
 * - **Dedup key**: the natural key `aggregateId:type:version`. It catches a
 *   redelivered event (same id, so same key) AND the same fact published
 *   again under a new id. The inbox table is shared by every consumer of the
 *   database, so the key is prefixed with the consumer's name.
 * - **Retry with backoff**: a gateway outage is retried in process
 *   (exponential, jittered), then given back to the server with `nak(delay)`
 *   (exponential), then dead-lettered after `maxDeliver` deliveries.
 * - **Poison**: a hard card decline will never succeed: `Handler.permanent`
 *   dead-letters it at once, with the reason, and the consumer goes on.
 * - **Per-handler policies**: each attempt is bounded by `Handler.timeout`
 *   (a `HandlerTimeout` rolls the transaction back and takes the retry path),
 *   and a circuit breaker around the gateway (`Handler.circuitBreaker`,
 *   counting only `GatewayUnavailable`) stops calling a provider that is down:
 *   while open, messages are nak'ed until it probes again.
 */
import { randomUUID } from "node:crypto"
import { SqlClient } from "@effect/sql"
import { SqlDedup } from "@effect-nats/sql"
import { Context, Data, type Duration, Effect, Layer, Metric, Predicate, Schedule } from "effect"
import { Consumer, Dedup, Handler, type Metrics, Outbox } from "effect-nats"
import { InvoiceIssued, InvoicePaid } from "./events.js"

/** The payment provider could not be reached; worth retrying. */
export class GatewayUnavailable extends Data.TaggedError("GatewayUnavailable")<{
  readonly message: string
}> {}

/** The payment provider refused the card for good (a hard decline); never worth retrying. */
export class CardDeclined extends Data.TaggedError("CardDeclined")<{
  readonly customerId: string
  readonly reason: string
  readonly message: string
}> {}

/** What the handler asks the payment provider to charge. */
export interface ChargeRequest {
  /** The same key for every attempt at the same payment: the provider charges it once. */
  readonly idempotencyKey: string
  readonly customerId: string
  readonly amount: number
  readonly currency: string
  /** Shown on the customer's statement (the invoice number). */
  readonly reference: string
}

/** The payment provider. */
export class PaymentGateway extends Context.Tag("billing/PaymentGateway")<PaymentGateway, {
  /** Charge the customer's card on file; the same idempotency key always returns the same charge. */
  readonly charge: (request: ChargeRequest) => Effect.Effect<{ readonly chargeId: string }, GatewayUnavailable | CardDeclined>
  /** How many distinct charges were made (one per idempotency key). */
  readonly charges: Effect.Effect<number>
}>() {}

/** Options of {@link layerSimulated}. */
export interface SimulatedOptions {
  /** By invoice number: how many calls fail with `GatewayUnavailable` before one succeeds. */
  readonly outages?: Readonly<Record<string, number>> | undefined
  /** Customers whose card is declined for good. */
  readonly declined?: ReadonlyArray<string> | undefined
  /** Time per call (default 10 ms). */
  readonly latency?: Duration.DurationInput | undefined
}

/**
 * An in-process payment provider for the demo and the tests: scripted
 * outages and declines, idempotent charges.
 */
export const layerSimulated = (options: SimulatedOptions = {}): Layer.Layer<PaymentGateway> =>
  Layer.sync(PaymentGateway, () => {
    const calls = new Map<string, number>()
    const charges = new Map<string, string>()
    const declined = new Set(options.declined ?? [])
    return PaymentGateway.of({
      charge: (request) =>
        Effect.suspend((): Effect.Effect<{ readonly chargeId: string }, GatewayUnavailable | CardDeclined> => {
          const call = (calls.get(request.reference) ?? 0) + 1
          calls.set(request.reference, call)
          if (call <= (options.outages?.[request.reference] ?? 0)) {
            return Effect.fail(new GatewayUnavailable({ message: `payment provider unavailable (call ${call} for ${request.reference})` }))
          }
          if (declined.has(request.customerId)) {
            return Effect.fail(new CardDeclined({
              customerId: request.customerId,
              reason: "expired_card",
              message: `card declined for ${request.customerId} (expired_card): ${request.reference} cannot be collected`
            }))
          }
          const chargeId = charges.get(request.idempotencyKey) ?? `ch_${randomUUID()}`
          charges.set(request.idempotencyKey, chargeId)
          return Effect.succeed({ chargeId })
        }).pipe(Effect.delay(options.latency ?? "10 millis")),
      charges: Effect.sync(() => charges.size)
    })
  })

/** The durable consumer's name. */
export const durable = "payments"

/** The metric tag that tells this consumer's counts apart (`Metrics` are process-wide). */
export const metricTag = { key: "messaging.consumer.group.name", value: durable } as const

/** One of the toolkit's counters, restricted to the payments consumer. */
export const paymentsCounter = (counter: typeof Metrics.acked): typeof Metrics.acked =>
  Metric.tagged(counter, metricTag.key, metricTag.value)

/** The invoice was not issued and unpaid at the version of the event (an earlier outcome stands). */
export class InvoiceNotPayable extends Data.TaggedError("InvoiceNotPayable")<{
  readonly invoiceId: string
  readonly message: string
}> {}

/** Collect an issued invoice: mark it paid, charge the card, record the payment, enqueue `InvoicePaid`. */
export const collectPayment = Handler.make(InvoiceIssued, (event) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const outbox = yield* Outbox.Outbox
    const gateway = yield* PaymentGateway
    const invoice = event.data
    // we are inside the dedup transaction: everything below commits with the inbox row, or rolls back
    const [paid] = yield* sql<{ version: number }>`
      UPDATE invoices SET status = 'paid', version = version + 1
      WHERE id = ${invoice.invoiceId} AND status = 'issued' AND version = ${event.version}
      RETURNING version`
    if (paid === undefined) {
      return yield* Handler.permanent(Effect.fail(
        new InvoiceNotPayable({ invoiceId: invoice.invoiceId, message: `${invoice.invoiceNumber} is not payable at version ${event.version}` })
      ))
    }
    const { chargeId } = yield* gateway.charge({
      idempotencyKey: `charge:${Dedup.keyOf("natural")(event)}`,
      customerId: invoice.customerId,
      amount: invoice.amount,
      currency: invoice.currency,
      reference: invoice.invoiceNumber
    }).pipe(
      // a hard decline is poison: dead-letter it now; an outage stays retryable
      Effect.catchTag("CardDeclined", (declined) => Handler.permanent(Effect.fail(declined)))
    )
    const paymentId = `pay_${randomUUID()}`
    yield* sql`INSERT INTO payments ${
      sql.insert({ id: paymentId, invoice_id: invoice.invoiceId, amount: invoice.amount, currency: invoice.currency, charge_id: chargeId })
    }`
    // caused by the InvoiceIssued event, same correlation id (set by the consumer)
    yield* outbox.enqueue(InvoicePaid, {
      invoiceId: invoice.invoiceId,
      invoiceNumber: invoice.invoiceNumber,
      paymentId,
      amount: invoice.amount,
      currency: invoice.currency
    }, { version: paid.version })
  }))

/** In-process retries of a failed charge: 3 more tries, 20 ms, 40 ms, 80 ms (jittered). */
export const retry = Schedule.exponential("20 millis").pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(3)))

/** Redelivery delays once the in-process retries are spent: 250 ms, 500 ms, 1 s, ... (capped at 10 s). */
export const redelivery = Schedule.exponential("250 millis").pipe(Schedule.either(Schedule.spaced("10 seconds")))

/**
 * The payment handler with its own policies: 5 s per attempt, and a circuit
 * breaker on gateway outages (10 within 30 s open it for 5 s). Made per
 * consumer, so each one has its own circuit.
 */
export const guardedPayment = () =>
  collectPayment.pipe(
    Handler.timeout("5 seconds"),
    Handler.circuitBreaker({
      name: "payment-gateway",
      maxFailures: 10,
      window: "30 seconds",
      resetAfter: "5 seconds",
      isFailure: Predicate.isTagged("GatewayUnavailable")
    })
  )

/**
 * Start the payments consumer on `stream` in the current scope: a durable
 * pull consumer on `billing.invoice.issued`, with its own SQL dedup store.
 * It drains when the scope closes (bounded by 3 s).
 */
export const start = (stream: string) =>
  Consumer.make({
    stream,
    durable,
    filterSubject: InvoiceIssued.subject,
    handlers: [guardedPayment()],
    concurrency: 8,
    retry,
    redelivery,
    maxDeliver: 5,
    ackWait: "10 seconds",
    drainTimeout: "3 seconds"
  }).pipe(
    Effect.provideServiceEffect(
      Dedup.Dedup,
      SqlDedup.make({ key: (envelope) => `${durable}:${Dedup.keyOf("natural")(envelope)}` })
    ),
    // the workers inherit the tag: this consumer's counts can be read apart
    Effect.tagMetrics(metricTag.key, metricTag.value)
  )
