import { Telemetry } from "@effect-nats/opentelemetry"
import { NatsTestServer } from "@effect-nats/testing"
import { describe, expect, it, vi } from "@effect/vitest"
import { ConfigProvider, Context, Deferred, Duration, Effect, Exit, Layer, Redacted, Schema } from "effect"
import {
  Command,
  CommandClient,
  CommandService,
  Consumer,
  DeadLetter,
  Event,
  Handler,
  JetStream,
  Metrics,
  Publisher,
  Tracing
} from "effect-nats"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

// ---------------------------------------------------------------------------
// a tiny OTLP/HTTP receiver: records every request, decodes spans and metrics
// ---------------------------------------------------------------------------

interface Received {
  readonly method: string
  readonly url: string
  readonly headers: http.IncomingHttpHeaders
  readonly body: string
}

interface OtlpValue {
  readonly stringValue?: string
}
type OtlpAttributes = ReadonlyArray<{ readonly key: string; readonly value: OtlpValue }>
interface OtlpSpan {
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly kind: number
  readonly attributes?: OtlpAttributes
}
interface OtlpDataPoint {
  readonly attributes?: OtlpAttributes
  readonly asInt?: number | string
  readonly asDouble?: number
  readonly count?: number | string
  readonly sum?: number
}
interface OtlpMetric {
  readonly name: string
  readonly unit?: string
  readonly sum?: { readonly dataPoints: ReadonlyArray<OtlpDataPoint>; readonly isMonotonic?: boolean }
  readonly gauge?: { readonly dataPoints: ReadonlyArray<OtlpDataPoint> }
  readonly histogram?: { readonly dataPoints: ReadonlyArray<OtlpDataPoint> }
}
interface OtlpRequest {
  readonly resourceSpans?: ReadonlyArray<{
    readonly resource: { readonly attributes: OtlpAttributes }
    readonly scopeSpans: ReadonlyArray<{ readonly spans: ReadonlyArray<OtlpSpan> }>
  }>
  readonly resourceMetrics?: ReadonlyArray<{
    readonly resource: { readonly attributes: OtlpAttributes }
    readonly scopeMetrics: ReadonlyArray<{ readonly metrics: ReadonlyArray<OtlpMetric> }>
  }>
}

class Collector extends Context.Tag("test/Collector")<Collector, {
  readonly url: string
  readonly requests: () => ReadonlyArray<Received>
}>() {}

/** An HTTP server on a free loopback port for the scope. */
const listen = (handler: http.RequestListener) =>
  Effect.acquireRelease(
    Effect.async<http.Server>((resume) => {
      const s = http.createServer(handler)
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) =>
      Effect.async<void>((resume) => {
        s.closeAllConnections()
        s.close(() => resume(Effect.void))
      })
  )

const CollectorLive = Layer.scoped(
  Collector,
  Effect.gen(function*() {
    const received: Array<Received> = []
    const server = yield* listen((req, res) => {
      const chunks: Array<Buffer> = []
      req.on("data", (c: Buffer) => chunks.push(c))
      req.on("end", () => {
        received.push({
          method: req.method ?? "",
          url: req.url ?? "",
          headers: req.headers,
          body: Buffer.concat(chunks).toString("utf8")
        })
        res.writeHead(200, { "content-type": "application/json" })
        res.end("{}")
      })
    })
    const { port } = server.address() as AddressInfo
    return { url: `http://127.0.0.1:${port}`, requests: () => [...received] }
  })
)

const decoded = (requests: ReadonlyArray<Received>) => requests.map((r) => JSON.parse(r.body) as OtlpRequest)

const spansOf = (requests: ReadonlyArray<Received>) =>
  decoded(requests).flatMap((body) =>
    (body.resourceSpans ?? []).flatMap((rs) =>
      rs.scopeSpans.flatMap((ss) => ss.spans.map((span) => ({ span, resource: rs.resource })))
    )
  )

const metricsOf = (requests: ReadonlyArray<Received>) =>
  decoded(requests).flatMap((body) =>
    (body.resourceMetrics ?? []).flatMap((rm) =>
      rm.scopeMetrics.flatMap((sm) => sm.metrics.map((metric) => ({ metric, resource: rm.resource })))
    )
  )

const attribute = (attrs: OtlpAttributes | undefined, key: string) => attrs?.find((a) => a.key === key)?.value.stringValue

const env = (entries: Record<string, string>) => ConfigProvider.fromMap(new Map(Object.entries(entries)))

/** A free loopback port (for the Prometheus endpoint, which takes a port, not 0). */
const freePort = Effect.scoped(Effect.map(listen(() => undefined), (s) => (s.address() as AddressInfo).port))

const httpGet = (url: string) =>
  Effect.tryPromise(() => fetch(url).then(async (r) => ({ status: r.status, type: r.headers.get("content-type"), body: await r.text() })))

/** The samples of a Prometheus text exposition: name, labels, value (comments skipped). */
const parsePrometheus = (text: string) => {
  const samples: Array<{ name: string; labels: Record<string, string>; value: number }> = []
  const types = new Map<string, string>()
  for (const line of text.split("\n")) {
    if (line.startsWith("# TYPE ")) {
      const [, , name, type] = line.split(" ")
      types.set(name!, type!)
    }
    if (line.startsWith("#") || line.trim() === "") continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/.exec(line)
    if (match === null) throw new Error(`not a Prometheus sample: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\n/g, "\n").replace(/\\"/g, "\"").replace(/\\\\/g, "\\")
    }
    samples.push({ name: match[1]!, labels, value: Number(match[3]) })
  }
  return { samples, types }
}

// ---------------------------------------------------------------------------
// events and commands
// ---------------------------------------------------------------------------

const OrderPlaced = Event.make({
  type: "shop.order.placed",
  aggregate: "Order",
  schema: Schema.Struct({ orderId: Schema.String }),
  aggregateId: (d) => d.orderId
})

const Reserve = Command.make({
  service: "stock",
  aggregate: "order",
  name: "reserve",
  payload: Schema.Struct({ quantity: Schema.Number }),
  success: Schema.Struct({ reservation: Schema.String })
})

const reserve = CommandService.handler(Reserve, (payload, request) =>
  Effect.succeed({ reservation: `${request.aggregateId}:${payload.quantity}` }))

const NatsLive = Layer.mergeAll(DeadLetter.layer(), Publisher.layer(), CommandClient.layer({ timeout: "5 seconds" })).pipe(
  Layer.provideMerge(NatsTestServer.layerJetStream())
)

describe("Telemetry", () => {
  it.live("a publish → consume → command round trip: its spans and metrics reach an OTLP/HTTP receiver, Prometheus serves the metrics", () =>
    Effect.gen(function*() {
      const collector = yield* Collector
      const prometheusPort = yield* freePort
      const reserved = yield* Deferred.make<string>()
      let scrape = { status: 0, type: null as string | null, body: "" }

      yield* Effect.gen(function*() {
        expect(yield* Tracing.isRecording).toBe(true)
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "SHOP", subjects: ["shop.>"], storage: "memory" })
        yield* CommandService.make({ name: "stock", version: "1.0.0", commands: [reserve] })
        const client = yield* CommandClient.CommandClient
        yield* Consumer.make({
          stream: "SHOP",
          durable: "telemetry",
          handlers: [
            Handler.make(OrderPlaced, (e) =>
              Effect.flatMap(
                client.execute(Reserve, e.data.orderId, { quantity: 2 }),
                (r) => Deferred.succeed(reserved, r.reservation)
              ))
          ]
        })
        const publisher = yield* Publisher.Publisher
        yield* publisher.publish(OrderPlaced, { orderId: "o-1" }).pipe(Effect.withSpan("checkout"))
        expect(yield* Deferred.await(reserved).pipe(Effect.timeout("10 seconds"))).toBe("o-1:2")
        // the process span ends after the handler: wait until the message is settled
        yield* Effect.sleep("100 millis")
        scrape = yield* httpGet(`http://127.0.0.1:${prometheusPort}/metrics`)
      }).pipe(
        Effect.scoped,
        Effect.provide(NatsLive),
        // the layer's scope closes here: spans and metrics are flushed to the receiver
        Effect.provide(Telemetry.layer()),
        Effect.withConfigProvider(env({
          OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
          OTEL_METRICS_EXPORTER: "otlp,prometheus",
          OTEL_EXPORTER_PROMETHEUS_HOST: "127.0.0.1",
          OTEL_EXPORTER_PROMETHEUS_PORT: String(prometheusPort),
          OTEL_SERVICE_NAME: "shop-test",
          OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test,team=pay%2Cments",
          OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20s3cret"
        }))
      )

      const requests = collector.requests()
      expect(new Set(requests.map((r) => r.url))).toEqual(new Set(["/v1/traces", "/v1/metrics"]))
      for (const r of requests) {
        expect(r.method).toBe("POST")
        expect(r.headers["content-type"]).toBe("application/json")
        expect(r.headers["authorization"]).toBe("Bearer s3cret")
      }

      // spans: one trace from the checkout to the command's server span
      const spans = spansOf(requests.filter((r) => r.url === "/v1/traces"))
      const byName = (name: string) => {
        const found = spans.filter((s) => s.span.name === name)
        expect(found.length, `${name} in ${spans.map((s) => s.span.name).join(", ")}`).toBe(1)
        return found[0]!
      }
      const checkout = byName("checkout")
      const publish = byName("publish shop.order.placed")
      const process = byName("process shop.order.placed")
      expect(publish.span.traceId).toBe(checkout.span.traceId)
      expect(publish.span.parentSpanId).toBe(checkout.span.spanId)
      // the trace crossed NATS: the consumer's span continues the producer's, the command's spans continue it
      expect(process.span.traceId).toBe(publish.span.traceId)
      expect(process.span.parentSpanId).toBe(publish.span.spanId)
      const commandSpans = spans.filter((s) => s.span.name.includes(Reserve.subject))
      expect(commandSpans.map((s) => s.span.kind).sort()).toEqual([2, 3]) // SERVER, CLIENT
      const commandClient = commandSpans.find((s) => s.span.kind === 3)!
      const commandServer = commandSpans.find((s) => s.span.kind === 2)!
      expect(commandClient.span.traceId).toBe(checkout.span.traceId)
      expect(commandClient.span.parentSpanId).toBe(process.span.spanId)
      expect(commandServer.span.traceId).toBe(checkout.span.traceId)
      expect(commandServer.span.parentSpanId).toBe(commandClient.span.spanId)
      expect(attribute(process.span.attributes, "messaging.system")).toBe("nats")
      expect(attribute(process.span.attributes, "messaging.consumer.group.name")).toBe("telemetry")
      expect(attribute(publish.span.attributes, "messaging.destination.name")).toBe("shop.order.placed")
      expect(publish.span.kind).toBe(4) // PRODUCER
      expect(process.span.kind).toBe(5) // CONSUMER
      const resource = checkout.resource.attributes
      expect(attribute(resource, "service.name")).toBe("shop-test")
      expect(attribute(resource, "deployment.environment")).toBe("test")
      expect(attribute(resource, "team")).toBe("pay,ments")

      // metrics over OTLP: the messaging conventions' names, units and attributes
      const metrics = metricsOf(requests.filter((r) => r.url === "/v1/metrics"))
      expect(metrics.length).toBeGreaterThan(0)
      expect(attribute(metrics[0]!.resource.attributes, "service.name")).toBe("shop-test")
      const last = (name: string) => {
        const found = metrics.filter((m) => m.metric.name === name)
        expect(found.length, `${name} in ${[...new Set(metrics.map((m) => m.metric.name))].join(", ")}`).toBeGreaterThan(0)
        return found[found.length - 1]!.metric
      }
      const value = (p: OtlpDataPoint) => Number(p.asInt ?? p.asDouble ?? 0)
      const sent = last("messaging.client.sent.messages")
      expect(sent.unit).toBe("{message}")
      expect(sent.sum?.isMonotonic).toBe(true)
      const published = sent.sum!.dataPoints.find((p) =>
        attribute(p.attributes, "messaging.operation.name") === "publish" && attribute(p.attributes, "error.type") === undefined
      )!
      expect(attribute(published.attributes, "messaging.system")).toBe("nats")
      expect(value(published)).toBe(1)
      const consumed = last("messaging.client.consumed.messages").sum!.dataPoints
      expect(consumed.map(value)).toEqual([1])
      expect(attribute(consumed[0]!.attributes, "messaging.system")).toBe("nats")
      const settled = last("messaging.nats.settled.messages").sum!.dataPoints
      expect(value(settled.find((p) => attribute(p.attributes, "messaging.nats.settle.outcome") === "ack")!)).toBe(1)
      const duration = last("messaging.process.duration")
      expect(duration.unit).toBe("s")
      const durationPoint = duration.histogram!.dataPoints[0]!
      expect(Number(durationPoint.count)).toBe(1)
      expect(durationPoint.sum).toBeGreaterThan(0)
      expect(durationPoint.sum).toBeLessThan(5) // seconds, not milliseconds

      // the Prometheus endpoint served the same registry while the service ran
      expect(scrape.status).toBe(200)
      expect(scrape.type).toMatch(/^text\/plain/)
      const { samples, types } = parsePrometheus(scrape.body)
      const sample = (name: string, labels: Record<string, string> = {}) =>
        samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      expect(types.get("messaging_client_consumed_messages_total")).toBe("counter")
      expect(sample("messaging_client_consumed_messages_total", { messaging_system: "nats" })?.value).toBe(1)
      expect(
        sample("messaging_client_sent_messages_total", { messaging_system: "nats", messaging_operation_name: "publish" })?.value
      ).toBe(1)
      expect(sample("messaging_nats_settled_messages_total", { messaging_nats_settle_outcome: "ack" })?.value).toBe(1)
      expect(types.get("messaging_process_duration")).toBe("histogram")
      expect(sample("messaging_process_duration_count")?.value).toBe(1)
      expect(sample("messaging_process_duration_bucket", { le: "+Inf" })?.value).toBe(1)
      expect(scrape.body).toContain("# UNIT messaging_process_duration s")
    }).pipe(Effect.provide(CollectorLive)))

  it("the Grafana dashboard queries every toolkit metric, by the names the Prometheus exporter gives them", () => {
    const dashboard = JSON.parse(
      fs.readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../grafana/effect-nats.json"), "utf8")
    ) as { readonly panels: ReadonlyArray<{ readonly targets?: ReadonlyArray<{ readonly expr: string }> }> }
    const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr)
    const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\bmessaging_[a-z_]+(?=\{)/g)].map((m) => m[0])))
    // Prometheus: dots become underscores; counters get _total, histograms _bucket/_count/_sum
    const base = (name: string) => name.replace(/_(total|bucket|count|sum)$/, "")
    const known = new Set(Object.values(Metrics.Names).map((n) => n.replace(/\./g, "_")))
    for (const name of used) expect(known, name).toContain(base(name))
    expect(new Set([...used].map(base))).toEqual(known)
  })

  it.live("a log line written in a span carries the trace_id and span_id of that span (JSON and text formats)", () =>
    Effect.gen(function*() {
      const collector = yield* Collector
      const lines: Array<string> = []
      const spy = vi.spyOn(globalThis.console, "log").mockImplementation((...args: Array<unknown>) => {
        lines.push(args.map(String).join(" "))
      })
      yield* Effect.gen(function*() {
        yield* Effect.log("outside any span")
        yield* Effect.log("charged").pipe(Effect.annotateLogs("invoice", "i-1"), Effect.withSpan("charge"))
      }).pipe(
        Effect.provide(Telemetry.layer({ logFormat: "json", metrics: { exporter: "none" } })),
        Effect.withConfigProvider(env({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.url })),
        Effect.ensuring(Effect.sync(() => spy.mockRestore()))
      )
      const charge = spansOf(collector.requests()).find((s) => s.span.name === "charge")!.span
      const json = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
      const outside = json.find((l) => l["message"] === "outside any span")!
      expect(outside["trace_id"]).toBeUndefined()
      const charged = json.find((l) => l["message"] === "charged")!
      expect(charged["trace_id"]).toBe(charge.traceId)
      expect(charged["span_id"]).toBe(charge.spanId)
      expect(charged["logLevel"]).toBe("INFO")
      expect(charged["annotations"]).toEqual({ invoice: "i-1" })

      // text (logfmt, the default; LOG_FORMAT from the environment), no exporter: the trace ids are there too
      const text: Array<string> = []
      const spy2 = vi.spyOn(globalThis.console, "log").mockImplementation((...args: Array<unknown>) => {
        text.push(args.map(String).join(" "))
      })
      const span = yield* Effect.zipLeft(Effect.currentSpan, Effect.log("paid")).pipe(
        Effect.withSpan("pay"),
        Effect.provide(Telemetry.layer()),
        Effect.withConfigProvider(env({ LOG_FORMAT: "text" })),
        Effect.ensuring(Effect.sync(() => spy2.mockRestore()))
      )
      const paid = text.find((l) => l.includes("message=paid"))!
      expect(paid).toContain(`trace_id=${span.traceId}`)
      expect(paid).toContain(`span_id=${span.spanId}`)
      expect(paid).toMatch(/^timestamp=\S+ level=INFO /)
    }).pipe(Effect.provide(CollectorLive)))

  it.live("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as given, and options in code win over the environment", () =>
    Effect.gen(function*() {
      const collector = yield* Collector
      yield* Effect.void.pipe(
        Effect.withSpan("custom-path"),
        Effect.provide(Telemetry.layer({ serviceName: "from-code", headers: { "x-api-key": Redacted.make("k1") } })),
        Effect.withConfigProvider(env({
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${collector.url}/custom/traces`,
          OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:1",
          OTEL_METRICS_EXPORTER: "none",
          OTEL_SERVICE_NAME: "from-env",
          OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=from-env,x-tenant=t1"
        }))
      )
      const requests = collector.requests()
      expect(requests.map((r) => r.url)).toEqual(["/custom/traces"])
      expect(requests[0]!.headers["x-api-key"]).toBe("k1")
      expect(requests[0]!.headers["x-tenant"]).toBe("t1")
      const [only] = spansOf(requests)
      expect(only?.span.name).toBe("custom-path")
      expect(attribute(only?.resource.attributes, "service.name")).toBe("from-code")
    }).pipe(Effect.provide(CollectorLive)))

  it.live("OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER=none and disabled in code: nothing is recorded or exported", () =>
    Effect.gen(function*() {
      const collector = yield* Collector
      const run = (layer: Layer.Layer<never, unknown>, vars: Record<string, string>) =>
        Effect.gen(function*() {
          const recording = yield* Tracing.isRecording
          yield* Effect.void.pipe(Effect.withSpan("should-not-be-exported"))
          return recording
        }).pipe(Effect.provide(layer), Effect.withConfigProvider(env({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.url, ...vars })))
      expect(yield* run(Telemetry.layer(), { OTEL_SDK_DISABLED: "TRUE" })).toBe(false)
      expect(yield* run(Telemetry.layer(), { OTEL_TRACES_EXPORTER: "none" })).toBe(false)
      expect(yield* run(Telemetry.layer({ disabled: true }), {})).toBe(false)
      expect(yield* run(Telemetry.layer({ exporter: "none" }), { OTEL_TRACES_EXPORTER: "otlp" })).toBe(false)
      // control: the same setup, enabled, does export
      expect(yield* run(Telemetry.layer(), {})).toBe(true)
      expect(spansOf(collector.requests()).map((s) => s.span.name)).toEqual(["should-not-be-exported"])
    }).pipe(Effect.provide(CollectorLive)))

  it.live("a Prometheus port already taken fails the layer with a TelemetryError", () =>
    Effect.gen(function*() {
      const taken = yield* listen(() => undefined)
      const { port } = taken.address() as AddressInfo
      const error = yield* Effect.flip(Effect.void.pipe(
        Effect.provide(Telemetry.layer({ metrics: { exporter: "prometheus", prometheusHost: "127.0.0.1", prometheusPort: port } })),
        Effect.withConfigProvider(env({}))
      ))
      expect(error._tag).toBe("TelemetryError")
      expect(error.message).toContain(`127.0.0.1:${port}`)
    }).pipe(Effect.scoped))

  it.effect("nothing configured: a no-op layer, the toolkit's tracer stays the built-in one", () =>
    Effect.gen(function*() {
      expect(yield* Tracing.isRecording.pipe(Effect.provide(Telemetry.layer()), Effect.withConfigProvider(env({})))).toBe(
        false
      )
      expect(Telemetry.resolve({}).exporters).toEqual([])
      // an explicit otlp exporter without an endpoint uses the spec's default endpoint
      expect(Telemetry.resolve({ exporter: "otlp" }).url).toBe("http://localhost:4318/v1/traces")
    }))

  it.effect("resolves the standard variables", () =>
    Effect.gen(function*() {
      const read = (vars: Record<string, string>) =>
        Effect.map(Telemetry.config, Telemetry.resolve).pipe(Effect.withConfigProvider(env(vars)))

      const s = yield* read({
        OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector.example:4318/",
        OTEL_EXPORTER_OTLP_HEADERS: "a=1, b = x%3Dy ",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: "b=2",
        OTEL_EXPORTER_OTLP_TIMEOUT: "2500",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
        OTEL_RESOURCE_ATTRIBUTES: "service.name=attr-name,service.version=1.2.3",
        OTEL_BSP_SCHEDULE_DELAY: "200",
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "64"
      })
      expect(s.exporters).toEqual(["otlp"])
      expect(s.url).toBe("https://collector.example:4318/v1/traces")
      expect(Object.fromEntries(Object.entries(s.headers).map(([k, v]) => [k, Redacted.value(v)]))).toEqual({ a: "1", b: "2" })
      expect(s.timeout && Duration.toMillis(s.timeout)).toBe(2500)
      expect(s.serviceName).toBe("attr-name")
      expect(s.serviceVersion).toBe("1.2.3")
      expect(s.batch.scheduledDelay && Duration.toMillis(s.batch.scheduledDelay)).toBe(200)
      expect(s.batch.maxExportBatchSize).toBe(64)

      const both = yield* read({ OTEL_TRACES_EXPORTER: "console, otlp", OTEL_SERVICE_NAME: "svc" })
      expect(both.exporters).toEqual(["console", "otlp"])
      expect(both.url).toBe("http://localhost:4318/v1/traces")
      expect(both.serviceName).toBe("svc")

      // metrics: the same endpoint, their own path, headers and timeout
      expect(s.metrics.exporters).toEqual(["otlp"])
      expect(s.metrics.url).toBe("https://collector.example:4318/v1/metrics")
      expect(Object.fromEntries(Object.entries(s.metrics.headers).map(([k, v]) => [k, Redacted.value(v)]))).toEqual({
        a: "1",
        b: "x=y"
      })
      expect(s.metrics.timeout && Duration.toMillis(s.metrics.timeout)).toBe(2500)
      expect(Duration.toMillis(s.metrics.interval)).toBe(60_000)
      expect(s.logFormat).toBe("text")

      const metricsOnly = yield* read({
        OTEL_METRICS_EXPORTER: "prometheus,otlp",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://127.0.0.1:4318/custom/metrics",
        OTEL_EXPORTER_OTLP_METRICS_HEADERS: "m=1",
        OTEL_METRIC_EXPORT_INTERVAL: "1500",
        OTEL_EXPORTER_PROMETHEUS_HOST: "127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT: "9999",
        LOG_FORMAT: "json"
      })
      expect(metricsOnly.exporters).toEqual([]) // a metrics endpoint does not turn spans on
      expect(metricsOnly.metrics.exporters).toEqual(["prometheus", "otlp"])
      expect(metricsOnly.metrics.url).toBe("http://127.0.0.1:4318/custom/metrics")
      expect(Object.keys(metricsOnly.metrics.headers)).toEqual(["m"])
      expect(Duration.toMillis(metricsOnly.metrics.interval)).toBe(1500)
      expect(metricsOnly.metrics.prometheus).toEqual({ host: "127.0.0.1", port: 9999 })
      expect(metricsOnly.logFormat).toBe("json")
      expect((yield* read({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://x:4318", OTEL_SDK_DISABLED: "true" })).metrics.exporters)
        .toEqual([])

      const consoleOnly = yield* read({ OTEL_TRACES_EXPORTER: "console" })
      expect(consoleOnly.exporters).toEqual(["console"])
      expect(consoleOnly.url).toBeUndefined()
      expect(consoleOnly.serviceName).toBe("unknown_service:node")
    }))

  it.effect("malformed variables fail with a ConfigError naming the variable", () =>
    Effect.gen(function*() {
      const fails = (vars: Record<string, string>) =>
        Effect.gen(function*() {
          const exit = yield* Effect.exit(
            Effect.void.pipe(Effect.provide(Telemetry.layer()), Effect.withConfigProvider(env(vars)))
          )
          expect(Exit.isFailure(exit)).toBe(true)
          return Exit.isFailure(exit) ? String(exit.cause) : ""
        })
      expect(yield* fails({ OTEL_TRACES_EXPORTER: "zipkin" })).toMatch(/OTEL_TRACES_EXPORTER.*unsupported exporter "zipkin"/s)
      expect(yield* fails({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })).toMatch(/OTEL_EXPORTER_OTLP_PROTOCOL.*grpc/s)
      expect(yield* fails({ OTEL_EXPORTER_OTLP_HEADERS: "novalue" })).toMatch(/OTEL_EXPORTER_OTLP_HEADERS.*key=value/s)
      expect(yield* fails({ OTEL_SDK_DISABLED: "maybe" })).toMatch(/OTEL_SDK_DISABLED/)
      expect(yield* fails({ OTEL_BSP_MAX_QUEUE_SIZE: "0" })).toMatch(/OTEL_BSP_MAX_QUEUE_SIZE/)
      expect(yield* fails({ OTEL_METRICS_EXPORTER: "statsd" })).toMatch(/OTEL_METRICS_EXPORTER.*unsupported exporter "statsd"/s)
      expect(yield* fails({ OTEL_EXPORTER_PROMETHEUS_PORT: "http" })).toMatch(/OTEL_EXPORTER_PROMETHEUS_PORT/)
      expect(yield* fails({ LOG_FORMAT: "xml" })).toMatch(/LOG_FORMAT/)
    }))

  it.live("the console exporter prints spans on stdout (child process, real environment)", () =>
    Effect.gen(function*() {
      const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")
      const result = yield* Effect.async<{ code: number | null; stdout: string; stderr: string }, Error>((resume) => {
        const child = spawn(
          process.execPath,
          ["--conditions=source", "--import", "tsx", "packages/opentelemetry/test/fixtures/console-span.ts"],
          {
            cwd: root,
            env: { PATH: process.env["PATH"] ?? "", OTEL_TRACES_EXPORTER: "console", OTEL_SERVICE_NAME: "console-test" },
            stdio: ["ignore", "pipe", "pipe"]
          }
        )
        let stdout = ""
        let stderr = ""
        child.stdout.on("data", (d: Buffer) => (stdout += d.toString()))
        child.stderr.on("data", (d: Buffer) => (stderr += d.toString()))
        child.on("error", (e) => resume(Effect.fail(e)))
        child.on("close", (code) => resume(Effect.succeed({ code, stdout, stderr })))
        return Effect.sync(() => child.kill("SIGKILL"))
      }).pipe(Effect.timeout("20 seconds"))
      expect(result.code, result.stderr).toBe(0)
      expect(result.stderr).toContain("recording=true")
      expect(result.stdout).toContain("name: 'console-span'")
      expect(result.stdout).toContain("'test.attribute': 'visible'")
      expect(result.stdout).toContain("'service.name': 'console-test'")
    }))
})
