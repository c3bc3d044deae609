/**
 * Compatibility with a stock micro client: the Go program in test/go/microclient
 * (nats.go + its `micro` package) discovers our service and decodes the
 * PING / INFO / STATS answers strictly, then sends a request and reads the
 * micro error headers.
 *
 * Needs `go` and nats.go sources in GOPATH (Debian/Ubuntu: `apt-get install
 * golang-go golang-github-nats-io-go-nats-dev`); skipped otherwise, unless
 * `REQUIRE_GO_INTEROP=1` (CI) turns the skip into a failure.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Layer, Schema } from "effect"
import { execFile, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import * as Command from "../src/Command.js"
import * as CommandClient from "../src/CommandClient.js"
import * as CommandService from "../src/CommandService.js"

const source = path.join(import.meta.dirname, "go", "microclient", "main.go")
const gopath = [process.env["GOPATH"], "/usr/share/gocode"].filter((p) => p !== undefined && p !== "").join(path.delimiter)

const goEnv = {
  ...process.env,
  GO111MODULE: "off",
  GOPATH: gopath,
  GOFLAGS: "",
  GOPROXY: "off",
  GOCACHE: path.join(os.tmpdir(), "effect-nats-go-cache")
}

/** Why the Go interop cannot run here, if it cannot. */
const missing = ((): string | undefined => {
  const version = spawnSync("go", ["version"], { encoding: "utf8", env: goEnv })
  if (version.error !== undefined || version.status !== 0) return "`go` is not installed (apt-get install golang-go)"
  const micro = gopath.split(path.delimiter).some((p) => fs.existsSync(path.join(p, "src/github.com/nats-io/nats.go/micro")))
  if (!micro) return `nats.go's micro package is not in GOPATH=${gopath} (apt-get install golang-github-nats-io-go-nats-dev)`
  return undefined
})()

/** `go build` once per source + go version, cached in the temp dir. */
const buildClient = Effect.promise(async () => {
  const version = spawnSync("go", ["version"], { encoding: "utf8", env: goEnv }).stdout
  const hash = createHash("sha256").update(fs.readFileSync(source)).update(version).digest("hex").slice(0, 16)
  const binary = path.join(os.tmpdir(), `effect-nats-microclient-${hash}`)
  if (!fs.existsSync(binary)) {
    const tmp = `${binary}.${process.pid}.tmp`
    await promisify(execFile)("go", ["build", "-o", tmp, "."], { cwd: path.dirname(source), env: goEnv })
    fs.renameSync(tmp, binary)
  }
  return binary
})

class InvoiceNotFound extends Schema.TaggedError<InvoiceNotFound>()("InvoiceNotFound", { invoiceId: Schema.String }) {
  readonly code = "404"
}

const IssueInvoice = Command.make({
  service: "billing",
  aggregate: "invoice",
  name: "issue",
  payload: Schema.Struct({ amount: Schema.Number }),
  success: Schema.Struct({ invoiceId: Schema.String }),
  failure: InvoiceNotFound
})

const GetInvoice = Command.query({ service: "billing", aggregate: "invoice", success: Schema.Struct({ amount: Schema.Number }) })

const issue = CommandService.handler(IssueInvoice, (_, request) =>
  request.aggregateId === "missing"
    ? Effect.fail(new InvoiceNotFound({ invoiceId: request.aggregateId }))
    : Effect.succeed({ invoiceId: request.aggregateId ?? "new" }))

const get = CommandService.handler(GetInvoice, () => Effect.succeed({ amount: 1 }))

interface GoOutput {
  readonly ping: ReadonlyArray<{ readonly name: string; readonly id: string; readonly version: string }>
  readonly ping_v1: ReadonlyArray<{ readonly type: string; readonly name: string; readonly id: string; readonly metadata: Record<string, string> }>
  readonly info: ReadonlyArray<CommandService.InfoResponse>
  readonly stats: ReadonlyArray<CommandService.StatsResponse>
  readonly request: { readonly code: string; readonly description: string; readonly body: unknown }
}

if (missing !== undefined && process.env["REQUIRE_GO_INTEROP"] !== "1") {
  console.warn(`CommandGoInterop: skipped, ${missing}; set REQUIRE_GO_INTEROP=1 to make this a failure`)
  describe("Go micro client interop", () => {
    it.skip(`skipped: ${missing}`, () => {})
  })
} else {
  describe("Go micro client interop", () => {
    layer(CommandClient.layer().pipe(Layer.provideMerge(NatsTestServer.layerJetStream())), {
      excludeTestServices: true,
      timeout: "120 seconds"
    })((it) => {
      it.scoped("nats.go micro discovers the service and decodes PING / INFO / STATS; error headers match", () =>
        Effect.gen(function*() {
          if (missing !== undefined) return yield* Effect.dieMessage(`REQUIRE_GO_INTEROP=1 but ${missing}`)
          const binary = yield* buildClient
          const server = yield* NatsTestServer.NatsTestServer
          const options = { name: "billing", version: "2.0.1", description: "invoices", metadata: { team: "payments" }, commands: [issue, get] }
          const a = yield* CommandService.make(options)
          const b = yield* CommandService.make(options)
          const client = yield* CommandClient.CommandClient
          for (const id of ["inv-1", "inv-2", "missing"]) {
            yield* Effect.either(client.execute(IssueInvoice, id, { amount: 1 }))
          }

          const { stdout } = yield* Effect.promise(() =>
            promisify(execFile)(binary, [
              "-url", server.url,
              "-name", "billing",
              "-expect", "2",
              "-request", IssueInvoice.subject,
              "-payload", JSON.stringify({ aggregateId: "missing", payload: { amount: 1 } })
            ])
          )
          const out = JSON.parse(stdout) as GoOutput

          const ids = [a.id, b.id].sort()
          expect(out.ping.map((p) => p.id).sort()).toEqual(ids)
          expect(out.ping.every((p) => p.name === "billing" && p.version === "2.0.1")).toBe(true)
          expect(out.ping_v1.every((p) => p.type === "io.nats.micro.v1.ping_response")).toBe(true)
          expect(out.ping_v1[0]!.metadata).toEqual({ team: "payments" })

          expect(out.info.map((i) => i.id).sort()).toEqual(ids)
          for (const info of out.info) {
            expect(info).toMatchObject({ type: "io.nats.micro.v1.info_response", description: "invoices" })
            expect(info.endpoints.map((e) => [e.name, e.subject, e.queue_group])).toEqual([
              ["invoice_issue", "billing.command.invoice.issue", "q"],
              ["invoice_get_query", "billing.query.invoice.get", "q"]
            ])
            // the contract, as Go read it: request/response JSON Schemas in the endpoint metadata (no SCHEMA verb in v1)
            const issueMetadata = info.endpoints[0]!.metadata!
            expect(JSON.parse(issueMetadata[CommandService.SchemaMetadata.request]!)).toMatchObject({
              required: ["payload"],
              properties: { payload: { required: ["amount"] } }
            })
            expect(JSON.parse(issueMetadata[CommandService.SchemaMetadata.response]!)).toHaveProperty("anyOf")
          }

          expect(out.stats.map((s) => s.id).sort()).toEqual(ids)
          const issueStats = out.stats.map((s) => s.endpoints.find((e) => e.name === "invoice_issue")!)
          expect(issueStats.reduce((n, e) => n + e.num_requests, 0)).toBe(3)
          expect(issueStats.reduce((n, e) => n + e.num_errors, 0)).toBe(1)
          expect(issueStats.map((e) => e.last_error)).toContain("404:InvoiceNotFound { invoiceId: \"missing\" }")
          for (const s of out.stats) {
            expect(s.type).toBe("io.nats.micro.v1.stats_response")
            // Go parsed `started` as a time.Time and wrote it back
            expect(Math.abs(Date.parse(s.started) - Date.now())).toBeLessThan(60_000)
          }
          for (const e of issueStats) {
            // time.Duration (nanoseconds) decoded and re-encoded by Go
            if (e.num_requests > 0) expect(e.processing_time).toBeGreaterThan(1000)
            expect(e.average_processing_time).toBe(e.num_requests === 0 ? 0 : Math.floor(e.processing_time / e.num_requests))
          }

          expect(out.request).toMatchObject({
            code: "404",
            description: "InvoiceNotFound { invoiceId: \"missing\" }",
            body: { success: false, error: { code: "404", details: { _tag: "InvoiceNotFound", invoiceId: "missing" } } }
          })
        }))
    })
  })
}
