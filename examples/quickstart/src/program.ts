/**
 * Quick start: one event, one publisher, one consumer with retry and dedup.
 *
 * Uses NATS_URL when set; otherwise starts a throwaway nats-server (a local
 * binary, or Docker) for the run.
 */
import { Console, Deferred, Effect, Layer, Schema } from "effect"
import { Consumer, DeadLetter, Dedup, Event, Handler, JetStream, Publisher } from "effect-nats"

// 1. define an event: its type is its subject, its Schema encodes and decodes the data
export const GreetingSent = Event.make({
  type: "demo.greeting.sent",
  aggregate: "Greeting",
  schema: Schema.Struct({ to: Schema.String, text: Schema.String }),
  aggregateId: (g) => g.to
})

export const program = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  yield* js.ensureStream({ name: "DEMO", subjects: ["demo.>"], maxAge: "1 hour" })

  // 2. handle it: retried in process, then redelivered, then dead-lettered
  const received = yield* Deferred.make<string>()
  yield* Consumer.make({
    stream: "DEMO",
    durable: "greeter",
    handlers: [Handler.make(GreetingSent, (e) => Deferred.succeed(received, `${e.data.text}, ${e.data.to}`))]
  })

  // 3. publish it: envelope, headers, msgID = envelope id
  const publisher = yield* Publisher.Publisher
  const ack = yield* publisher.publish(GreetingSent, { to: "world", text: "hello" })
  yield* Console.log(`published ${ack.id} as ${ack.stream}#${ack.seq}`)
  yield* Console.log(`handled: ${yield* Deferred.await(received)}`)
})

/** The services the program needs on top of NATS + JetStream. */
export const ServicesLive = Layer.mergeAll(Publisher.layer(), DeadLetter.layer(), Dedup.layerMemory())
