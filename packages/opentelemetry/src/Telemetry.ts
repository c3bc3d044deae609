/**
 * Observability for effect-nats services in one layer, wired at the edge:
 * spans, metrics and logs.
 *
 * - **Spans**: `@effect/opentelemetry`'s tracer with a span exporter (OTLP/HTTP
 *   or console).
 * - **Metrics**: the Effect metric registry (the toolkit's `Metrics`, named after
 *   the OpenTelemetry messaging conventions, and the application's own) read by
 *   OpenTelemetry metric readers: OTLP/HTTP (`@opentelemetry/exporter-metrics-otlp-http`,
 *   every `OTEL_METRIC_EXPORT_INTERVAL`), a Prometheus `/metrics` endpoint
 *   (`@opentelemetry/exporter-prometheus`), or the console.
 * - **Logs**: the default logger is replaced by {@link logger}: every line
 *   written while a span is active carries `trace_id` and `span_id`; `text`
 *   (logfmt) or `json` (one object a line, for log shippers).
 *
 * Configured by the standard `OTEL_*` variables (read with Effect `Config`, so
 * a test can swap the `ConfigProvider`):
 *
 * | variable | meaning |
 * | --- | --- |
 * | `OTEL_SDK_DISABLED` | `true`: export nothing (spans and metrics) |
 * | `OTEL_TRACES_EXPORTER` | comma-separated `otlp`, `console`, `none` |
 * | `OTEL_METRICS_EXPORTER` | comma-separated `otlp`, `prometheus`, `console`, `none` |
 * | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; `/v1/traces` and `/v1/metrics` are appended |
 * | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` | full URL of one signal, used as given |
 * | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_HEADERS` | `key=value,...` (percent-encoded), sent with every export |
 * | `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_TIMEOUT` | export timeout in milliseconds |
 * | `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL` | `http/json` or `http/protobuf` (both served by OTLP/HTTP receivers; data is sent as JSON); `grpc` is refused |
 * | `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_METRIC_EXPORT_TIMEOUT` | milliseconds between two OTLP metric exports (default 60000), and the bound on one |
 * | `OTEL_EXPORTER_PROMETHEUS_HOST`, `OTEL_EXPORTER_PROMETHEUS_PORT` | where `/metrics` is served (default all interfaces, port 9464) |
 * | `OTEL_SERVICE_NAME` | `service.name` of the resource |
 * | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,...` (percent-encoded) resource attributes |
 * | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_EXPORT_TIMEOUT`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | batch span processor tuning (milliseconds, counts) |
 * | `LOG_FORMAT` | `text` (logfmt, default), `json`, or `none` (the loggers are left as they are) |
 *
 * OTLP spans go through a `BatchSpanProcessor` to an OTLP/HTTP exporter
 * (`@opentelemetry/exporter-trace-otlp-http`); console spans through a
 * `SimpleSpanProcessor` (printed as they end). When nothing asks for an
 * exporter of a signal (no endpoint, no `OTEL_TRACES_EXPORTER` /
 * `OTEL_METRICS_EXPORTER`) that signal is not exported: without a span
 * exporter the Effect tracer stays the built-in one, so the toolkit skips its
 * per-message spans altogether (see `Tracing.isRecording` in effect-nats). An
 * explicit `otlp` exporter without an endpoint exports to the spec's default,
 * `http://localhost:4318`.
 *
 * Options given in code win over the environment; leave a field out to let
 * the environment decide. Exporter settings this module does not read
 * (`OTEL_EXPORTER_OTLP_COMPRESSION`, client certificates) are still applied
 * by the OTLP exporters themselves from `process.env`. Pending spans and
 * metrics are flushed when the layer's scope closes (bounded by
 * `shutdownTimeout`).
 *
 * @since 0.1.0
 */
import * as OtelMetrics from "@effect/opentelemetry/Metrics"
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-http"
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http"
import {
  ConsoleMetricExporter,
  type MetricProducer,
  type MetricReader,
  PeriodicExportingMetricReader
} from "@opentelemetry/sdk-metrics"
import {
  BatchSpanProcessor,
  type BufferConfig,
  ConsoleSpanExporter,
  SimpleSpanProcessor,
  type SpanProcessor
} from "@opentelemetry/sdk-trace-base"
import {
  Config,
  ConfigError,
  Context,
  Data,
  Duration,
  Effect,
  Either,
  FiberRef,
  FiberRefs,
  HashMap,
  Inspectable,
  Layer,
  Logger,
  Option,
  Redacted,
  Tracer
} from "effect"
import { Metrics } from "effect-nats"

/**
 * A span exporter: `otlp` (OTLP/HTTP), `console` (stdout), or `none`.
 *
 * @since 0.1.0
 * @category models
 */
export type Exporter = "otlp" | "console" | "none"

/**
 * A metrics exporter: `otlp` (OTLP/HTTP, pushed on an interval),
 * `prometheus` (a `/metrics` endpoint, scraped), `console`, or `none`.
 *
 * @since 0.2.0
 * @category models
 */
export type MetricsExporter = "otlp" | "prometheus" | "console" | "none"

/**
 * The log line format: `text` (logfmt) or `json` (one object a line).
 *
 * @since 0.2.0
 * @category models
 */
export type LogFormat = "text" | "json"

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
 * Metrics export options. Every field is optional; a field left out is read
 * from the environment.
 *
 * @since 0.2.0
 * @category models
 */
export interface MetricsOptions {
  /** One exporter or several (`OTEL_METRICS_EXPORTER`). */
  readonly exporter?: MetricsExporter | ReadonlyArray<MetricsExporter> | undefined
  /** Full OTLP metrics URL, used as given; wins over `endpoint` (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`). */
  readonly endpoint?: string | undefined
  /** Headers of metric exports only (`OTEL_EXPORTER_OTLP_METRICS_HEADERS`), over the common `headers`. */
  readonly headers?: Readonly<Record<string, string | Redacted.Redacted>> | undefined
  /** Timeout of one OTLP request (`OTEL_EXPORTER_OTLP_METRICS_TIMEOUT`, else the common `timeout`). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Time between two OTLP exports (`OTEL_METRIC_EXPORT_INTERVAL`, default 60 s). */
  readonly interval?: Duration.DurationInput | undefined
  /** Bound on one export, OTLP and console (`OTEL_METRIC_EXPORT_TIMEOUT`, default 30 s). */
  readonly exportTimeout?: Duration.DurationInput | undefined
  /** Interface the Prometheus endpoint listens on (`OTEL_EXPORTER_PROMETHEUS_HOST`, default all). */
  readonly prometheusHost?: string | undefined
  /** Port of the Prometheus endpoint (`OTEL_EXPORTER_PROMETHEUS_PORT`, default 9464). */
  readonly prometheusPort?: number | undefined
}

/**
 * What to export and where. Every field is optional; a field left out is
 * read from the environment (see the module documentation).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Turn all export off (`OTEL_SDK_DISABLED`). */
  readonly disabled?: boolean | undefined
  /** One span exporter or several (`OTEL_TRACES_EXPORTER`). */
  readonly exporter?: Exporter | ReadonlyArray<Exporter> | undefined
  /** The resource's `service.name` (`OTEL_SERVICE_NAME`). */
  readonly serviceName?: string | undefined
  /** The resource's `service.version`. */
  readonly serviceVersion?: string | undefined
  /** Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES`); merged over the environment's. */
  readonly resourceAttributes?: Readonly<Record<string, string>> | undefined
  /** OTLP base URL, `/v1/traces` and `/v1/metrics` are appended (`OTEL_EXPORTER_OTLP_ENDPOINT`). */
  readonly endpoint?: string | undefined
  /** Full OTLP traces URL, used as given; wins over `endpoint` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). */
  readonly tracesEndpoint?: string | undefined
  /** Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`); merged over the environment's. */
  readonly headers?: Readonly<Record<string, string | Redacted.Redacted>> | undefined
  /** Headers of span exports only (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`), over `headers`. */
  readonly tracesHeaders?: Readonly<Record<string, string | Redacted.Redacted>> | undefined
  /** Timeout of one OTLP span request (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`, default 10 s). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Batch span processor tuning (`OTEL_BSP_*`). */
  readonly batch?: BatchOptions | undefined
  /** Metrics export. */
  readonly metrics?: MetricsOptions | undefined
  /**
   * Log line format (`LOG_FORMAT`, default `text`): the layer replaces
   * Effect's default logger with {@link logger}. `none` leaves the loggers
   * alone (when the application installs its own: two replacements of the
   * default logger would both write).
   */
  readonly logFormat?: LogFormat | "none" | undefined
  /** Bound on the final flush when the layer's scope closes (default 3 s). */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
}

/**
 * The resolved metrics configuration.
 *
 * @since 0.2.0
 * @category models
 */
export interface MetricsSettings {
  /** The metric readers to install; empty means no metrics export. */
  readonly exporters: ReadonlyArray<"otlp" | "prometheus" | "console">
  /** The OTLP metrics URL (set when `exporters` contains `otlp`). */
  readonly url: string | undefined
  readonly headers: Readonly<Record<string, Redacted.Redacted>>
  readonly timeout: Duration.Duration | undefined
  readonly interval: Duration.Duration
  readonly exportTimeout: Duration.Duration | undefined
  /** The Prometheus endpoint's interface (undefined: all) and port. */
  readonly prometheus: { readonly host: string | undefined; readonly port: number }
}

/**
 * The resolved configuration: what {@link layer} builds.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  /** The span exporters to install; empty means no span export. */
  readonly exporters: ReadonlyArray<"otlp" | "console">
  readonly serviceName: string
  readonly serviceVersion: string | undefined
  readonly resourceAttributes: Readonly<Record<string, string>>
  /** The OTLP traces URL (set when `exporters` contains `otlp`). */
  readonly url: string | undefined
  /** The headers of span exports. */
  readonly headers: Readonly<Record<string, Redacted.Redacted>>
  readonly timeout: Duration.Duration | undefined
  readonly batch: BatchOptions
  readonly metrics: MetricsSettings
  readonly logFormat: LogFormat | "none"
  readonly shutdownTimeout: Duration.Duration
}

/**
 * A metrics endpoint that could not start (e.g. its port is taken).
 *
 * @since 0.2.0
 * @category errors
 */
export class TelemetryError extends Data.TaggedError("TelemetryError")<{
  readonly reason: "PrometheusListen"
  readonly message: string
  readonly cause?: unknown
}> {}

/** The spec's default OTLP/HTTP endpoint. */
const defaultEndpoint = "http://localhost:4318"
const defaultServiceName = "unknown_service:node"
const defaultPrometheusPort = 9464

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

/** A comma-separated list of names out of `allowed`. */
const parseList = <A extends string>(name: string, allowed: ReadonlyArray<A>) =>
(text: string): Either.Either<ReadonlyArray<A>, ConfigError.ConfigError> => {
  const out: Array<A> = []
  for (const raw of text.split(",")) {
    const item = raw.trim().toLowerCase()
    if (item === "") continue
    if (!(allowed as ReadonlyArray<string>).includes(item)) {
      return Either.left(invalid(name, `unsupported exporter "${raw.trim()}" (supported: ${allowed.join(", ")})`))
    }
    out.push(item as A)
  }
  return Either.right(out)
}

const list = <A extends string>(name: string, allowed: ReadonlyArray<A>) =>
  Config.string(name).pipe(Config.mapOrFail(parseList(name, allowed)), Config.option)

const protocol = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((text): Either.Either<string, ConfigError.ConfigError> => {
      const p = text.trim().toLowerCase()
      return p === "http/json" || p === "http/protobuf"
        ? Either.right(p)
        : Either.left(invalid(name, `unsupported OTLP protocol "${text}": data is sent over OTLP/HTTP (http/json, port 4318)`))
    }),
    Config.option
  )

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

const toDuration = (ms: number | undefined) => ms === undefined ? undefined : Duration.millis(ms)

const redactAll = (record: Readonly<Record<string, string>> | undefined) =>
  record === undefined ? undefined : Object.fromEntries(Object.entries(record).map(([k, v]) => [k, Redacted.make(v)]))

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
 *   yield* Effect.log(`spans to ${settings.exporters.join(", ") || "nothing"}, metrics to ${settings.metrics.exporters.join(", ") || "nothing"}`)
 * })
 * ```
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  disabled: Config.string("OTEL_SDK_DISABLED").pipe(Config.mapOrFail(parseDisabled), Config.withDefault(false)),
  exporter: list("OTEL_TRACES_EXPORTER", ["otlp", "console", "none"] as const),
  metricsExporter: list("OTEL_METRICS_EXPORTER", ["otlp", "prometheus", "console", "none"] as const),
  serviceName: Config.option(Config.nonEmptyString("OTEL_SERVICE_NAME")),
  resourceAttributes: keyValues("OTEL_RESOURCE_ATTRIBUTES"),
  endpoint: Config.option(Config.nonEmptyString("OTEL_EXPORTER_OTLP_ENDPOINT")),
  tracesEndpoint: Config.option(Config.nonEmptyString("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
  metricsEndpoint: Config.option(Config.nonEmptyString("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")),
  headers: keyValues("OTEL_EXPORTER_OTLP_HEADERS"),
  tracesHeaders: keyValues("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
  metricsHeaders: keyValues("OTEL_EXPORTER_OTLP_METRICS_HEADERS"),
  timeout: millis("OTEL_EXPORTER_OTLP_TIMEOUT"),
  tracesTimeout: millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
  metricsTimeout: millis("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"),
  // read to refuse grpc: both HTTP protocols are served by OTLP/HTTP receivers
  protocol: protocol("OTEL_EXPORTER_OTLP_PROTOCOL"),
  tracesProtocol: protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
  metricsProtocol: protocol("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"),
  scheduledDelay: millis("OTEL_BSP_SCHEDULE_DELAY"),
  exportTimeout: millis("OTEL_BSP_EXPORT_TIMEOUT"),
  maxQueueSize: positive("OTEL_BSP_MAX_QUEUE_SIZE"),
  maxExportBatchSize: positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
  metricInterval: positive("OTEL_METRIC_EXPORT_INTERVAL"),
  metricExportTimeout: positive("OTEL_METRIC_EXPORT_TIMEOUT"),
  prometheusHost: Config.option(Config.nonEmptyString("OTEL_EXPORTER_PROMETHEUS_HOST")),
  prometheusPort: Config.option(Config.port("OTEL_EXPORTER_PROMETHEUS_PORT")),
  logFormat: Config.option(Config.literal("text", "json", "none")("LOG_FORMAT"))
}).pipe(Config.map((c): Options => ({
  disabled: c.disabled,
  exporter: Option.getOrUndefined(c.exporter),
  serviceName: Option.getOrUndefined(c.serviceName),
  resourceAttributes: Option.getOrUndefined(c.resourceAttributes),
  endpoint: Option.getOrUndefined(c.endpoint),
  tracesEndpoint: Option.getOrUndefined(c.tracesEndpoint),
  headers: redactAll(Option.getOrUndefined(c.headers)),
  tracesHeaders: redactAll(Option.getOrUndefined(c.tracesHeaders)),
  timeout: toDuration(firstSome(c.tracesTimeout, c.timeout)),
  batch: {
    scheduledDelay: toDuration(Option.getOrUndefined(c.scheduledDelay)),
    exportTimeout: toDuration(Option.getOrUndefined(c.exportTimeout)),
    maxQueueSize: Option.getOrUndefined(c.maxQueueSize),
    maxExportBatchSize: Option.getOrUndefined(c.maxExportBatchSize)
  },
  metrics: {
    exporter: Option.getOrUndefined(c.metricsExporter),
    endpoint: Option.getOrUndefined(c.metricsEndpoint),
    headers: redactAll(Option.getOrUndefined(c.metricsHeaders)),
    timeout: toDuration(firstSome(c.metricsTimeout, c.timeout)),
    interval: toDuration(Option.getOrUndefined(c.metricInterval)),
    exportTimeout: toDuration(Option.getOrUndefined(c.metricExportTimeout)),
    prometheusHost: Option.getOrUndefined(c.prometheusHost),
    prometheusPort: Option.getOrUndefined(c.prometheusPort)
  },
  logFormat: Option.getOrUndefined(c.logFormat)
})))

const mergeRecords = <A>(base: Readonly<Record<string, A>> | undefined, over: Readonly<Record<string, A>> | undefined) =>
  base === undefined && over === undefined ? undefined : { ...base, ...over }

/** Field by field: the defined fields of `over` replace those of `base` (one level deep). */
const mergeFields = <A extends object>(base: A | undefined, over: A | undefined): A => {
  const out: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(over ?? {})) if (v !== undefined) out[k] = v
  return out as A
}

/**
 * Lay `overrides` over `base` field by field (records, batch and metrics
 * options are merged key by key): code over environment.
 *
 * @since 0.1.0
 * @category config
 */
export const merge = (base: Options, overrides: Options): Options => ({
  ...mergeFields(base, overrides),
  resourceAttributes: mergeRecords(base.resourceAttributes, overrides.resourceAttributes),
  headers: mergeRecords(base.headers, overrides.headers),
  tracesHeaders: mergeRecords(base.tracesHeaders, overrides.tracesHeaders),
  batch: mergeFields(base.batch, overrides.batch),
  metrics: {
    ...mergeFields(base.metrics, overrides.metrics),
    headers: mergeRecords(base.metrics?.headers, overrides.metrics?.headers)
  }
})

const signalUrl = (options: Options, own: string | undefined, path: string): string =>
  own ?? `${(options.endpoint ?? defaultEndpoint).replace(/\/+$/, "")}${path}`

/** The exporters asked for: the option (`none` anywhere means none), else `otlp` when an endpoint is set, else none. */
const exportersOf = <A extends string>(
  disabled: boolean | undefined,
  option: A | "none" | ReadonlyArray<A | "none"> | undefined,
  endpointSet: boolean
): ReadonlyArray<A> => {
  const requested: ReadonlyArray<A | "none"> = option === undefined
    ? (endpointSet ? ["otlp" as A] : [])
    : typeof option === "string"
    ? [option]
    : option as ReadonlyArray<A | "none">
  return disabled === true || requested.includes("none")
    ? []
    : [...new Set(requested.filter((e): e is A => e !== "none"))]
}

const redacted = (...records: ReadonlyArray<Readonly<Record<string, string | Redacted.Redacted>> | undefined>) => {
  const out: Record<string, Redacted.Redacted> = {}
  for (const record of records) {
    for (const [k, v] of Object.entries(record ?? {})) out[k] = Redacted.isRedacted(v) ? v : Redacted.make(v)
  }
  return out
}

const decodeOptional = (d: Duration.DurationInput | undefined) => d === undefined ? undefined : Duration.decode(d)

/**
 * Decide what to build from {@link Options} (pure). Per signal: `disabled`
 * means none; otherwise the signal's `exporter` option (`none` anywhere in it
 * means none), else `otlp` when an endpoint is set, else none.
 *
 * @example
 * ```ts
 * import { Telemetry } from "@effect-nats/opentelemetry"
 *
 * const settings = Telemetry.resolve({ endpoint: "http://collector:4318", serviceName: "billing" })
 * // settings.exporters: ["otlp"], settings.url: "http://collector:4318/v1/traces"
 * // settings.metrics.exporters: ["otlp"], settings.metrics.url: "http://collector:4318/v1/metrics"
 * ```
 *
 * @since 0.1.0
 * @category config
 */
export const resolve = (options: Options): Settings => {
  const exporters = exportersOf<"otlp" | "console">(
    options.disabled,
    options.exporter,
    options.endpoint !== undefined || options.tracesEndpoint !== undefined
  )
  const m = options.metrics ?? {}
  const metricsExporters = exportersOf<"otlp" | "prometheus" | "console">(
    options.disabled,
    m.exporter,
    options.endpoint !== undefined || m.endpoint !== undefined
  )
  const attributes = options.resourceAttributes ?? {}
  return {
    exporters,
    serviceName: options.serviceName ?? attributes["service.name"] ?? defaultServiceName,
    serviceVersion: options.serviceVersion ?? attributes["service.version"],
    resourceAttributes: attributes,
    url: exporters.includes("otlp") ? signalUrl(options, options.tracesEndpoint, "/v1/traces") : undefined,
    headers: redacted(options.headers, options.tracesHeaders),
    timeout: decodeOptional(options.timeout),
    batch: options.batch ?? {},
    metrics: {
      exporters: metricsExporters,
      url: metricsExporters.includes("otlp") ? signalUrl(options, m.endpoint, "/v1/metrics") : undefined,
      headers: redacted(options.headers, m.headers),
      timeout: decodeOptional(m.timeout ?? options.timeout),
      interval: Duration.decode(m.interval ?? "60 seconds"),
      exportTimeout: decodeOptional(m.exportTimeout),
      prometheus: { host: m.prometheusHost, port: m.prometheusPort ?? defaultPrometheusPort }
    },
    logFormat: options.logFormat ?? "text",
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

/** The options of an OTLP/HTTP exporter (traces or metrics). */
const otlpOptions = (url: string | undefined, headers: Readonly<Record<string, Redacted.Redacted>>, timeout: Duration.Duration | undefined) => ({
  ...(url !== undefined ? { url } : {}),
  headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, Redacted.value(v)])),
  ...(timeout !== undefined ? { timeoutMillis: Duration.toMillis(timeout) } : {})
})

const spanProcessors = (settings: Settings): Array<SpanProcessor> =>
  settings.exporters.map((exporter): SpanProcessor =>
    exporter === "console"
      ? new SimpleSpanProcessor(new ConsoleSpanExporter())
      : new BatchSpanProcessor(
        new OTLPTraceExporter(otlpOptions(settings.url, settings.headers, settings.timeout)),
        bufferConfig(settings.batch)
      )
  )

/** Start the Prometheus endpoint; fails when it cannot listen. */
const prometheusReader = (m: MetricsSettings) =>
  Effect.async<PrometheusExporter, TelemetryError>((resume) => {
    const { host, port } = m.prometheus
    const exporter: PrometheusExporter = new PrometheusExporter(
      { ...(host !== undefined ? { host } : {}), port },
      (error) =>
        resume(
          error === undefined || error === null
            ? Effect.succeed(exporter)
            : Effect.zipRight(
              Effect.promise(() => exporter.shutdown().catch(() => undefined)),
              Effect.fail(new TelemetryError({
                reason: "PrometheusListen",
                message: `cannot serve Prometheus metrics on ${host ?? "*"}:${port}: ${String(error)}`,
                cause: error
              }))
            )
        )
    )
  })

const metricReader = (m: MetricsSettings, exporter: "otlp" | "prometheus" | "console"): Effect.Effect<MetricReader, TelemetryError> =>
  exporter === "prometheus"
    ? prometheusReader(m)
    : Effect.sync((): MetricReader =>
      new PeriodicExportingMetricReader({
        exporter: exporter === "otlp" ? new OTLPMetricExporter(otlpOptions(m.url, m.headers, m.timeout)) : new ConsoleMetricExporter(),
        exportIntervalMillis: Duration.toMillis(m.interval),
        ...(m.exportTimeout !== undefined
          ? { exportTimeoutMillis: Math.min(Duration.toMillis(m.exportTimeout), Duration.toMillis(m.interval)) }
          : {})
      })
    )

/** Effect metrics carry no unit: give the toolkit's theirs (`Metrics.units`). */
const withUnits = (producer: MetricProducer): MetricProducer => ({
  collect: (options) =>
    producer.collect(options).then((collected) => ({
      ...collected,
      resourceMetrics: {
        ...collected.resourceMetrics,
        scopeMetrics: collected.resourceMetrics.scopeMetrics.map((scope) => ({
          ...scope,
          metrics: scope.metrics.map((metric) => {
            const unit = Metrics.units[metric.descriptor.name]
            return unit === undefined ? metric : { ...metric, descriptor: { ...metric.descriptor, unit } }
          })
        }))
      }
    }))
})

/** The Effect metric registry, read by the configured readers (needs the SDK's Resource). */
const metricsLayer = (settings: Settings) =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const m = settings.metrics
    const readers: Array<MetricReader> = yield* Effect.forEach(m.exporters, (e) => metricReader(m, e))
    const [first, ...rest] = readers
    if (first === undefined) return
    const producer = withUnits(yield* OtelMetrics.makeProducer)
    yield* OtelMetrics.registerProducer(producer, () => [first, ...rest])
  }))

/**
 * A logger whose lines carry `trace_id` and `span_id` when a span is active
 * (the innermost span of the fiber's context): `text` writes logfmt, with
 * them among the annotations; `json` writes one object a line, with them as
 * top-level fields (what log shippers join on). Written with `console.log`
 * of the fiber's `Console` (`console.error` with `stderr: true`).
 *
 * @example
 * ```ts
 * import { Effect, Logger } from "effect"
 * import { Telemetry } from "@effect-nats/opentelemetry"
 *
 * const JsonLogs = Logger.replace(Logger.defaultLogger, Telemetry.logger("json"))
 * // {"message":"charged","logLevel":"INFO",...,"trace_id":"4bf9...","span_id":"00f0..."}
 * Effect.log("charged").pipe(Effect.withSpan("charge"), Effect.provide(JsonLogs))
 * ```
 *
 * @since 0.2.0
 * @category logging
 */
export const logger = (
  format: LogFormat = "text",
  options: { readonly stderr?: boolean | undefined } = {}
): Logger.Logger<unknown, void> => {
  const spanOf = (context: FiberRefs.FiberRefs) =>
    Context.getOption(FiberRefs.getOrDefault(context, FiberRef.currentContext), Tracer.ParentSpan)
  const line: Logger.Logger<unknown, string> = format === "json"
    ? Logger.make((options) => {
      const span = spanOf(options.context)
      const fields = Logger.structuredLogger.log(options)
      return Inspectable.stringifyCircular(
        Option.isSome(span) ? { ...fields, trace_id: span.value.traceId, span_id: span.value.spanId } : fields
      )
    })
    : Logger.make((options) => {
      const span = spanOf(options.context)
      return Logger.logfmtLogger.log(
        Option.isSome(span)
          ? {
            ...options,
            annotations: HashMap.set(HashMap.set(options.annotations, "trace_id", span.value.traceId), "span_id", span.value.spanId)
          }
          : options
      )
    })
  return options.stderr === true ? Logger.withConsoleError(line) : Logger.withConsoleLog(line)
}

/**
 * The layer for resolved {@link Settings}: the {@link logger} in place of the
 * default one, the `NodeSdk` tracer with one span processor per span exporter
 * (when there is one), and one metric reader per metrics exporter.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerSettings = (settings: Settings): Layer.Layer<never, TelemetryError> => {
  const logs = settings.logFormat === "none" ? Layer.empty : Logger.replace(Logger.defaultLogger, logger(settings.logFormat))
  const m = settings.metrics
  if (settings.exporters.length === 0 && m.exporters.length === 0) return logs
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
  const where = (otlpUrl: string | undefined) => (e: string) =>
    e === "otlp"
      ? `otlp ${otlpUrl ?? ""}`
      : e === "prometheus"
      ? `prometheus http://${m.prometheus.host ?? "0.0.0.0"}:${m.prometheus.port}/metrics`
      : e
  const announce = Effect.logDebug(
    `Telemetry: ${settings.serviceName}: spans to ${settings.exporters.map(where(settings.url)).join(", ") || "nothing"}; metrics to ${
      m.exporters.map(where(m.url)).join(", ") || "nothing"
    }`
  )
  return Layer.mergeAll(logs, Layer.unwrapEffect(Effect.as(announce, Layer.provideMerge(metricsLayer(settings), sdk))))
}

/**
 * Observability from a `Config` of {@link Options} (by default {@link config},
 * the `OTEL_*` variables).
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
): Layer.Layer<never, ConfigError.ConfigError | TelemetryError> =>
  Layer.unwrapEffect(Effect.map(options, (o) => layerSettings(resolve(o))))

/**
 * Observability for a service: spans and metrics exported as the `OTEL_*`
 * variables say, overridden by `options`, and log lines that carry the
 * trace. Exports nothing when nothing is asked for.
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
 * // spans to the console, Prometheus metrics on :9464/metrics, JSON logs
 * const DevTelemetry = Telemetry.layer({ exporter: "console", metrics: { exporter: "prometheus" }, logFormat: "json" })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<never, ConfigError.ConfigError | TelemetryError> =>
  layerConfig(Config.map(config, (env) => merge(env, options)))
