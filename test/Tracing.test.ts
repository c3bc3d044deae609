import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import { describe, expect, layer } from "@effect/vitest"
import { SpanKind } from "@opentelemetry/api"
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Context, Effect, Layer } from "effect"
import { CommandClient, Consumer, Handler, NatsClient, Publisher, Tracing } from "effect-nats"
import { billingStream, eventually, InvoiceIssued, PaymentReceived, PipelineLive, unique } from "./utils.js"

class Spans extends Context.Tag("test/Spans")<Spans, InMemorySpanExporter>() {}

const TracingLive = Layer.unwrapEffect(Effect.map(Spans, (exporter) =>
  NodeSdk.layer(() => ({ resource: { serviceName: "tracing-test" }, spanProcessor: new SimpleSpanProcessor(exporter) }))
)).pipe(Layer.provideMerge(Layer.sync(Spans, () => new InMemorySpanExporter())))

describe("Tracing", () => {
  // the tracer is provided to the pipeline layers: the Publisher decides at build time (Tracing.isRecording)
  layer(PipelineLive.pipe(Layer.provideMerge(TracingLive)), { excludeTestServices: true })((it) => {
    it.scoped("one trace from publish in service A, through process in service B and its own publish, to service C", () =>
      Effect.gen(function*() {
        const exporter = yield* Spans
        const stream = yield* billingStream
        const publisher = yield* Publisher.Publisher
        let handled = 0
        // service B: handles the invoice and publishes a payment
        yield* Consumer.make({
          stream,
          durable: unique("b"),
          filterSubject: "billing.invoice.issued",
          handlers: [Handler.make(InvoiceIssued, (e) =>
            publisher.publish(PaymentReceived, { invoiceId: e.data.invoiceId, paid: e.data.amount }))]
        })
        // service C: handles the payment
        yield* Consumer.make({
          stream,
          durable: unique("c"),
          filterSubject: "billing.payment.received",
          handlers: [Handler.make(PaymentReceived, () => Effect.sync(() => handled++))]
        })
        exporter.reset()
        // service A
        const ack = yield* publisher.publish(InvoiceIssued, { invoiceId: "t-1", amount: 5 }).pipe(
          Effect.withSpan("service-a.request")
        )
        yield* eventually(Effect.sync(() => handled === 1))
        yield* eventually(Effect.sync(() => exporter.getFinishedSpans().some((s) => s.name === "process billing.payment.received")))

        const spans = exporter.getFinishedSpans()
        const byName = (name: string) => {
          const found = spans.filter((s) => s.name === name)
          expect(found.length, name).toBe(1)
          return found[0]!
        }
        const root = byName("service-a.request")
        const publishA = byName("publish billing.invoice.issued")
        const processB = byName("process billing.invoice.issued")
        const publishB = byName("publish billing.payment.received")
        const processC = byName("process billing.payment.received")
        const traceId = root.spanContext().traceId
        for (const s of [publishA, processB, publishB, processC]) expect(s.spanContext().traceId).toBe(traceId)
        expect(publishA.parentSpanContext?.spanId).toBe(root.spanContext().spanId)
        expect(processB.parentSpanContext?.spanId).toBe(publishA.spanContext().spanId)
        expect(publishB.parentSpanContext?.spanId).toBe(processB.spanContext().spanId)
        expect(processC.parentSpanContext?.spanId).toBe(publishB.spanContext().spanId)

        expect(publishA.kind).toBe(SpanKind.PRODUCER)
        expect(processB.kind).toBe(SpanKind.CONSUMER)
        expect(publishA.attributes[Tracing.Attributes.system]).toBe("nats")
        expect(publishA.attributes[Tracing.Attributes.destination]).toBe("billing.invoice.issued")
        expect(publishA.attributes[Tracing.Attributes.messageId]).toBe(ack.id)
        expect(processB.attributes[Tracing.Attributes.messageId]).toBe(ack.id)
        expect(processB.attributes[Tracing.Attributes.consumerGroup]).toMatch(/^b_/)
        expect(processB.attributes[Tracing.Attributes.deliveryCount]).toBe(1)
      }))

    it.scoped("CommandClient.subscribe: a CONSUMER span per event, parented on its traceparent, else a new trace", () =>
      Effect.gen(function*() {
        const exporter = yield* Spans
        yield* billingStream
        const publisher = yield* Publisher.Publisher
        const nats = yield* NatsClient.NatsClient
        const client = yield* CommandClient.make()
        const seen: Array<string> = []
        // subscribed inside a span: without `root`, a message with no traceparent would be parented on it
        yield* client.subscribe(PaymentReceived, (e) => Effect.sync(() => seen.push(e.data.invoiceId))).pipe(
          Effect.withSpan("subscribing")
        )
        exporter.reset()
        yield* publisher.publish(PaymentReceived, { invoiceId: "traced", paid: 1 }).pipe(Effect.withSpan("sender"))
        const bare = yield* Publisher.build(PaymentReceived, { invoiceId: "bare", paid: 2 })
        nats.connection.publish(bare.subject, bare.payload) // no headers: no traceparent
        yield* eventually(Effect.sync(() =>
          exporter.getFinishedSpans().filter((s) => s.name === "process billing.payment.received").length === 2
        ))
        expect(seen.sort()).toEqual(["bare", "traced"])
        const spans = exporter.getFinishedSpans()
        const publish = spans.find((s) => s.name === "publish billing.payment.received")!
        const [first, second] = spans.filter((s) => s.name === "process billing.payment.received")
        const traced = first!.parentSpanContext === undefined ? second! : first!
        const root = traced === first ? second! : first!
        expect(traced.kind).toBe(SpanKind.CONSUMER)
        expect(traced.spanContext().traceId).toBe(publish.spanContext().traceId)
        expect(traced.parentSpanContext?.spanId).toBe(publish.spanContext().spanId)
        expect(root.parentSpanContext).toBeUndefined()
        expect(root.spanContext().traceId).not.toBe(publish.spanContext().traceId)
      }))
  })
})

describe("Tracing.parseTraceparent", () => {
  layer(Layer.empty)((it) => {
    it.effect("accepts W3C version 00 and refuses malformed or all-zero ids", () =>
      Effect.sync(() => {
        const ok = Tracing.parseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        expect(ok._tag).toBe("Some")
        for (const bad of [
          "",
          "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
          "00-00000000000000000000000000000000-b7ad6b7169203331-01",
          "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
          "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
          "00-0af7651916cd43dd-b7ad6b7169203331-01"
        ]) expect(Tracing.parseTraceparent(bad)._tag, bad).toBe("None")
      }))
  })
})
