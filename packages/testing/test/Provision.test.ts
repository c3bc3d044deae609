import * as ChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Provision } from "@effect-nats/testing"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"

const here = Provision.currentHost()

/** a described machine: nothing on PATH, nothing in the usual places, no Docker step unless asked */
const bare = (overrides: Partial<Provision.Host> = {}): Provision.Host => ({
  platform: "linux",
  isRoot: false,
  distro: ["debian"],
  env: { PATH: "" },
  home: "/nonexistent",
  aptGet: "/usr/bin/apt-get",
  ...overrides
})

const notFound = (host: Provision.Host, server: Provision.Server = "nats-server") =>
  Provision.resolve(server, { host, dirs: [], steps: ["env", "binary", "install"], neededBy: "this test" }).pipe(
    Effect.flip
  )

describe("Provision", () => {
  it.effect("finds this machine's nats-server, a real one, in well under a second", () =>
    Effect.gen(function*() {
      const t0 = performance.now()
      const found = yield* Provision.resolve("nats-server", { steps: ["binary"] })
      const millis = performance.now() - t0
      expect(found._tag).toBe("Binary")
      if (found._tag !== "Binary") return
      expect(found.installed).toBe(false)
      expect(millis).toBeLessThan(200)
      const version = ChildProcess.spawnSync(found.path, ["--version"], { encoding: "utf8" }).stdout
      expect(version).toMatch(/nats-server: v2\./)
    }))

  it.effect("finds this machine's Postgres: a dir with initdb and pg_ctl that run", () =>
    Effect.gen(function*() {
      const found = yield* Provision.resolve("postgres", { steps: ["binary"] })
      expect(found._tag).toBe("Binary")
      if (found._tag !== "Binary") return
      const version = ChildProcess.spawnSync(path.join(found.path, "pg_ctl"), ["--version"], { encoding: "utf8" }).stdout
      expect(version).toMatch(/pg_ctl \(PostgreSQL\) \d+/)
    }))

  it.effect("PATH comes first: a nats-server copied into a dir on PATH is the one found", () =>
    Effect.gen(function*() {
      const real = Provision.findNatsServer(here)
      expect(real).toBeDefined()
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-nats-provision-"))
      try {
        fs.copyFileSync(real!, path.join(dir, "nats-server"))
        fs.chmodSync(path.join(dir, "nats-server"), 0o755)
        const found = yield* Provision.resolve("nats-server", { host: bare({ env: { PATH: dir } }), steps: ["binary"] })
        expect(found).toEqual({ _tag: "Binary", path: path.join(dir, "nats-server"), installed: false })
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }))

  it.effect("NATS_URL / PG_URL come before any binary", () =>
    Effect.gen(function*() {
      const host = { ...here, env: { ...here.env, NATS_URL: "nats://127.0.0.1:4999", PG_URL: "postgres://u@127.0.0.1:5999/db" } }
      expect(yield* Provision.resolve("nats-server", { host })).toEqual({ _tag: "Env", url: "nats://127.0.0.1:4999" })
      expect(yield* Provision.resolve("postgres", { host })).toEqual({ _tag: "Env", url: "postgres://u@127.0.0.1:5999/db" })
    }))

  it.effect("not root on Debian: no install, and the message says what was tried and gives the sudo command", () =>
    Effect.gen(function*() {
      const error = yield* notFound(bare())
      expect(error.reason).toBe("NotFound")
      expect(error.message).toContain("this test needs a nats-server")
      expect(error.message).toContain("NATS_URL is not set")
      expect(error.message).toContain("no nats-server on PATH nor in the usual places")
      expect(error.message).toContain("installing it needs root on Debian/Ubuntu")
      expect(error.message).toContain("`sudo apt-get install nats-server`")
      const pg = yield* notFound(bare(), "postgres")
      expect(pg.message).toContain("`sudo apt-get install postgresql`")
      expect(pg.message).toContain("PG_URL")
    }))

  it.effect("root, but not on Debian/Ubuntu: no apt-get; the command for that OS", () =>
    Effect.gen(function*() {
      expect((yield* notFound(bare({ isRoot: true, distro: ["fedora"] }))).message).toContain("`dnf install nats-server`")
      expect((yield* notFound(bare({ isRoot: true, distro: ["alpine"] }), "postgres")).message).toContain("`apk add postgresql`")
      expect((yield* notFound(bare({ platform: "darwin", distro: [] }))).message).toContain("`brew install nats-server`")
      expect((yield* notFound(bare({ platform: "darwin", distro: [] }), "postgres")).message).toContain(
        "`brew install postgresql@16`"
      )
    }))

  it("canInstall: root on Debian or Ubuntu with apt-get, and nothing else", () => {
    expect(Provision.canInstall(bare({ isRoot: true }))).toBe(true)
    expect(Provision.canInstall(bare({ isRoot: true, distro: ["linuxmint", "ubuntu"] }))).toBe(true)
    expect(Provision.canInstall(bare())).toBe(false)
    expect(Provision.canInstall(bare({ isRoot: true, aptGet: undefined }))).toBe(false)
    expect(Provision.canInstall(bare({ isRoot: true, distro: ["fedora"] }))).toBe(false)
    expect(Provision.canInstall(bare({ isRoot: true, platform: "darwin" }))).toBe(false)
  })

  it.effect("install when already present does not run apt-get: it returns the binary found", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const found = yield* Provision.install("nats-server", { say: (l) => lines.push(l) })
      expect(found).toBe(Provision.findNatsServer(here))
      expect(lines).toEqual([])
    }))

  it.effect("install refuses where apt-get cannot run, with the command to type", () =>
    Effect.gen(function*() {
      const result = yield* Effect.either(
        Provision.install("nats-server", { host: bare({ distro: ["arch"] }), dirs: [] })
      )
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left.reason).toBe("InstallFailed")
        expect(result.left.message).toContain("`sudo pacman -S nats-server`".slice(1, -1))
      }
    }))
})
