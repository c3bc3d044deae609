import { Telemetry } from "@effect-nats/opentelemetry"
import { NatsTestServer } from "@effect-nats/testing"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, Deferred, Duration, Effect, Exit, Layer, Redacted, Schema } from "effect"
import { Consumer, DeadLetter, Event, Handler, JetStream, Publisher, Tracing } from "effect-nats"
import { spawn } from "node:child_process"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

// ---------------------------------------------------------------------------
// a tiny OTLP/HTTP collector: records every request
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
interface OtlpSpan {
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly kind: number
  readonly attributes?: ReadonlyArray<{ readonly key: string; readonly value: OtlpValue }>
}
interface OtlpRequest {
  readonly resourceSpans: ReadonlyArray<{
    readonly resource: { readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: OtlpValue }> }
    readonly scopeSpans: ReadonlyArray<{ readonly spans: ReadonlyArray<OtlpSpan> }>
  }>
}

class Collector extends Context.Tag("test/Collector")<Collector, {
  readonly url: string
  readonly requests: () => ReadonlyArray<Received>
}>() {}

const CollectorLive = Layer.scoped(
  Collector,
  Effect.gen(function*() {
    const received: Array<Received> = []
    const server = yield* Effect.acquireRelease(
      Effect.async<http.Server>((resume) => {
        const s = http.createServer((req, res) => {
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
        s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.async<void>((resume) => {
          s.closeAllConnections()
          s.close(() => resume(Effect.void))
        })
    )
    const { port } = server.address() as AddressInfo
    return { url: `http://127.0.0.1:${port}`, requests: () => [...received] }
  })
)

const spansOf = (requests: ReadonlyArray<Received>) =>
  requests.flatMap((r) => {
    const body = JSON.parse(r.body) as OtlpRequest
    return body.resourceSpans.flatMap((rs) =>
      rs.scopeSpans.flatMap((ss) => ss.spans.map((span) => ({ span, resource: rs.resource })))
    )
  })

const attribute = (attrs: ReadonlyArray<{ readonly key: string; readonly value: OtlpValue }> | undefined, key: string) =>
  attrs?.find((a) => a.key === key)?.value.stringValue

const env = (entries: Record<string, string>) => ConfigProvider.fromMap(new Map(Object.entries(entries)))

// ---------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------

const OrderPlaced = Event.make({
  type: "shop.order.placed",
  aggregate: "Order",
  schema: Schema.Struct({ orderId: Schema.String }),
  aggregateId: (d) => d.orderId
})

const NatsLive = Layer.mergeAll(DeadLetter.layer(), Publisher.layer()).pipe(
  Layer.provideMerge(NatsTestServer.layerJetStream())
)

describe("Telemetry", () => {
  it.live("exports spans over OTLP/HTTP (JSON) to the endpoint from the environment, messaging spans included", () =>
    Effect.gen(function*() {
      const collector = yield* Collector
      const processed = yield* Deferred.make<string>()

      yield* Effect.gen(function*() {
        expect(yield* Tracing.isRecording).toBe(true)
        const js = yield* JetStream.JetStream
        yield* js.ensureStream({ name: "SHOP", subjects: ["shop.>"], storage: "memory" })
        yield* Consumer.make({
          stream: "SHOP",
          durable: "telemetry",
          handlers: [Handler.make(OrderPlaced, (e) => Deferred.succeed(processed, e.data.orderId))]
        })
        const publisher = yield* Publisher.Publisher
        yield* publisher.publish(OrderPlaced, { orderId: "o-1" }).pipe(Effect.withSpan("checkout"))
        expect(yield* Deferred.await(processed).pipe(Effect.timeout("10 seconds"))).toBe("o-1")
      }).pipe(
        Effect.scoped,
        Effect.provide(NatsLive),
        // the layer's scope closes here: the batch processor flushes to the collector
        Effect.provide(Telemetry.layer()),
        Effect.withConfigProvider(env({
          OTEL_EXPORTER_OTLP_ENDPOINT: collector.url,
          OTEL_SERVICE_NAME: "shop-test",
          OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test,team=pay%2Cments",
          OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20s3cret"
        }))
      )

      const requests = collector.requests()
      expect(requests.length).toBeGreaterThan(0)
      for (const r of requests) {
        expect(r.method).toBe("POST")
        expect(r.url).toBe("/v1/traces")
        expect(r.headers["content-type"]).toBe("application/json")
        expect(r.headers["authorization"]).toBe("Bearer s3cret")
      }
      const spans = spansOf(requests)
      const byName = (name: string) => {
        const found = spans.filter((s) => s.span.name === name)
        expect(found.length, name).toBe(1)
        return found[0]!
      }
      const checkout = byName("checkout")
      const publish = byName("publish shop.order.placed")
      const process = byName("process shop.order.placed")
      expect(publish.span.traceId).toBe(checkout.span.traceId)
      expect(publish.span.parentSpanId).toBe(checkout.span.spanId)
      // the trace crossed NATS: the consumer's span continues the producer's
      expect(process.span.traceId).toBe(publish.span.traceId)
      expect(process.span.parentSpanId).toBe(publish.span.spanId)
      expect(attribute(process.span.attributes, "messaging.system")).toBe("nats")
      expect(attribute(process.span.attributes, "messaging.consumer.group.name")).toBe("telemetry")
      expect(attribute(publish.span.attributes, "messaging.destination.name")).toBe("shop.order.placed")
      expect(publish.span.kind).toBe(4) // PRODUCER
      expect(process.span.kind).toBe(5) // CONSUMER
      const resource = checkout.resource.attributes
      expect(attribute(resource, "service.name")).toBe("shop-test")
      expect(attribute(resource, "deployment.environment")).toBe("test")
      expect(attribute(resource, "team")).toBe("pay,ments")
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
