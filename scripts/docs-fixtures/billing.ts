/** What the doc-comment `@example`s import as `./billing.js`: a command, its failure and an event. */
import { Schema } from "effect"
import { Command } from "effect-nats"

export { InvoicePaid } from "./events.js"

export class InvoiceNotFound extends Schema.TaggedError<InvoiceNotFound>()("InvoiceNotFound", {
  invoiceId: Schema.String
}) {
  readonly code = "404"
}

export const PayInvoice = Command.make({
  service: "billing",
  aggregate: "invoice",
  name: "pay",
  payload: Schema.Struct({ amount: Schema.Number }),
  success: Schema.Struct({ paid: Schema.Number }),
  failure: InvoiceNotFound
})

export const GetInvoice = Command.query({
  service: "billing",
  aggregate: "invoice",
  name: "get",
  payload: Schema.Struct({ invoiceId: Schema.String }),
  success: Schema.Struct({ invoiceId: Schema.String, amount: Schema.Number }),
  failure: InvoiceNotFound
})
