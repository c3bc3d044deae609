import { describe, expect, layer } from "@effect/vitest"
import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Exit, Layer, Ref, Schema, Scope } from "effect"
import { Command, CommandClient, CommandService, type Envelope, JetStream, NatsClient, Publisher } from "effect-nats"
import { checkHealth, expectedEndpoints, subscribeToEvents } from "../src/client.js"
import {
  CreateUser,
  DeactivateUser,
  EmailTaken,
  EventStream,
  GetUser,
  QueueGroup,
  ServiceName,
  UpdateEmail,
  User,
  UserAlreadyExists,
  UserInactive,
  UserNotFound
} from "../src/domain.js"
import * as UserService from "../src/UserService.js"
import * as Users from "../src/Users.js"
import { eventually } from "./utils.js"

/** The client and the services' publisher, on a real nats-server with JetStream. */
const Live = Layer.mergeAll(CommandClient.layer({ timeout: "3 seconds" }), Publisher.layer({ source: ServiceName })).pipe(
  Layer.provideMerge(NatsTestServer.layerJetStream())
)

/** Start a service instance in its own scope (so a test can stop it); every instance reads the users from the USERS stream. */
const startInstance = (options: { readonly nats?: NatsClient.NatsClient["Type"] } = {}) =>
  Effect.gen(function*() {
    yield* UserService.ensureEventStream
    const users = yield* Users.make
    const nats = options.nats ?? (yield* NatsClient.NatsClient)
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const instance = yield* UserService.make.pipe(
      Effect.provideService(Users.Users, users),
      Effect.provideService(NatsClient.NatsClient, nats),
      Scope.extend(scope)
    )
    return { instance, scope }
  })

/** How many events the USERS stream holds. */
const storedEvents = Effect.flatMap(JetStream.JetStream, (js) => js.streamInfo(EventStream.name)).pipe(
  Effect.map((info) => info.state.messages)
)

/** The same subject as `CreateUser`, as a client that does not validate the email would send it. */
const LenientCreateUser = Command.make({
  service: "users",
  aggregate: "user",
  name: "create",
  payload: Schema.Struct({ name: Schema.String, email: Schema.String }),
  success: User
})

describe("user service", () => {
  layer(Live, { excludeTestServices: true, timeout: "30 seconds" })((it) => {
    it.scoped("create / update-email / deactivate change the user; get reads it back", () =>
      Effect.gen(function*() {
        yield* startInstance()
        const client = yield* CommandClient.CommandClient

        const created = yield* client.execute(CreateUser, "u-1", { name: "Ann Lee", email: "ann@example.com" })
        expect(created).toEqual({ id: "u-1", name: "Ann Lee", email: "ann@example.com", status: "active", version: 1 })
        expect(yield* client.query(GetUser, "u-1", {})).toEqual(created)

        const updated = yield* client.execute(UpdateEmail, "u-1", { email: "ann.lee@example.com" })
        expect(updated).toMatchObject({ email: "ann.lee@example.com", status: "active", version: 2 })
        // the same address again changes nothing
        expect(yield* client.execute(UpdateEmail, "u-1", { email: "ann.lee@example.com" })).toEqual(updated)

        const deactivated = yield* client.execute(DeactivateUser, "u-1", { reason: "left" })
        expect(deactivated).toMatchObject({ status: "inactive", version: 3 })
        // deactivating twice is a no-op, not an error
        expect(yield* client.execute(DeactivateUser, "u-1", {})).toEqual(deactivated)
        expect(yield* client.query(GetUser, "u-1", {})).toEqual(deactivated)

        // without an aggregate id, create picks a UUID
        const anonymous = yield* client.execute(CreateUser, undefined, { name: "Bo", email: "bo@example.com" })
        expect(anonymous.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
        expect(yield* client.query(GetUser, anonymous.id, {})).toEqual(anonymous)
      }))

    it.scoped("typed failures come back as the same classes with their codes; nothing is published for them", () =>
      Effect.gen(function*() {
        yield* startInstance()
        const client = yield* CommandClient.CommandClient
        yield* client.execute(CreateUser, "f-1", { name: "Ann", email: "ann@example.com" })
        yield* client.execute(CreateUser, "f-2", { name: "Bob", email: "bob@example.com" })
        const before = yield* storedEvents

        const notFound = yield* Effect.flip(client.query(GetUser, "nobody", {}))
        expect(notFound).toBeInstanceOf(UserNotFound)
        expect(notFound).toMatchObject({ code: "404", userId: "nobody", message: "user nobody not found" })

        const exists = yield* Effect.flip(client.execute(CreateUser, "f-1", { name: "Ann", email: "ann2@example.com" }))
        expect(exists).toBeInstanceOf(UserAlreadyExists)
        expect(exists).toMatchObject({ code: "409", userId: "f-1" })

        // emails are unique regardless of case
        const taken = yield* Effect.flip(client.execute(CreateUser, "f-3", { name: "Cy", email: "ANN@example.com" }))
        expect(taken).toBeInstanceOf(EmailTaken)
        expect(taken).toMatchObject({ code: "409", email: "ANN@example.com" })
        const takenOnUpdate = yield* Effect.flip(client.execute(UpdateEmail, "f-2", { email: "ann@example.com" }))
        expect(takenOnUpdate).toBeInstanceOf(EmailTaken)

        const missing = yield* Effect.flip(client.execute(UpdateEmail, "nobody", { email: "x@example.com" }))
        expect(missing).toBeInstanceOf(UserNotFound)
        const missingDeactivate = yield* Effect.flip(client.execute(DeactivateUser, "nobody", {}))
        expect(missingDeactivate).toBeInstanceOf(UserNotFound)

        yield* client.execute(DeactivateUser, "f-2", {})
        const inactive = yield* Effect.flip(client.execute(UpdateEmail, "f-2", { email: "bob2@example.com" }))
        expect(inactive).toBeInstanceOf(UserInactive)
        expect(inactive).toMatchObject({ code: "410", userId: "f-2" })

        // the failures are a typed union: handle them by tag
        const recovered = yield* client.execute(UpdateEmail, "f-2", { email: "bob3@example.com" }).pipe(
          Effect.map(() => "updated"),
          Effect.catchTags({
            UserNotFound: (e) => Effect.succeed(`missing ${e.userId}`),
            UserInactive: (e) => Effect.succeed(`inactive ${e.userId}`),
            EmailTaken: (e) => Effect.succeed(`taken ${e.email}`)
          })
        )
        expect(recovered).toBe("inactive f-2")

        // the service validates what it receives: a client without the Email check gets a 400
        const invalid = yield* Effect.flip(client.execute(LenientCreateUser, "f-4", { name: "Di", email: "not-an-email" }))
        expect(invalid).toBeInstanceOf(CommandClient.CommandServiceError)
        expect(invalid).toMatchObject({ code: "400" })
        expect(invalid.message).toContain("payload.email")
        // ... and this client refuses to send it at all
        const refused = yield* Effect.flip(client.execute(CreateUser, "f-4", { name: "Di", email: "not-an-email" }))
        expect(refused).toMatchObject({ _tag: "CommandTransportError", reason: "Encode" })

        // only the deactivation of f-2 was published since `before`
        expect((yield* storedEvents) - before).toBe(1)
        expect(yield* client.query(GetUser, "f-1", {})).toMatchObject({ email: "ann@example.com", version: 1 })
      }))

    it.scoped("events: the subscriber gets each change, caused by its request and with the caller's correlation id", () =>
      Effect.gen(function*() {
        yield* startInstance()
        const client = yield* CommandClient.CommandClient
        const js = yield* JetStream.JetStream
        const received = yield* Ref.make<ReadonlyArray<Envelope.Envelope<unknown>>>([])
        yield* subscribeToEvents((e) => Ref.update(received, (xs) => [...xs, e]))

        const opts = { correlationId: "signup-42", userId: "admin" }
        const created = yield* client.executeWithMetadata(CreateUser, "e-1", { name: "Eve", email: "eve@example.com" }, opts)
        const updated = yield* client.executeWithMetadata(UpdateEmail, "e-1", { email: "eve@example.org" }, opts)
        const deactivated = yield* client.executeWithMetadata(DeactivateUser, "e-1", { reason: "spam" }, opts)
        // a failed command publishes nothing
        yield* Effect.flip(client.execute(UpdateEmail, "e-1", { email: "eve@example.net" }, opts))

        yield* eventually(Effect.map(Ref.get(received), (xs) => xs.length >= 3))
        const events = yield* Ref.get(received)
        expect(events.map((e) => [e.type, e.version, e.data])).toEqual([
          ["users.user.created", 1, { userId: "e-1", name: "Eve", email: "eve@example.com" }],
          ["users.user.email-updated", 2, { userId: "e-1", oldEmail: "eve@example.com", newEmail: "eve@example.org" }],
          ["users.user.deactivated", 3, { userId: "e-1", reason: "spam" }]
        ])
        expect(events.map((e) => e.causationId)).toEqual([
          created.metadata.requestId,
          updated.metadata.requestId,
          deactivated.metadata.requestId
        ])
        for (const e of events) {
          expect(e).toMatchObject({ correlationId: "signup-42", aggregateId: "e-1", aggregateType: "User", source: ServiceName })
        }

        // the same events are kept in the USERS stream
        const stored = yield* Effect.promise(() =>
          js.manager.streams.getMessage(EventStream.name, { last_by_subj: "users.user.events.e-1" })
        )
        expect(stored?.json<{ id: string }>().id).toBe(events[2]!.id)
        yield* Effect.sleep("200 millis")
        expect((yield* Ref.get(received)).length).toBe(3)
      }))

    it.scoped("two instances in the queue group share the load; each request is handled once", () =>
      Effect.gen(function*() {
        const server = yield* NatsTestServer.NatsTestServer
        const instances = yield* Effect.forEach([1, 2], (n) =>
          Effect.flatMap(NatsClient.make({ servers: server.url, name: `user-service-${n}` }), (nats) =>
            startInstance({ nats })))
        const client = yield* CommandClient.CommandClient
        const before = yield* storedEvents

        const ids = Array.from({ length: 40 }, (_, i) => `q-${i}`)
        const created = yield* Effect.forEach(
          ids,
          (id) => client.execute(CreateUser, id, { name: `User ${id}`, email: `${id}@example.com` }),
          { concurrency: 8 }
        )
        expect(created.map((u) => u.id)).toEqual(ids)
        // one event per request: none lost, none handled twice
        expect((yield* storedEvents) - before).toBe(40)
        // the instances share the users (the stream): every user reads back, whichever instance answers
        const read = yield* Effect.forEach(ids, (id) => client.query(GetUser, id, {}), { concurrency: 8 })
        expect(read.map((u) => u.email)).toEqual(ids.map((id) => `${id}@example.com`))

        const stats = yield* client.stats({ service: ServiceName, maxResponses: 2, window: "2 seconds" })
        expect(stats.map((s) => s.id).sort()).toEqual(instances.map((i) => i.instance.id).sort())
        const creates = stats.map((s) => s.endpoints.find((e) => e.name === CreateUser.endpoint)!.num_requests)
        expect(creates.reduce((a, b) => a + b, 0)).toBe(40)
        for (const n of creates) expect(n).toBeGreaterThan(0)
        const infos = yield* client.info({ service: ServiceName, maxResponses: 2, window: "2 seconds" })
        expect(infos.flatMap((i) => i.endpoints.map((e) => e.queue_group))).toEqual(Array(8).fill(QueueGroup))

        // one instance stops: the other keeps serving
        yield* Scope.close(instances[0]!.scope, Exit.void)
        expect(yield* client.query(GetUser, "q-0", {})).toMatchObject({ id: "q-0" })
        expect(yield* client.ping({ service: ServiceName, window: "300 millis" })).toHaveLength(1)
      }))

    it.scoped("$SRV.INFO / STATS describe the service; the health check needs PING and complete STATS", () =>
      Effect.gen(function*() {
        const { instance, scope } = yield* startInstance()
        const client = yield* CommandClient.CommandClient

        const [info] = yield* client.info({ service: ServiceName, maxResponses: 1 })
        expect(info).toMatchObject({
          type: "io.nats.micro.v1.info_response",
          name: ServiceName,
          id: instance.id,
          version: "1.0.0",
          description: "User management service",
          metadata: { entity: "user" }
        })
        expect(info!.endpoints.map((e) => [e.name, e.subject, e.queue_group])).toEqual([
          ["user_create", "users.command.user.create", QueueGroup],
          ["user_update-email", "users.command.user.update-email", QueueGroup],
          ["user_deactivate", "users.command.user.deactivate", QueueGroup],
          ["user_get_query", "users.query.user.get", QueueGroup]
        ])

        yield* client.execute(CreateUser, "s-1", { name: "Sam", email: "sam@example.com" })
        yield* client.query(GetUser, "s-1", {})
        yield* Effect.flip(client.query(GetUser, "nobody", {}))
        const [stats] = yield* client.stats({ service: ServiceName, maxResponses: 1 })
        const byName = Object.fromEntries(stats!.endpoints.map((e) => [e.name, e]))
        expect(byName["user_create"]).toMatchObject({ num_requests: 1, num_errors: 0, last_error: "" })
        expect(byName["user_get_query"]).toMatchObject({
          num_requests: 2,
          num_errors: 1,
          last_error: "404:user nobody not found"
        })
        expect(byName["user_get_query"]!.processing_time).toBeGreaterThan(0)

        const healthy = yield* checkHealth()
        expect(healthy).toMatchObject({ service: ServiceName, status: "healthy" })
        expect(healthy.instances).toEqual([
          { id: instance.id, version: "1.0.0", requests: 3, errors: 1, endpoints: expectedEndpoints }
        ])

        // an instance that answers PING but serves only `get` is not healthy
        yield* CommandService.make({ name: ServiceName, version: "1.0.0", commands: [UserService.get] }).pipe(
          Effect.provideService(Users.Users, yield* Users.make),
          Scope.extend(scope)
        )
        const partial = yield* checkHealth()
        expect(partial.status).toBe("unhealthy")
        expect(partial.reason).toContain("does not serve user_create, user_update-email, user_deactivate")

        // stopped: nobody answers PING
        yield* Scope.close(scope, Exit.void)
        const down = yield* checkHealth()
        expect(down).toEqual({ service: ServiceName, status: "unhealthy", reason: "no instance answered PING", instances: [] })
      }))
  })
})
