/**
 * The user service: one handler per command and query, served as a NATS
 * micro service in a queue group. Each user is an event-sourced aggregate
 * (see `Users.ts`): a command loads the user from its events, decides, and
 * appends the new events with the Publisher; the command service runs each
 * handler as the handling of its request, so every event has the request id
 * as causation id and the request's correlation id.
 */
import { Effect, Layer, Option } from "effect"
import { CommandService, JetStream, Publisher } from "effect-nats"
import {
  CreateUser,
  DeactivateUser,
  EventStream,
  GetUser,
  QueueGroup,
  ServiceDescription,
  ServiceName,
  ServiceVersion,
  UpdateEmail,
  UserNotFound
} from "./domain.js"
import * as Users from "./Users.js"

/** The user id of a request: its aggregate id. */
const userId = (aggregateId: string | undefined) =>
  aggregateId === undefined || aggregateId === "" ? Effect.fail(new UserNotFound({ userId: "" })) : Effect.succeed(aggregateId)

/** `create`: a new active user at version 1 (`users.user.created`); an id or email in use is refused. */
export const create = CommandService.handler(CreateUser, (payload, request) =>
  Effect.flatMap(Users.Users, (users) =>
    users.create(request.aggregateId || crypto.randomUUID(), payload.name, payload.email)))

/** `update-email`: `users.user.email-updated`; the same address again is a no-op. */
export const updateEmail = CommandService.handler(UpdateEmail, (payload, request) =>
  Effect.gen(function*() {
    const users = yield* Users.Users
    return yield* users.updateEmail(yield* userId(request.aggregateId), payload.email)
  }))

/** `deactivate`: `users.user.deactivated`; an inactive user stays as it is. */
export const deactivate = CommandService.handler(DeactivateUser, (payload, request) =>
  Effect.gen(function*() {
    const users = yield* Users.Users
    return yield* users.deactivate(yield* userId(request.aggregateId), payload.reason)
  }))

/** `get`: the user (folded from its events), or `UserNotFound`. */
export const get = CommandService.handler(GetUser, (_, request) =>
  Effect.gen(function*() {
    const users = yield* Users.Users
    const id = yield* userId(request.aggregateId)
    return yield* Effect.flatMap(users.get(id), Option.match({
      onNone: () => Effect.fail(new UserNotFound({ userId: id })),
      onSome: Effect.succeed
    }))
  }))

/** The service's options: name, version, queue group and its four endpoints. */
export const options = {
  name: ServiceName,
  version: ServiceVersion,
  description: ServiceDescription,
  queueGroup: QueueGroup,
  metadata: { entity: "user" },
  commands: [create, updateEmail, deactivate, get]
} as const

/**
 * Start one service instance in the current scope (closing the scope stops
 * it gracefully). Needs a `NatsClient` and `Users`.
 */
export const make = CommandService.make(options)

/** Make sure the events stream exists (idempotent). */
export const ensureEventStream = Effect.flatMap(JetStream.JetStream, (js) => js.ensureStream(EventStream))

/**
 * The service as a layer: the events stream is ensured first, then the
 * instance starts; it needs a `NatsClient` and `Users` (see
 * {@link layerWithDependencies}).
 */
export const layer = CommandService.layer(options).pipe(Layer.provide(Layer.effectDiscard(ensureEventStream)))

/**
 * The service with its users on the `USERS` stream and its own publisher
 * (`source: "user-service"`); needs a `NatsClient` and `JetStream`.
 */
export const layerWithDependencies = layer.pipe(
  Layer.provide(Users.layer),
  Layer.provide(Publisher.layer({ source: ServiceName }))
)
