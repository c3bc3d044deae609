/**
 * The NATS connection as an Effect service.
 *
 * `layer(options)` connects when the layer is built and drains (bounded by
 * `drainTimeout`) when its scope closes. `layerConfig` reads the standard
 * `NATS_*` environment variables.
 *
 * @since 0.1.0
 */
import {
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  type ConnectionOptions,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type ServerInfo,
  type Status
} from "@nats-io/transport-node"
import { Config, Context, Duration, Effect, Layer, Option, PubSub, Redacted, type Scope, Stream } from "effect"
import * as fs from "node:fs/promises"
import * as NatsError from "./NatsError.js"

/**
 * A connection status event from nats.js: `disconnect`, `reconnect`,
 * `reconnecting`, `error`, `ldm`, `staleConnection`, `slowConsumer`, `close`, ...
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectionStatus = Status

/**
 * TLS settings. Paths are read by nats.js when connecting.
 *
 * @since 0.1.0
 * @category models
 */
export interface TlsOptions {
  /** PEM file with the CA(s) that signed the server certificate. */
  readonly caFile?: string | undefined
  /** Client certificate (mutual TLS). */
  readonly certFile?: string | undefined
  /** Client key (mutual TLS). */
  readonly keyFile?: string | undefined
  /** Do the TLS handshake before the NATS INFO (server `handshake_first`). */
  readonly handshakeFirst?: boolean | undefined
}

/**
 * Connection options. Everything is optional; the default connects to
 * `nats://127.0.0.1:4222` and reconnects forever.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** One URL, a comma-separated list, or an array of URLs. */
  readonly servers?: string | ReadonlyArray<string> | undefined
  /** Connection name shown in the server's monitoring. */
  readonly name?: string | undefined
  readonly user?: string | undefined
  readonly password?: Redacted.Redacted | undefined
  readonly token?: Redacted.Redacted | undefined
  /** Path of a `.creds` file (JWT + nkey seed). */
  readonly credsFile?: string | undefined
  /** An nkey seed (`SU...`) for nkey authentication. */
  readonly nkeySeed?: Redacted.Redacted | undefined
  readonly tls?: TlsOptions | undefined
  /** -1 (default) reconnects forever. */
  readonly maxReconnectAttempts?: number | undefined
  /** Wait between reconnect attempts to the same server (default 2 s). */
  readonly reconnectTimeWait?: Duration.DurationInput | undefined
  /** Random jitter added to the wait (default 100 ms). */
  readonly reconnectJitter?: Duration.DurationInput | undefined
  /**
   * How often the client PINGs the server (default 10 s; nats.js's own
   * default is 2 minutes). With `maxPingOut` it bounds how long a connection
   * can look alive while nothing comes back (a dead server, a cut route, a
   * reader ended by an exception thrown in somebody's callback): after
   * `maxPingOut` PINGs without a PONG the client reconnects and subscribes
   * again, and the `status` stream shows `staleConnection`.
   */
  readonly pingInterval?: Duration.DurationInput | undefined
  /** PINGs without a PONG before the connection is stale (default 2). */
  readonly maxPingOut?: number | undefined
  /** Connect timeout (default 20 s). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Bound on `drain()` when the scope closes; then the connection is closed (default 10 s). */
  readonly drainTimeout?: Duration.DurationInput | undefined
  /** Skip async stack traces in nats.js (default true: ~1.7x faster JetStream publish). */
  readonly noAsyncTraces?: boolean | undefined
  /** Any other nats.js option, applied last. */
  readonly connectionOptions?: Partial<ConnectionOptions> | undefined
}

/**
 * The part of a nats.js `NatsConnection` that effect-nats (and its packages)
 * use: core publish / subscribe / request, flush, drain and close, the
 * connection's status events and server INFO.
 *
 * The service exposes this narrow view, not the whole `NatsConnection`, so
 * that a test double (`InMemoryNats` in `@effect-nats/testing`) can stand in
 * for a real connection: anything written against this interface runs on
 * both. A real `NatsConnection` satisfies it as is. Code that needs more of
 * nats.js should connect on its own, or keep the raw connection from
 * {@link make}'s layer in its own service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Connection extends
  Pick<
    NatsConnection,
    | "info"
    | "closed"
    | "close"
    | "publish"
    | "subscribe"
    | "request"
    | "flush"
    | "drain"
    | "isClosed"
    | "isDraining"
    | "getServer"
    | "status"
    | "rtt"
  >
{}

/**
 * Options for a core-NATS request.
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestOptions {
  readonly timeout?: Duration.DurationInput | undefined
  readonly headers?: MsgHdrs | undefined
}

/**
 * The service: the raw `NatsConnection` for anything not wrapped, plus
 * typed-error wrappers for the common operations.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NatsClient } from "effect-nats"
 *
 * const program = Effect.gen(function*() {
 *   const nats = yield* NatsClient.NatsClient
 *   yield* nats.publish("greet.hello", new TextEncoder().encode("hi"))
 *   yield* nats.flush
 * }).pipe(Effect.provide(NatsClient.layer({ servers: "nats://127.0.0.1:4222" })))
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class NatsClient extends Context.Tag("effect-nats/NatsClient")<NatsClient, {
  /**
   * The underlying connection (a nats.js `NatsConnection` for {@link layer},
   * an in-memory double in tests), narrowed to {@link Connection}. Owned by
   * the layer: do not close it.
   */
  readonly connection: Connection
  /** The servers this client was configured with, for error messages. */
  readonly servers: string
  /**
   * The prefix of the reply subjects this client subscribes to (`_INBOX`
   * unless `connectionOptions.inboxPrefix` says otherwise): a client whose
   * permissions only allow some inboxes keeps its JetStream publishes there.
   */
  readonly inboxPrefix: string
  /** Connection events; each subscriber sees the events after it subscribed. */
  readonly status: Stream.Stream<ConnectionStatus>
  /** The INFO of the server currently connected to. */
  readonly serverInfo: Effect.Effect<Option.Option<ServerInfo>>
  /** Is the connected server at least this version (`"2.10.4"`)? */
  readonly serverAtLeast: (version: string) => Effect.Effect<boolean>
  /** Core-NATS publish (fire and forget; use `flush` to wait for the server). */
  readonly publish: (
    subject: string,
    payload: Uint8Array | string,
    options?: { readonly headers?: MsgHdrs | undefined; readonly reply?: string | undefined }
  ) => Effect.Effect<void, NatsError.NatsError>
  /** Core-NATS request/reply. */
  readonly request: (
    subject: string,
    payload: Uint8Array | string,
    options?: RequestOptions
  ) => Effect.Effect<Msg, NatsError.NatsError>
  /** Round trip to the server: everything published before has been processed. */
  readonly flush: Effect.Effect<void, NatsError.NatsError>
}>() {}

const defaultServers = "nats://127.0.0.1:4222"

const serverList = (servers: Options["servers"]): Array<string> => {
  if (servers === undefined) return [defaultServers]
  const list = typeof servers === "string" ? servers.split(",") : [...servers]
  const trimmed = list.map((s) => s.trim()).filter((s) => s.length > 0)
  return trimmed.length > 0 ? trimmed : [defaultServers]
}

/** Hide credentials written into a server URL (`nats://user:pass@host` → `nats://***@host`). */
const redactUrl = (url: string): string => url.replace(/^((?:[a-z][a-z0-9+.-]*:\/\/)?)[^@/]*@/i, "$1***@")

const compareVersions = (a: string, b: string): number => {
  const pa = a.replace(/^v/, "").split(/[.-]/).map((n) => Number.parseInt(n, 10) || 0)
  const pb = b.replace(/^v/, "").split(/[.-]/).map((n) => Number.parseInt(n, 10) || 0)
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}

const toConnectionOptions = Effect.fnUntraced(function*(options: Options, servers: Array<string>) {
  const opts: ConnectionOptions = {
    servers,
    noAsyncTraces: options.noAsyncTraces ?? true,
    maxReconnectAttempts: options.maxReconnectAttempts ?? -1,
    reconnectTimeWait: Duration.toMillis(options.reconnectTimeWait ?? "2 seconds"),
    reconnectJitter: Duration.toMillis(options.reconnectJitter ?? "100 millis"),
    timeout: Duration.toMillis(options.timeout ?? "20 seconds"),
    pingInterval: Duration.toMillis(options.pingInterval ?? "10 seconds"),
    maxPingOut: options.maxPingOut ?? 2
  }
  if (options.name !== undefined) opts.name = options.name
  if (options.user !== undefined) opts.user = options.user
  if (options.password !== undefined) opts.pass = Redacted.value(options.password)
  if (options.token !== undefined) opts.token = Redacted.value(options.token)
  if (options.credsFile !== undefined) {
    const file = options.credsFile
    const creds = yield* Effect.tryPromise({
      try: () => fs.readFile(file),
      catch: (cause) =>
        new NatsError.NatsConnectionError({
          reason: "ConnectFailed",
          method: "NatsClient.connect",
          servers: servers.map(redactUrl).join(","),
          message: `cannot read creds file ${file}: ${cause instanceof Error ? cause.message : String(cause)}`,
          cause
        })
    })
    opts.authenticator = credsAuthenticator(new Uint8Array(creds))
  } else if (options.nkeySeed !== undefined) {
    opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(Redacted.value(options.nkeySeed)))
  }
  if (options.tls !== undefined) {
    const tls: NonNullable<ConnectionOptions["tls"]> = {}
    if (options.tls.caFile !== undefined) tls.caFile = options.tls.caFile
    if (options.tls.certFile !== undefined) tls.certFile = options.tls.certFile
    if (options.tls.keyFile !== undefined) tls.keyFile = options.tls.keyFile
    if (options.tls.handshakeFirst !== undefined) tls.handshakeFirst = options.tls.handshakeFirst
    opts.tls = tls
  }
  return { ...opts, ...options.connectionOptions }
})

/**
 * Connect, and drain the connection when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}) =>
  Effect.gen(function*() {
    const servers = serverList(options.servers)
    const serversText = servers.map(redactUrl).join(",")
    const opts = yield* toConnectionOptions(options, servers)
    const drainTimeout = options.drainTimeout ?? "10 seconds"

    const connection = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => connect(opts),
        catch: (cause) => {
          const error = NatsError.fromCause("NatsClient.connect", undefined, serversText)(cause)
          return error._tag === "NatsConnectionError" ? error : new NatsError.NatsConnectionError({
            reason: "ConnectFailed",
            method: "NatsClient.connect",
            servers: serversText,
            message: `cannot connect to ${serversText}: ${error.message}`,
            cause
          })
        }
      }),
      (nc) =>
        Effect.gen(function*() {
          if (nc.isClosed()) return
          // finalizers are uninterruptible: make the wait interruptible so the timeout can fire
          const drained = yield* Effect.tryPromise(() => nc.drain()).pipe(
            Effect.interruptible,
            Effect.timeoutOption(drainTimeout),
            Effect.orElseSucceed(() => Option.none())
          )
          if (Option.isNone(drained) && !nc.isClosed()) {
            yield* Effect.logWarning(`NatsClient: drain did not finish within ${Duration.format(drainTimeout)}; closing`)
            yield* Effect.promise(() => nc.close()).pipe(Effect.interruptible, Effect.timeoutOption("2 seconds"))
          }
        })
    )

    return yield* fromConnection(connection, serversText, { inboxPrefix: opts.inboxPrefix })
  })

/**
 * The service over an already connected {@link Connection}: what {@link make}
 * does once connected. The caller owns the connection (this does not drain or
 * close it); the status reader stops with the scope or when the connection
 * closes. Test doubles use it to offer the same service over an in-memory
 * connection. `inboxPrefix` is the one the connection was made with
 * (default `_INBOX`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromConnection = (
  connection: Connection,
  servers: string,
  options: { readonly inboxPrefix?: string | undefined } = {}
): Effect.Effect<NatsClient["Type"], never, Scope.Scope> =>
  Effect.gen(function*() {
    const serversText = servers
    // one reader of nats.js's status iterator feeds a PubSub; it ends when the connection closes
    const events = yield* Effect.acquireRelease(PubSub.sliding<ConnectionStatus>(1024), PubSub.shutdown)
    const statusIterator = connection.status()[Symbol.asyncIterator]()
    yield* Effect.promise(() => statusIterator.next()).pipe(
      Effect.flatMap((r) =>
        r.done ? Effect.succeed(false) : Effect.as(
          Effect.zipRight(
            r.value.type === "staleConnection"
              ? Effect.logWarning(`NatsClient: no answer from ${servers} to the last PINGs: reconnecting`)
              : Effect.void,
            PubSub.publish(events, r.value)
          ),
          true
        )
      ),
      Effect.repeat({ while: (more) => more }),
      Effect.forkScoped
    )
    const status = Stream.fromPubSub(events)

    const serverInfo = Effect.sync(() => Option.fromNullable(connection.info))

    return NatsClient.of({
      connection,
      servers: serversText,
      inboxPrefix: options.inboxPrefix ?? "_INBOX",
      status,
      serverInfo,
      serverAtLeast: (version) =>
        Effect.map(serverInfo, Option.match({
          onNone: () => false,
          onSome: (info) => compareVersions(info.version, version) >= 0
        })),
      publish: (subject, payload, publishOptions) =>
        Effect.try({
          try: () =>
            connection.publish(subject, payload, {
              ...(publishOptions?.headers ? { headers: publishOptions.headers } : {}),
              ...(publishOptions?.reply ? { reply: publishOptions.reply } : {})
            }),
          catch: NatsError.fromCause("NatsClient.publish", subject, serversText)
        }),
      request: (subject, payload, requestOptions) =>
        Effect.tryPromise({
          try: () =>
            connection.request(subject, payload, {
              timeout: Duration.toMillis(requestOptions?.timeout ?? "5 seconds"),
              ...(requestOptions?.headers ? { headers: requestOptions.headers } : {})
            }),
          catch: NatsError.fromCause("NatsClient.request", subject, serversText)
        }),
      flush: Effect.tryPromise({
        try: () => connection.flush(),
        catch: NatsError.fromCause("NatsClient.flush", undefined, serversText)
      })
    })
  })

/**
 * A layer that connects with the given options.
 *
 * @example
 * ```ts
 * import { NatsClient } from "effect-nats"
 *
 * const NatsLive = NatsClient.layer({ servers: "nats://127.0.0.1:4222", name: "billing" })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<NatsClient, NatsError.NatsConnectionError> =>
  Layer.scoped(NatsClient, make(options))

/**
 * Options read from the environment:
 * `NATS_URL` (comma-separated list, default `nats://127.0.0.1:4222`),
 * `NATS_NAME`, `NATS_USER` + `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS` (file),
 * `NATS_NKEY` (seed), `NATS_TLS_CA`, `NATS_TLS_CERT`, `NATS_TLS_KEY`,
 * `NATS_TLS_FIRST`, `NATS_MAX_RECONNECT_ATTEMPTS`, `NATS_RECONNECT_WAIT`,
 * `NATS_RECONNECT_JITTER`, `NATS_CONNECT_TIMEOUT`, `NATS_DRAIN_TIMEOUT`,
 * `NATS_PING_INTERVAL`, `NATS_MAX_PING_OUT`
 * (durations as `"2 seconds"`, `"500 millis"`).
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  servers: Config.string("NATS_URL").pipe(Config.withDefault(defaultServers)),
  name: Config.option(Config.string("NATS_NAME")),
  user: Config.option(Config.string("NATS_USER")),
  password: Config.option(Config.redacted("NATS_PASSWORD")),
  token: Config.option(Config.redacted("NATS_TOKEN")),
  credsFile: Config.option(Config.string("NATS_CREDS")),
  nkeySeed: Config.option(Config.redacted("NATS_NKEY")),
  caFile: Config.option(Config.string("NATS_TLS_CA")),
  certFile: Config.option(Config.string("NATS_TLS_CERT")),
  keyFile: Config.option(Config.string("NATS_TLS_KEY")),
  handshakeFirst: Config.option(Config.boolean("NATS_TLS_FIRST")),
  maxReconnectAttempts: Config.option(Config.integer("NATS_MAX_RECONNECT_ATTEMPTS")),
  reconnectTimeWait: Config.option(Config.duration("NATS_RECONNECT_WAIT")),
  reconnectJitter: Config.option(Config.duration("NATS_RECONNECT_JITTER")),
  timeout: Config.option(Config.duration("NATS_CONNECT_TIMEOUT")),
  drainTimeout: Config.option(Config.duration("NATS_DRAIN_TIMEOUT")),
  pingInterval: Config.option(Config.duration("NATS_PING_INTERVAL")),
  maxPingOut: Config.option(Config.integer("NATS_MAX_PING_OUT"))
}).pipe(Config.map((c): Options => {
  const tlsSet = Option.isSome(c.caFile) || Option.isSome(c.certFile) || Option.isSome(c.keyFile) ||
    Option.isSome(c.handshakeFirst)
  return {
    servers: c.servers,
    name: Option.getOrUndefined(c.name),
    user: Option.getOrUndefined(c.user),
    password: Option.getOrUndefined(c.password),
    token: Option.getOrUndefined(c.token),
    credsFile: Option.getOrUndefined(c.credsFile),
    nkeySeed: Option.getOrUndefined(c.nkeySeed),
    tls: tlsSet
      ? {
        caFile: Option.getOrUndefined(c.caFile),
        certFile: Option.getOrUndefined(c.certFile),
        keyFile: Option.getOrUndefined(c.keyFile),
        handshakeFirst: Option.getOrUndefined(c.handshakeFirst)
      }
      : undefined,
    maxReconnectAttempts: Option.getOrUndefined(c.maxReconnectAttempts),
    reconnectTimeWait: Option.getOrUndefined(c.reconnectTimeWait),
    reconnectJitter: Option.getOrUndefined(c.reconnectJitter),
    timeout: Option.getOrUndefined(c.timeout),
    drainTimeout: Option.getOrUndefined(c.drainTimeout),
    pingInterval: Option.getOrUndefined(c.pingInterval),
    maxPingOut: Option.getOrUndefined(c.maxPingOut)
  }
}))

/**
 * A layer whose options come from `Config` (by default {@link config}, the
 * `NATS_*` environment variables).
 *
 * @example
 * ```ts
 * import { NatsClient } from "effect-nats"
 *
 * // NATS_URL=nats://a:4222,nats://b:4222 NATS_TOKEN=s3cret node app.js
 * const NatsLive = NatsClient.layerConfig()
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config<Options> = config
): Layer.Layer<NatsClient, NatsError.NatsConnectionError | import("effect/ConfigError").ConfigError> =>
  Layer.scoped(NatsClient, Effect.flatMap(options, make))
