import * as ChildProcess from "node:child_process"
import * as fs from "node:fs"
import { PostgresTestServer } from "@effect-nats/testing"
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { accepts } from "./raw.js"

const psql = (url: string, sql: string) =>
  Effect.async<string, Error>((resume) => {
    ChildProcess.execFile("psql", [url, "-tAX", "-c", sql], { timeout: 10_000 }, (error, stdout, stderr) => {
      resume(error === null ? Effect.succeed(stdout.trim()) : Effect.fail(new Error(`${error.message}\n${stderr}`)))
    })
  })

layer(PostgresTestServer.layerWith({ sources: ["binary"] }))("PostgresTestServer (binary, shared)", (it) => {
  it.effect("answers SQL on its loopback port", () =>
    Effect.gen(function*() {
      const pg = yield* PostgresTestServer.PostgresTestServer
      expect(pg.source).toBe("binary")
      expect(pg.url).toBe(`postgres://postgres@127.0.0.1:${pg.port}/postgres`)
      expect(yield* psql(pg.url, "select 1")).toBe("1")
      expect(yield* psql(pg.url, "show fsync")).toBe("off")
    }))
})

describe("PostgresTestServer", () => {
  it.live("stops the server and removes its dir on scope close", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const t0 = performance.now()
      const pg = yield* PostgresTestServer.make({ sources: ["binary"] }).pipe(Scope.extend(scope))
      console.log(`postgres start (initdb + pg_ctl start): ${(performance.now() - t0).toFixed(0)} ms`)
      const dataDir = yield* psql(pg.url, "show data_directory")
      expect(fs.existsSync(dataDir)).toBe(true)
      yield* Scope.close(scope, Exit.void)
      expect(fs.existsSync(dataDir)).toBe(false)
      expect(yield* accepts(pg.port)).toBe(false)
    }))

  it.effect("a missing binDir fails with BinaryNotFound", () =>
    Effect.gen(function*() {
      const error = yield* PostgresTestServer.make({ sources: ["binary"], binDir: "/nonexistent" }).pipe(Effect.scoped, Effect.flip)
      expect(error._tag).toBe("PostgresTestServerError")
      expect(error.reason).toBe("BinaryNotFound")
      expect(error.message).toContain("/nonexistent")
    }))

  it.effect("PG_URL is used as given", () =>
    Effect.gen(function*() {
      const previous = process.env["PG_URL"]
      process.env["PG_URL"] = "postgres://u@db.example:6543/app"
      const pg = yield* PostgresTestServer.make().pipe(
        Effect.scoped,
        Effect.ensuring(Effect.sync(() => {
          if (previous === undefined) delete process.env["PG_URL"]
          else process.env["PG_URL"] = previous
        }))
      )
      expect(pg).toEqual({ url: "postgres://u@db.example:6543/app", port: 6543, source: "env" })
    }))
})
