/**
 * OpenTelemetry tracing for effect-nats services, wired at the edge.
 *
 * The core library only uses Effect's `Tracer`; this module installs
 * `@effect/opentelemetry`'s `NodeSdk` with a span exporter chosen from the
 * standard `OTEL_*` variables (read with Effect `Config`, so a test can swap
 * the `ConfigProvider`):
 *
 * | variable | meaning |
 * | --- | --- |
 * | `OTEL_SDK_DISABLED` | `true`: export nothing (no-op layer) |
 * | `OTEL_TRACES_EXPORTER` | comma-separated `otlp`, `console`, `none` |
 * | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | full URL of the traces endpoint, used as given |
 * | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; `/v1/traces` is appended |
 * | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS` | `key=value,...` (percent-encoded), sent with every export |
 * | `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` | export timeout in milliseconds |
 * | `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` | `http/json` or `http/protobuf` (both served by OTLP/HTTP receivers; spans are sent as JSON); `grpc` is refused |
 * | `OTEL_SERVICE_NAME` | `service.name` of the resource |
 * | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,...` (percent-encoded) resource attributes |
 * | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_EXPORT_TIMEOUT`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | batch span processor tuning (milliseconds, counts) |
 *
 * OTLP spans go through a `BatchSpanProcessor` to an OTLP/HTTP exporter
 * (`@opentelemetry/exporter-trace-otlp-http`); console spans through a
 * `SimpleSpanProcessor` (printed as they end). When nothing asks for an
 * exporter (no endpoint, no `OTEL_TRACES_EXPORTER`) the layer is a no-op: the
 * Effect tracer stays the built-in one, so the toolkit skips its per-message
 * spans altogether (see `Tracing.isRecording` in effect-nats). An explicit
 * `OTEL_TRACES_EXPORTER=otlp` without an endpoint exports to the spec's
 * default, `http://localhost:4318/v1/traces`.
 *
 * Options given in code win over the environment; leave a field out to let
 * the environment decide. Exporter settings this module does not read
 * (`OTEL_EXPORTER_OTLP_COMPRESSION`, client certificates) are still applied
 * by the OTLP exporter itself from `process.env`. Pending spans are flushed
 * when the layer's scope closes (bounded by `shutdownTimeout`).
 *
 * @since 0.1.0
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import {
  BatchSpanProcessor,
  type BufferConfig,
  ConsoleSpanExporter,
  SimpleSpanProcessor,
  type SpanProcessor
} from "@opentelemetry/sdk-trace-base"
import { Config, ConfigError, Duration, Effect, Either, Layer, Option, Redacted } from "effect"

/**
 * A span exporter: `otlp` (OTLP/HTTP), `console` (stdout), or `none`.
 *
 * @since 0.1.0
 * @category models
 */
export type Exporter = "otlp" | "console" | "none"

/**
 * Batch span processor tuning (the `OTEL_BSP_*` variables).
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchOptions {
  /** Delay between two exports (default 5 s). */
  readonly scheduledDelay?: Duration.DurationInput | undefined
  /** How long one export may take before it is cancelled (default 30 s). */
  readonly exportTimeout?: Duration.DurationInput | undefined
  /** Spans kept while waiting for an export; more are dropped (default 2048). */
  readonly maxQueueSize?: number | undefined
  /** Spans per export request (default 512). */
  readonly maxExportBatchSize?: number | undefined
}

/**
 * What to export and where. Every field is optional; a field left out is
 * read from the environment (see the module documentation).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Turn everything off (`OTEL_SDK_DISABLED`). */
  readonly disabled?: boolean | undefined
  /** One exporter or several (`OTEL_TRACES_EXPORTER`). */
  readonly exporter?: Exporter | ReadonlyArray<Exporter> | undefined
  /** The resource's `service.name` (`OTEL_SERVICE_NAME`). */
  readonly serviceName?: string | undefined
  /** The resource's `service.version`. */
  readonly serviceVersion?: string | undefined
  /** Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`); merged over the environment's. */
  readonly resourceAttributes?: Readonly<Record<string, string>> | undefined
  /** OTLP base URL, `/v1/traces` is appended (`OTEL_EXPORTER_OTLP_ENDPOINT`). */
  readonly endpoint?: string | undefined
  /** Full OTLP traces URL, used as given; wins over `endpoint` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). */
  readonly tracesEndpoint?: string | undefined
  /** Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`); merged over the environment's. */
  readonly headers?: Readonly<Record<string, string | Redacted.Redacted>> | undefined
  /** Timeout of one OTLP request (`OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Batch span processor tuning (`OTEL_BSP_*`). */
  readonly batch?: BatchOptions | undefined
  /** Bound on the final flush when the layer's scope closes (default 3 s). */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
}

/**
 * The resolved configuration: what {@link layer} builds.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  /** The exporters to install; empty means the layer is a no-op. */
  readonly exporters: ReadonlyArray<"otlp" | "console">
  readonly serviceName: string
  readonly serviceVersion: string | undefined
  readonly resourceAttributes: Readonly<Record<string, string>>
  /** The OTLP traces URL (set when `exporters` contains `otlp`). */
  readonly url: string | undefined
  readonly headers: Readonly<Record<string, Redacted.Redacted>>
  readonly timeout: Duration.Duration | undefined
  readonly batch: BatchOptions
  readonly shutdownTimeout: Duration.Duration
}

/** The spec's default OTLP/HTTP endpoint. */
const defaultEndpoint = "http://localhost:4318"
const defaultServiceName = "unknown_service:node"

const invalid = (path: string, message: string) => ConfigError.InvalidData([path], message)

/** Parse `key=value,key2=value2` (W3C baggage style, percent-encoded values). */
const parseKeyValues = (name: string) => (text: string): Either.Either<Record<string, string>, ConfigError.ConfigError> => {
  const out: Record<string, string> = {}
  for (const raw of text.split(",")) {
    const item = raw.trim()
    if (item === "") continue
    const eq = item.indexOf("=")
    const key = eq > 0 ? item.slice(0, eq).trim() : ""
    if (key === "") return Either.left(invalid(name, `expected key=value pairs separated by commas, got "${item}"`))
    try {
      out[decodeURIComponent(key)] = decodeURIComponent(item.slice(eq + 1).trim())
    } catch {
      return Either.left(invalid(name, `"${item}" is not correctly percent-encoded`))
    }
  }
  return Either.right(out)
}

const keyValues = (name: string) =>
  Config.string(name).pipe(Config.mapOrFail(parseKeyValues(name)), Config.option)

const parseExporters = (text: string): Either.Either<ReadonlyArray<Exporter>, ConfigError.ConfigError> => {
  const out: Array<Exporter> = []
  for (const raw of text.split(",")) {
    const item = raw.trim().toLowerCase()
    if (item === "") continue
    if (item !== "otlp" && item !== "console" && item !== "none") {
      return Either.left(
        invalid("OTEL_TRACES_EXPORTER", `unsupported exporter "${raw.trim()}" (supported: otlp, console, none)`)
      )
    }
    out.push(item)
  }
  return Either.right(out)
}

const checkProtocol = (name: string) => (text: string): Either.Either<string, ConfigError.ConfigError> => {
  const p = text.trim().toLowerCase()
  return p === "http/json" || p === "http/protobuf"
    ? Either.right(p)
    : Either.left(invalid(name, `unsupported OTLP protocol "${text}": spans are sent over OTLP/HTTP (http/json, port 4318)`))
}

// the spec: "true", case-insensitively, disables; "false" or empty does not
const parseDisabled = (text: string): Either.Either<boolean, ConfigError.ConfigError> => {
  const v = text.trim().toLowerCase()
  return v === "true"
    ? Either.right(true)
    : v === "false" || v === ""
    ? Either.right(false)
    : Either.left(invalid("OTEL_SDK_DISABLED", `expected true or false, got "${text}"`))
}

const millis = (name: string) => Config.option(Config.integer(name).pipe(Config.validate({
  message: "expected a non-negative number of milliseconds",
  validation: (n) => n >= 0
})))

const positive = (name: string) => Config.option(Config.integer(name).pipe(Config.validate({
  message: "expected a positive integer",
  validation: (n) => n > 0
})))

const firstSome = <A>(a: Option.Option<A>, b: Option.Option<A>): A | undefined =>
  Option.getOrUndefined(Option.orElse(a, () => b))

/**
 * The {@link Options} read from the standard `OTEL_*` variables (see the
 * module documentation). Malformed values fail with a `ConfigError` naming
 * the variable.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Telemetry } from "@effect-nats/opentelemetry"
 *
 * const show = Effect.gen(function*() {
 *   const settings = Telemetry.resolve(yield* Telemetry.config)
 *   yield* Effect.log(`exporting to ${settings.exporters.join(", ") || "nothing"}`)
 * })
 * ```
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  disabled: Config.string("OTEL_SDK_DISABLED").pipe(Config.mapOrFail(parseDisabled), Config.withDefault(false)),
  exporter: Config.string("OTEL_TRACES_EXPORTER").pipe(Config.mapOrFail(parseExporters), Config.option),
  serviceName: Config.option(Config.nonEmptyString("OTEL_SERVICE_NAME")),
  resourceAttributes: keyValues("OTEL_RESOURCE_ATTRIBUTES"),
  endpoint: Config.option(Config.nonEmptyString("OTEL_EXPORTER_OTLP_ENDPOINT")),
  tracesEndpoint: Config.option(Config.nonEmptyString("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
  headers: keyValues("OTEL_EXPORTER_OTLP_HEADERS"),
  tracesHeaders: keyValues("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
  timeout: millis("OTEL_EXPORTER_OTLP_TIMEOUT"),
  tracesTimeout: millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
  protocol: Config.string("OTEL_EXPORTER_OTLP_PROTOCOL").pipe(
    Config.mapOrFail(checkProtocol("OTEL_EXPORTER_OTLP_PROTOCOL")),
    Config.option
  ),
  tracesProtocol: Config.string("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").pipe(
    Config.mapOrFail(checkProtocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")),
    Config.option
  ),
  scheduledDelay: millis("OTEL_BSP_SCHEDULE_DELAY"),
  exportTimeout: millis("OTEL_BSP_EXPORT_TIMEOUT"),
  maxQueueSize: positive("OTEL_BSP_MAX_QUEUE_SIZE"),
  maxExportBatchSize: positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
}).pipe(Config.map((c): Options => {
  const headers = Option.isSome(c.headers) || Option.isSome(c.tracesHeaders)
    ? Object.fromEntries(
      Object.entries({ ...Option.getOrElse(c.headers, () => ({})), ...Option.getOrElse(c.tracesHeaders, () => ({})) })
        .map(([k, v]) => [k, Redacted.make(v)])
    )
    : undefined
  const timeout = firstSome(c.tracesTimeout, c.timeout)
  return {
    disabled: c.disabled,
    exporter: Option.getOrUndefined(c.exporter),
    serviceName: Option.getOrUndefined(c.serviceName),
    resourceAttributes: Option.getOrUndefined(c.resourceAttributes),
    endpoint: Option.getOrUndefined(c.endpoint),
    tracesEndpoint: Option.getOrUndefined(c.tracesEndpoint),
    headers,
    timeout: timeout === undefined ? undefined : Duration.millis(timeout),
    batch: {
      scheduledDelay: Option.getOrUndefined(Option.map(c.scheduledDelay, Duration.millis)),
      exportTimeout: Option.getOrUndefined(Option.map(c.exportTimeout, Duration.millis)),
      maxQueueSize: Option.getOrUndefined(c.maxQueueSize),
      maxExportBatchSize: Option.getOrUndefined(c.maxExportBatchSize)
    }
  }
}))

const pick = <A>(preferred: A | undefined, fallback: A | undefined): A | undefined =>
  preferred !== undefined ? preferred : fallback

/**
 * Lay `overrides` over `base` field by field (records and batch options are
 * merged key by key): code over environment.
 *
 * @since 0.1.0
 * @category config
 */
export const merge = (base: Options, overrides: Options): Options => ({
  disabled: pick(overrides.disabled, base.disabled),
  exporter: pick(overrides.exporter, base.exporter),
  serviceName: pick(overrides.serviceName, base.serviceName),
  serviceVersion: pick(overrides.serviceVersion, base.serviceVersion),
  resourceAttributes: base.resourceAttributes === undefined && overrides.resourceAttributes === undefined
    ? undefined
    : { ...base.resourceAttributes, ...overrides.resourceAttributes },
  endpoint: pick(overrides.endpoint, base.endpoint),
  tracesEndpoint: pick(overrides.tracesEndpoint, base.tracesEndpoint),
  headers: base.headers === undefined && overrides.headers === undefined
    ? undefined
    : { ...base.headers, ...overrides.headers },
  timeout: pick(overrides.timeout, base.timeout),
  batch: {
    scheduledDelay: pick(overrides.batch?.scheduledDelay, base.batch?.scheduledDelay),
    exportTimeout: pick(overrides.batch?.exportTimeout, base.batch?.exportTimeout),
    maxQueueSize: pick(overrides.batch?.maxQueueSize, base.batch?.maxQueueSize),
    maxExportBatchSize: pick(overrides.batch?.maxExportBatchSize, base.batch?.maxExportBatchSize)
  },
  shutdownTimeout: pick(overrides.shutdownTimeout, base.shutdownTimeout)
})

const tracesUrl = (options: Options): string => {
  if (options.tracesEndpoint !== undefined) return options.tracesEndpoint
  const base = options.endpoint ?? defaultEndpoint
  return `${base.replace(/\/+$/, "")}/v1/traces`
}

/**
 * Decide what to build from {@link Options} (pure). Exporters: `disabled`
 * means none; otherwise the `exporter` option (`none` anywhere in it means
 * none), else `otlp` when an endpoint is set, else none.
 *
 * @example
 * ```ts
 * import { Telemetry } from "@effect-nats/opentelemetry"
 *
 * const settings = Telemetry.resolve({ endpoint: "http://collector:4318", serviceName: "billing" })
 * // settings.exporters: ["otlp"], settings.url: "http://collector:4318/v1/traces"
 * ```
 *
 * @since 0.1.0
 * @category config
 */
export const resolve = (options: Options): Settings => {
  const requested: ReadonlyArray<Exporter> = options.exporter === undefined
    ? (options.endpoint !== undefined || options.tracesEndpoint !== undefined ? ["otlp"] : [])
    : typeof options.exporter === "string"
    ? [options.exporter]
    : options.exporter
  const exporters = options.disabled === true || requested.includes("none")
    ? []
    : [...new Set(requested.filter((e): e is "otlp" | "console" => e !== "none"))]
  const attributes = options.resourceAttributes ?? {}
  const headers: Record<string, Redacted.Redacted> = {}
  for (const [k, v] of Object.entries(options.headers ?? {})) headers[k] = Redacted.isRedacted(v) ? v : Redacted.make(v)
  return {
    exporters,
    serviceName: options.serviceName ?? attributes["service.name"] ?? defaultServiceName,
    serviceVersion: options.serviceVersion ?? attributes["service.version"],
    resourceAttributes: attributes,
    url: exporters.includes("otlp") ? tracesUrl(options) : undefined,
    headers,
    timeout: options.timeout === undefined ? undefined : Duration.decode(options.timeout),
    batch: options.batch ?? {},
    shutdownTimeout: Duration.decode(options.shutdownTimeout ?? "3 seconds")
  }
}

const bufferConfig = (batch: BatchOptions): BufferConfig => {
  const c: BufferConfig = {}
  if (batch.scheduledDelay !== undefined) c.scheduledDelayMillis = Duration.toMillis(batch.scheduledDelay)
  if (batch.exportTimeout !== undefined) c.exportTimeoutMillis = Duration.toMillis(batch.exportTimeout)
  if (batch.maxQueueSize !== undefined) c.maxQueueSize = batch.maxQueueSize
  if (batch.maxExportBatchSize !== undefined) c.maxExportBatchSize = batch.maxExportBatchSize
  return c
}

const spanProcessors = (settings: Settings): Array<SpanProcessor> =>
  settings.exporters.map((exporter): SpanProcessor => {
    if (exporter === "console") return new SimpleSpanProcessor(new ConsoleSpanExporter())
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries(settings.headers)) headers[k] = Redacted.value(v)
    return new BatchSpanProcessor(
      new OTLPTraceExporter({
        ...(settings.url !== undefined ? { url: settings.url } : {}),
        headers,
        ...(settings.timeout !== undefined ? { timeoutMillis: Duration.toMillis(settings.timeout) } : {})
      }),
      bufferConfig(settings.batch)
    )
  })

/**
 * The layer for resolved {@link Settings}: `Layer.empty` when there is no
 * exporter, else the `NodeSdk` tracer with one span processor per exporter.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerSettings = (settings: Settings): Layer.Layer<never> => {
  if (settings.exporters.length === 0) return Layer.empty
  const attributes: Record<string, string> = { ...settings.resourceAttributes }
  const sdk = NodeSdk.layer(() => ({
    resource: {
      serviceName: settings.serviceName,
      ...(settings.serviceVersion !== undefined ? { serviceVersion: settings.serviceVersion } : {}),
      attributes
    },
    spanProcessor: spanProcessors(settings),
    shutdownTimeout: settings.shutdownTimeout
  }))
  const announce = Effect.logDebug(
    `Telemetry: exporting spans of ${settings.serviceName} to ${
      settings.exporters.map((e) => e === "otlp" ? `otlp ${settings.url ?? ""}` : e).join(", ")
    }`
  )
  return Layer.unwrapEffect(Effect.as(announce, sdk))
}

/**
 * Tracing from a `Config` of {@link Options} (by default {@link config}, the
 * `OTEL_*` variables).
 *
 * @example
 * ```ts
 * import { Config } from "effect"
 * import { Telemetry } from "@effect-nats/opentelemetry"
 *
 * // the usual variables, plus an app-specific switch for the console exporter
 * const TelemetryLive = Telemetry.layerConfig(
 *   Config.all([Telemetry.config, Config.boolean("TRACE_TO_CONSOLE").pipe(Config.withDefault(false))]).pipe(
 *     Config.map(([env, toConsole]) => toConsole ? Telemetry.merge(env, { exporter: "console" }) : env)
 *   )
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config<Options> = config
): Layer.Layer<never, ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(options, (o) => layerSettings(resolve(o))))

/**
 * Tracing for a service: the `OTEL_*` variables, overridden by `options`.
 * A no-op when no exporter is asked for.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Effect, Layer } from "effect"
 * import { Telemetry } from "@effect-nats/opentelemetry"
 *
 * // OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 node billing.js
 * const main = Effect.log("up").pipe(Effect.withSpan("billing.start"))
 *
 * main.pipe(Effect.provide(Telemetry.layer({ serviceName: "billing" })), NodeRuntime.runMain)
 *
 * // print spans while developing
 * const DevTelemetry = Telemetry.layer({ exporter: "console" })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<never, ConfigError.ConfigError> =>
  layerConfig(Config.map(config, (env) => merge(env, options)))
