import { NatsTestServer } from "@effect-nats/testing"
import { describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { Effect } from "effect"
import * as Docs from "../scripts/check-docs.js"

// The READMEs' ```ts blocks, written to .docs-check/ (scripts/check-docs.ts): every block not marked
// as a fragment type-checks; the vitest blocks (`<!-- runs: test -->`, the testing guide) register
// their tests here, as written, against nats-server and the in-memory transport; the programs
// (`<!-- runs: main -->`, the quick start) run as a user runs them, against a nats-server.
const blocks = Docs.writeBlocks()

describe("README blocks and doc-comment @examples", () => {
  it("every block type-checks against the public API, and only the marked fragments are left out", () => {
    const result = Docs.typecheck()
    expect(result.output).toBe("")
    expect(result.ok).toBe(true)
    expect(blocks.filter((b) => b.notChecked !== undefined).map((b) => b.source.replace(/:\d+$/, ""))).toEqual([
      "README.md",
      "README.md",
      "packages/opentelemetry/README.md"
    ])
    expect(blocks.filter((b) => b.runs === "main").length).toBe(1)
    expect(blocks.filter((b) => b.runs === "test").length).toBe(2)
    // the doc comments' @examples are among them
    expect(blocks.filter((b) => b.source.startsWith("src/Publisher.ts:")).length).toBeGreaterThan(0)
    expect(blocks.filter((b) => b.source.startsWith("packages/sql/src/")).length).toBeGreaterThan(0)
  }, 120_000)

  it("an example that stops compiling fails the check, named by its file", () => {
    const broken = path.join(Docs.outDir, "examples", "broken-example.ts")
    fs.writeFileSync(broken, `import { Publisher } from "effect-nats"\nexport const p = Publisher.publishh\n`)
    try {
      const result = Docs.typecheck()
      expect(result.ok).toBe(false)
      expect(result.output).toContain("broken-example.ts")
      expect(result.output).toContain("publishh")
    } finally {
      fs.rmSync(broken)
    }
  }, 120_000)

  for (const block of blocks.filter((b) => b.runs === "main")) {
    it.live(`${block.source} runs: it handles what it publishes, then stops on SIGTERM`, () =>
      Effect.gen(function*() {
        const server = yield* NatsTestServer.NatsTestServer
        const outcome = yield* Effect.async<{ readonly out: string; readonly code: number | null }>((resume) => {
          const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", block.file], {
            cwd: Docs.root,
            env: { ...process.env, NATS_URL: server.url },
            stdio: ["ignore", "pipe", "pipe"]
          })
          let out = ""
          const read = (chunk: Buffer) => {
            out += chunk.toString()
            if (out.includes("invoice inv-1: 42")) child.kill("SIGTERM")
          }
          child.stdout.on("data", read)
          child.stderr.on("data", read)
          const timer = setTimeout(() => child.kill("SIGKILL"), 30_000)
          child.on("exit", (code) => {
            clearTimeout(timer)
            resume(Effect.succeed({ out, code }))
          })
          return Effect.sync(() => child.kill("SIGKILL"))
        })
        expect(outcome.out).toContain("invoice inv-1: 42")
        expect(outcome.code).toBe(0)
      }).pipe(Effect.provide(NatsTestServer.layer())), 60_000)
  }
})

for (const block of blocks.filter((b) => b.runs === "test")) {
  describe(block.source, async () => {
    await import(pathToFileURL(path.resolve(block.file)).href)
  })
}
