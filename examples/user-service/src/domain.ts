/**
 * The user service's contract: the `User` entity, its typed failures, its
 * commands and query (`users.command.user.<name>`, `users.query.user.get`)
 * and the events it publishes (`users.user.<event>`).
 *
 * Clients import this module and nothing else of the service: the same
 * Schemas encode requests on the client and decode them on the service,
 * and typed failures come back as the same classes.
 */
import { Schema } from "effect"
import { Command, Event } from "effect-nats"

/** The micro service name: `$SRV.PING.user-service`, `$SRV.INFO.user-service`, ... */
export const ServiceName = "user-service"

/** The queue group the instances join: each request goes to one instance of the group. */
export const QueueGroup = "user-service-group"

/** The service version, reported by `$SRV.INFO` and `$SRV.PING`. */
export const ServiceVersion = "1.0.0"

/** The service description, reported by `$SRV.INFO`. */
export const ServiceDescription = "User management service"

/** A display name: 1 to 100 characters, no leading or trailing spaces. */
export const Name = Schema.NonEmptyTrimmedString.pipe(Schema.maxLength(100))

/** An email address (a light check: `local@domain.tld`, no spaces). */
export const Email = Schema.String.pipe(
  Schema.pattern(/^[^\s@]+@[^\s@]+\.[^\s@]+$/),
  Schema.annotations({ identifier: "Email" })
)

/** The user entity, as the `get` query returns it. `version` counts its events. */
export const User = Schema.Struct({
  id: Schema.String,
  name: Schema.String,
  email: Schema.String,
  status: Schema.Literal("active", "inactive"),
  version: Schema.Int
})

/** A user, decoded. */
export type User = typeof User.Type

// --- typed failures: each has a `code`, sent as Nats-Service-Error-Code --------------------------

/** No user has this id. */
export class UserNotFound extends Schema.TaggedError<UserNotFound>()("UserNotFound", { userId: Schema.String }) {
  /** The error code on the wire. */
  readonly code = "404"
  /** A readable message (also the `Nats-Service-Error` header). */
  override get message() {
    return `user ${this.userId} not found`
  }
}

/** Another user already has this email address. */
export class EmailTaken extends Schema.TaggedError<EmailTaken>()("EmailTaken", { email: Schema.String }) {
  /** The error code on the wire. */
  readonly code = "409"
  /** A readable message (also the `Nats-Service-Error` header). */
  override get message() {
    return `email ${this.email} is already taken`
  }
}

/** `create` with the id of an existing user. */
export class UserAlreadyExists extends Schema.TaggedError<UserAlreadyExists>()("UserAlreadyExists", {
  userId: Schema.String
}) {
  /** The error code on the wire. */
  readonly code = "409"
  /** A readable message (also the `Nats-Service-Error` header). */
  override get message() {
    return `user ${this.userId} already exists`
  }
}

/** The user is deactivated: it cannot change any more. */
export class UserInactive extends Schema.TaggedError<UserInactive>()("UserInactive", { userId: Schema.String }) {
  /** The error code on the wire. */
  readonly code = "410"
  /** A readable message (also the `Nats-Service-Error` header). */
  override get message() {
    return `user ${this.userId} is deactivated`
  }
}

// --- commands and the query -----------------------------------------------------------------------

/**
 * Create a user (`users.command.user.create`). The aggregate id is the new
 * user's id; without one, the service makes a UUID.
 */
export const CreateUser = Command.make({
  service: "users",
  aggregate: "user",
  name: "create",
  payload: Schema.Struct({ name: Name, email: Email }),
  success: User,
  failure: Schema.Union(UserAlreadyExists, EmailTaken)
})

/** Change a user's email address (`users.command.user.update-email`). */
export const UpdateEmail = Command.make({
  service: "users",
  aggregate: "user",
  name: "update-email",
  payload: Schema.Struct({ email: Email }),
  success: User,
  failure: Schema.Union(UserNotFound, UserInactive, EmailTaken)
})

/**
 * Deactivate a user (`users.command.user.deactivate`). Deactivating an
 * inactive user succeeds without a new event.
 */
export const DeactivateUser = Command.make({
  service: "users",
  aggregate: "user",
  name: "deactivate",
  payload: Schema.Struct({ reason: Schema.optional(Schema.String) }),
  success: User,
  failure: UserNotFound
})

/** Read a user (`users.query.user.get`). */
export const GetUser = Command.query({
  service: "users",
  aggregate: "user",
  success: User,
  failure: UserNotFound
})

// --- events ---------------------------------------------------------------------------------------

/** A user was created (`users.user.created`, aggregate version 1). */
export const UserCreated = Event.make({
  type: "users.user.created",
  aggregate: "User",
  schema: Schema.Struct({ userId: Schema.String, name: Schema.String, email: Schema.String }),
  aggregateId: (d) => d.userId
})

/** A user's email address changed (`users.user.email-updated`). */
export const UserEmailUpdated = Event.make({
  type: "users.user.email-updated",
  aggregate: "User",
  schema: Schema.Struct({ userId: Schema.String, oldEmail: Schema.String, newEmail: Schema.String }),
  aggregateId: (d) => d.userId
})

/** A user was deactivated (`users.user.deactivated`). */
export const UserDeactivated = Event.make({
  type: "users.user.deactivated",
  aggregate: "User",
  schema: Schema.Struct({ userId: Schema.String, reason: Schema.optional(Schema.String) }),
  aggregateId: (d) => d.userId
})

/**
 * The JetStream stream that keeps the events. Each user's events are stored
 * on its own subject, `users.user.events.<id>` (see `Users.ts`). Its subjects
 * are the event subjects only: a stream on `users.>` would also capture the
 * command requests on `users.command.…` and answer them with a PubAck.
 */
export const EventStream = { name: "USERS", subjects: ["users.user.>"] } as const
