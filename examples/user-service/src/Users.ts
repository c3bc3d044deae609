/**
 * Where the users live: each user is an event-sourced aggregate on
 * JetStream (`Aggregate` from effect-nats). A user's events are stored on
 * its own subject, `users.user.events.<id>`; loading a user folds them, and
 * a command appends its events only if no other instance appended to the
 * same user in between (`Nats-Expected-Last-Subject-Sequence`), else it is
 * loaded, decided and appended again. Every instance reads the same stream,
 * so instances share the users as they would share a database.
 *
 * An email address belongs to one user: it is reserved in a KV bucket
 * (`create` is an atomic insert-if-absent) before the event that takes it
 * is appended, and released when a change gives it up or fails.
 */
import { Context, Effect, Layer, Option, Schedule } from "effect"
import { Aggregate, JetStream, type Publisher } from "effect-nats"
import {
  EmailTaken,
  EventStream,
  ServiceName,
  type User,
  UserAlreadyExists,
  UserCreated,
  UserDeactivated,
  UserEmailUpdated,
  UserInactive,
  UserNotFound
} from "./domain.js"

/** What the service asks of a user. */
export type UserCommand =
  | { readonly _tag: "Create"; readonly name: string; readonly email: string }
  | { readonly _tag: "UpdateEmail"; readonly email: string }
  | { readonly _tag: "Deactivate"; readonly reason?: string | undefined }

/** The user's events, as `evolve` and `decide` see them. */
export type UserEvent = Aggregate.EventOf<readonly [typeof UserCreated, typeof UserEmailUpdated, typeof UserDeactivated]>

/** The user aggregate: its state is the user (none before `created`), `version` counts its events. */
export const UserAggregate = Aggregate.make({
  events: [UserCreated, UserEmailUpdated, UserDeactivated],
  initial: Option.none<User>(),
  evolve: (state, event): Option.Option<User> => {
    switch (event.type) {
      case "users.user.created":
        return Option.some({ id: event.data.userId, name: event.data.name, email: event.data.email, status: "active", version: 1 })
      case "users.user.email-updated":
        return Option.map(state, (u) => ({ ...u, email: event.data.newEmail, version: u.version + 1 }))
      case "users.user.deactivated":
        return Option.map(state, (u) => ({ ...u, status: "inactive" as const, version: u.version + 1 }))
    }
  },
  decide: (
    command: UserCommand,
    state,
    { id }
  ): Effect.Effect<ReadonlyArray<UserEvent>, UserAlreadyExists | UserNotFound | UserInactive> => {
    switch (command._tag) {
      case "Create":
        return Option.isSome(state)
          ? Effect.fail(new UserAlreadyExists({ userId: id }))
          : Effect.succeed([{ type: "users.user.created" as const, data: { userId: id, name: command.name, email: command.email } }])
      case "UpdateEmail":
        if (Option.isNone(state)) return Effect.fail(new UserNotFound({ userId: id }))
        if (state.value.status === "inactive") return Effect.fail(new UserInactive({ userId: id }))
        return Effect.succeed(
          state.value.email === command.email
            ? []
            : [{ type: "users.user.email-updated" as const, data: { userId: id, oldEmail: state.value.email, newEmail: command.email } }]
        )
      case "Deactivate":
        if (Option.isNone(state)) return Effect.fail(new UserNotFound({ userId: id }))
        return Effect.succeed(
          state.value.status === "inactive"
            ? []
            : [{
              type: "users.user.deactivated" as const,
              data: { userId: id, ...(command.reason !== undefined ? { reason: command.reason } : {}) }
            }]
        )
    }
  }
})

/** The users, as the handlers see them. */
export class Users extends Context.Tag("examples/user-service/Users")<Users, {
  /** The user with this id, if any (loaded from its events). */
  readonly get: (id: string) => Effect.Effect<Option.Option<User>>
  /** Commands (infrastructure failures are defects: a `500`). */
  readonly create: (id: string, name: string, email: string) => Effect.Effect<User, UserAlreadyExists | EmailTaken>
  readonly updateEmail: (id: string, email: string) => Effect.Effect<User, UserNotFound | UserInactive | EmailTaken>
  readonly deactivate: (id: string, reason: string | undefined) => Effect.Effect<User, UserNotFound>
}>() {}

/** The KV bucket of email reservations. */
export const EmailBucket = "user-emails"

const emailKey = (email: string) => Buffer.from(email.toLowerCase()).toString("base64url")

/** The users on the `USERS` stream, with email reservations in KV; needs `JetStream` and a `Publisher`. */
export const make: Effect.Effect<Users["Type"], never, JetStream.JetStream | Publisher.Publisher> = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const repository = yield* Aggregate.repository(UserAggregate, {
    stream: EventStream.name,
    source: ServiceName,
    retry: Schedule.recurs(5)
  }).pipe(Effect.orDie)
  const emails = yield* Effect.promise(() => js.kvm.create(EmailBucket, { history: 1 }))

  /** Reserve an address for a user: true when this call took it, false when it was the user's already. */
  const reserve = (email: string, id: string): Effect.Effect<boolean, EmailTaken> =>
    Effect.tryPromise(() => emails.create(emailKey(email), id)).pipe(
      Effect.as(true),
      Effect.catchAll(() =>
        Effect.flatMap(Effect.promise(() => emails.get(emailKey(email))), (entry) =>
          entry?.operation === "PUT" && entry.string() === id ? Effect.succeed(false) : Effect.fail(new EmailTaken({ email }))))
    )
  const release = (email: string, id: string) =>
    Effect.promise(async () => {
      const entry = await emails.get(emailKey(email))
      if (entry?.operation === "PUT" && entry.string() === id) await emails.delete(emailKey(email))
    })

  const execute = (id: string, command: UserCommand) => {
    const run = Effect.flatMap(repository.execute(id, command), (done) =>
      Option.match(done.state, {
        onNone: () => Effect.die(`user ${id}: no state after ${command._tag}`),
        onSome: (user) => Effect.as(
          // an address given up by this change is free again
          Effect.forEach(done.events, (e) => e.type === "users.user.email-updated" ? release(e.data.oldEmail, id) : Effect.void),
          user
        )
      }))
    if (command._tag === "Deactivate") return run
    return Effect.flatMap(reserve(command.email, id), (fresh) =>
      fresh ? Effect.onError(run, () => release(command.email, id)) : run)
  }

  /** The command's typed failures (those its `decide` can give); anything else is a defect. */
  const typed = <E>(self: Effect.Effect<User, { readonly _tag: string }>, tags: ReadonlyArray<string>) =>
    Effect.catchIf(self, (e) => !tags.includes(e._tag), Effect.die) as Effect.Effect<User, E>

  return Users.of({
    get: (id) => Effect.map(repository.load(id), (loaded) => loaded.state).pipe(Effect.orDie),
    create: (id, name, email) => typed(execute(id, { _tag: "Create", name, email }), ["UserAlreadyExists", "EmailTaken"]),
    updateEmail: (id, email) =>
      typed(execute(id, { _tag: "UpdateEmail", email }), ["UserNotFound", "UserInactive", "EmailTaken"]),
    deactivate: (id, reason) => typed(execute(id, { _tag: "Deactivate", reason }), ["UserNotFound"])
  })
})

/** The users as a layer; needs `JetStream` and a `Publisher` (and the `USERS` stream). */
export const layer: Layer.Layer<Users, never, JetStream.JetStream | Publisher.Publisher> = Layer.effect(Users, make)
