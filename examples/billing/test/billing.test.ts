import { spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { SqlClient } from "@effect/sql"
import { NatsTestServer } from "@effect-nats/testing"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option, Schedule, Schema } from "effect"
import { DeadLetter, JetStream, NatsError } from "effect-nats"
import { InvoiceIssued, InvoicePaid } from "../src/events.js"
import { issueInvoice } from "../src/invoices.js"
import { BillingLive, defaultScenario, findIssued, jsonLine, program, resetStream } from "../src/program.js"

/** A fresh nats-server and a fresh SQLite database per test. */
const TestLive = BillingLive().pipe(Layer.provideMerge(NatsTestServer.layerJetStream()))

const count = (table: "invoices" | "effect_nats_outbox") =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(sql<{ n: number }>`SELECT COUNT(*) AS n FROM ${sql(table)}`, (rows) => rows[0]?.n ?? 0))

/** Messages per subject in the billing stream. */
const subjectCounts = Effect.flatMap(JetStream.JetStream, (js) =>
  Effect.tryPromise({
    try: () => js.manager.streams.info(defaultScenario.stream, { subjects_filter: ">" }),
    catch: NatsError.fromCause("test.subjectCounts")
  })).pipe(Effect.map((info) => info.state.subjects ?? {}))

describe("billing", () => {
  it.live("the scenario adds up: every invoice paid or dead-lettered, duplicates skipped, nothing lost", () =>
    Effect.gen(function*() {
      const summary = yield* program(defaultScenario, () => Effect.void)
      expect(summary.checks.filter((c) => !c.ok)).toEqual([])
      expect(summary.consistent).toBe(true)
      expect(JSON.parse(jsonLine(summary))).toEqual({
        published: 52,
        handled: 49,
        duplicatesSkipped: 2,
        deadLettered: 1,
        lost: 0
      })
      expect(summary.published).toBe(summary.handled + summary.duplicatesSkipped + summary.deadLettered)
      expect(summary.duplicatesSkipped).toBeGreaterThanOrEqual(1)
      expect(summary.refused).toBe(1)
      expect(summary.brokerDuplicates).toBe(1)
      // INV-0007: one in-process retry; INV-0021: three, then one redelivery
      expect(summary.retried).toBe(4)
      expect(summary.redelivered).toBe(1)

      // the poison invoice sits in the DLQ with its reason and the original envelope
      const dlq = yield* DeadLetter.DeadLetter
      const entries = (yield* dlq.list({ context: "billing" })).filter((e) => e.record.consumer === "payments")
      expect(entries).toHaveLength(1)
      const record = entries[0]!.record
      expect(record.reason).toBe("Permanent")
      expect(record.errorTag).toBe("PermanentError")
      expect(record.errorMessage).toContain("card declined for cust_wayne (expired_card)")
      expect(record.attempts).toBe(1)
      expect(record.envelope).toMatchObject({
        type: "billing.invoice.issued",
        version: 1,
        data: { invoiceNumber: "INV-0037", customerId: "cust_wayne" }
      })

      // InvoicePaid is caused by the InvoiceIssued it answers, in the same flow (correlation id)
      const js = yield* JetStream.JetStream
      const lastPaid = yield* Effect.promise(() =>
        js.manager.streams.getMessage(defaultScenario.stream, { last_by_subj: InvoicePaid.subject })
      )
      expect(lastPaid).not.toBeNull()
      const paid = yield* Schema.decodeUnknown(Schema.parseJson(InvoicePaid.envelope))(lastPaid!.string())
      const issued = Option.getOrThrow(yield* findIssued(defaultScenario.stream, (id) => id === paid.aggregateId))
      expect(paid.version).toBe(2)
      expect(paid.causationId).toBe(issued.envelope.id)
      expect(paid.correlationId).toBe(issued.envelope.correlationId)
      expect(paid.source).toBe("billing")
    }).pipe(Effect.scoped, Effect.provide(TestLive)), 30_000)

  it.live("an IssueInvoice whose transaction fails after the enqueue stores nothing and publishes nothing", () =>
    Effect.gen(function*() {
      yield* resetStream(defaultScenario.stream)
      const invoice = { currency: "EUR", dueDate: "2026-02-15" } as const

      // the credit check runs after the outbox enqueue, in the same transaction: it all rolls back
      const refused = yield* issueInvoice({ ...invoice, customerId: "cust_acme", amount: 900_000 }).pipe(Effect.flip)
      expect(refused._tag).toBe("CreditLimitExceeded")
      const unknown = yield* issueInvoice({ ...invoice, customerId: "cust_nobody", amount: 1_000 }).pipe(Effect.flip)
      expect(unknown._tag).toBe("UnknownCustomer")
      expect(yield* count("invoices")).toBe(0)
      expect(yield* count("effect_nats_outbox")).toBe(0)

      // a valid invoice after them: the relay publishes in order, so once it is in the stream,
      // anything enqueued before it would be too
      const accepted = yield* issueInvoice({ ...invoice, customerId: "cust_acme", amount: 1_000 })
      expect(accepted.invoiceNumber).toBe("INV-0001")
      yield* subjectCounts.pipe(
        Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (s) => (s[InvoiceIssued.subject] ?? 0) >= 1 }),
        Effect.timeout("5 seconds")
      )
      const subjects = yield* subjectCounts
      expect(subjects).toEqual({ [InvoiceIssued.subject]: 1 })
      const stored = Option.getOrThrow(yield* findIssued(defaultScenario.stream, () => true))
      expect(stored.envelope.aggregateId).toBe(accepted.invoiceId)
      expect(stored.envelope.data).toMatchObject({ customerId: "cust_acme", amount: 1_000, invoiceNumber: "INV-0001" })
    }).pipe(Effect.scoped, Effect.provide(TestLive)), 30_000)
})

// the real entry point, as `npm run demo` runs it
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")

interface Run {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** Run main.ts; `onStdout` may send it a signal. */
const runMain = (onStdout?: (stdout: string, kill: (signal: NodeJS.Signals) => void) => void) =>
  new Promise<Run>((resolve, reject) => {
    const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", "examples/billing/src/main.ts"], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    let signalled = false
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk
      onStdout?.(stdout, (signal) => {
        if (!signalled) {
          signalled = true
          child.kill(signal)
        }
      })
    })
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk
    })
    child.on("error", reject)
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
  })

describe("npm run demo (examples/billing/src/main.ts)", () => {
  it("runs end to end, exits 0 and ends with the JSON summary line", async () => {
    const run = await runMain()
    expect(run.stderr).not.toContain("billing demo failed")
    expect(run.code).toBe(0)
    const lines = run.stdout.trimEnd().split("\n")
    const last = JSON.parse(lines[lines.length - 1]!) as Record<string, number>
    expect(Object.keys(last)).toEqual(["published", "handled", "duplicatesSkipped", "deadLettered", "lost"])
    expect(last["lost"]).toBe(0)
    expect(last["deadLettered"]).toBe(1)
    expect(last["published"]).toBe(last["handled"]! + last["duplicatesSkipped"]! + last["deadLettered"]!)
    expect(run.stdout).toContain("consistent: every invoice is accounted for")
  }, 30_000)

  it("shuts down gracefully on SIGINT mid-run and exits 0", async () => {
    const run = await runMain((stdout, kill) => {
      if (stdout.includes("issued INV-0010")) kill("SIGINT")
    })
    expect(run.stdout).toContain("issued INV-0010")
    expect(run.stdout).toContain("interrupted: draining the consumer")
    expect(run.stdout).toContain("stopped cleanly")
    expect(run.stdout).not.toContain("\"lost\"")
    expect(run.stderr).not.toContain("billing demo failed")
    expect(run.signal).toBeNull()
    expect(run.code).toBe(0)
  }, 30_000)
})
