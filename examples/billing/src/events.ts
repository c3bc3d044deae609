/**
 * The billing events of the Winaity guide, one definition each: the type is
 * the subject (`<context>.<aggregate>.<event>`, past tense), the Schema
 * encodes and decodes `data`, and the envelope around it (id, timestamp,
 * correlation, aggregate id and version) is the toolkit's.
 *
 * Versions are the invoice's version after the event: issued = 1, then paid
 * or cancelled = 2.
 */
import { Schema } from "effect"
import { Event } from "effect-nats"

/** An amount in minor units (cents), as the guide's `"amount": 15000`. */
export const Cents = Schema.Int.pipe(Schema.positive({ message: () => "the amount must be a positive number of cents" }))

/** An ISO 4217 currency code (`EUR`). */
export const Currency = Schema.String.pipe(Schema.pattern(/^[A-Z]{3}$/, { message: () => "a currency is three capital letters" }))

/** A calendar date, `YYYY-MM-DD`. */
export const IsoDate = Schema.String.pipe(Schema.pattern(/^\d{4}-\d{2}-\d{2}$/, { message: () => "a date is YYYY-MM-DD" }))

/** `billing.invoice.issued`: an invoice was issued to a customer (version 1). */
export const InvoiceIssued = Event.make({
  type: "billing.invoice.issued",
  aggregate: "Invoice",
  schema: Schema.Struct({
    invoiceId: Schema.String,
    invoiceNumber: Schema.String,
    customerId: Schema.String,
    amount: Cents,
    currency: Currency,
    dueDate: IsoDate
  }),
  aggregateId: (data) => data.invoiceId
})

/** `billing.invoice.paid`: the invoice's amount was collected (version 2). */
export const InvoicePaid = Event.make({
  type: "billing.invoice.paid",
  aggregate: "Invoice",
  schema: Schema.Struct({
    invoiceId: Schema.String,
    invoiceNumber: Schema.String,
    paymentId: Schema.String,
    amount: Cents,
    currency: Currency
  }),
  aggregateId: (data) => data.invoiceId
})

/** `billing.invoice.cancelled`: the invoice will not be collected (version 2). */
export const InvoiceCancelled = Event.make({
  type: "billing.invoice.cancelled",
  aggregate: "Invoice",
  schema: Schema.Struct({
    invoiceId: Schema.String,
    invoiceNumber: Schema.String,
    reason: Schema.String
  }),
  aggregateId: (data) => data.invoiceId
})

/** The subjects of the billing events, for the stream (commands stay out of it: `billing.command.…`). */
export const subjects = ["billing.invoice.>"] as const
