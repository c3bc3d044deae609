/**
 * The billing scenario end to end, on a real NATS server and an embedded
 * SQLite database (a fresh file per run):
 *
 * 1. issue invoices through the IssueInvoice command (request/reply); each
 *    is one transaction with its outbox row; one over-limit invoice is
 *    refused and publishes nothing;
 * 2. the payments consumer collects them: a gateway outage is retried in
 *    process, a longer one is redelivered later, a declined card (the poison
 *    invoice) is dead-lettered with its reason;
 * 3. duplicates: the same message id again (dropped by JetStream), the same
 *    bytes past the broker's duplicate window, and the same fact under a new
 *    id (both skipped by the consumer's dedup);
 * 4. an operator reads the DLQ and cancels the poison invoice.
 *
 * Then it counts, from the broker, the database, the DLQ and the metrics,
 * and checks that the numbers add up ({@link Summary}).
 *
 * The program needs `NatsClient` and `JetStream` (see main.ts for a
 * configured server or a throwaway one) and the services of
 * {@link BillingLive}.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { SqlClient } from "@effect/sql"
import type * as Migrator from "@effect/sql/Migrator"
import type { SqlError } from "@effect/sql/SqlError"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { SqlOutbox } from "@effect-nats/sql"
import { Console, Context, Duration, Effect, Either, Layer, Metric, Option, Schema } from "effect"
import type { ConfigError } from "effect/ConfigError"
import {
  CommandClient,
  CommandService,
  DeadLetter,
  JetStream,
  Metrics,
  NatsClient,
  NatsError,
  Outbox,
  OutboxRelay,
  Publisher
} from "effect-nats"
import { service } from "./contracts.js"
import { InvoiceCancelled, InvoiceIssued, InvoicePaid, subjects } from "./events.js"
import { cancelInvoice, customers, IssueInvoice, issueInvoiceEndpoint, type IssueInvoiceInput, listInvoices, migrate } from "./invoices.js"
import * as Payments from "./payments.js"

/** What the run does. The defaults are the demo's. */
export interface Scenario {
  /** The JetStream stream of the billing events; deleted and created again at the start of a run. */
  readonly stream: string
  /** How many invoices to issue (numbered INV-0001, INV-0002, ...). */
  readonly invoices: number
  /** The invoice (by position, 1-based) issued to the customer whose card is declined: the poison. */
  readonly poisonAt: number
  /** The customer whose card is declined. */
  readonly poisonCustomer: string
  /** Gateway outages: calls that fail before one succeeds, by invoice number. */
  readonly outages: Readonly<Record<string, number>>
  /** After which invoice an over-limit invoice is attempted (and refused). */
  readonly refusedAfter: number
  /** How long each wait may take before the run gives up and reports what it has. */
  readonly timeout: Duration.DurationInput
}

/** The demo: 50 invoices, INV-0037 is the poison, INV-0007 and INV-0021 meet gateway outages. */
export const defaultScenario: Scenario = {
  stream: "BILLING_DEMO",
  invoices: 50,
  poisonAt: 37,
  poisonCustomer: "cust_wayne",
  // 1 failure: retried in process; 4 failures: the in-process retries (1 + 3) run out, nak(250 ms), redelivered
  outages: { "INV-0007": 1, "INV-0021": 4 },
  refusedAfter: 25,
  timeout: "10 seconds"
}

/** Where the run's SQLite database is. */
export class Database extends Context.Tag("billing/Database")<Database, { readonly filename: string }>() {}

/** SQLite on a new file in a temp dir, removed when the layer's scope closes. */
export const layerDatabase: Layer.Layer<SqlClient.SqlClient | Database, ConfigError> = Layer.unwrapScoped(
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-nats-billing-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    ),
    (dir) => {
      const filename = path.join(dir, "billing.db")
      return Layer.merge(SqliteClient.layer({ filename }), Layer.succeed(Database, { filename }))
    }
  )
)

/**
 * Everything the program needs besides NATS: SQLite with the billing tables,
 * the outbox on SQLite and its relay, the publisher, the DLQ, the command
 * client, and the (simulated) payment provider.
 */
export const BillingLive = (
  scenario: Scenario = defaultScenario
): Layer.Layer<
  | SqlClient.SqlClient
  | Database
  | Outbox.Outbox
  | Outbox.OutboxStore
  | Publisher.Publisher
  | DeadLetter.DeadLetter
  | CommandClient.CommandClient
  | Payments.PaymentGateway,
  | ConfigError
  | SqlError
  | Migrator.MigrationError
  | Outbox.OutboxError
  | JetStream.JetStreamProvisionError
  | NatsError.NatsError,
  NatsClient.NatsClient | JetStream.JetStream
> =>
  Layer.mergeAll(
    Outbox.layer({ source: "billing" }),
    OutboxRelay.layer(),
    DeadLetter.layer(),
    CommandClient.layer({ timeout: "5 seconds" }),
    Payments.layerSimulated({ outages: scenario.outages, declined: [scenario.poisonCustomer] }),
    Layer.effectDiscard(migrate)
  ).pipe(
    Layer.provideMerge(SqlOutbox.layer()),
    Layer.provideMerge(Publisher.layer({ source: "billing" })),
    Layer.provideMerge(layerDatabase)
  )

/** One check of the summary. */
export interface Check {
  readonly ok: boolean
  readonly description: string
}

/** A dead letter of the payments consumer, as the operator sees it. */
export interface DeadLetterView {
  readonly dlqSeq: number
  readonly invoiceId: string
  readonly invoiceNumber: string
  readonly customerId: string
  readonly reason: string
  readonly errorMessage: string
  readonly attempts: number
}

/** What the run counted, and whether it adds up. */
export interface Summary {
  /** `billing.invoice.issued` messages stored in the stream (what the payments consumer was given). */
  readonly published: number
  /** Issued events the payments handler completed: payment rows in SQLite. */
  readonly handled: number
  /** Deliveries the payments consumer's dedup skipped. */
  readonly duplicatesSkipped: number
  /** Dead letters of the payments consumer. */
  readonly deadLettered: number
  /** Invoices in SQLite whose issued event was neither handled nor dead-lettered. */
  readonly lost: number
  /** Invoices issued (rows in SQLite). */
  readonly issued: number
  /** IssueInvoice commands refused (nothing stored, nothing published). */
  readonly refused: number
  /** Re-publications JetStream dropped itself (same `Nats-Msg-Id` within its duplicate window). */
  readonly brokerDuplicates: number
  /** In-process handler retries. */
  readonly retried: number
  /** Messages given back with `nak(delay)` and delivered again. */
  readonly redelivered: number
  /** Distinct charges at the payment provider. */
  readonly charges: number
  /** `billing.invoice.paid` / `billing.invoice.cancelled` messages in the stream. */
  readonly paidEvents: number
  readonly cancelledEvents: number
  /** Outbox rows still waiting to be published. */
  readonly outboxPending: number
  readonly deadLetters: ReadonlyArray<DeadLetterView>
  readonly checks: ReadonlyArray<Check>
  /** All checks passed. */
  readonly consistent: boolean
}

/** The machine-readable last line of the demo. */
export const jsonLine = (s: Summary): string =>
  JSON.stringify({
    published: s.published,
    handled: s.handled,
    duplicatesSkipped: s.duplicatesSkipped,
    deadLettered: s.deadLettered,
    lost: s.lost
  })

/** The readable summary. */
export const report = (s: Summary): string =>
  [
    "",
    "summary",
    `  invoices   ${s.issued} issued, ${s.refused} refused (credit limit: no row, no event)`,
    `  payments   published ${s.published} · handled ${s.handled} · duplicates skipped ${s.duplicatesSkipped} · dead-lettered ${s.deadLettered} · lost ${s.lost}`,
    `  retries    ${s.retried} in process, ${s.redelivered} redelivered; ${s.brokerDuplicates} duplicate dropped by JetStream`,
    `  events     paid ${s.paidEvents}, cancelled ${s.cancelledEvents}; outbox pending ${s.outboxPending}; ${s.charges} card charges`,
    ...s.deadLetters.map((d) =>
      `  DLQ #${d.dlqSeq}    ${d.invoiceNumber} (${d.customerId}): ${d.reason} after ${d.attempts} attempt(s): ${d.errorMessage}`
    ),
    "",
    ...s.checks.map((c) => `  ${c.ok ? "ok  " : "FAIL"}  ${c.description}`),
    "",
    s.consistent ? "consistent: every invoice is accounted for" : "INCONSISTENT: see the failed checks above"
  ].join("\n")

/** Where progress lines go. */
export type Log = (line: string) => Effect.Effect<void>

/** Poll `status` until it says done (or `timeout`), printing its line when it changes. */
const waitFor = <E, R>(
  say: Log,
  status: Effect.Effect<{ readonly done: boolean; readonly line: string }, E, R>,
  timeout: Duration.DurationInput
): Effect.Effect<boolean, E, R> =>
  Effect.gen(function*() {
    let last = ""
    while (true) {
      const s = yield* status
      if (s.line !== last) {
        yield* say(`      ${s.line}`)
        last = s.line
      }
      if (s.done) return true
      yield* Effect.sleep("100 millis")
    }
  }).pipe(
    Effect.timeoutOption(timeout),
    Effect.flatMap(Option.match({
      onNone: () => Effect.as(say(`      gave up after ${Duration.format(Duration.decode(timeout))}`), false),
      onSome: Effect.succeed
    }))
  )

const count = (query: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<{ readonly n: number }>, SqlError>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.map(query(sql), (rows) => rows[0]?.n ?? 0))

const paymentsCount = count((sql) => sql<{ n: number }>`SELECT COUNT(*) AS n FROM payments`)

/** The payments consumer's counters, as deltas from when `counters` ran. */
const counters = Effect.gen(function*() {
  const read = Effect.all({
    duplicatesSkipped: Metric.value(Payments.paymentsCounter(Metrics.duplicatesSkipped)),
    deadLettered: Metric.value(Payments.paymentsCounter(Metrics.deadLettered)),
    retried: Metric.value(Payments.paymentsCounter(Metrics.retried)),
    redelivered: Metric.value(Payments.paymentsCounter(Metrics.redelivered))
  }).pipe(Effect.map((m) => ({
    duplicatesSkipped: m.duplicatesSkipped.count,
    deadLettered: m.deadLettered.count,
    retried: m.retried.count,
    redelivered: m.redelivered.count
  })))
  const start = yield* read
  return Effect.map(read, (now) => ({
    duplicatesSkipped: now.duplicatesSkipped - start.duplicatesSkipped,
    deadLettered: now.deadLettered - start.deadLettered,
    retried: now.retried - start.retried,
    redelivered: now.redelivered - start.redelivered
  }))
})

/** Messages per subject in the stream. */
const subjectCounts = (stream: string) =>
  Effect.flatMap(JetStream.JetStream, (js) =>
    Effect.tryPromise({
      try: () => js.manager.streams.info(stream, { subjects_filter: ">" }),
      catch: NatsError.fromCause("billing.subjectCounts")
    })).pipe(Effect.map((info) => info.state.subjects ?? {}))

/**
 * Make sure the stream exists, then empty it and delete its consumers: every
 * run starts from no messages and a new payments consumer. Purging (rather
 * than deleting the stream) keeps the sequence numbers growing, so dead-letter
 * ids (`<stream>:<sequence>`) of this run never repeat an earlier run's.
 */
export const resetStream = (stream: string) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    yield* js.ensureStream({ name: stream, subjects, maxAge: "7 days", duplicateWindow: "2 minutes" })
    yield* Effect.tryPromise({
      try: async () => {
        await js.manager.streams.purge(stream)
        for await (const consumer of js.manager.consumers.list(stream)) {
          await js.manager.consumers.delete(stream, consumer.name)
        }
      },
      catch: NatsError.fromCause("billing.resetStream")
    })
  })

/** The first `InvoiceIssued` stored in the stream whose invoice matches, with its decoded envelope. */
export const findIssued = (stream: string, matches: (invoiceId: string) => boolean) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const info = yield* js.streamInfo(stream)
    const decode = Schema.decodeUnknown(Schema.parseJson(InvoiceIssued.envelope))
    for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
      const stored = yield* Effect.tryPromise({
        try: () => js.manager.streams.getMessage(stream, { seq }),
        catch: NatsError.fromCause("billing.findIssued")
      })
      if (stored === null || stored.subject !== InvoiceIssued.subject) continue
      const envelope = yield* decode(stored.string())
      if (matches(envelope.aggregateId)) return Option.some({ stored, envelope })
    }
    return Option.none()
  })

/** The part of an envelope the operator needs from a dead letter. */
const DeadInvoice = Schema.Struct({
  aggregateId: Schema.String,
  data: Schema.Struct({ invoiceNumber: Schema.String, customerId: Schema.String })
})

/** The requests of step 1: invoice `i` becomes INV-000i (the refused one rolls back, its number is reused). */
const requests = (scenario: Scenario): Array<IssueInvoiceInput & { readonly label: string }> => {
  const regular = customers.map((c) => c.id).filter((id) => id !== scenario.poisonCustomer)
  const out: Array<IssueInvoiceInput & { readonly label: string }> = []
  for (let i = 1; i <= scenario.invoices; i++) {
    out.push({
      label: `INV-${String(i).padStart(4, "0")}`,
      customerId: i === scenario.poisonAt ? scenario.poisonCustomer : regular[i % regular.length]!,
      amount: 5_000 + ((i * 7_919) % 40) * 250,
      currency: "EUR",
      dueDate: "2026-02-15"
    })
    if (i === scenario.refusedAfter) {
      out.push({ label: "an invoice over the credit limit", customerId: "cust_acme", amount: 900_000, currency: "EUR", dueDate: "2026-02-15" })
    }
  }
  return out
}

/** Step 1: issue the invoices through the command service, one request at a time. */
const issueInvoices = (scenario: Scenario, say: Log) =>
  Effect.gen(function*() {
    const client = yield* CommandClient.CommandClient
    yield* say(`\n[1/4] issuing ${scenario.invoices} invoices via ${IssueInvoice.subject} (invoice row + outbox row, one transaction each)`)
    let issued = 0
    let refused = 0
    for (const { label, ...payload } of requests(scenario)) {
      const result = yield* Effect.either(client.execute(IssueInvoice, undefined, payload))
      if (Either.isRight(result)) {
        issued++
        if (issued % 10 === 0) {
          yield* say(`      issued ${result.right.invoiceNumber} (${issued}/${scenario.invoices}); paid so far: ${yield* paymentsCount}`)
        }
      } else if (result.left._tag === "CreditLimitExceeded" || result.left._tag === "UnknownCustomer") {
        // a typed failure, decoded back from the reply: the transaction rolled back, nothing was enqueued
        refused++
        yield* say(`      refused ${label}: ${result.left._tag} [${result.left.code}] ${result.left.message}`)
      } else {
        return yield* result.left
      }
    }
    return { issued, refused }
  })

/**
 * Step 3: send a paid invoice's `InvoiceIssued` again, three ways. Returns
 * how many JetStream dropped itself and how many reached the consumer.
 */
const injectDuplicates = (stream: string, say: Log) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const publisher = yield* Publisher.Publisher
    yield* say(`\n[3/4] duplicates of a paid invoice's InvoiceIssued`)
    const paid = new Set((yield* listInvoices).filter((i) => i.status === "paid").map((i) => i.id))
    const original = yield* findIssued(stream, (invoiceId) => paid.has(invoiceId))
    if (Option.isNone(original)) {
      yield* say("      no paid invoice to duplicate")
      return { brokerDuplicates: 0, injected: 0 }
    }
    const { envelope, stored } = original.value
    const meta = { aggregateId: envelope.aggregateId, version: envelope.version }

    // a. the same message id again, within JetStream's duplicate window: the broker drops it
    const again = yield* publisher.publish(InvoiceIssued, envelope.data, { ...meta, id: envelope.id })
    yield* say(`      same Nats-Msg-Id ${envelope.id}: ${again.duplicate ? "dropped by JetStream (PubAck duplicate)" : "stored"}`)

    // b. the same bytes after the window (say, a relay that crashed before marking its rows, back
    //    minutes later), simulated with another Nats-Msg-Id: the envelope, so its key, is unchanged
    yield* Effect.tryPromise({
      try: () => js.client.publish(stored.subject, stored.data, { headers: stored.header, msgID: `${envelope.id}:late` }),
      catch: NatsError.fromCause("billing.republish", stored.subject)
    })
    yield* say(`      same envelope ${envelope.id} under a new Nats-Msg-Id: stored, the consumer gets it`)

    // c. the same fact under a new event id (say, a retried export job)
    const republished = yield* publisher.publish(InvoiceIssued, envelope.data, meta)
    yield* say(`      ${envelope.data.invoiceNumber} issued again as new event ${republished.id}: same invoice, type and version`)
    return { brokerDuplicates: again.duplicate ? 1 : 0, injected: 2 }
  })

/** Step 4: an operator reads this run's dead letters of the payments consumer and cancels those invoices. */
const cancelDeadLettered = (stream: string, dlqFrom: number, say: Log) =>
  Effect.gen(function*() {
    const dlq = yield* DeadLetter.DeadLetter
    yield* say(`\n[4/4] operator: dead letters of "${Payments.durable}"`)
    const views: Array<DeadLetterView> = []
    for (const entry of yield* dlq.list({ context: InvoiceIssued.context, fromSeq: dlqFrom, limit: 1000 })) {
      const r = entry.record
      if (r.stream !== stream || r.consumer !== Payments.durable) continue
      const invoice = Schema.decodeUnknownOption(DeadInvoice)(r.envelope)
      if (Option.isNone(invoice)) continue
      const view: DeadLetterView = {
        dlqSeq: entry.seq,
        invoiceId: invoice.value.aggregateId,
        invoiceNumber: invoice.value.data.invoiceNumber,
        customerId: invoice.value.data.customerId,
        reason: r.reason,
        errorMessage: r.errorMessage,
        attempts: r.attempts
      }
      views.push(view)
      yield* say(`      DLQ #${view.dlqSeq}: ${view.invoiceNumber} ${view.reason} (${r.errorTag}): ${view.errorMessage}`)
      yield* cancelInvoice(view.invoiceId, `payment failed: ${view.errorMessage}`)
      yield* say(`      cancelled ${view.invoiceNumber}: ${InvoiceCancelled.type} enqueued`)
    }
    return views
  })

/**
 * Run the scenario and count. Starts the billing command service and the
 * payments consumer in the current scope. Progress lines go to `say`
 * (default: stdout).
 */
export const program = (scenario: Scenario = defaultScenario, say: Log = Console.log) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const nats = yield* NatsClient.NatsClient
    const dlq = yield* DeadLetter.DeadLetter
    const gateway = yield* Payments.PaymentGateway
    const outbox = yield* Outbox.OutboxStore
    const db = yield* Database

    const version = Option.match(yield* nats.serverInfo, { onNone: () => "?", onSome: (info) => info.version })
    yield* say("billing demo: the Winaity guide's invoice flow on effect-nats")
    yield* say(`  NATS     ${nats.servers} (nats-server ${version})`)
    yield* say(`  SQLite   ${db.filename} (new for this run)`)
    yield* say(`  stream   ${scenario.stream} on ${subjects.join(", ")}; dead letters in ${dlq.stream}`)

    yield* resetStream(scenario.stream)
    // the DLQ stream may be shared: only its entries from now on belong to this run
    const dlqFrom = (yield* js.streamInfo(dlq.stream)).state.last_seq + 1
    const deltas = yield* counters

    // the services: the billing command endpoint and the payments consumer
    yield* CommandService.make({
      ...service,
      commands: [issueInvoiceEndpoint],
      stopTimeout: "3 seconds"
    })
    yield* Payments.start(scenario.stream)

    // 1. issue
    const { issued, refused } = yield* issueInvoices(scenario, say)

    // 2. the payments consumer works through them (it started during step 1)
    yield* say(`\n[2/4] payments consumer "${Payments.durable}": collecting every issued invoice`)
    yield* waitFor(
      say,
      Effect.gen(function*() {
        const paid = yield* paymentsCount
        const c = yield* deltas
        return {
          done: paid + c.deadLettered >= issued,
          line: `paid ${paid}/${issued} · dead-lettered ${c.deadLettered} · retried ${c.retried} in process · redelivered ${c.redelivered}`
        }
      }),
      scenario.timeout
    )

    // 3. duplicates
    const { brokerDuplicates, injected } = yield* injectDuplicates(scenario.stream, say)
    yield* waitFor(
      say,
      Effect.map(deltas, (c) => ({
        done: c.duplicatesSkipped >= injected,
        line: `skipped by the consumer's dedup (key ${Payments.durable}:<invoice>:<type>:<version>): ${c.duplicatesSkipped}/${injected}`
      })),
      scenario.timeout
    )

    // 4. the operator
    const deadLetters = yield* cancelDeadLettered(scenario.stream, dlqFrom, say)

    // the relay publishes what the handlers and the operator enqueued
    yield* waitFor(
      say,
      Effect.map(outbox.stats, (stats) => ({ done: stats.pending === 0, line: `outbox pending: ${stats.pending}` })),
      scenario.timeout
    )

    // count: the broker's, the database's, the DLQ's and the metrics' numbers
    const subjectsEnd = yield* subjectCounts(scenario.stream)
    const published = subjectsEnd[InvoiceIssued.subject] ?? 0
    const paidEvents = subjectsEnd[InvoicePaid.subject] ?? 0
    const cancelledEvents = subjectsEnd[InvoiceCancelled.subject] ?? 0
    const invoices = yield* listInvoices
    const handled = yield* paymentsCount
    const { duplicatesSkipped, retried, redelivered } = yield* deltas
    const deadLettered = deadLetters.length
    const deadIds = new Set(deadLetters.map((d) => d.invoiceId))
    const lost = invoices.filter((i) => i.payment_id === null && !deadIds.has(i.id)).length
    const charges = yield* gateway.charges
    const outboxPending = (yield* outbox.stats).pending
    // what the scenario makes happen
    const expectedDeadLetters = scenario.poisonAt >= 1 && scenario.poisonAt <= scenario.invoices ? 1 : 0
    const expectedRefused = scenario.refusedAfter >= 1 && scenario.refusedAfter <= scenario.invoices ? 1 : 0
    const checks: Array<Check> = [
      {
        ok: published === handled + duplicatesSkipped + deadLettered,
        description: `published ${published} = handled ${handled} + duplicates skipped ${duplicatesSkipped} + dead-lettered ${deadLettered}`
      },
      {
        ok: lost === 0,
        description: `every invoice in SQLite (${invoices.length}) is paid or dead-lettered: lost ${lost}`
      },
      {
        ok: deadLettered === expectedDeadLetters &&
          deadLetters.every((d) => d.customerId === scenario.poisonCustomer && d.reason === "Permanent"),
        description: `${deadLettered} dead letter(s), expected ${expectedDeadLetters}: the poison invoice of ${scenario.poisonCustomer}, reason Permanent`
      },
      {
        ok: injected > 0 && duplicatesSkipped === injected && brokerDuplicates === 1,
        description: `duplicates: ${brokerDuplicates} dropped by JetStream, ${duplicatesSkipped} of ${injected} skipped by dedup`
      },
      {
        ok: issued === scenario.invoices && invoices.length === issued && refused === expectedRefused,
        description: `${issued} invoices issued, ${refused} refused with no trace`
      },
      { ok: charges === handled, description: `no card charged twice: ${charges} charges for ${handled} payments` },
      {
        ok: paidEvents === handled && cancelledEvents === deadLettered && outboxPending === 0,
        description: `every outcome published: ${paidEvents} paid, ${cancelledEvents} cancelled, outbox pending ${outboxPending}`
      }
    ]
    return {
      published,
      handled,
      duplicatesSkipped,
      deadLettered,
      lost,
      issued: invoices.length,
      refused,
      brokerDuplicates,
      retried,
      redelivered,
      charges,
      paidEvents,
      cancelledEvents,
      outboxPending,
      deadLetters,
      checks,
      consistent: checks.every((check) => check.ok)
    } satisfies Summary
  })
