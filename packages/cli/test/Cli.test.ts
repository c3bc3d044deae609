import { Cli } from "@effect-nats/cli"
import { NatsTestServer } from "@effect-nats/testing"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it, layer } from "@effect/vitest"
import { ConfigProvider, Console, DateTime, Duration, Effect, Exit, Layer, Option } from "effect"
import { DeadLetter, Envelope, JetStream } from "effect-nats"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

interface Result {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Run the CLI in-process, capturing what it writes to the Console. */
const cli = (...args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const out: Array<string> = []
    const err: Array<string> = []
    const base = yield* Effect.console
    const text = (xs: ReadonlyArray<unknown>) => xs.map(String).join(" ")
    const captured: Console.Console = {
      ...base,
      log: (...xs) => Effect.sync(() => void out.push(text(xs))),
      error: (...xs) => Effect.sync(() => void err.push(text(xs))),
      unsafe: { ...base.unsafe, log: (...xs) => void out.push(text(xs)), error: (...xs) => void err.push(text(xs)) }
    }
    const exit = yield* Cli.run(args).pipe(Effect.withConsole(captured), Effect.provide(NodeContext.layer), Effect.exit)
    return {
      code: Exit.isSuccess(exit) ? 0 : 1,
      stdout: out.join("\n"),
      stderr: err.join("\n")
    } satisfies Result
  })

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")
const bin = path.join(root, "packages/cli/bin/effect-nats.js")

/** Run the real executable in a child process. */
const spawnBin = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.async<Result, Error>((resume) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: os.tmpdir(),
      env: { PATH: process.env["PATH"] ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
    child.on("error", (e) => resume(Effect.fail(e)))
    child.on("close", (code) => resume(Effect.succeed({ code: code ?? -1, stdout, stderr })))
    return Effect.sync(() => child.kill("SIGKILL"))
  }).pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error(`effect-nats ${args.join(" ")} timed out`) }))

const tempFile = (name: string, content: unknown) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-nats-cli-"))
      const file = path.join(dir, name)
      fs.writeFileSync(file, typeof content === "string" ? content : JSON.stringify(content, null, 2))
      return file
    }),
    (file) => Effect.sync(() => fs.rmSync(path.dirname(file), { recursive: true, force: true }))
  )

const encoder = new TextEncoder()
// dead letters of one source message are deduplicated (msgID `<stream>:<sequence>`): give each its own
let sourceSequence = 0

/** Dead-letter an envelope published on `subject` (as the pipeline would). */
const deadLetter = (subject: string, options: { readonly reason?: string; readonly errorTag?: string } = {}) =>
  Effect.gen(function*() {
    const dlq = yield* DeadLetter.DeadLetter
    const now = yield* DateTime.now
    const id = Envelope.makeId(now.epochMillis)
    const [context, aggregate, event] = subject.split(".")
    const envelope: Envelope.Envelope<{ readonly orderId: string }> = {
      id,
      type: subject,
      timestamp: now,
      correlationId: id,
      aggregateId: "o-1",
      aggregateType: `${context}.${aggregate}`,
      version: 0,
      data: { orderId: `o-${event}` }
    }
    const payload = { ...envelope, timestamp: DateTime.formatIso(now) }
    const seq = yield* dlq.send({
      subject,
      headers: Envelope.toHeaders(envelope),
      data: encoder.encode(JSON.stringify(payload)),
      reason: options.reason ?? "Permanent",
      errorTag: options.errorTag ?? "OrderRejected",
      errorMessage: "order o-1 was rejected:\nno stock",
      attempts: 3,
      stream: "ORDERS",
      consumer: "fulfilment",
      sequence: ++sourceSequence
    })
    return { seq, id, sequence: sourceSequence }
  })

const ServerLive = DeadLetter.layer().pipe(Layer.provideMerge(NatsTestServer.layerJetStream()))

const urlOf = Effect.map(NatsTestServer.NatsTestServer, (s) => s.url)

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------

describe("effect-nats CLI", () => {
  layer(ServerLive, { excludeTestServices: true, timeout: "30 seconds" })((it) => {
    it.scoped("dlq list: a table, --context, --limit and --json; --server before or after the command", () =>
      Effect.gen(function*() {
        const url = yield* urlOf
        const a = yield* deadLetter("listing.order.placed", { reason: "Decode", errorTag: "ParseError" })
        const b = yield* deadLetter("listing.order.shipped")
        const c = yield* deadLetter("other.order.placed")

        const all = yield* cli("-s", url, "dlq", "list")
        expect(all.code, all.stderr).toBe(0)
        const lines = all.stdout.split("\n")
        expect(lines[0]).toMatch(/^SEQ\s+FAILED AT\s+REASON\s+ERROR TAG\s+SUBJECT\s+ATTEMPTS$/)
        const row = lines.find((l) => l.startsWith(`${a.seq} `))
        expect(row).toMatch(new RegExp(`^${a.seq}\\s+\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z\\s+Decode\\s+ParseError\\s+listing\\.order\\.placed\\s+3$`))
        expect(all.stdout).toContain("other.order.placed")

        const listing = yield* cli("dlq", "list", "--context", "listing", "--server", url)
        expect(listing.code, listing.stderr).toBe(0)
        expect(listing.stdout).toContain("listing.order.placed")
        expect(listing.stdout).toContain("listing.order.shipped")
        expect(listing.stdout).not.toContain("other.order.placed")

        const limited = yield* cli("-s", url, "dlq", "list", "-c", "listing", "--limit", "1")
        expect(limited.stdout.split("\n").filter((l) => /^\d+ /.test(l))).toHaveLength(1)
        expect(limited.stdout).toContain("there are more: use --limit")

        const jsonLines = yield* cli("-s", url, "dlq", "list", "--json", "--context", "listing")
        expect(jsonLines.code, jsonLines.stderr).toBe(0)
        const records = jsonLines.stdout.split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)
        expect(records.map((r) => r["seq"])).toEqual([a.seq, b.seq])
        expect(records[0]).toMatchObject({
          dlqSubject: "dlq.listing",
          subject: "listing.order.placed",
          reason: "Decode",
          errorTag: "ParseError",
          attempts: 3,
          stream: "ORDERS",
          consumer: "fulfilment",
          sequence: a.sequence,
          envelope: { id: a.id }
        })
        expect(c.seq).toBeGreaterThan(b.seq)
      }))

    it.scoped("dlq show: the record, its headers and the decoded payload", () =>
      Effect.gen(function*() {
        const url = yield* urlOf
        const { seq, id, sequence } = yield* deadLetter("showing.order.placed")
        const shown = yield* cli("-s", url, "dlq", "show", String(seq))
        expect(shown.code, shown.stderr).toBe(0)
        const out = shown.stdout
        expect(out).toContain(`Dead letter ${seq} in DLQ (dlq.showing)`)
        expect(out).toMatch(/subject\s+showing\.order\.placed/)
        expect(out).toMatch(/reason\s+Permanent/)
        expect(out).toMatch(/error tag\s+OrderRejected/)
        // a multi-line error message stays aligned under its label
        expect(out).toMatch(/error\s+order o-1 was rejected:\n\s+no stock/)
        expect(out).toMatch(new RegExp(`source\\s+stream ORDERS, sequence ${sequence}, consumer fulfilment`))
        expect(out).toContain(`  Nats-Msg-Id: ${id}`)
        expect(out).toContain("  Event-Type: showing.order.placed")
        expect(out).toMatch(/Payload \(\d+ bytes, JSON\)/)
        expect(out).toContain(`    "id": "${id}",`)
        expect(out).toContain(`      "orderId": "o-placed"`)

        const json = yield* cli("-s", url, "dlq", "show", String(seq), "--json")
        expect(JSON.parse(json.stdout)).toMatchObject({ seq, subject: "showing.order.placed", errorTag: "OrderRejected" })

        const missing = yield* cli("-s", url, "dlq", "show", "999999")
        expect(missing.code).toBe(1)
        expect(missing.stderr).toBe("effect-nats: no dead letter 999999")

        const notANumber = yield* cli("-s", url, "dlq", "show", "abc")
        expect(notANumber.code).toBe(1)
        expect(notANumber.stderr).toMatch(/integer/i)
      }))

    it.scoped("dlq replay: republishes to the original subject (a new id, caused by the old one) and removes it", () =>
      Effect.gen(function*() {
        const url = yield* urlOf
        const js = yield* JetStream.JetStream
        const dlq = yield* DeadLetter.DeadLetter
        yield* Effect.acquireRelease(
          js.ensureStream({ name: "REPLAY", subjects: ["replaying.>"], storage: "memory" }),
          () => Effect.promise(() => js.manager.streams.delete("REPLAY"))
        )
        const one = yield* deadLetter("replaying.order.placed")
        const two = yield* deadLetter("replaying.order.shipped")
        const three = yield* deadLetter("replaying.order.paid")

        const replayed = yield* cli("dlq", "replay", String(one.seq), "-s", url)
        expect(replayed.code, replayed.stderr).toBe(0)
        expect(replayed.stdout).toMatch(
          new RegExp(`^Replayed ${one.seq} to replaying\\.order\\.placed as \\S+ \\(stream sequence 1\\); removed from DLQ$`)
        )
        const stored = yield* Effect.promise(() => js.manager.streams.getMessage("REPLAY", { seq: 1 })).pipe(
          Effect.flatMap(Effect.fromNullable)
        )
        expect(stored.subject).toBe("replaying.order.placed")
        const body = stored.json<{ id: string; causationId: string; data: { orderId: string } }>()
        expect(body.causationId).toBe(one.id)
        expect(body.id).not.toBe(one.id)
        expect(body.data.orderId).toBe("o-placed")
        expect(stored.header.get("Causation-Id")).toBe(one.id)
        const gone = yield* Effect.either(dlq.get(one.seq))
        expect(gone._tag === "Left" && gone.left.reason).toBe("NotFound")

        // --to another subject, --keep
        const kept = yield* cli("-s", url, "dlq", "replay", String(two.seq), "--to", "replaying.audit.copy", "--keep")
        expect(kept.code, kept.stderr).toBe(0)
        expect(kept.stdout).toContain("to replaying.audit.copy")
        expect(kept.stdout).toContain("kept in DLQ")
        expect((yield* dlq.get(two.seq)).record.subject).toBe("replaying.order.shipped")

        // --all of one context
        const all = yield* cli("-s", url, "dlq", "replay", "--all", "--context", "replaying")
        expect(all.code, all.stderr).toBe(0)
        expect(all.stdout).toContain(`Replayed ${two.seq} to replaying.order.shipped`)
        expect(all.stdout).toContain(`Replayed ${three.seq} to replaying.order.paid`)
        expect(all.stdout).toContain("Replayed 2 dead letters of context replaying.")
        expect(yield* dlq.list({ context: "replaying" })).toEqual([])
        expect((yield* js.streamInfo("REPLAY")).state.messages).toBe(4)

        // nothing to replay to: a subject no stream stores
        const orphan = yield* deadLetter("nowhere.order.placed")
        const failed = yield* cli("-s", url, "dlq", "replay", String(orphan.seq))
        expect(failed.code).toBe(1)
        expect(failed.stderr).toBe(
          `effect-nats: cannot replay ${orphan.seq} to nowhere.order.placed: no responders (no stream stores that subject)`
        )
        expect((yield* dlq.get(orphan.seq)).record.subject).toBe("nowhere.order.placed")

        const neither = yield* cli("-s", url, "dlq", "replay")
        expect(neither.code).toBe(1)
        expect(neither.stderr).toBe("effect-nats: give the sequence of a dead letter to replay, or --all")
      }))

    it.scoped("replay: a stream's history by subject filter and time range into another subject, again without doubles; or a durable", () =>
      Effect.gen(function*() {
        const url = yield* urlOf
        const js = yield* JetStream.JetStream
        for (const [name, subjects] of [["HIST", ["hist.>"]], ["BACKFILL", ["backfill.>"]]] as const) {
          yield* Effect.acquireRelease(
            js.ensureStream({ name, subjects: [...subjects], storage: "memory" }),
            () => Effect.promise(() => js.manager.streams.delete(name))
          )
        }
        const enc = new TextEncoder()
        const put = (subject: string, i: number) => Effect.promise(() => js.client.publish(subject, enc.encode(JSON.stringify({ i }))))
        for (let i = 0; i < 5; i++) yield* put(i % 2 === 0 ? "hist.order.placed" : "hist.order.paid", i)
        yield* Effect.sleep("30 millis")
        const since = new Date().toISOString()
        yield* Effect.sleep("30 millis")
        for (let i = 5; i < 10; i++) yield* put(i % 2 === 0 ? "hist.order.placed" : "hist.order.paid", i)
        yield* Effect.sleep("30 millis")
        const until = new Date().toISOString()
        yield* Effect.sleep("30 millis")
        yield* put("hist.order.placed", 10)

        const run = yield* cli("-s", url, "replay", "HIST", "--subject", "hist.order.placed", "--since", since, "--until", until, "--to", "backfill.>")
        expect(run.code, run.stderr).toBe(0)
        expect(run.stdout).toMatch(/^replayed 2 messages of HIST \(seq 7\.\.9\) to backfill\.> at \d+ msg\/s$/)
        const copies = yield* Effect.promise(() => js.manager.streams.info("BACKFILL"))
        expect(copies.state.messages).toBe(2)
        const first = yield* Effect.promise(() => js.manager.streams.getMessage("BACKFILL", { seq: 1 }))
        expect(first!.subject).toBe("backfill.hist.order.placed")
        expect(first!.json<{ i: number }>().i).toBe(6)
        expect(first!.header.get("Nats-Msg-Id")).toBe("replay:HIST:7")
        // run again: the copies are duplicates, nothing is stored twice
        expect((yield* cli("-s", url, "replay", "HIST", "--subject", "hist.order.placed", "--since", since, "--until", until, "--to", "backfill.>")).code).toBe(0)
        expect((yield* Effect.promise(() => js.manager.streams.info("BACKFILL"))).state.messages).toBe(2)

        // a durable from a sequence
        const durable = yield* cli("-s", url, "replay", "HIST", "--from-seq", "9", "--durable", "redo")
        expect(durable.code, durable.stderr).toBe(0)
        expect(durable.stdout).toBe("created durable redo on HIST: 3 messages pending from sequence 9")
        // refused: two targets, or --until with a durable
        expect((yield* cli("-s", url, "replay", "HIST", "--to", "x.y", "--durable", "d")).stderr).toContain("give one target")
        expect((yield* cli("-s", url, "replay", "HIST", "--until", until, "--durable", "d")).stderr).toContain("--until cannot bound a durable")
        expect((yield* cli("-s", url, "replay", "HIST", "--since", "yesterday", "--to", "x.y")).stderr).toContain("not a time")
      }))

    it.scoped("dlq commands leave the dead-letter stream as they found it (or absent)", () =>
      Effect.gen(function*() {
        const url = yield* urlOf
        const js = yield* JetStream.JetStream
        // an application's DLQ with its own retention and prefix
        const custom = yield* DeadLetter.make({ stream: "DEAD", prefix: "dead", maxAge: "7 days" })
        const seq = yield* custom.send({
          subject: "custom.thing.happened",
          headers: undefined,
          data: encoder.encode("\u0000\u00ff binary?"),
          reason: "Decode",
          errorTag: "InvalidJson",
          errorMessage: "not JSON",
          attempts: 1
        })
        const listed = yield* cli("-s", url, "dlq", "list", "--stream", "DEAD")
        expect(listed.code, listed.stderr).toBe(0)
        expect(listed.stdout).toContain("custom.thing.happened")
        const shown = yield* cli("-s", url, "dlq", "show", String(seq), "--stream", "DEAD")
        expect(shown.stdout).toContain(`Dead letter ${seq} in DEAD (dead.custom)`)
        expect(shown.stdout).toContain("Headers (none)")
        expect(shown.stdout).toMatch(/Payload \(\d+ bytes, text\)/)
        const info = yield* js.streamInfo("DEAD")
        expect(info.config.max_age).toBe(Duration.toNanos(Duration.days(7)).pipe(Option.getOrThrow, Number))
        expect(info.config.subjects).toEqual(["dead.>"])

        const none = yield* cli("-s", url, "dlq", "list", "--stream", "NOPE")
        expect(none.code, none.stderr).toBe(0)
        expect(none.stdout).toBe("No dead letters: there is no dead-letter stream NOPE on this server.")
        const stillNone = yield* Effect.either(js.streamInfo("NOPE"))
        expect(stillNone._tag).toBe("Left")
        const showNone = yield* cli("-s", url, "dlq", "show", "1", "--stream", "NOPE")
        expect(showNone.code).toBe(1)
        expect(showNone.stderr).toBe("effect-nats: there is no dead-letter stream NOPE on this server")
      }))

    it.scoped("streams ensure: Created, then Unchanged, then Updated; an incompatible change exits 1", () =>
      Effect.gen(function*() {
        const url = yield* urlOf
        const js = yield* JetStream.JetStream
        const spec = {
          streams: [{ name: "ENSURED", subjects: ["ensured.>"], storage: "memory", maxAge: "7 days", duplicateWindow: "1 minute" }],
          consumers: [{ stream: "ENSURED", durable: "worker", filterSubject: "ensured.job.>", ackWait: "45 seconds", maxDeliver: 6 }]
        }
        const file = yield* tempFile("streams.json", spec)
        const first = yield* cli("-s", url, "streams", "ensure", file)
        expect(first.code, first.stderr).toBe(0)
        expect(first.stdout).toBe("Created stream ENSURED\nCreated consumer ENSURED/worker")
        const info = yield* js.streamInfo("ENSURED")
        expect(info.config.max_age).toBe(7 * 24 * 3600 * 1e9)
        expect((yield* js.consumerInfo("ENSURED", "worker")).config.ack_wait).toBe(45 * 1e9)

        const again = yield* cli("streams", "ensure", file, "-s", url)
        expect(again.stdout).toBe("Unchanged stream ENSURED\nUnchanged consumer ENSURED/worker")

        const changed = yield* tempFile("streams.json", {
          ...spec,
          streams: [{ ...spec.streams[0], maxAge: "14 days" }]
        })
        const updated = yield* cli("-s", url, "streams", "ensure", changed)
        expect(updated.code, updated.stderr).toBe(0)
        expect(updated.stdout).toBe("Updated stream ENSURED (max_age)\nUnchanged consumer ENSURED/worker")

        const incompatible = yield* tempFile("streams.json", { streams: [{ ...spec.streams[0], storage: "file" }] })
        const refused = yield* cli("-s", url, "streams", "ensure", incompatible)
        expect(refused.code).toBe(1)
        expect(refused.stdout).toBe("")
        expect(refused.stderr).toBe(
          "effect-nats: stream ENSURED: cannot change storage of an existing stream; delete and recreate it, or use a new name"
        )
      }))
  })

  it.scoped("streams ensure: a bad file is refused with the bad fields named, before connecting", () =>
    Effect.gen(function*() {
      const file = yield* tempFile("bad.json", {
        streams: [{ name: "BAD", subjects: ["bad.>"], maxAge: "7 dayz", retention: "forever" }],
        consumers: [{ stream: "BAD", durable: "w", ackwait: "1 second" }]
      })
      // the server does not exist: the file is checked first
      const bad = yield* cli("-s", "nats://127.0.0.1:1", "streams", "ensure", file)
      expect(bad.code).toBe(1)
      expect(bad.stdout).toBe("")
      expect(bad.stderr).toBe(
        `effect-nats: ${file}: ` +
          `streams[0].retention: expected one of "limits", "interest", "workqueue", got "forever"; ` +
          `streams[0].maxAge: expected a duration such as "7 days", "30 seconds" or "500 millis", got "7 dayz"; ` +
          `consumers[0].ackwait: unknown field`
      )
      const notJson = yield* tempFile("broken.json", "{ \"streams\": [")
      const broken = yield* cli("-s", "nats://127.0.0.1:1", "streams", "ensure", notJson)
      expect(broken.code).toBe(1)
      expect(broken.stderr).toMatch(new RegExp(`^effect-nats: ${notJson.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: not valid JSON`))
      const absent = yield* cli("streams", "ensure", "/nonexistent/streams.json")
      expect(absent.code).toBe(1)
      expect(absent.stderr).toContain("/nonexistent/streams.json")
    }))

  it.scoped("doctor: version, limits, features; NATS_URL from the environment; exit 1 when JetStream is off", () =>
    Effect.gen(function*() {
      const server = yield* NatsTestServer.make()
      const version = yield* server.serverVersion
      const ok = yield* cli("doctor").pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["NATS_URL", server.url]])))
      )
      expect(ok.code, ok.stderr).toBe(0)
      expect(ok.stdout).toMatch(new RegExp(`\\n  version\\s+${version.replace(/\./g, "\\.")}\\n`))
      expect(ok.stdout).toMatch(/max_payload\s+1 MiB \(1048576 bytes\)/)
      expect(ok.stdout).toMatch(/rtt\s+\d+\.\d\d ms/)
      expect(ok.stdout).toMatch(/JetStream\n\s+status\s+enabled/)
      expect(ok.stdout).toMatch(/streams\s+\d+ \/ (unlimited|\d+)/)
      expect(ok.stdout).toMatch(/consumers\s+\d+ \/ (unlimited|\d+)/)
      expect(ok.stdout).toMatch(/memory\s+[\d.]+ [KMG]?i?B \/ /)
      expect(ok.stdout).toMatch(/storage\s+[\d.]+ [KMG]?i?B \/ /)
      const at = (v: string) => version.localeCompare(v, undefined, { numeric: true }) >= 0
      expect(ok.stdout).toMatch(new RegExp(`term\\(reason\\)\\s+${at("2.10.4") ? "yes" : "no, needs 2\\.10\\.4"}`))
      expect(ok.stdout).toMatch(new RegExp(`several filter_subjects per consumer\\s+${at("2.10.0") ? "yes" : "no, needs 2\\.10\\.0"}`))
      expect(ok.stdout).toMatch(new RegExp(`per-key KV TTL\\s+${at("2.11.0") ? "yes" : "no, needs 2\\.11\\.0"}`))
      expect(ok.stdout).toMatch(new RegExp(`atomic batch publish\\s+${at("2.12.0") ? "yes" : "no, needs 2\\.12\\.0"}`))

      const noJs = yield* NatsTestServer.make({ jetstream: false, sources: ["binary"] })
      const off = yield* cli("doctor", "-s", noJs.url)
      expect(off.code).toBe(1)
      expect(off.stdout).toMatch(/version\s+\d+\.\d+\.\d+/)
      expect(off.stdout).toMatch(/JetStream\n\s+status\s+NOT AVAILABLE/)
      expect(off.stderr).toBe(`effect-nats: JetStream is not available on ${noJs.url.replace("nats://", "")}`)
    }), { timeout: 30_000 })

  it.scoped("asyncapi: the module's document as YAML or JSON; --check fails on a stale file; a module without one is refused", () =>
    Effect.gen(function*() {
      const fixture = path.join(root, "packages/cli/test/fixtures/contracts.ts")
      const yaml = yield* cli("asyncapi", fixture)
      expect(yaml.code, yaml.stderr).toBe(0)
      expect(yaml.stdout).toMatch(/^# Generated by `effect-nats asyncapi .*contracts\.ts`/)
      expect(yaml.stdout).toContain("asyncapi: 3.0.0\n")
      expect(yaml.stdout).toContain("  hello.greeting.sent:\n    address: hello.greeting.sent\n")

      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-nats-asyncapi-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const out = path.join(dir, "asyncapi.json")
      expect((yield* cli("asyncapi", fixture, "--out", out)).stdout).toBe(`Wrote ${out} (1 channels, 1 operations)`)
      const written = JSON.parse(fs.readFileSync(out, "utf8"))
      expect(written).toMatchObject({ asyncapi: "3.0.0", info: { title: "hello", version: "0.1.0" } })
      expect((yield* cli("asyncapi", fixture, "--out", out, "--check")).code).toBe(0)
      fs.writeFileSync(out, JSON.stringify({ ...written, info: { title: "old", version: "0.0.1" } }))
      const stale = yield* cli("asyncapi", fixture, "--out", out, "--check")
      expect(stale.code).toBe(1)
      expect(stale.stderr).toContain(`effect-nats: ${out} is stale`)

      const none = yield* cli("asyncapi", path.join(root, "packages/cli/src/StreamsFile.ts"))
      expect(none.code).toBe(1)
      expect(none.stderr).toContain("exports no AsyncAPI document: export default AsyncApi.make(")
    }))

  it.scoped("the executable: doctor exits 0 against a server (NATS_URL) and 1, with one line, against a dead port", () =>
    Effect.gen(function*() {
      const server = yield* NatsTestServer.make()
      const version = yield* server.serverVersion
      const [ok, dead] = yield* Effect.all([
        spawnBin(["doctor"], { NATS_URL: server.url }),
        spawnBin(["doctor", "--server", "nats://127.0.0.1:1"], {})
      ], { concurrency: 2 })
      expect(ok.code, ok.stderr).toBe(0)
      expect(ok.stdout).toMatch(new RegExp(`version\\s+${version.replace(/\./g, "\\.")}`))
      expect(dead.code).toBe(1)
      expect(dead.stdout).toBe("")
      expect(dead.stderr).toBe("effect-nats: cannot connect to nats://127.0.0.1:1: connection refused\n")
    }), { timeout: 30_000 })
})
