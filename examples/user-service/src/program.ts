/**
 * A scripted session against the user service, as in the weegigs README:
 * execute commands, read a user back, hit the typed failures, watch the
 * events, and ask `$SRV` how the service is doing.
 */
import { Console, Effect, Either, Layer, Ref, Schedule } from "effect"
import { CommandClient, type CommandService, type Envelope } from "effect-nats"
import { checkHealth, type Health, subscribeToEvents } from "./client.js"
import { CreateUser, DeactivateUser, GetUser, ServiceName, UpdateEmail, type User } from "./domain.js"
import * as UserService from "./UserService.js"

/** What the session saw, for tests and for whoever runs it. */
export interface SessionReport {
  /** The correlation id of every request of the session (and so of every event). */
  readonly correlationId: string
  /** The request id of each successful command, by step name. */
  readonly requestIds: Readonly<Record<string, string>>
  /** The user at the end. */
  readonly user: User
  /** Each expected failure: step, error tag and code. */
  readonly failures: ReadonlyArray<{ readonly step: string; readonly tag: string; readonly code: string }>
  /** The events the subscriber received, in order. */
  readonly events: ReadonlyArray<Envelope.Envelope<unknown>>
  readonly info: ReadonlyArray<CommandService.InfoResponse>
  readonly stats: ReadonlyArray<CommandService.StatsResponse>
  readonly health: Health
}

const show = (u: unknown) => JSON.stringify(u)

/** The gist of a message: its last line (a Schema error tree ends with the actual problem). */
const lastLine = (message: string): string => (message.split("\n").at(-1) ?? "").replace(/^[\s└├│─]+/u, "")

const errorCode = (e: { readonly _tag: string }): string =>
  "code" in e && typeof e.code === "string" ? e.code : "reason" in e && typeof e.reason === "string" ? e.reason : "?"

/**
 * Run the session. `userId` names the user it creates (default `user-123`);
 * the other ids are derived from it.
 */
export const session = (userId = "user-123") =>
  Effect.gen(function*() {
    const client = yield* CommandClient.CommandClient
    const correlationId = `session-${crypto.randomUUID()}`
    const other = `${userId}-other`
    const requestIds: Record<string, string> = {}
    const failures: Array<{ step: string; tag: string; code: string }> = []

    // 1. listen to the events before anything happens
    const events = yield* Ref.make<ReadonlyArray<Envelope.Envelope<unknown>>>([])
    yield* subscribeToEvents((envelope) => Ref.update(events, (xs) => [...xs, envelope]))

    /** Run one step: print the result, or the typed failure with its code. */
    const step = <A, E extends { readonly _tag: string; readonly message: string }>(
      name: string,
      self: Effect.Effect<{ readonly result: A; readonly metadata: { readonly requestId?: string | undefined } }, E>,
      render: (a: A) => string
    ) =>
      Effect.either(self).pipe(
        Effect.flatMap(Either.match({
          onLeft: (e) => {
            failures.push({ step: name, tag: e._tag, code: errorCode(e) })
            return Console.log(`${name} -> ${e._tag} (${errorCode(e)}): ${lastLine(e.message)}`)
          },
          onRight: (r) => {
            if (r.metadata.requestId !== undefined) requestIds[name] = r.metadata.requestId
            return Console.log(`${name} -> ${render(r.result)}`)
          }
        }))
      )
    const opts = { correlationId, userId: "admin" }
    const user = (u: User) => show(u)

    yield* Console.log(`-- session ${correlationId}`)
    yield* step("create", client.executeWithMetadata(CreateUser, userId, { name: "John Doe", email: "john@example.com" }, opts), user)
    yield* step("get", client.executeWithMetadata(GetUser, userId, {}, opts), user)
    yield* step("update-email", client.executeWithMetadata(UpdateEmail, userId, { email: "john.doe@example.com" }, opts), user)
    yield* step(
      "create with a taken email",
      client.executeWithMetadata(CreateUser, other, { name: "Jane Roe", email: "john.doe@example.com" }, opts),
      user
    )
    yield* step("get an unknown user", client.executeWithMetadata(GetUser, `${userId}-missing`, {}, opts), user)
    yield* step("deactivate", client.executeWithMetadata(DeactivateUser, userId, { reason: "left the company" }, opts), user)
    yield* step(
      "update-email when deactivated",
      client.executeWithMetadata(UpdateEmail, userId, { email: "john@elsewhere.example" }, opts),
      user
    )
    yield* step(
      "create with an invalid email",
      client.executeWithMetadata(CreateUser, other, { name: "Jane Roe", email: "not-an-email" }, opts),
      user
    )
    const final = yield* client.query(GetUser, userId, {}, opts)

    // 2. the events of the three changes (published before each response, so they are here or close)
    yield* Ref.get(events).pipe(
      Effect.repeat({ schedule: Schedule.spaced("20 millis"), until: (xs) => xs.length >= 3 }),
      Effect.timeout("5 seconds"),
      Effect.ignore
    )
    const received = yield* Ref.get(events)
    yield* Console.log(`-- events received by the subscriber`)
    for (const e of received) {
      yield* Console.log(
        `${e.type} v${e.version} ${e.aggregateId} ${show(e.data)} (correlation ${e.correlationId}, caused by ${e.causationId})`
      )
    }

    // 3. monitoring: $SRV.INFO, $SRV.STATS, and the health check on PING + STATS
    const info = yield* client.info({ service: ServiceName, window: "300 millis" })
    const stats = yield* client.stats({ service: ServiceName, window: "300 millis" })
    yield* Console.log(`-- $SRV.INFO.${ServiceName}`)
    for (const i of info) {
      yield* Console.log(`${i.name} ${i.version} (${i.id}): ${i.description}`)
      for (const e of i.endpoints) yield* Console.log(`  ${e.name} on ${e.subject} (queue ${e.queue_group})`)
    }
    yield* Console.log(`-- $SRV.STATS.${ServiceName}`)
    for (const s of stats) {
      for (const e of s.endpoints) {
        yield* Console.log(
          `  ${e.name}: ${e.num_requests} requests, ${e.num_errors} errors, average ${
            (e.average_processing_time / 1e6).toFixed(2)
          } ms${e.last_error === "" ? "" : `, last error ${e.last_error}`}`
        )
      }
    }
    const health = yield* checkHealth()
    yield* Console.log(`-- health: ${health.status} (${health.reason})`)

    return { correlationId, requestIds, user: final, failures, events: received, info, stats, health } satisfies SessionReport
  })

/** The session in its own scope (the event subscriptions end with it). */
export const program = Effect.scoped(session())

/**
 * What the session runs against: one service instance (with its publisher
 * and an in-memory store) and a client; needs a `NatsClient` and `JetStream`.
 */
export const ServicesLive = Layer.mergeAll(UserService.layerWithDependencies, CommandClient.layer({ timeout: "3 seconds" }))
