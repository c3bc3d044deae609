/**
 * A command service: each command (and query) handler is an endpoint of a
 * NATS micro service (ADR-32) in a queue group, so instances share the load
 * and `$SRV.PING` / `$SRV.INFO` / `$SRV.STATS` discovery answers in the
 * `io.nats.micro.v1` format of the stock micro libraries (checked against
 * nats.go's `micro` types in test/go/microclient).
 *
 * Per request: decode (a malformed request gets a `400` naming every invalid
 * field), run the handler with the request in context (`RequestContext`,
 * `Envelope.withCausation` so published events are caused by the request and
 * share its correlation id, a SERVER span named after the subject and
 * parented on the caller's `traceparent`), then encode the success or the
 * typed failure. A defect becomes a `500` whose details are logged, never
 * sent. One path does this for every request (decoding in
 * `internal/commandRequest.ts`, the answer and statistics in
 * `internal/commandReply.ts`); the SERVER span, when a tracer records (decided
 * when the service is built, see `Tracing.isRecording`), is a wrapper around it.
 *
 * Statistics follow the Go and JS micro libraries: per endpoint
 * `num_requests`, `num_errors` (every error response: typed failures, 400,
 * 500, 503), `last_error` as `"<code>:<message>"`, and `processing_time` /
 * `average_processing_time` in nanoseconds (measured with `process.hrtime`).
 *
 * Keep command and query subjects out of JetStream stream subjects: a stream
 * on `billing.>` would store `billing.command.…` requests and answer them with
 * a PubAck before the service does.
 *
 * @since 0.1.0
 */
import { type Msg, nuid, type Subscription } from "@nats-io/nats-core"
import {
  Cause,
  Clock,
  Context,
  type DateTime,
  Duration,
  Effect,
  Exit,
  FiberRef,
  FiberSet,
  Layer,
  Option,
  Runtime,
  Schema,
  type Scope
} from "effect"
import type * as Command from "./Command.js"
import * as Envelope from "./Envelope.js"
import * as Codec from "./internal/codec.js"
import * as Contract from "./internal/contract.js"
import * as CommandReply from "./internal/commandReply.js"
import * as CommandRequest from "./internal/commandRequest.js"
import * as Eager from "./internal/eager.js"
import { locallyWith } from "./internal/fiberRef.js"
import * as micro from "./internal/micro.js"
import { type MessagingSpan, messagingSpan, parentOf } from "./internal/spans.js"
import * as Limits from "./Limits.js"
import { NatsClient } from "./NatsClient.js"
import * as NatsError from "./NatsError.js"
import * as Tracing from "./Tracing.js"

/**
 * The request being handled: its ids, who sent it, and when.
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  /** The request id (from the request metadata, or generated). Events published by the handler have it as causation id. */
  readonly id: string
  readonly subject: string
  readonly kind: Command.Kind
  readonly service: string
  readonly aggregate: string
  readonly command: string
  readonly aggregateId: string | undefined
  readonly correlationId: string
  readonly causationId: string | undefined
  readonly userId: string | undefined
  /** When the client sent it (or when it arrived, if the client did not say). */
  readonly timestamp: DateTime.Utc
  /** The NATS headers of the request (first value of each). */
  readonly headers: Readonly<Record<string, string>>
}

/**
 * The request being handled, available to the handler and everything it calls.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandService } from "effect-nats"
 *
 * const whoAsked = Effect.map(CommandService.RequestContext, (r) => r.userId ?? "anonymous")
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class RequestContext extends Context.Tag("effect-nats/CommandService/RequestContext")<RequestContext, Request>() {}

/**
 * A handler bound to its command.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handler<R> {
  readonly command: Command.Any
  readonly handle: (payload: unknown, request: Request) => Effect.Effect<unknown, unknown, R>
}

/**
 * Any handler.
 *
 * @since 0.1.0
 * @category models
 */
export type AnyHandler = Handler<unknown>

/**
 * The context a handler (or a union of handlers) needs.
 *
 * @since 0.1.0
 * @category type-level
 */
export type HandlerContext<H> = H extends Handler<infer R> ? R : never

/**
 * Bind a handler to a command or query. It receives the decoded payload and
 * the request, and returns the success value or one of the command's typed
 * failures. Anything else must be handled (or made a defect: a `500`).
 * `RequestContext` is provided.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandService, Publisher } from "effect-nats"
 * import { PayInvoice, InvoiceNotFound, InvoicePaid } from "./billing.js"
 *
 * const pay = CommandService.handler(PayInvoice, (payload, request) =>
 *   Effect.gen(function*() {
 *     if (request.aggregateId === undefined) return yield* new InvoiceNotFound({ invoiceId: "" })
 *     const publisher = yield* Publisher.Publisher
 *     // caused by the request, same correlation id; a failed publish is a defect here (a 500)
 *     yield* Effect.orDie(publisher.publish(InvoicePaid, { invoiceId: request.aggregateId, amount: payload.amount }))
 *     return { paid: payload.amount }
 *   }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const handler = <C extends Command.Any, R>(
  command: C,
  handle: (payload: Command.Payload<C>, request: Request) => Effect.Effect<Command.Success<C>, Command.Error<C>, R>
): Handler<Exclude<R, RequestContext> | Command.Context<C>> => ({
  command,
  handle: handle as (payload: unknown, request: Request) => Effect.Effect<unknown, unknown, Exclude<R, RequestContext>>
})

/**
 * Options of a service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<H extends ReadonlyArray<AnyHandler>> {
  /** The micro service name (`A-Z a-z 0-9 - _`), shown by `$SRV.INFO`. */
  readonly name: string
  /** SemVer. */
  readonly version: string
  readonly description?: string | undefined
  /** Default `"q"`, the micro protocol's default. Instances in one group share the requests. */
  readonly queueGroup?: string | undefined
  readonly metadata?: Readonly<Record<string, string>> | undefined
  readonly commands: H
  /** How long the stop waits for requests in flight before interrupting them (default 10 s). */
  readonly stopTimeout?: Duration.DurationInput | undefined
}

/**
 * A running service instance.
 *
 * @since 0.1.0
 * @category models
 */
export interface Instance {
  /** The instance id (a nuid), as in `$SRV.<VERB>.<name>.<id>`. */
  readonly id: string
  readonly name: string
  /** What `$SRV.INFO` answers. */
  readonly info: Effect.Effect<InfoResponse>
  /** What `$SRV.STATS` answers now. */
  readonly stats: Effect.Effect<StatsResponse>
}

/**
 * The `$SRV.PING` response (`io.nats.micro.v1.ping_response`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const PingResponse = micro.PingResponse

/**
 * @since 0.1.0
 * @category models
 */
export type PingResponse = micro.PingResponse

/**
 * The `$SRV.INFO` response (`io.nats.micro.v1.info_response`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const InfoResponse = micro.InfoResponse

/**
 * @since 0.1.0
 * @category models
 */
export type InfoResponse = micro.InfoResponse

/**
 * The `$SRV.STATS` response (`io.nats.micro.v1.stats_response`); times are
 * nanoseconds, as in the Go and JS micro libraries.
 *
 * @since 0.1.0
 * @category schemas
 */
export const StatsResponse = micro.StatsResponse

/**
 * @since 0.1.0
 * @category models
 */
export type StatsResponse = micro.StatsResponse

/**
 * Micro protocol header names of an error response.
 *
 * @since 0.1.0
 * @category constants
 */
export const ErrorHeaders = { message: micro.ErrorHeader, code: micro.ErrorCodeHeader } as const

/**
 * Keys of the `$SRV.INFO` endpoint metadata that carry the endpoint's
 * contract: its request body and its response bodies (success, each typed
 * failure with its code, and the `400` / `500` / `503` errors) as JSON Schema
 * documents (draft-07), serialized as strings since micro metadata values are
 * strings. The micro protocol in use (`io.nats.micro.v1`, ADR-32) has no
 * `SCHEMA` verb: the pre-v1 one was dropped in favour of metadata, so that is
 * where the schemas are. The same JSON Schemas as in `AsyncApi.make`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandClient, CommandService } from "effect-nats"
 *
 * const requestSchemas = Effect.gen(function*() {
 *   const client = yield* CommandClient.CommandClient
 *   const [info] = yield* client.info({ service: "billing", maxResponses: 1 })
 *   return info?.endpoints.map((e) => JSON.parse(e.metadata?.[CommandService.SchemaMetadata.request] ?? "{}"))
 * })
 * ```
 *
 * @since 0.1.0
 * @category constants
 */
export const SchemaMetadata = { request: "request_schema", response: "response_schema" } as const

interface Compiled<R> {
  readonly command: Command.Any
  readonly endpoint: micro.Endpoint
  readonly decode: CommandRequest.Decoder<R>
  readonly encodeSuccess: Codec.Codec<unknown, R>
  readonly failures: CommandReply.Failures<R>
  readonly handle: (payload: unknown, request: Request) => Effect.Effect<unknown, unknown, R>
  readonly span: MessagingSpan
}

const compile = <R>(h: Handler<R>, queueGroup: string, limits: Limits.Resolved): Compiled<R> => {
  const command = h.command
  const isFailure = Schema.is(Schema.typeSchema(command.failure as Schema.Schema.Any))
  return {
    command,
    endpoint: new micro.Endpoint(command.endpoint, command.subject, queueGroup, {
      kind: command.kind,
      aggregate: command.aggregate,
      command: command.name,
      [SchemaMetadata.request]: JSON.stringify(Contract.standalone(Contract.requestBody(command))),
      [SchemaMetadata.response]: JSON.stringify(Contract.standalone(Contract.responseBody(command)))
    }),
    decode: CommandRequest.decoder(command, limits),
    encodeSuccess: Codec.encoder(command.success as Schema.Schema<unknown, unknown, R>),
    failures: {
      subject: command.subject,
      isFailure: (u) => isFailure(u),
      encodeFailure: Codec.encoder(command.failure as Schema.Schema<unknown, unknown, R>)
    },
    handle: h.handle,
    span: messagingSpan("server", "process", command.subject, { [Tracing.Attributes.consumerGroup]: queueGroup })
  }
}

/** What serving a request came to: the SERVER span's attributes. */
interface Served {
  readonly request: Request | undefined
  readonly lastError: string | undefined
}

const spanAttributes = (served: Served): Record<string, unknown> => {
  const attributes: Record<string, unknown> = {}
  if (served.request !== undefined) {
    attributes[Tracing.Attributes.messageId] = served.request.id
    attributes[Tracing.Attributes.conversationId] = served.request.correlationId
  }
  if (served.lastError !== undefined) attributes["error.type"] = served.lastError
  return attributes
}

const unsubscribe = (s: Subscription): void => {
  try {
    if (!s.isClosed()) s.unsubscribe()
  } catch {
    // the connection is already closed
  }
}

/** An outcome after its log (a 500's details), if any. */
const logged = (f: CommandReply.Failed): Effect.Effect<CommandReply.Outcome> =>
  f.log === undefined ? Exit.succeed(f.outcome) : Effect.as(f.log, f.outcome)

/**
 * Run the handler with the request in its context (`RequestContext`, and
 * `Envelope.current` so that what it publishes is caused by the request):
 * its encoded success, or the outcome of its failure. A handler that answers
 * without running anything (`Effect.succeed`, `Effect.fail`) is answered at
 * once.
 */
const handle = <R>(c: Compiled<R>, { payload, request }: CommandRequest.Decoded): Effect.Effect<CommandReply.Outcome, never, R> => {
  let handling: Effect.Effect<unknown, unknown, R>
  try {
    handling = c.handle(payload, request)
  } catch (defect) {
    // a handler that throws instead of returning an Effect: a defect, like one thrown inside it
    handling = Exit.die(defect)
  }
  let encoded = Eager.flatMap(handling, c.encodeSuccess)
  if (!Eager.isDone(encoded)) {
    encoded = encoded.pipe(
      // Effect.provideService(RequestContext, request), in fewer steps
      (self) => locallyWith(self, FiberRef.currentContext, (context) => Context.add(context, RequestContext, request)),
      Envelope.withCausation({ id: request.id, correlationId: request.correlationId })
    )
  }
  return Eager.matchCause(
    encoded,
    (cause): Effect.Effect<CommandReply.Outcome, never, R> => {
      const failed = CommandReply.failed(c.failures, request, cause)
      return Effect.isEffect(failed) ? Effect.flatMap(failed, logged) : logged(failed)
    },
    (result) => Exit.succeed({ request, result })
  )
}

/**
 * Start a service instance in the current scope. Closing the scope stops it:
 * the endpoint subscriptions are drained (no new requests), requests in
 * flight finish (bounded by `stopTimeout`, then interrupted and answered
 * `503`), then the discovery subscriptions go.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandService } from "effect-nats"
 * import { pay, getInvoice } from "./handlers.js"
 *
 * const program = Effect.gen(function*() {
 *   const instance = yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [pay, getInvoice] })
 *   yield* Effect.log(`billing ${instance.id} up`)
 *   yield* Effect.never
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const H extends ReadonlyArray<AnyHandler>>(
  options: Options<H>
): Effect.Effect<Instance, NatsError.NatsError, NatsClient | Scope.Scope | HandlerContext<H[number]>> =>
  Effect.gen(function*() {
    type R = HandlerContext<H[number]>
    const nats = yield* NatsClient
    const nc = nats.connection
    if (!micro.validName.test(options.name)) {
      return yield* Effect.dieMessage(
        `CommandService.make: invalid service name ${JSON.stringify(options.name)} (A-Z, a-z, 0-9, '-', '_')`
      )
    }
    if (!micro.validVersion.test(options.version)) {
      return yield* Effect.dieMessage(`CommandService.make: version ${JSON.stringify(options.version)} is not SemVer`)
    }
    const queueGroup = options.queueGroup ?? micro.defaultQueueGroup
    const limits = Limits.resolve(yield* Limits.Limits, nc.info?.max_payload)
    const compiled = options.commands.map((h) => compile(h as Handler<R>, queueGroup, limits))
    const subjects = new Set<string>()
    for (const c of compiled) {
      if (subjects.has(c.command.subject)) {
        return yield* Effect.dieMessage(`CommandService.make: two handlers for ${c.command.subject}`)
      }
      subjects.add(c.command.subject)
    }
    const stopTimeout = options.stopTimeout ?? "10 seconds"
    const config: micro.ServiceConfig = {
      name: options.name,
      id: nuid.next(),
      version: options.version,
      description: options.description ?? "",
      metadata: options.metadata ?? {},
      started: new Date(yield* Clock.currentTimeMillis).toISOString(),
      endpoints: compiled.map((c) => c.endpoint)
    }
    // read once: the requests run in this service's runtime, traced or not for its lifetime (see `Tracing.isRecording`)
    const runtime = yield* Effect.runtime<R>()
    const clock = yield* Clock.clockWith(Effect.succeed)
    const tracing = yield* Tracing.isRecording
    /** Log from outside a request's fiber. */
    const background = (log: Effect.Effect<void>): void => {
      Runtime.runFork(runtime)(log)
    }
    const logSubscriptionError = (subject: string, error: Error) =>
      background(Effect.logError(`CommandService ${options.name}: subscription error on ${subject}`, error))

    // finalizers run in reverse: endpoints drain, in-flight requests finish, discovery stops, leftovers are interrupted
    const fibers = yield* FiberSet.make<unknown, never>()

    yield* Effect.acquireRelease(
      Effect.try({
        try: () => micro.subscribeControl(nc, config, logSubscriptionError),
        catch: NatsError.fromCause("CommandService.make", micro.apiPrefix, nats.servers)
      }),
      (subs) => Effect.sync(() => subs.forEach(unsubscribe))
    )

    yield* Effect.addFinalizer(() =>
      // finalizers are uninterruptible: make the wait interruptible so that the timeout can end it
      Effect.interruptible(FiberSet.awaitEmpty(fibers)).pipe(
        Effect.timeoutOption(stopTimeout),
        Effect.flatMap((done) =>
          Option.isNone(done)
            ? Effect.logWarning(
              `CommandService ${options.name}: requests still running after ${Duration.format(stopTimeout)}; interrupting`
            )
            : Effect.void
        )
      )
    )

    /** Answer once, and count it. */
    const answer = (c: Compiled<R>, msg: Msg, outcome: CommandReply.Outcome, started: bigint): Effect.Effect<Served> => {
      const sent = CommandReply.send(c.endpoint, msg, outcome, started, clock.unsafeCurrentTimeMillis())
      const served: Served = { request: outcome.request, lastError: sent.lastError }
      return sent.log === undefined ? Exit.succeed(served) : Effect.as(sent.log, served)
    }

    /**
     * The one request path: decode, handle, answer. It stays plain function
     * calls while nothing waits (`internal/eager.ts`); what waits (a handler's
     * I/O, an effectful Schema) runs in a fiber, interrupted by the stop and
     * then answered `503`.
     */
    const serve = (c: Compiled<R>, msg: Msg): Effect.Effect<Served, never, R> => {
      const started = process.hrtime.bigint()
      let request: Request | undefined
      let answered = false
      const outcome = Eager.match(
        c.decode(msg, clock.unsafeCurrentTimeMillis()),
        (rejected) => Exit.succeed(rejected),
        (decoded) => {
          request = decoded.request
          return handle(c, decoded)
        }
      )
      const served = Eager.flatMap(outcome, (o) => {
        answered = true
        return answer(c, msg, o, started)
      })
      return Eager.isDone(served)
        ? served
        : Effect.onInterrupt(served, () => answered ? Effect.void : answer(c, msg, CommandReply.stopping(request), started))
    }

    /** {@link serve} in a SERVER span named after the subject, parented on the request's `traceparent` (else a new trace). */
    const traced = (c: Compiled<R>, msg: Msg): Effect.Effect<Served, never, R> =>
      Effect.withSpan(
        Effect.tap(Effect.suspend(() => serve(c, msg)), (served) => Effect.annotateCurrentSpan(spanAttributes(served))),
        c.command.subject,
        {
          ...c.span,
          ...parentOf(msg.headers)
        }
      )

    /** Serve a request from the subscription callback: at once, in it, up to what waits (which the stop then waits for). */
    const start = (c: Compiled<R>, msg: Msg): void => {
      const served = tracing ? traced(c, msg) : serve(c, msg)
      if (Eager.isDone(served)) return
      const fiber = Runtime.runFork(runtime)(served, { immediate: true })
      if (fiber.unsafePoll() === null) FiberSet.unsafeAdd(fibers, fiber)
    }

    /** What threw out of a request's handling in the subscription callback: answered `500`, logged, counted. */
    const escaped = (c: Compiled<R>, msg: Msg, defect: unknown): void => {
      const outcome = { error: CommandReply.internalError }
      const sent = CommandReply.send(c.endpoint, msg, outcome, process.hrtime.bigint(), clock.unsafeCurrentTimeMillis())
      if (sent.log !== undefined) background(sent.log)
      background(
        Effect.logError(`CommandService ${options.name}: request on ${c.command.subject} failed outside its handler`, Cause.die(defect))
      )
    }

    const endpointSubs: Array<Subscription> = []
    yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          for (const c of compiled) {
            endpointSubs.push(nc.subscribe(c.command.subject, {
              queue: queueGroup,
              callback: (err, msg) => {
                if (err !== null) {
                  c.endpoint.fail(`500:${CommandReply.headerSafe(err.message)}`)
                  logSubscriptionError(c.command.subject, err)
                  return
                }
                try {
                  start(c, msg)
                } catch (defect) {
                  // nothing may escape into nats.js: a throw here would end the connection's reader
                  escaped(c, msg, defect)
                }
              }
            }))
          }
        },
        catch: NatsError.fromCause("CommandService.make", undefined, nats.servers)
      }).pipe(Effect.tapError(() => Effect.sync(() => endpointSubs.forEach(unsubscribe)))),
      () =>
        Effect.forEach(endpointSubs, (s) => Effect.promise(() => s.drain().catch(() => unsubscribe(s))), {
          concurrency: "unbounded",
          discard: true
        }).pipe(
          Effect.interruptible,
          Effect.timeoutOption(stopTimeout),
          Effect.ensuring(Effect.sync(() => endpointSubs.forEach(unsubscribe))),
          Effect.ignore
        )
    )
    yield* nats.flush

    return {
      id: config.id,
      name: config.name,
      info: Effect.sync(() => micro.info(config)),
      stats: Effect.sync(() => micro.stats(config))
    } satisfies Instance
  })

/**
 * The service as a layer: started when the layer is built, stopped
 * gracefully when its scope closes.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { CommandService, NatsClient, Publisher } from "effect-nats"
 * import { pay, getInvoice } from "./handlers.js"
 *
 * const BillingLive = CommandService.layer({
 *   name: "billing",
 *   version: "1.0.0",
 *   description: "invoices and payments",
 *   commands: [pay, getInvoice]
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const H extends ReadonlyArray<AnyHandler>>(
  options: Options<H>
): Layer.Layer<never, NatsError.NatsError, NatsClient | HandlerContext<H[number]>> => Layer.scopedDiscard(make(options))
