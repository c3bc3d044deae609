import { describe, expect, layer } from "@effect/vitest"
import { NatsTestServer } from "@effect-nats/testing"
import { type Msg, nkeys, PermissionViolationError } from "@nats-io/nats-core"
import { ConfigProvider, Context, Deferred, Effect, Exit, Fiber, Layer, Option, Redacted, Scope, Stream } from "effect"
import { NatsClient, NatsError } from "effect-nats"
import * as net from "node:net"
import { eventually, unique } from "./utils.js"

const seedOf = (kp: ReturnType<typeof nkeys.createUser>) => new TextDecoder().decode(kp.getSeed())
const registered = nkeys.createUser()
const unregistered = nkeys.createUser()

/** A loopback port where nothing listens. */
const deadPort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen({ port: 0, host: "127.0.0.1", exclusive: true }, () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** Fail fast: no reconnect loop, short timeouts. */
const quick = { maxReconnectAttempts: 0, timeout: "2 seconds", drainTimeout: "2 seconds" } as const

/** Subscribe, publish, flush: the message comes back through the server. */
const roundTrip = (nats: NatsClient.NatsClient["Type"]) =>
  Effect.gen(function*() {
    const subject = `rt.${unique("s")}`
    const got = yield* Deferred.make<Msg>()
    const sub = nats.connection.subscribe(subject, {
      max: 1,
      callback: (err, msg) => {
        if (err === null) Deferred.unsafeDone(got, Exit.succeed(msg))
      }
    })
    yield* nats.flush
    yield* nats.publish(subject, "ping")
    yield* nats.flush
    const msg = yield* Deferred.await(got).pipe(
      Effect.timeoutFail({ duration: "3 seconds", onTimeout: () => new Error(`no message on ${subject}`) }),
      Effect.ensuring(Effect.sync(() => sub.unsubscribe())),
      Effect.orDie
    )
    expect(msg.string()).toBe("ping")
  })

/** A responder on `subject` (callback subscription; unsubscribed with the scope). */
const respond = (nats: NatsClient.NatsClient["Type"], subject: string, reply: (m: Msg) => string | undefined) =>
  Effect.gen(function*() {
    const sub = nats.connection.subscribe(subject, {
      callback: (err, m) => {
        if (err !== null) return
        const answer = reply(m)
        if (answer !== undefined) m.respond(answer)
      }
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => sub.unsubscribe()))
    yield* nats.flush
  })

const withConfig = (entries: ReadonlyArray<readonly [string, string]>) =>
  Layer.setConfigProvider(ConfigProvider.fromMap(new Map(entries)))

const options = { excludeTestServices: true, timeout: "30 seconds" } as const

describe("NatsClient", () => {
  describe("token auth", () => {
    layer(NatsTestServer.layer({ jetstream: false, auth: { _tag: "Token", token: "s3cret" } }), options)((it) => {
      it.scoped("the right token connects; publish and flush work", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const nats = yield* NatsClient.make({ ...quick, servers: server.url, token: Redacted.make("s3cret") })
          expect(nats.servers).toBe(server.url)
          yield* roundTrip(nats)
        }))

      it.scoped("a wrong or missing token fails with AuthorizationViolation naming the server", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          for (const token of [Redacted.make("wr0ng-t0ken"), undefined]) {
            const error = yield* Effect.flip(
              NatsClient.make({ ...quick, servers: server.url, ...(token ? { token } : {}) })
            )
            expect(error._tag).toBe("NatsConnectionError")
            expect(error.reason).toBe("AuthorizationViolation")
            expect(error.servers).toBe(server.url)
            expect(error.message).toContain(server.url)
            expect(error.message).not.toContain("wr0ng-t0ken") // the secret is not leaked
            expect(NatsError.isTransient(error)).toBe(false)
          }
        }))

      it.scoped("a wrong token fails at once with the default (reconnect forever) options", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const error = yield* Effect.flip(NatsClient.make({ servers: server.url, token: Redacted.make("wrong") })).pipe(
            Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("connect kept retrying") }),
            Effect.orDie
          )
          expect(error.reason).toBe("AuthorizationViolation")
        }))

      it.scoped("layerConfig reads NATS_URL and NATS_TOKEN", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const good = NatsClient.layerConfig().pipe(
            Layer.provide(withConfig([["NATS_URL", server.url], ["NATS_TOKEN", "s3cret"], ["NATS_MAX_RECONNECT_ATTEMPTS", "0"]]))
          )
          const ctx = yield* Layer.build(good)
          const nats = Context.get(ctx, NatsClient.NatsClient)
          expect(nats.servers).toBe(server.url)
          yield* roundTrip(nats)

          const bad = NatsClient.layerConfig().pipe(
            Layer.provide(withConfig([["NATS_URL", server.url], ["NATS_TOKEN", "nope"], ["NATS_MAX_RECONNECT_ATTEMPTS", "0"]]))
          )
          const error = yield* Effect.flip(Layer.build(bad))
          expect(error._tag).toBe("NatsConnectionError")
          if (error._tag === "NatsConnectionError") {
            expect(error.reason).toBe("AuthorizationViolation")
            expect(error.message).toContain(server.url)
          }
        }))

      it.scoped("layerConfig: NATS_URL is a comma-separated list; a dead server in it does not prevent connecting", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const dead = `nats://127.0.0.1:${yield* deadPort}`
          const nats = yield* NatsClient.NatsClient.pipe(
            Effect.provide(NatsClient.layerConfig().pipe(
              Layer.provide(withConfig([
                ["NATS_URL", ` ${dead} , ${server.url} `],
                ["NATS_TOKEN", "s3cret"],
                ["NATS_CONNECT_TIMEOUT", "2 seconds"],
                ["NATS_RECONNECT_WAIT", "100 millis"]
              ]))
            ))
          )
          expect(nats.servers).toBe(`${dead},${server.url}`)
        }))

      it.scoped("layerConfig fails with a ConfigError on a malformed value", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const error = yield* Effect.flip(Layer.build(NatsClient.layerConfig().pipe(
            Layer.provide(withConfig([["NATS_URL", server.url], ["NATS_MAX_RECONNECT_ATTEMPTS", "many"]]))
          )))
          expect(error._tag).not.toBe("NatsConnectionError")
          expect(String(error)).toContain("NATS_MAX_RECONNECT_ATTEMPTS")
        }))
    })
  })

  describe("user/password, nkey and permissions", () => {
    const UsersServer = NatsTestServer.layer({
      jetstream: false,
      auth: {
        _tag: "Users",
        users: [
          { user: "alice", password: "pw-alice" },
          { nkey: registered.getPublicKey() },
          {
            user: "restricted",
            password: "pw-r",
            permissions: { publish: { deny: ["secret.>"] } }
          }
        ]
      }
    })
    layer(UsersServer, options)((it) => {
      it.scoped("the right user and password connect", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const nats = yield* NatsClient.make({ ...quick, servers: server.url, user: "alice", password: Redacted.make("pw-alice") })
          yield* roundTrip(nats)
        }))

      it.scoped("a wrong password or unknown user fails with AuthorizationViolation naming the server", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          for (const [user, password] of [["alice", "nope"], ["mallory", "pw-alice"]] as const) {
            const error = yield* Effect.flip(
              NatsClient.make({ ...quick, servers: server.url, user, password: Redacted.make(password) })
            )
            expect(error._tag).toBe("NatsConnectionError")
            expect(error.reason).toBe("AuthorizationViolation")
            expect(error.message).toContain(server.url)
          }
        }))

      it.scoped("credentials written into a server URL never appear in errors or in `servers`", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const url = server.url.replace("nats://", "nats://alice:Sup3rSecret@")
          const error = yield* Effect.flip(NatsClient.make({ ...quick, servers: url }))
          expect(error._tag).toBe("NatsConnectionError")
          expect(error.message).toContain(`127.0.0.1:${server.port}`)
          expect(error.message).not.toContain("Sup3rSecret")
          expect(error.servers).not.toContain("Sup3rSecret")
          expect(String(error)).not.toContain("Sup3rSecret")
        }))

      it.scoped("nkey: the registered seed connects, another user's seed fails typed", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const nats = yield* NatsClient.make({ ...quick, servers: server.url, nkeySeed: Redacted.make(seedOf(registered)) })
          yield* roundTrip(nats)

          const error = yield* Effect.flip(
            NatsClient.make({ ...quick, servers: server.url, nkeySeed: Redacted.make(seedOf(unregistered)) })
          )
          expect(error._tag).toBe("NatsConnectionError")
          expect(error.reason).toBe("AuthorizationViolation")
          expect(error.message).toContain(server.url)
        }))

      it.scoped("layerConfig reads NATS_USER / NATS_PASSWORD and NATS_NKEY", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const viaUser = yield* NatsClient.NatsClient.pipe(
            Effect.provide(NatsClient.layerConfig().pipe(Layer.provide(withConfig([
              ["NATS_URL", server.url],
              ["NATS_USER", "alice"],
              ["NATS_PASSWORD", "pw-alice"]
            ]))))
          )
          expect(viaUser.servers).toBe(server.url)
          const viaNkey = yield* NatsClient.NatsClient.pipe(
            Effect.provide(NatsClient.layerConfig().pipe(Layer.provide(withConfig([
              ["NATS_URL", server.url],
              ["NATS_NKEY", seedOf(registered)]
            ]))))
          )
          expect(viaNkey.servers).toBe(server.url)
          const error = yield* Effect.flip(Layer.build(NatsClient.layerConfig().pipe(Layer.provide(withConfig([
            ["NATS_URL", server.url],
            ["NATS_USER", "alice"],
            ["NATS_PASSWORD", "wrong"],
            ["NATS_MAX_RECONNECT_ATTEMPTS", "0"]
          ])))))
          expect(error._tag === "NatsConnectionError" && error.reason).toBe("AuthorizationViolation")
        }))

      it.scoped("a request to a denied subject fails with NatsPermissionDeniedError; the connection keeps working", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const nats = yield* NatsClient.make({ ...quick, servers: server.url, user: "restricted", password: Redacted.make("pw-r") })
          yield* respond(nats, "ok.echo", (m) => `echo:${m.string()}`)

          const error = yield* Effect.flip(nats.request("secret.plans", "x", { timeout: "3 seconds" }))
          expect(error._tag).toBe("NatsPermissionDeniedError")
          if (error._tag === "NatsPermissionDeniedError") {
            expect(error.operation).toBe("publish")
            expect(error.subject).toBe("secret.plans")
            expect(error.message).toContain("secret.plans")
          }
          expect(NatsError.isTransient(error)).toBe(false)

          // still connected and usable
          expect(nats.connection.isClosed()).toBe(false)
          const reply = yield* nats.request("ok.echo", "hi", { timeout: "3 seconds" })
          expect(reply.string()).toBe("echo:hi")
          yield* roundTrip(nats)
        }))

      it.scoped("a plain publish to a denied subject is reported on the status stream; flush still succeeds", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const nats = yield* NatsClient.make({ ...quick, servers: server.url, user: "restricted", password: Redacted.make("pw-r") })
          const errors = yield* nats.status.pipe(
            Stream.filter((s) => s.type === "error"),
            Stream.take(1),
            Stream.runCollect,
            Effect.fork
          )
          yield* Effect.sleep("50 millis") // let the status subscriber attach
          yield* nats.publish("secret.leak", "x")
          yield* nats.flush
          const [event] = yield* Fiber.join(errors).pipe(Effect.timeout("5 seconds"))
          expect(event?.type).toBe("error")
          if (event?.type === "error") {
            expect(event.error).toBeInstanceOf(PermissionViolationError)
            expect((event.error as PermissionViolationError).subject).toBe("secret.leak")
          }
          yield* roundTrip(nats)
        }))
    })
  })

  describe("connection failures", () => {
    layer(Layer.empty, options)((it) => {
      it.scoped("nothing listening: NatsConnectionError ConnectFailed naming the server", () =>
        Effect.gen(function*() {
          const url = `nats://127.0.0.1:${yield* deadPort}`
          const error = yield* Effect.flip(
            NatsClient.make({ servers: url, maxReconnectAttempts: 0, timeout: "1 second" })
          )
          expect(error._tag).toBe("NatsConnectionError")
          expect(error.reason).toBe("ConnectFailed")
          expect(error.servers).toBe(url)
          expect(error.message).toContain(url)
          expect(NatsError.isTransient(error)).toBe(true)
        }))

      it.scoped("nothing listening, default reconnect options: the first connect still fails fast", () =>
        Effect.gen(function*() {
          const url = `nats://127.0.0.1:${yield* deadPort}`
          const error = yield* Effect.flip(NatsClient.make({ servers: url, timeout: "1 second" })).pipe(
            Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("first connect did not fail") }),
            Effect.orDie
          )
          expect(error.reason).toBe("ConnectFailed")
          expect(error.message).toContain(url)
        }))

      it.scoped("a server that accepts but never speaks NATS: ConnectFailed after the connect timeout", () =>
        Effect.gen(function*() {
          const sockets: Array<net.Socket> = []
          const blackhole = net.createServer((socket) => void sockets.push(socket))
          yield* Effect.acquireRelease(
            Effect.async<number>((resume) => {
              blackhole.listen({ port: 0, host: "127.0.0.1" }, () => {
                const address = blackhole.address()
                resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0))
              })
            }),
            () => Effect.sync(() => {
              for (const s of sockets) s.destroy()
              blackhole.close()
            })
          ).pipe(Effect.flatMap((port) =>
            Effect.gen(function*() {
              const url = `nats://127.0.0.1:${port}`
              const started = Date.now()
              const error = yield* Effect.flip(NatsClient.make({ servers: url, maxReconnectAttempts: 0, timeout: "500 millis" })).pipe(
                Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("the connect timeout was not honoured") }),
                Effect.orDie
              )
              expect(error._tag).toBe("NatsConnectionError")
              expect(error.reason).toBe("ConnectFailed")
              expect(error.message).toContain(url)
              expect(Date.now() - started).toBeLessThan(3000)
            })
          ))
        }))

      it.scoped("an unreadable creds file fails typed, naming the file", () =>
        Effect.gen(function*() {
          const error = yield* Effect.flip(NatsClient.make({ servers: "nats://127.0.0.1:1", credsFile: "/nonexistent/user.creds" }))
          expect(error._tag).toBe("NatsConnectionError")
          expect(error.message).toContain("/nonexistent/user.creds")
        }))

      it.scoped("layer() surfaces the connect failure as the layer's error", () =>
        Effect.gen(function*() {
          const url = `nats://127.0.0.1:${yield* deadPort}`
          const error = yield* Effect.flip(Layer.build(NatsClient.layer({ servers: url, maxReconnectAttempts: 0, timeout: "1 second" })))
          expect(error._tag).toBe("NatsConnectionError")
          expect(error.reason).toBe("ConnectFailed")
        }))
    })
  })

  describe("requests, drain, versions", () => {
    layer(NatsTestServer.layer({ jetstream: false }), options)((it) => {
      it.scoped("request: an answer, no responders, and a responder that never answers", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const nats = yield* NatsClient.make({ ...quick, servers: server.url })
          yield* respond(nats, "svc.echo", (m) => m.string().toUpperCase())
          yield* respond(nats, "svc.silent", () => undefined)

          const reply = yield* nats.request("svc.echo", "hello")
          expect(reply.string()).toBe("HELLO")

          const none = yield* Effect.flip(nats.request("svc.nobody", "x", { timeout: "2 seconds" }))
          expect(none._tag).toBe("NatsNoRespondersError")
          expect(none._tag === "NatsNoRespondersError" && none.subject).toBe("svc.nobody")
          expect(NatsError.isTransient(none)).toBe(true)

          const started = Date.now()
          const slow = yield* Effect.flip(nats.request("svc.silent", "x", { timeout: "200 millis" }))
          expect(slow._tag).toBe("NatsTimeoutError")
          expect(slow._tag === "NatsTimeoutError" && slow.subject).toBe("svc.silent")
          expect(Date.now() - started).toBeLessThan(2000)
          expect(NatsError.isTransient(slow)).toBe(true)
        }))

      it.scoped("closing the scope drains: every message published just before arrives, without a flush", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const observer = yield* NatsClient.make({ ...quick, servers: server.url })
          const subject = `drain.${unique("d")}`
          let count = 0
          const sub = observer.connection.subscribe(subject, {
            callback: (err) => {
              if (err === null) count++
            }
          })
          yield* Effect.addFinalizer(() => Effect.sync(() => sub.unsubscribe()))
          yield* observer.flush

          const n = 20_000
          const payload = new Uint8Array(200).fill(120)
          const inner = yield* Scope.make()
          const producer = yield* NatsClient.make({ ...quick, servers: server.url }).pipe(Scope.extend(inner))
          for (let i = 0; i < n; i++) yield* producer.publish(subject, payload)
          yield* Scope.close(inner, Exit.void)
          expect(producer.connection.isClosed()).toBe(true)

          yield* eventually(Effect.sync(() => count >= n), "5 seconds").pipe(Effect.catchAllDefect(() => Effect.void))
          expect(count).toBe(n)
        }))

      it.scoped("after the scope closed, operations fail with NatsConnectionError Closed (no raw throws)", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const inner = yield* Scope.make()
          const nats = yield* NatsClient.make({ ...quick, servers: server.url }).pipe(Scope.extend(inner))
          yield* Scope.close(inner, Exit.void)
          for (const op of [nats.publish("a.b", "x"), nats.flush, Effect.asVoid(nats.request("a.b", "x"))]) {
            const error = yield* Effect.flip(op)
            expect(error._tag).toBe("NatsConnectionError")
            expect(error._tag === "NatsConnectionError" && error.reason).toBe("Closed")
          }
        }))

      it.scoped("an invalid subject is a typed error, not a throw", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const nats = yield* NatsClient.make({ ...quick, servers: server.url })
          const exit = yield* Effect.exit(nats.publish("", "x"))
          expect(Exit.isFailure(exit) && exit.cause._tag).toBe("Fail")
          const exit2 = yield* Effect.exit(nats.request("", "x"))
          expect(Exit.isFailure(exit2) && exit2.cause._tag).toBe("Fail")
          yield* roundTrip(nats)
        }))

      it.scoped("serverInfo and serverAtLeast", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const nats = yield* NatsClient.make({ ...quick, servers: server.url })
          const version = yield* server.serverVersion
          const info = yield* nats.serverInfo
          expect(Option.map(info, (i) => i.version)).toEqual(Option.some(version))
          expect(yield* nats.serverAtLeast("2.9.0")).toBe(true)
          expect(yield* nats.serverAtLeast(version)).toBe(true)
          expect(yield* nats.serverAtLeast(`v${version}`)).toBe(true)
          expect(yield* nats.serverAtLeast("99.0.0")).toBe(false)
          const [major, minor, patch] = version.split(".").map(Number)
          expect(yield* nats.serverAtLeast(`${major}.${minor}.${patch! + 1}`)).toBe(false)
          expect(yield* nats.serverAtLeast(`${major}.${minor! + 1}.0`)).toBe(false)
          expect(yield* nats.serverAtLeast(`${major}.${minor}`)).toBe(true)
          // numeric, not lexicographic ("2.9.9" < "2.9.10")
          if (patch! > 0) expect(yield* nats.serverAtLeast(`${major}.${minor}.${patch! - 1}`)).toBe(true)
          expect(yield* nats.serverAtLeast(`${major}.${minor}.${patch! + 10}`)).toBe(false)
        }))
    })
  })

  describe("status across a server restart", () => {
    layer(NatsTestServer.layer({ jetstream: false, sources: ["container", "binary"] }), options)((it) => {
      it.scoped("the status stream shows disconnect then reconnect, and the client works again", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const nats = yield* NatsClient.make({
            servers: server.url,
            reconnectTimeWait: "100 millis",
            reconnectJitter: "10 millis",
            drainTimeout: "2 seconds"
          })
          const seen = yield* nats.status.pipe(
            Stream.map((s) => s.type),
            Stream.takeUntil((type) => type === "reconnect"),
            Stream.runCollect,
            Effect.fork
          )
          yield* Effect.sleep("50 millis") // let the status subscriber attach
          yield* server.restart
          const types = Array.from(yield* Fiber.join(seen).pipe(Effect.timeout("10 seconds")))
          expect(types).toContain("disconnect")
          expect(types.at(-1)).toBe("reconnect")
          expect(types.indexOf("disconnect")).toBeLessThan(types.indexOf("reconnect"))
          yield* roundTrip(nats)
        }))

      it.scoped("closing the scope while the server is down is bounded by drainTimeout", () =>
        Effect.gen(function*() {
          const server = yield* NatsTestServer.NatsTestServer
          const inner = yield* Scope.make()
          const nats = yield* NatsClient.make({
            servers: server.url,
            reconnectTimeWait: "100 millis",
            drainTimeout: "500 millis"
          }).pipe(Scope.extend(inner))
          yield* nats.publish("down.x", "pending")
          yield* server.stop
          yield* Effect.addFinalizer(() => Effect.orDie(server.start))
          yield* Effect.sleep("100 millis")
          const started = Date.now()
          yield* Scope.close(inner, Exit.void).pipe(
            Effect.timeoutFail({ duration: "6 seconds", onTimeout: () => new Error("release did not finish") }),
            Effect.orDie
          )
          expect(Date.now() - started).toBeLessThan(3500)
          expect(nats.connection.isClosed()).toBe(true)
        }))
    })
  })
})
