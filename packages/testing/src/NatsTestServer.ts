/**
 * A real `nats-server` (JetStream on) for tests and demos: on a free loopback
 * port with a throwaway store dir, stopped and cleaned up when the scope closes,
 * with `restart` / `stop` / `start` / `kill` for fault tests.
 *
 * Source, in order: `NATS_URL` (only when no auth/TLS is requested), testcontainers
 * (`nats:2.10`) when a Docker engine answers, else a local `nats-server` binary,
 * found (or, as root on Debian/Ubuntu, installed) by {@link Provision.resolve}.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, type Scope } from "effect"
import { JetStream, NatsClient, type NatsError } from "effect-nats"
import * as Containers from "./internal/containers.js"
import { dockerAnswers, freePort, hostPort } from "./internal/net.js"
import {
  awaitInfo,
  findBinary,
  node,
  notFoundHelp,
  NatsTestServerError,
  parseVersion,
  portTaken,
  q,
  STOP_GRACE_MILLIS,
  tempDir
} from "./internal/natsNode.js"
import { live } from "./internal/process.js"

export {
  /**
   * A test server or cluster could not be started, stopped or asked something.
   *
   * @since 0.1.0
   * @category errors
   */
  NatsTestServerError
} from "./internal/natsNode.js"

/**
 * Where the server comes from.
 *
 * @since 0.1.0
 * @category models
 */
export type Source = "env" | "container" | "binary"

/**
 * A running NATS server.
 *
 * All operations run on the live clock, so they take real time even inside
 * `it.effect` (TestClock).
 *
 * @since 0.1.0
 * @category tags
 */
export class NatsTestServer extends Context.Tag("@effect-nats/testing/NatsTestServer")<NatsTestServer, {
  /** e.g. `nats://127.0.0.1:41234`; for the `env` source, `NATS_URL` as given */
  readonly url: string
  readonly port: number
  /** JetStream `store_dir` (`""` for the env and container sources) */
  readonly storeDir: string
  readonly source: Source
  /** The server's version, from the `INFO` line of its last start (e.g. `"2.9.10"`) */
  readonly serverVersion: Effect.Effect<string>
  /** Stop (SIGTERM, bounded wait, then SIGKILL) and start again on the same port and store dir; resolves when the server answers */
  readonly restart: Effect.Effect<void, NatsTestServerError>
  /** Stop without restarting (outage tests); `start` brings it back. No-op when stopped */
  readonly stop: Effect.Effect<void, NatsTestServerError>
  /** Start again on the same port and store dir; resolves when the server answers. No-op when running */
  readonly start: Effect.Effect<void, NatsTestServerError>
  /** SIGKILL (a crash); `start` brings it back */
  readonly kill: Effect.Effect<void, NatsTestServerError>
}>() {}

/**
 * Permissions for one subject direction.
 *
 * @since 0.1.0
 * @category models
 */
export interface SubjectPermissions {
  readonly allow?: ReadonlyArray<string>
  readonly deny?: ReadonlyArray<string>
}

/**
 * One entry of a `Users` authorization block.
 *
 * @since 0.1.0
 * @category models
 */
export interface User {
  readonly user?: string
  readonly password?: string
  /** an nkey public key (`U...`) */
  readonly nkey?: string
  readonly permissions?: {
    readonly publish?: SubjectPermissions
    readonly subscribe?: SubjectPermissions
  }
}

/**
 * Server authorization.
 *
 * @since 0.1.0
 * @category models
 */
export type Auth =
  | { readonly _tag: "Token"; readonly token: string }
  | { readonly _tag: "UserPassword"; readonly user: string; readonly password: string }
  | { readonly _tag: "Users"; readonly users: ReadonlyArray<User> }

/**
 * Server TLS (paths on the host).
 *
 * @since 0.1.0
 * @category models
 */
export interface Tls {
  readonly certFile: string
  readonly keyFile: string
  readonly caFile?: string
  /** require and verify client certificates */
  readonly verify?: boolean
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** default `true` */
  readonly jetstream?: boolean
  readonly auth?: Auth
  readonly tls?: Tls
  /** raw nats-server config text, appended verbatim */
  readonly extraConfig?: string
  readonly maxPayload?: number
  /**
   * use this `nats-server` executable instead of searching PATH and the usual
   * dirs; unless `sources` is given, it also means `sources: ["binary"]`
   */
  readonly binaryPath?: string
  /**
   * Sources to try, in order (default `["env", "container", "binary"]`). Fault
   * tests that need `restart`/`kill` should pass `["container", "binary"]`,
   * since an external `NATS_URL` server cannot be restarted.
   */
  readonly sources?: ReadonlyArray<Source>
  /** time allowed for the server to answer after each start; default 10 000 ms */
  readonly startTimeoutMillis?: number
  /** container image; default `nats:2.10` */
  readonly image?: string
}

const list = (xs: ReadonlyArray<string>): string => `[${xs.map(q).join(", ")}]`

const renderPermissions = (p: NonNullable<User["permissions"]>): string => {
  const dir = (name: string, sp: SubjectPermissions | undefined): ReadonlyArray<string> => {
    if (sp === undefined) return []
    const parts = [
      ...(sp.allow !== undefined ? [`allow: ${list(sp.allow)}`] : []),
      ...(sp.deny !== undefined ? [`deny: ${list(sp.deny)}`] : [])
    ]
    return [`${name}: { ${parts.join(", ")} }`]
  }
  return `{ ${[...dir("publish", p.publish), ...dir("subscribe", p.subscribe)].join(", ")} }`
}

const renderUser = (u: User): string => {
  const parts = [
    ...(u.user !== undefined ? [`user: ${q(u.user)}`] : []),
    ...(u.password !== undefined ? [`password: ${q(u.password)}`] : []),
    ...(u.nkey !== undefined ? [`nkey: ${q(u.nkey)}`] : []),
    ...(u.permissions !== undefined ? [`permissions: ${renderPermissions(u.permissions)}`] : [])
  ]
  return `{ ${parts.join(", ")} }`
}

/**
 * Render the nats-server config file for `options` (pure; used by `layer`).
 *
 * @example
 * ```ts
 * import { NatsTestServer } from "@effect-nats/testing"
 *
 * const text = NatsTestServer.renderConfig(
 *   { auth: { _tag: "Token", token: "s3cret" } },
 *   { port: 4222, storeDir: "/tmp/x/js" }
 * )
 * // listen: "127.0.0.1:4222" ... authorization { token: "s3cret" }
 * ```
 *
 * @since 0.1.0
 * @category config
 */
export const renderConfig = (
  options: Options,
  target: { readonly port: number; readonly storeDir: string; readonly host?: string; readonly serverName?: string }
): string => {
  const lines: Array<string> = [
    "# generated by @effect-nats/testing",
    `server_name: ${q(target.serverName ?? `effect-nats-test-${target.port}`)}`,
    `listen: ${q(`${target.host ?? "127.0.0.1"}:${target.port}`)}`
  ]
  if (options.jetstream !== false) {
    lines.push("jetstream {", `  store_dir: ${q(target.storeDir)}`, "}")
  }
  if (options.maxPayload !== undefined) lines.push(`max_payload: ${Math.trunc(options.maxPayload)}`)
  const auth = options.auth
  if (auth !== undefined) {
    switch (auth._tag) {
      case "Token":
        lines.push("authorization {", `  token: ${q(auth.token)}`, "}")
        break
      case "UserPassword":
        lines.push("authorization {", `  user: ${q(auth.user)}`, `  password: ${q(auth.password)}`, "}")
        break
      case "Users":
        lines.push("authorization {", "  users: [", ...auth.users.map((u) => `    ${renderUser(u)}`), "  ]", "}")
        break
    }
  }
  const tls = options.tls
  if (tls !== undefined) {
    lines.push(
      "tls {",
      `  cert_file: ${q(tls.certFile)}`,
      `  key_file: ${q(tls.keyFile)}`,
      ...(tls.caFile !== undefined ? [`  ca_file: ${q(tls.caFile)}`] : []),
      ...(tls.verify !== undefined ? [`  verify: ${tls.verify}`] : []),
      "}"
    )
  }
  if (options.extraConfig !== undefined) lines.push(options.extraConfig)
  return lines.join("\n") + "\n"
}

interface Controls {
  readonly restart: Effect.Effect<void, NatsTestServerError>
  readonly stop: Effect.Effect<void, NatsTestServerError>
  readonly start: Effect.Effect<void, NatsTestServerError>
  readonly kill: Effect.Effect<void, NatsTestServerError>
}

const serialized = (lock: Effect.Semaphore, c: Controls): Controls => ({
  restart: lock.withPermits(1)(c.restart).pipe(live),
  stop: lock.withPermits(1)(c.stop).pipe(live),
  start: lock.withPermits(1)(c.start).pipe(live),
  kill: lock.withPermits(1)(c.kill).pipe(live)
})

// ---------------------------------------------------------------------------
// env
// ---------------------------------------------------------------------------

const fromEnv = (url: string): Effect.Effect<NatsTestServer["Type"], NatsTestServerError> =>
  Effect.gen(function*() {
    const hp = hostPort(url, 4222)
    if (hp === undefined) {
      return yield* new NatsTestServerError({ reason: "StartFailed", message: `NATS_URL is not a valid URL: ${url}` })
    }
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url.trim())?.[1]?.toLowerCase() ?? "nats"
    const version = scheme === "nats" || scheme === "tls"
      ? parseVersion(
        yield* awaitInfo(hp.host, hp.port, 5000, () => undefined).pipe(
          Effect.mapError((e) =>
            new NatsTestServerError({ reason: "StartFailed", message: `NATS_URL ${url} does not answer: ${e.message}`, cause: e })
          )
        )
      )
      : "unknown"
    const unsupported = (op: string) =>
      Effect.fail(
        new NatsTestServerError({
          reason: "Unsupported",
          message: `${op} is not possible on an external server (NATS_URL); pass sources: ["container", "binary"]`
        })
      )
    return NatsTestServer.of({
      url,
      port: hp.port,
      storeDir: "",
      source: "env",
      serverVersion: Effect.succeed(version),
      restart: unsupported("restart"),
      stop: unsupported("stop"),
      start: unsupported("start"),
      kill: unsupported("kill")
    })
  })

// ---------------------------------------------------------------------------
// container
// ---------------------------------------------------------------------------

const CONTAINER_CONFIG = "/etc/effect-nats/nats-server.conf"

const fromContainer = (options: Options): Effect.Effect<NatsTestServer["Type"], NatsTestServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const startTimeout = options.startTimeoutMillis ?? 10_000
    const hostPortNumber = yield* freePort.pipe(
      Effect.mapError((cause) => new NatsTestServerError({ reason: "ContainerFailed", message: "no free port", cause }))
    )
    const tls = options.tls
    const files: Array<Containers.FileToCopy> = []
    let containerOptions: Options = options
    if (tls !== undefined) {
      const dir = "/etc/effect-nats/tls"
      files.push({ source: tls.certFile, target: `${dir}/cert.pem` }, { source: tls.keyFile, target: `${dir}/key.pem` })
      if (tls.caFile !== undefined) files.push({ source: tls.caFile, target: `${dir}/ca.pem` })
      containerOptions = {
        ...options,
        tls: {
          certFile: `${dir}/cert.pem`,
          keyFile: `${dir}/key.pem`,
          ...(tls.caFile !== undefined ? { caFile: `${dir}/ca.pem` } : {}),
          ...(tls.verify !== undefined ? { verify: tls.verify } : {})
        }
      }
    }
    const config = renderConfig(containerOptions, { host: "0.0.0.0", port: 4222, storeDir: "/data/js", serverName: "effect-nats-test" })
    const running = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          Containers.startContainer({
            image: options.image ?? "nats:2.10",
            command: ["-c", CONTAINER_CONFIG],
            port: { container: 4222, host: hostPortNumber },
            contents: [{ content: config, target: CONTAINER_CONFIG }],
            files,
            readyLog: /Server is ready/,
            startupTimeoutMillis: 60_000
          }),
        catch: (cause) =>
          new NatsTestServerError({ reason: "ContainerFailed", message: `could not start a nats container: ${String(cause)}`, cause })
      }),
      (running) =>
        Effect.tryPromise(() => Containers.removeContainer(running)).pipe(
          Effect.timeout(15_000),
          Effect.catchAll((e) => Effect.logWarning("NatsTestServer: removing the container failed", e)),
          live
        )
    )
    const host = running.host === "localhost" ? "127.0.0.1" : running.host
    let version = parseVersion(yield* awaitInfo(host, running.port, startTimeout, () => undefined))
    const containerOp = (what: "stop" | "start" | "kill", run: () => Promise<void>) =>
      Effect.tryPromise({
        try: run,
        catch: (cause) =>
          new NatsTestServerError({
            reason: what === "start" ? "StartFailed" : "StopFailed",
            message: `container ${what} failed: ${String(cause)}`,
            cause
          })
      })
    const awaitUp = awaitInfo(host, running.port, startTimeout, () => undefined).pipe(
      Effect.tap((line) => Effect.sync(() => (version = parseVersion(line))))
    )
    const stop = containerOp("stop", () => Containers.stopInPlace(running, STOP_GRACE_MILLIS))
    const start = containerOp("start", () => Containers.startInPlace(running)).pipe(Effect.zipRight(awaitUp), Effect.asVoid)
    const lock = yield* Effect.makeSemaphore(1)
    const controls = serialized(lock, {
      stop,
      start,
      restart: Effect.zipRight(stop, start),
      kill: containerOp("kill", () => Containers.killInPlace(running))
    })
    return NatsTestServer.of({
      url: `nats://${host}:${running.port}`,
      port: running.port,
      storeDir: "",
      source: "container",
      serverVersion: Effect.sync(() => version),
      ...controls
    })
  })

// ---------------------------------------------------------------------------
// binary
// ---------------------------------------------------------------------------

const fromBinary = (options: Options): Effect.Effect<NatsTestServer["Type"], NatsTestServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const binary = yield* findBinary(options.binaryPath, "NatsTestServer")
    const dir = yield* tempDir("NatsTestServer")
    // first start: retry on a fresh port when another process grabbed ours
    const started = yield* Effect.gen(function*() {
      for (let attempt = 1;; attempt++) {
        const port = yield* freePort.pipe(
          Effect.mapError((cause) => new NatsTestServerError({ reason: "StartFailed", message: `no free port: ${cause.message}`, cause }))
        )
        const result = yield* Effect.either(node({
          binary,
          dir,
          port,
          render: (storeDir) => renderConfig(options, { port, storeDir }),
          startTimeoutMillis: options.startTimeoutMillis ?? 10_000,
          label: "NatsTestServer"
        }))
        if (result._tag === "Right") return result.right
        if (!portTaken(result.left) || attempt >= 3) return yield* result.left
      }
    })
    const lock = yield* Effect.makeSemaphore(1)
    const controls = serialized(lock, {
      stop: started.stop,
      start: started.start,
      restart: Effect.zipRight(started.stop, started.start),
      kill: started.kill
    })
    return NatsTestServer.of({
      url: `nats://127.0.0.1:${started.port}`,
      port: started.port,
      storeDir: started.storeDir,
      source: "binary",
      serverVersion: Effect.sync(started.version),
      ...controls
    })
  })

/**
 * Start a server (see the module doc for the source order) in the current scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<NatsTestServer["Type"], NatsTestServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const sources = options.sources ?? (options.binaryPath !== undefined ? ["binary"] : ["env", "container", "binary"])
    const customized = options.auth !== undefined || options.tls !== undefined
    let containerError: NatsTestServerError | undefined
    for (const source of sources) {
      if (source === "env") {
        const url = process.env["NATS_URL"]
        if (url !== undefined && url.trim().length > 0 && !customized) return yield* fromEnv(url.trim())
      } else if (source === "container") {
        if (!(yield* dockerAnswers)) continue
        const result = yield* Effect.either(fromContainer(options))
        if (result._tag === "Right") return result.right
        containerError = result.left
        yield* Effect.logWarning(`NatsTestServer: container start failed, trying the next source: ${result.left.message}`)
      } else {
        return yield* fromBinary(options)
      }
    }
    return yield* (containerError ?? new NatsTestServerError({
      reason: "BinaryNotFound",
      message: `no NATS server source available (tried ${sources.join(", ")}). ${notFoundHelp()}`
    }))
  }).pipe(live)

/**
 * A layer that starts a real NATS server for the layer's lifetime and stops it
 * (and removes its store dir) when the layer's scope closes.
 *
 * @example
 * ```ts
 * import { NatsTestServer } from "@effect-nats/testing"
 * import { expect, layer } from "@effect/vitest"
 * import { Effect } from "effect"
 *
 * layer(NatsTestServer.layer({ jetstream: true }))("orders", (it) => {
 *   it.effect("survives a server restart", () =>
 *     Effect.gen(function*() {
 *       const server = yield* NatsTestServer.NatsTestServer
 *       // connect a client to server.url ...
 *       yield* server.restart
 *       expect(server.url).toMatch(/^nats:\/\//)
 *     }))
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<NatsTestServer, NatsTestServerError> =>
  Layer.scoped(NatsTestServer, make(options))

/**
 * A test server plus a {@link NatsClient.NatsClient} connected to it and
 * {@link JetStream.JetStream}: what most tests need.
 *
 * @example
 * ```ts
 * import { layer } from "@effect/vitest"
 * import { NatsTestServer } from "@effect-nats/testing"
 *
 * layer(NatsTestServer.layerJetStream(), { excludeTestServices: true })((it) => {
 *   // it.effect(...) with NatsClient, JetStream and NatsTestServer available
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerJetStream = (
  options: Options = {},
  client: Omit<NatsClient.Options, "servers"> = {}
): Layer.Layer<
  NatsTestServer | NatsClient.NatsClient | JetStream.JetStream,
  NatsTestServerError | NatsError.NatsError
> => {
  const connected = Layer.unwrapEffect(
    Effect.map(NatsTestServer, (s) => NatsClient.layer({ drainTimeout: "5 seconds", ...client, servers: s.url }))
  )
  return JetStream.layer.pipe(Layer.provideMerge(connected), Layer.provideMerge(layer(options)))
}
