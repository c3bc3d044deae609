/**
 * Scenario 7 — authentication, permissions and TLS.
 *
 * - A nats-server with users (password and nkey) and subject permissions:
 *   wrong credentials fail fast with a typed `NatsConnectionError`
 *   (`AuthorizationViolation`), without leaking the secret, even with the
 *   default reconnect-forever options; a JetStream publish and a request to a
 *   denied subject fail with a typed `NatsPermissionDeniedError` (not
 *   retried), and the connection keeps working for allowed subjects.
 * - A nats-server with TLS (a CA and certificates made here with the
 *   `openssl` CLI): a client that trusts the CA connects; a client without it,
 *   or trusting another CA, is refused with a typed error; with client
 *   verification on, a client without a certificate is refused.
 */
import * as ChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { nkeys } from "@nats-io/nats-core"
import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Exit, Layer, Redacted, Schema } from "effect"
import { Event, JetStream, NatsClient, NatsError, Publisher } from "effect-nats"
import { OrderPlaced } from "../lib/events.js"
import { Report, type Result, since, tempDir } from "../lib/harness.js"

export const name = "auth-tls"

const SecretLeaked = Event.make({
  type: "secret.plan.leaked",
  aggregate: "Plan",
  schema: Schema.Struct({ plan: Schema.String })
})

/** Fail fast: no reconnect loop, short timeouts. */
const quick = { maxReconnectAttempts: 0, timeout: "3 seconds", drainTimeout: "2 seconds" } as const

/** Run `openssl` with arguments; fails with its output. */
const openssl = (cwd: string, args: ReadonlyArray<string>) =>
  Effect.try({
    try: () => {
      const r = ChildProcess.spawnSync("openssl", [...args], { cwd, encoding: "utf8", timeout: 20_000 })
      if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.error?.message ?? r.stderr}`)
    },
    catch: (e) => e as Error
  })

/** A CA, a server certificate for 127.0.0.1 / localhost signed by it, and a client certificate. */
export const makePki = (dir: string, prefix = "") =>
  Effect.gen(function*() {
    const f = (n: string) => path.join(dir, `${prefix}${n}`)
    const key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    yield* openssl(dir, ["req", "-x509", ...key, "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "2", "-subj", `/CN=effect-nats chaos CA ${prefix}`])
    fs.writeFileSync(f("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    fs.writeFileSync(f("client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    for (const who of ["server", "client"]) {
      yield* openssl(dir, ["req", ...key, "-keyout", f(`${who}.key`), "-out", f(`${who}.csr`), "-subj", `/CN=${who === "server" ? "localhost" : "chaos-client"}`])
      yield* openssl(dir, [
        "x509", "-req", "-in", f(`${who}.csr`), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial",
        "-out", f(`${who}.pem`), "-days", "2", "-extfile", f(`${who}.ext`)
      ])
    }
    return {
      ca: f("ca.pem"),
      serverCert: f("server.pem"),
      serverKey: f("server.key"),
      clientCert: f("client.pem"),
      clientKey: f("client.key")
    }
  })

/** Run the scenario (its clock starts when it runs). */
export const run = (): Effect.Effect<Result> => Effect.suspend(runNow)

const runNow = (): Effect.Effect<Result> => {
  const report = new Report(name)
  let passed = 0
  const expectThat = (ok: boolean, what: string) => {
    if (ok) passed++
    report.note(`${ok ? "ok" : "FAILED"}: ${what}`)
    report.check(ok, what)
  }
  /** A connect attempt that must fail: its error (if it failed in time), how long it took. */
  const refused = (options: NatsClient.Options) =>
    Effect.gen(function*() {
      const t0 = performance.now()
      const exit = yield* NatsClient.make(options).pipe(Effect.timeout("8 seconds"), Effect.scoped, Effect.exit)
      const error = Exit.isFailure(exit) && exit.cause._tag === "Fail" && exit.cause.error._tag === "NatsConnectionError"
        ? exit.cause.error
        : undefined
      const got = Exit.isSuccess(exit)
        ? "connected"
        : error === undefined
        ? (Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error._tag : "a defect")
        : `${error._tag} ${error.reason}`
      return { error, got, ms: since(t0) }
    })

  return Effect.gen(function*() {
    // ---- users, nkeys, permissions ----------------------------------------------------
    const member = nkeys.createUser()
    const stranger = nkeys.createUser()
    const seedOf = (kp: ReturnType<typeof nkeys.createUser>) => new TextDecoder().decode(kp.getSeed())
    const users = yield* NatsTestServer.make({
      sources: ["container", "binary"],
      auth: {
        _tag: "Users",
        users: [
          { user: "alice", password: "pw-alice-S3cret" },
          { nkey: member.getPublicKey() },
          {
            user: "orders",
            password: "pw-orders",
            permissions: {
              publish: { allow: ["chaos.>", "$JS.API.>", "_INBOX.>"], deny: ["secret.>"] },
              subscribe: { allow: ["_INBOX.>", "chaos.>"] }
            }
          }
        ]
      }
    })
    const url = users.url

    for (const [what, options] of [
      ["a wrong password", { servers: url, user: "alice", password: Redacted.make("wrong-S3cret-guess") }],
      ["an unknown user", { servers: url, user: "mallory", password: Redacted.make("pw-alice-S3cret") }],
      ["no credentials", { servers: url }],
      ["an nkey the server does not know", { servers: url, nkeySeed: Redacted.make(seedOf(stranger)) }]
    ] as const) {
      // the default options: reconnect forever; an authorization failure must still end the connect at once
      const { error, got, ms } = yield* refused(options)
      expectThat(
        error !== undefined && error.reason === "AuthorizationViolation" && !NatsError.isTransient(error),
        `${what}: NatsConnectionError AuthorizationViolation, not transient (got ${got})`
      )
      expectThat(ms < 5000, `${what}: refused in ${ms} ms`)
      expectThat(!String(error?.message).includes("S3cret") && !String(error).includes("S3cret"), `${what}: the secret is not in the error`)
    }

    const alice = yield* NatsClient.make({ ...quick, servers: url, user: "alice", password: Redacted.make("pw-alice-S3cret") })
    yield* alice.flush
    const viaNkey = yield* NatsClient.make({ ...quick, servers: url, nkeySeed: Redacted.make(seedOf(member)) })
    yield* viaNkey.flush
    expectThat(true, "the right password and the registered nkey connect")

    // the restricted user: JetStream publish to a denied subject, then allowed work on the same connection
    const restricted = yield* NatsClient.make({ ...quick, servers: url, user: "orders", password: Redacted.make("pw-orders") })
    const asRestricted = <A, E>(self: Effect.Effect<A, E, JetStream.JetStream | NatsClient.NatsClient>) =>
      self.pipe(Effect.provide(JetStream.layer.pipe(Layer.provideMerge(Layer.succeed(NatsClient.NatsClient, restricted)))))
    yield* asRestricted(Effect.flatMap(JetStream.JetStream, (js) =>
      js.ensureStream({ name: "CHAOS_AUTH", subjects: ["chaos.order.>"], storage: "memory" })))
    const publisher = yield* asRestricted(Publisher.make())
    const t0 = performance.now()
    const denied = yield* Effect.flip(publisher.publish(SecretLeaked, { plan: "x" }))
    const deniedMs = since(t0)
    const cause = denied.cause
    expectThat(
      denied._tag === "PublishError" && cause._tag === "NatsPermissionDeniedError" && cause.subject === "secret.plan.leaked" &&
        cause.operation === "publish",
      `JetStream publish to a denied subject: PublishError caused by NatsPermissionDeniedError (got ${cause._tag}: ${cause.message})`
    )
    expectThat(deniedMs < 1500, `the denied publish is not retried (${deniedMs} ms)`)
    const request = yield* Effect.flip(restricted.request("secret.plans.get", "x", { timeout: "3 seconds" }))
    expectThat(
      request._tag === "NatsPermissionDeniedError" && request.subject === "secret.plans.get",
      `a request to a denied subject: NatsPermissionDeniedError (got ${request._tag})`
    )
    const ok = yield* Effect.either(publisher.publish(OrderPlaced, { orderId: "o-1", n: 1 }))
    expectThat(ok._tag === "Right" && !restricted.connection.isClosed(), "the same connection still publishes to an allowed subject")
    for (let i = 0; i < 20; i++) yield* Effect.ignore(restricted.publish("secret.leak", `x${i}`))
    yield* restricted.flush
    const again = yield* Effect.either(publisher.publish(OrderPlaced, { orderId: "o-2", n: 2 }))
    expectThat(again._tag === "Right", "after 20 denied core publishes the connection still works")
    report.sent = 2
    report.effects = (ok._tag === "Right" ? 1 : 0) + (again._tag === "Right" ? 1 : 0)

    // ---- TLS ------------------------------------------------------------------------------
    const dir = yield* tempDir("tls")
    const pki = yield* makePki(dir)
    const other = yield* makePki(dir, "other-")
    const tlsServer = yield* NatsTestServer.make({
      sources: ["binary"],
      jetstream: false,
      tls: { certFile: pki.serverCert, keyFile: pki.serverKey }
    })
    const trusted = yield* NatsClient.make({ ...quick, servers: tlsServer.url, tls: { caFile: pki.ca } })
    yield* trusted.flush
    const tlsInfo = yield* trusted.serverInfo
    expectThat(tlsInfo._tag === "Some" && tlsInfo.value.tls_required === true, "a client trusting the CA connects over TLS")

    for (const [what, options] of [
      ["a client without the CA", { servers: tlsServer.url }],
      ["a client trusting another CA", { servers: tlsServer.url, tls: { caFile: other.ca } }]
    ] as const) {
      const { error, got, ms } = yield* refused(options)
      expectThat(error !== undefined, `${what} is refused with NatsConnectionError (got ${got})`)
      expectThat(ms < 5000, `${what}: refused in ${ms} ms`)
      report.note(`${what}: ${error?.message.slice(0, 160)}`)
    }

    const mtls = yield* NatsTestServer.make({
      sources: ["binary"],
      jetstream: false,
      tls: { certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca, verify: true }
    })
    const withCert = yield* NatsClient.make({
      ...quick,
      servers: mtls.url,
      tls: { caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey }
    })
    yield* withCert.flush
    expectThat(true, "mutual TLS: a client with a certificate signed by the CA connects")
    // with TLS 1.3 the server's "certificate required" alert comes after the client's handshake: nats.js
    // only gives up at its connect timeout (here 1.5 s; 20 s by default), still with a typed error
    const noCert = yield* refused({ ...quick, timeout: "1500 millis", servers: mtls.url, tls: { caFile: pki.ca } })
    expectThat(noCert.error !== undefined, `mutual TLS: a client without a certificate is refused with NatsConnectionError (got ${noCert.got})`)
    report.set("mtlsNoCertRefusedMs", noCert.ms)
    report.note(`mutual TLS without a client certificate, after ${noCert.ms} ms: ${noCert.error?.message.slice(0, 120)}`)
    report.set("checksPassed", passed)
  }).pipe(
    Effect.scoped,
    Effect.catchAllCause((cause) => Effect.sync(() => void report.check(false, `scenario crashed: ${cause}`))),
    Effect.map(() => report.result())
  )
}
