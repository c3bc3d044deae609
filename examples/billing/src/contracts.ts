/**
 * The billing service's contract, for teams that do not use effect-nats:
 * the AsyncAPI 3.0 document of the events it publishes and consumes and of
 * the command it answers, made from the definitions themselves.
 * `asyncapi.yaml` next to this package is this document, written by
 * `npx effect-nats asyncapi src/contracts.ts --out asyncapi.yaml`; a test
 * fails when it is stale.
 */
import { AsyncApi } from "effect-nats"
import { InvoiceCancelled, InvoiceIssued, InvoicePaid } from "./events.js"
import { IssueInvoice } from "./invoices.js"

/** The billing command service, as it runs (`$SRV.INFO.billing`). */
export const service = { name: "billing", version: "1.0.0", description: "issues invoices" } as const

export default AsyncApi.make({
  service,
  // the payments consumer (payments.ts) consumes what billing publishes
  events: { publishes: [InvoiceIssued, InvoicePaid, InvoiceCancelled], consumes: [InvoiceIssued] },
  commands: [IssueInvoice]
})
