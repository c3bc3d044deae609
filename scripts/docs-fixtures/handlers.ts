/** What the doc-comment `@example`s import as `./handlers.js`: command handlers. */
import { Effect } from "effect"
import { CommandService, Handler } from "effect-nats"
import { GetInvoice, InvoiceNotFound, PayInvoice } from "./billing.js"
import { InvoiceIssued } from "./events.js"

export const pay = CommandService.handler(PayInvoice, (payload) => Effect.succeed({ paid: payload.amount }))

export const getInvoice = CommandService.handler(GetInvoice, (payload) =>
  payload.invoiceId === "" ? Effect.fail(new InvoiceNotFound({ invoiceId: "" })) : Effect.succeed({ invoiceId: payload.invoiceId, amount: 42 }))

export const onIssued = Handler.make(InvoiceIssued, (e) => Effect.log(`invoice ${e.data.invoiceId} issued`))

/** A consumer's handlers. */
export const handlers = [onIssued]
