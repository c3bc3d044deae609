/**
 * The billing side: customers and invoices in SQLite, and the IssueInvoice
 * command, served over NATS request/reply (`billing.command.invoice.issue`).
 *
 * Issuing an invoice is ONE SQLite transaction: the invoice row and its
 * `InvoiceIssued` event (an outbox row) commit together, or neither does.
 * The outbox relay publishes the event after the commit; nothing is ever
 * published for an invoice that was rolled back, and no committed invoice
 * goes without its event (the guide's "Save to DB ✓, Publish to NATS ✗").
 */
import { randomUUID } from "node:crypto"
import { SqlClient } from "@effect/sql"
import * as Migrator from "@effect/sql/Migrator"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Schema } from "effect"
import { Command, CommandService, Outbox, type Publisher } from "effect-nats"
import { Cents, Currency, InvoiceCancelled, InvoiceIssued, IsoDate } from "./events.js"

/** The customers the demo database starts with (credit limits in cents). */
export const customers = [
  { id: "cust_acme", name: "Acme Corp", credit_limit: 500_000 },
  { id: "cust_globex", name: "Globex", credit_limit: 500_000 },
  { id: "cust_initech", name: "Initech", credit_limit: 500_000 },
  { id: "cust_umbrella", name: "Umbrella", credit_limit: 500_000 },
  // the payment provider declines this customer's card (see payments.ts): the poison invoice
  { id: "cust_wayne", name: "Wayne Enterprises", credit_limit: 500_000 }
] as const

/**
 * The billing tables, as `@effect/sql` migrations (their own table,
 * `billing_migrations`). `@effect-nats/sql` keeps its outbox and inbox in
 * its own tables of the same database.
 */
export const migrations: Record<string, Effect.Effect<void, SqlError, SqlClient.SqlClient>> = {
  "1_billing": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE customers (
      id TEXT PRIMARY KEY,
      name TEXT NOT NULL,
      credit_limit INTEGER NOT NULL
    )`
    yield* sql`CREATE TABLE invoices (
      id TEXT PRIMARY KEY,
      number TEXT NOT NULL UNIQUE,
      customer_id TEXT NOT NULL REFERENCES customers (id),
      amount INTEGER NOT NULL,
      currency TEXT NOT NULL,
      due_date TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('issued', 'paid', 'cancelled')),
      version INTEGER NOT NULL
    )`
    yield* sql`CREATE TABLE payments (
      id TEXT PRIMARY KEY,
      invoice_id TEXT NOT NULL UNIQUE REFERENCES invoices (id),
      amount INTEGER NOT NULL,
      currency TEXT NOT NULL,
      charge_id TEXT NOT NULL
    )`
    yield* sql`INSERT INTO customers ${sql.insert(customers.map((c) => ({ ...c })))}`
  })
}

/** Run the billing migrations that have not run yet. */
export const migrate: Effect.Effect<void, Migrator.MigrationError | SqlError, SqlClient.SqlClient> = Migrator.make({})({
  loader: Migrator.fromRecord(migrations),
  table: "billing_migrations"
}).pipe(Effect.asVoid)

/** IssueInvoice failure: no such customer. */
export class UnknownCustomer extends Schema.TaggedError<UnknownCustomer>()("UnknownCustomer", {
  customerId: Schema.String,
  message: Schema.String
}) {
  /** Sent as `Nats-Service-Error-Code`. */
  readonly code = "404"
}

/** IssueInvoice failure: the customer's open invoices would exceed their credit limit. */
export class CreditLimitExceeded extends Schema.TaggedError<CreditLimitExceeded>()("CreditLimitExceeded", {
  customerId: Schema.String,
  open: Schema.Number,
  limit: Schema.Number,
  message: Schema.String
}) {
  /** Sent as `Nats-Service-Error-Code`. */
  readonly code = "CREDIT_LIMIT"
}

/** The IssueInvoice command, on `billing.command.invoice.issue`. */
export const IssueInvoice = Command.make({
  service: "billing",
  aggregate: "invoice",
  name: "issue",
  payload: Schema.Struct({ customerId: Schema.String, amount: Cents, currency: Currency, dueDate: IsoDate }),
  success: Schema.Struct({ invoiceId: Schema.String, invoiceNumber: Schema.String }),
  failure: Schema.Union(UnknownCustomer, CreditLimitExceeded)
})

/** What IssueInvoice needs. */
export type IssueInvoiceInput = Command.Payload<typeof IssueInvoice>

/**
 * Issue an invoice: in ONE transaction, insert the invoice row, enqueue its
 * `InvoiceIssued` event in the outbox, and check the customer's credit.
 *
 * The credit check comes last on purpose: it shows that a failure anywhere
 * in the transaction also takes the enqueued event back. A refused invoice
 * leaves no row and publishes nothing.
 */
export const issueInvoice = (input: IssueInvoiceInput): Effect.Effect<
  Command.Success<typeof IssueInvoice>,
  UnknownCustomer | CreditLimitExceeded | SqlError | Outbox.OutboxError | Publisher.PublishError,
  SqlClient.SqlClient | Outbox.Outbox
> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const outbox = yield* Outbox.Outbox
    return yield* sql.withTransaction(Effect.gen(function*() {
      const [customer] = yield* sql<{ credit_limit: number }>`SELECT credit_limit FROM customers WHERE id = ${input.customerId}`
      if (customer === undefined) {
        return yield* new UnknownCustomer({ customerId: input.customerId, message: `no customer ${input.customerId}` })
      }
      // numbers are given in commit order: SQLite runs one write transaction at a time
      const [count] = yield* sql<{ n: number }>`SELECT COUNT(*) AS n FROM invoices`
      const n = (count?.n ?? 0) + 1
      const invoice = {
        invoiceId: `inv_${randomUUID()}`,
        invoiceNumber: `INV-${String(n).padStart(4, "0")}`,
        customerId: input.customerId,
        amount: input.amount,
        currency: input.currency,
        dueDate: input.dueDate
      }
      // 1. the aggregate
      yield* sql`INSERT INTO invoices ${
        sql.insert({
          id: invoice.invoiceId,
          number: invoice.invoiceNumber,
          customer_id: invoice.customerId,
          amount: invoice.amount,
          currency: invoice.currency,
          due_date: invoice.dueDate,
          status: "issued",
          version: 1
        })
      }`
      // 2. its event, in the same transaction (the relay publishes it after the commit)
      yield* outbox.enqueue(InvoiceIssued, invoice, { version: 1 })
      // 3. the credit check: open invoices, this one included
      const [open] = yield* sql<{ total: number }>`
        SELECT COALESCE(SUM(amount), 0) AS total FROM invoices WHERE customer_id = ${input.customerId} AND status = 'issued'`
      const total = open?.total ?? 0
      if (total > customer.credit_limit) {
        return yield* new CreditLimitExceeded({
          customerId: input.customerId,
          open: total,
          limit: customer.credit_limit,
          message: `${input.customerId} would owe ${total} cents, over the credit limit of ${customer.credit_limit}`
        })
      }
      return { invoiceId: invoice.invoiceId, invoiceNumber: invoice.invoiceNumber }
    }))
  })

/** Cancelling found no issued invoice with that id. */
export class InvoiceNotCancellable extends Schema.TaggedError<InvoiceNotCancellable>()("InvoiceNotCancellable", {
  invoiceId: Schema.String,
  message: Schema.String
}) {}

/**
 * Cancel an issued invoice (an operator's decision, e.g. after its payment
 * was dead-lettered): status and version change, and `InvoiceCancelled` is
 * enqueued, in one transaction.
 */
export const cancelInvoice = (invoiceId: string, reason: string): Effect.Effect<
  void,
  InvoiceNotCancellable | SqlError | Outbox.OutboxError | Publisher.PublishError,
  SqlClient.SqlClient | Outbox.Outbox
> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const outbox = yield* Outbox.Outbox
    yield* sql.withTransaction(Effect.gen(function*() {
      const [row] = yield* sql<{ number: string; version: number }>`
        UPDATE invoices SET status = 'cancelled', version = version + 1
        WHERE id = ${invoiceId} AND status = 'issued' RETURNING number, version`
      if (row === undefined) {
        return yield* new InvoiceNotCancellable({ invoiceId, message: `invoice ${invoiceId} is not issued and unpaid` })
      }
      yield* outbox.enqueue(InvoiceCancelled, { invoiceId, invoiceNumber: row.number, reason }, { version: row.version })
    }))
  })

/**
 * The billing command service's IssueInvoice endpoint. Storage failures are
 * defects: the caller gets a `500`, the details go to the log.
 */
export const issueInvoiceEndpoint = CommandService.handler(IssueInvoice, (payload) =>
  issueInvoice(payload).pipe(
    Effect.catchTags({
      SqlError: (e) => Effect.die(e),
      OutboxError: (e) => Effect.die(e),
      PublishError: (e) => Effect.die(e)
    })
  ))

/** An invoice as stored. */
export interface InvoiceRow {
  readonly id: string
  readonly number: string
  readonly customer_id: string
  readonly amount: number
  readonly status: "issued" | "paid" | "cancelled"
  readonly version: number
  /** The payment's id, when the invoice was paid. */
  readonly payment_id: string | null
}

/** Every invoice, with its payment if any, in number order. */
export const listInvoices: Effect.Effect<ReadonlyArray<InvoiceRow>, SqlError, SqlClient.SqlClient> = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) =>
    sql<InvoiceRow>`
      SELECT i.id, i.number, i.customer_id, i.amount, i.status, i.version, p.id AS payment_id
      FROM invoices i LEFT JOIN payments p ON p.invoice_id = i.id ORDER BY i.number`
)
