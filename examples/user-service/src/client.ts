/**
 * The client side of the user service, on `CommandClient`: the events it
 * publishes (followed on the `USERS` stream with a `Projection`) and a health
 * check built on the micro protocol's `$SRV.PING` and `$SRV.STATS`.
 */
import { type Duration, Effect } from "effect"
import { CommandClient, type Envelope, Handler, Projection } from "effect-nats"
import {
  CreateUser,
  DeactivateUser,
  EventStream,
  GetUser,
  ServiceName,
  UpdateEmail,
  UserCreated,
  UserDeactivated,
  UserEmailUpdated
} from "./domain.js"
import { UserAggregate } from "./Users.js"

/**
 * Handle every user event (`users.user.created`, `email-updated`,
 * `deactivated`) appended from now on, in order, until the scope closes: a
 * projection of the users' subjects (`users.user.events.*`) that starts at
 * the end of the stream (`from: "new"`; `"all"` would replay every user's
 * history first).
 */
export const subscribeToEvents = <E, R>(onEvent: (envelope: Envelope.Envelope<unknown>) => Effect.Effect<void, E, R>) =>
  Projection.make({
    stream: EventStream.name,
    filterSubject: UserAggregate.subjects,
    from: "new",
    handlers: [Handler.make(UserCreated, onEvent), Handler.make(UserEmailUpdated, onEvent), Handler.make(UserDeactivated, onEvent)]
  })

/** What one instance reports through `$SRV.STATS`. */
export interface InstanceHealth {
  readonly id: string
  readonly version: string
  /** Requests handled, over all endpoints. */
  readonly requests: number
  /** Error responses (typed failures included), over all endpoints. */
  readonly errors: number
  /** The endpoints the instance serves. */
  readonly endpoints: ReadonlyArray<string>
}

/** The result of {@link checkHealth}. */
export interface Health {
  readonly service: string
  readonly status: "healthy" | "unhealthy"
  /** Why, in a few words. */
  readonly reason: string
  readonly instances: ReadonlyArray<InstanceHealth>
}

/** The endpoint names a healthy instance serves. */
export const expectedEndpoints: ReadonlyArray<string> = [CreateUser, UpdateEmail, DeactivateUser, GetUser].map((c) => c.endpoint)

/**
 * Ask the user service how it is: healthy when at least one instance
 * answers `$SRV.PING`, and every instance that answered also answers
 * `$SRV.STATS` with all of its endpoints. Never fails: a transport problem
 * is reported as `unhealthy` with its message.
 */
export const checkHealth = (options: { readonly window?: Duration.DurationInput | undefined } = {}) =>
  Effect.gen(function*() {
    const client = yield* CommandClient.CommandClient
    const discovery = { service: ServiceName, window: options.window ?? "300 millis" }
    const [pings, stats] = yield* Effect.all([client.ping(discovery), client.stats(discovery)], { concurrency: 2 })
    const instances = stats.map((s): InstanceHealth => ({
      id: s.id,
      version: s.version,
      requests: s.endpoints.reduce((n, e) => n + e.num_requests, 0),
      errors: s.endpoints.reduce((n, e) => n + e.num_errors, 0),
      endpoints: s.endpoints.map((e) => e.name)
    }))
    const unhealthy = (reason: string): Health => ({ service: ServiceName, status: "unhealthy", reason, instances })
    if (pings.length === 0) return unhealthy("no instance answered PING")
    for (const ping of pings) {
      const instance = instances.find((i) => i.id === ping.id)
      if (instance === undefined) return unhealthy(`instance ${ping.id} answered PING but not STATS`)
      const missing = expectedEndpoints.filter((e) => !instance.endpoints.includes(e))
      if (missing.length > 0) return unhealthy(`instance ${ping.id} does not serve ${missing.join(", ")}`)
    }
    return { service: ServiceName, status: "healthy", reason: `${pings.length} instance(s) up`, instances } satisfies Health
  }).pipe(
    Effect.catchAll((error) =>
      Effect.succeed<Health>({ service: ServiceName, status: "unhealthy", reason: error.message, instances: [] })
    )
  )
