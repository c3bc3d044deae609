/**
 * The user service: one handler per command and query, served as a NATS
 * micro service in a queue group. Handlers publish the user's events with
 * the Publisher; the command service runs each handler as the handling of
 * its request, so every event has the request id as causation id and the
 * request's correlation id.
 */
import { Effect, Layer, Option } from "effect"
import { CommandService, type Event, JetStream, Publisher } from "effect-nats"
import {
  CreateUser,
  DeactivateUser,
  EmailTaken,
  EventStream,
  GetUser,
  QueueGroup,
  ServiceDescription,
  ServiceName,
  ServiceVersion,
  UpdateEmail,
  type User,
  UserAlreadyExists,
  UserCreated,
  UserDeactivated,
  UserEmailUpdated,
  UserInactive,
  UserNotFound
} from "./domain.js"
import * as UserStore from "./UserStore.js"

/** Publish a user's event as of the user's new version; a failed publish is a defect (a `500`), so nothing is stored. */
const publish = <A, I>(event: Event.Event<string, A, I>, data: A, user: User) =>
  Effect.flatMap(Publisher.Publisher, (publisher) =>
    publisher.publish(event, data, { aggregateId: user.id, version: user.version })).pipe(Effect.orDie)

const emailOwner = (users: ReadonlyMap<string, User>, email: string): Option.Option<User> => {
  const wanted = email.toLowerCase()
  for (const user of users.values()) if (user.email.toLowerCase() === wanted) return Option.some(user)
  return Option.none()
}

/** The user id of a request: its aggregate id. */
const userId = (aggregateId: string | undefined) =>
  aggregateId === undefined || aggregateId === "" ? Effect.fail(new UserNotFound({ userId: "" })) : Effect.succeed(aggregateId)

/** `create`: a new active user at version 1, and `users.user.created`. */
export const create = CommandService.handler(CreateUser, (payload, request) =>
  Effect.gen(function*() {
    const store = yield* UserStore.UserStore
    const id = request.aggregateId || crypto.randomUUID()
    return yield* store.change(id, (current, users) =>
      Effect.gen(function*() {
        if (Option.isSome(current)) return yield* new UserAlreadyExists({ userId: id })
        if (Option.isSome(emailOwner(users, payload.email))) return yield* new EmailTaken({ email: payload.email })
        const user: User = { id, name: payload.name, email: payload.email, status: "active", version: 1 }
        yield* publish(UserCreated, { userId: id, name: user.name, email: user.email }, user)
        return user
      }))
  }))

/** `update-email`: `users.user.email-updated`; the same address again is a no-op. */
export const updateEmail = CommandService.handler(UpdateEmail, (payload, request) =>
  Effect.gen(function*() {
    const store = yield* UserStore.UserStore
    const id = yield* userId(request.aggregateId)
    return yield* store.change(id, (current, users) =>
      Effect.gen(function*() {
        if (Option.isNone(current)) return yield* new UserNotFound({ userId: id })
        const user = current.value
        if (user.status === "inactive") return yield* new UserInactive({ userId: id })
        if (user.email === payload.email) return user
        const owner = emailOwner(users, payload.email)
        if (Option.isSome(owner) && owner.value.id !== id) return yield* new EmailTaken({ email: payload.email })
        const updated: User = { ...user, email: payload.email, version: user.version + 1 }
        yield* publish(UserEmailUpdated, { userId: id, oldEmail: user.email, newEmail: payload.email }, updated)
        return updated
      }))
  }))

/** `deactivate`: `users.user.deactivated`; an inactive user stays as it is. */
export const deactivate = CommandService.handler(DeactivateUser, (payload, request) =>
  Effect.gen(function*() {
    const store = yield* UserStore.UserStore
    const id = yield* userId(request.aggregateId)
    return yield* store.change(id, (current) =>
      Effect.gen(function*() {
        if (Option.isNone(current)) return yield* new UserNotFound({ userId: id })
        const user = current.value
        if (user.status === "inactive") return user
        const updated: User = { ...user, status: "inactive", version: user.version + 1 }
        yield* publish(UserDeactivated, { userId: id, ...(payload.reason !== undefined ? { reason: payload.reason } : {}) }, updated)
        return updated
      }))
  }))

/** `get`: the user, or `UserNotFound`. */
export const get = CommandService.handler(GetUser, (_, request) =>
  Effect.gen(function*() {
    const store = yield* UserStore.UserStore
    const id = yield* userId(request.aggregateId)
    const user = yield* store.get(id)
    return yield* Option.match(user, {
      onNone: () => Effect.fail(new UserNotFound({ userId: id })),
      onSome: Effect.succeed
    })
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
 * it gracefully). Needs a `NatsClient`, a `Publisher` and a `UserStore`.
 */
export const make = CommandService.make(options)

/** Make sure the events stream exists (idempotent). */
export const ensureEventStream = Effect.flatMap(JetStream.JetStream, (js) => js.ensureStream(EventStream))

/**
 * The service as a layer: the events stream is ensured first, then the
 * instance starts; it needs a `NatsClient`, a `Publisher` and a `UserStore`
 * (see {@link layerWithDependencies}).
 */
export const layer = CommandService.layer(options).pipe(Layer.provide(Layer.effectDiscard(ensureEventStream)))

/**
 * The service with its own publisher (`source: "user-service"`) and an
 * in-memory store; needs a `NatsClient` and `JetStream`.
 */
export const layerWithDependencies = layer.pipe(
  Layer.provide(Layer.mergeAll(Publisher.layer({ source: ServiceName }), UserStore.layerMemory))
)
