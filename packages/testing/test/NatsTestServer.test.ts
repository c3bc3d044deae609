import * as ChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { NatsTestServer } from "@effect-nats/testing"
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { accepts, connect, connectLine, pub } from "./raw.js"

const binaryOnly = { sources: ["binary"] } as const satisfies NatsTestServer.Options

/** Create a stream through the raw JetStream API and return the reply. */
const jsApi = (port: number, subject: string, body: string) =>
  Effect.scoped(Effect.gen(function*() {
    const s = yield* connect(port)
    yield* s.send(connectLine({}) + "SUB _INBOX.t 1\r\n" + pub(subject, "_INBOX.t", body))
    return yield* s.waitFor(/MSG _INBOX\.t 1 \d+\r\n.*\r\n/)
  }))

layer(NatsTestServer.layer(binaryOnly))("NatsTestServer (binary, shared per describe)", (it) => {
  it.effect("starts with JetStream on a loopback port; INFO shows jetstream and the version", () =>
    Effect.gen(function*() {
      const server = yield* NatsTestServer.NatsTestServer
      expect(server.source).toBe("binary")
      expect(server.url).toBe(`nats://127.0.0.1:${server.port}`)
      expect(server.storeDir).toMatch(/effect-nats-nats-.*\/js$/)
      const s = yield* connect(server.port)
      expect(s.info["jetstream"]).toBe(true)
      expect(s.info["version"]).toBe(yield* server.serverVersion)
      expect(yield* server.serverVersion).toMatch(/^\d+\.\d+\.\d+/)
      yield* s.send(connectLine({}))
      yield* s.waitFor(/PONG\r\n/)
    }).pipe(Effect.scoped))

  it.effect("restart keeps the port and the JetStream store (TestClock does not stall it)", () =>
    Effect.gen(function*() {
      const server = yield* NatsTestServer.NatsTestServer
      const created = yield* jsApi(server.port, "$JS.API.STREAM.CREATE.ORDERS", JSON.stringify({ name: "ORDERS", subjects: ["orders.>"] }))
      expect(created).toContain("\"name\":\"ORDERS\"")
      const before = server.port
      yield* server.restart
      expect(server.port).toBe(before)
      expect(yield* accepts(server.port)).toBe(true)
      const info = yield* jsApi(server.port, "$JS.API.STREAM.INFO.ORDERS", "")
      expect(info).toContain("\"name\":\"ORDERS\"")
      expect(fs.existsSync(path.join(server.storeDir, "jetstream"))).toBe(true)
    }))

  it.effect("stop makes an outage, start ends it; stop and start are idempotent", () =>
    Effect.gen(function*() {
      const server = yield* NatsTestServer.NatsTestServer
      yield* server.stop
      yield* server.stop
      expect(yield* accepts(server.port)).toBe(false)
      yield* server.start
      yield* server.start
      expect(yield* accepts(server.port)).toBe(true)
    }))

  it.effect("kill (SIGKILL) then start recovers the store", () =>
    Effect.gen(function*() {
      const server = yield* NatsTestServer.NatsTestServer
      yield* jsApi(server.port, "$JS.API.STREAM.CREATE.CRASH", JSON.stringify({ name: "CRASH", subjects: ["crash.>"] }))
      yield* server.kill
      expect(yield* accepts(server.port)).toBe(false)
      yield* server.start
      const info = yield* jsApi(server.port, "$JS.API.STREAM.INFO.CRASH", "")
      expect(info).toContain("\"name\":\"CRASH\"")
    }))
})

describe("NatsTestServer", () => {
  it.live("starts well under a second and removes its temp dir and process on scope close", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const t0 = performance.now()
      const server = yield* NatsTestServer.make(binaryOnly).pipe(Scope.extend(scope))
      const elapsed = performance.now() - t0
      console.log(`nats-server start: ${elapsed.toFixed(1)} ms`)
      expect(elapsed).toBeLessThan(1000)
      const dir = path.dirname(server.storeDir)
      expect(fs.existsSync(dir)).toBe(true)
      yield* Scope.close(scope, Exit.void)
      expect(fs.existsSync(dir)).toBe(false)
      expect(yield* accepts(server.port)).toBe(false)
    }))

  it.scoped("token auth: a CONNECT without the token gets Authorization Violation, with it PONG", () =>
    Effect.gen(function*() {
      const token = "s3cr$t \"quoted\""
      const server = yield* NatsTestServer.make({ ...binaryOnly, auth: { _tag: "Token", token } })
      const bad = yield* connect(server.port)
      expect(bad.info["auth_required"]).toBe(true)
      yield* bad.send(connectLine({}))
      expect(yield* bad.waitFor(/-ERR/)).toContain("-ERR 'Authorization Violation'")
      const good = yield* connect(server.port)
      yield* good.send(connectLine({ auth_token: token }))
      expect(yield* good.waitFor(/PONG\r\n/)).not.toContain("-ERR")
    }))

  it.scoped("user/password auth", () =>
    Effect.gen(function*() {
      const server = yield* NatsTestServer.make({ ...binaryOnly, auth: { _tag: "UserPassword", user: "app", password: "pw" } })
      const bad = yield* connect(server.port)
      yield* bad.send(connectLine({ user: "app", pass: "nope" }))
      expect(yield* bad.waitFor(/-ERR/)).toContain("Authorization Violation")
      const good = yield* connect(server.port)
      yield* good.send(connectLine({ user: "app", pass: "pw" }))
      yield* good.waitFor(/PONG\r\n/)
    }))

  it.scoped("users with permissions: a denied publish is a Permissions Violation", () =>
    Effect.gen(function*() {
      const server = yield* NatsTestServer.make({
        ...binaryOnly,
        auth: {
          _tag: "Users",
          users: [
            { user: "orders", password: "pw", permissions: { publish: { allow: ["orders.>"], deny: ["orders.secret"] } } },
            { user: "admin", password: "pw2" }
          ]
        }
      })
      const s = yield* connect(server.port)
      yield* s.send(connectLine({ user: "orders", pass: "pw" }))
      yield* s.waitFor(/PONG\r\n/)
      yield* s.send(pub("orders.secret", "", "x") + "PING\r\n")
      expect(yield* s.waitFor(/Permissions Violation/)).toContain("Permissions Violation for Publish to \"orders.secret\"")
      const admin = yield* connect(server.port)
      yield* admin.send(connectLine({ user: "admin", pass: "pw2" }))
      yield* admin.waitFor(/PONG\r\n/)
    }))

  it.scoped("jetstream: false and maxPayload show in INFO", () =>
    Effect.gen(function*() {
      const server = yield* NatsTestServer.make({ ...binaryOnly, jetstream: false, maxPayload: 2 * 1024 * 1024 })
      const s = yield* connect(server.port)
      expect(s.info["jetstream"]).toBeUndefined()
      expect(s.info["max_payload"]).toBe(2 * 1024 * 1024)
    }))

  it.scoped("extraConfig is appended verbatim", () =>
    Effect.gen(function*() {
      const plain = yield* connect((yield* NatsTestServer.make(binaryOnly)).port)
      expect(plain.info["headers"]).toBe(true)
      const server = yield* NatsTestServer.make({ ...binaryOnly, extraConfig: "no_header_support: true" })
      const s = yield* connect(server.port)
      expect(s.info["headers"]).toBe(false)
    }))

  it.effect("an invalid config fails with StartFailed and the server's own message", () =>
    Effect.gen(function*() {
      const error = yield* NatsTestServer.make({ ...binaryOnly, extraConfig: "this is { not valid" }).pipe(Effect.scoped, Effect.flip)
      expect(error._tag).toBe("NatsTestServerError")
      expect(error.reason).toBe("StartFailed")
      expect(error.message).toContain("nats-server exited")
    }))

  it.effect("a missing binary fails with BinaryNotFound and install hints", () =>
    Effect.gen(function*() {
      const error = yield* NatsTestServer.make({ ...binaryOnly, binaryPath: "/nonexistent" }).pipe(Effect.scoped, Effect.flip)
      expect(error.reason).toBe("BinaryNotFound")
      expect(error.message).toContain("/nonexistent")
      expect(error.message).toContain("apt-get install nats-server")
      expect(error.message).toContain("brew install nats-server")
      expect(error.message).toContain("NATS_URL")
    }))

  it.scoped("NATS_URL is used as given when no auth/TLS is requested; its restart is Unsupported", () =>
    Effect.gen(function*() {
      const real = yield* NatsTestServer.make(binaryOnly)
      const previous = process.env["NATS_URL"]
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          process.env["NATS_URL"] = `nats://localhost:${real.port}`
        }),
        () =>
          Effect.sync(() => {
            if (previous === undefined) delete process.env["NATS_URL"]
            else process.env["NATS_URL"] = previous
          })
      )
      const env = yield* NatsTestServer.make()
      expect(env.source).toBe("env")
      expect(env.url).toBe(`nats://localhost:${real.port}`)
      expect(env.port).toBe(real.port)
      expect(env.storeDir).toBe("")
      expect(yield* env.serverVersion).toBe(yield* real.serverVersion)
      const error = yield* Effect.flip(env.restart)
      expect(error.reason).toBe("Unsupported")
      // with auth requested, NATS_URL is ignored and a private server starts
      const own = yield* NatsTestServer.make({ sources: ["env", "binary"], auth: { _tag: "Token", token: "t" } })
      expect(own.source).toBe("binary")
      expect(own.port).not.toBe(real.port)
    }))

  it.scoped("tls: INFO requires TLS and a TLS client gets PONG", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "nats-tls-test-"))),
        (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
      )
      const certFile = path.join(dir, "cert.pem")
      const keyFile = path.join(dir, "key.pem")
      yield* Effect.async<void, Error>((resume) => {
        ChildProcess.execFile("openssl", [
          "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", certFile,
          "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"
        ], (error) => resume(error === null ? Effect.void : Effect.fail(error)))
      })
      const server = yield* NatsTestServer.make({ ...binaryOnly, tls: { certFile, keyFile } })
      const reply = yield* Effect.async<string, Error>((resume) => {
        const socket = net.connect({ host: "127.0.0.1", port: server.port })
        socket.once("error", (e) => resume(Effect.fail(e)))
        let info = ""
        const onInfo = (chunk: Buffer) => {
          info += chunk.toString("utf8")
          if (!info.includes("\r\n")) return
          socket.off("data", onInfo)
          if (!info.includes("\"tls_required\":true")) return resume(Effect.fail(new Error(`no tls_required: ${info}`)))
          const secure = tls.connect({ socket, ca: fs.readFileSync(certFile), servername: "localhost" }, () => {
            secure.write("CONNECT {\"verbose\":false,\"tls_required\":true}\r\nPING\r\n")
          })
          let text = ""
          secure.on("data", (d: Buffer) => {
            text += d.toString("utf8")
            if (text.includes("PONG") || text.includes("-ERR")) {
              secure.destroy()
              resume(Effect.succeed(text))
            }
          })
          secure.once("error", (e) => resume(Effect.fail(e)))
        }
        socket.on("data", onInfo)
        return Effect.sync(() => socket.destroy())
      })
      expect(reply).toContain("PONG")
    }))

  it("renderConfig renders listen, store, auth, tls, payload and extra config", () => {
    const text = NatsTestServer.renderConfig(
      {
        maxPayload: 1024,
        auth: {
          _tag: "Users",
          users: [{ nkey: "UABC", permissions: { subscribe: { allow: ["a.>"] } } }]
        },
        tls: { certFile: "/c.pem", keyFile: "/k.pem", caFile: "/ca.pem", verify: true },
        extraConfig: "# extra"
      },
      { port: 4222, storeDir: "/tmp/s" }
    )
    expect(text).toContain("listen: \"127.0.0.1:4222\"")
    expect(text).toContain("store_dir: \"/tmp/s\"")
    expect(text).toContain("max_payload: 1024")
    expect(text).toContain("{ nkey: \"UABC\", permissions: { subscribe: { allow: [\"a.>\"] } } }")
    expect(text).toContain("cert_file: \"/c.pem\"")
    expect(text).toContain("verify: true")
    expect(text.trimEnd().endsWith("# extra")).toBe(true)
    expect(NatsTestServer.renderConfig({ jetstream: false }, { port: 1, storeDir: "/x" })).not.toContain("jetstream")
  })
})
