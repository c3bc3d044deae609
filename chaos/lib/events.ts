/**
 * The events the scenarios publish and their fixtures handle.
 */
import { Schema } from "effect"
import { Event } from "effect-nats"

/** Scenario 1 (consumer crash) and 3 (server restart). */
export const OrderPlaced = Event.make({
  type: "chaos.order.placed",
  aggregate: "Order",
  schema: Schema.Struct({ orderId: Schema.String, n: Schema.Number }),
  aggregateId: (d) => d.orderId
})

/** Scenario 1: what the orders consumer enqueues in its outbox for each order it handles (`source`: the order message's id). */
export const OrderConfirmed = Event.make({
  type: "chaos.order.confirmed",
  aggregate: "Order",
  schema: Schema.Struct({ source: Schema.String, n: Schema.Number }),
  aggregateId: (d) => d.source
})

/** Scenario 2 (outbox relay crash): `line` is the position of the row within its aggregate. */
export const LineAdded = Event.make({
  type: "outbox.cart.line_added",
  aggregate: "Cart",
  schema: Schema.Struct({ cartId: Schema.String, line: Schema.Number }),
  aggregateId: (d) => d.cartId
})

/** Scenario 4 (graceful drain): `workMs` is how long the handler works on it. */
export const JobQueued = Event.make({
  type: "drain.job.queued",
  aggregate: "Job",
  schema: Schema.Struct({ jobId: Schema.String, workMs: Schema.Number })
})

/** Scenario 5 (poison): the good messages. */
export const PaymentCaptured = Event.make({
  type: "poison.payment.captured",
  aggregate: "Payment",
  schema: Schema.Struct({ paymentId: Schema.String, amount: Schema.Number }),
  aggregateId: (d) => d.paymentId
})

/** Scenario 5: a type whose handler always throws (a bug in the handler, a defect). */
export const PaymentRefunded = Event.make({
  type: "poison.payment.refunded",
  aggregate: "Payment",
  schema: Schema.Struct({ paymentId: Schema.String }),
  aggregateId: (d) => d.paymentId
})
