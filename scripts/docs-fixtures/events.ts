/**
 * What the doc-comment `@example`s import as `./events.js`: a user's events,
 * written with the public API only (scripts/check-docs.ts puts this file
 * beside the examples it type-checks).
 */
import { Schema } from "effect"
import { Event } from "effect-nats"

export const InvoiceIssued = Event.make({
  type: "billing.invoice.issued",
  aggregate: "Invoice",
  schema: Schema.Struct({ invoiceId: Schema.String, amount: Schema.Number }),
  aggregateId: (d) => d.invoiceId
})

export const InvoicePaid = Event.make({
  type: "billing.invoice.paid",
  aggregate: "Invoice",
  schema: Schema.Struct({ invoiceId: Schema.String, amount: Schema.Number }),
  aggregateId: (d) => d.invoiceId
})
