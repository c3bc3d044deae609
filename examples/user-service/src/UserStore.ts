/**
 * Where the users live: an in-memory map behind a lock. Every instance of
 * the service given the same store sees the same users, as instances sharing
 * a database would.
 */
import { Context, Effect, Layer, Option, SynchronizedRef } from "effect"
import type { User } from "./domain.js"

/**
 * The user store.
 *
 * `change` runs `f` on the current users while holding the store's lock and
 * keeps the user it returns only if `f` succeeds: a handler that publishes
 * the user's event inside `f` either stores the user and its event, or
 * neither. (A production service would write the user and an outbox row in
 * one SQL transaction instead; see `Outbox` and `@effect-nats/sql`.)
 */
export class UserStore extends Context.Tag("examples/user-service/UserStore")<UserStore, {
  /** The user with this id, if any. */
  readonly get: (id: string) => Effect.Effect<Option.Option<User>>
  /** Change (or create) one user; fails with `f`'s error, leaving the store as it was. */
  readonly change: <E, R>(
    id: string,
    f: (current: Option.Option<User>, users: ReadonlyMap<string, User>) => Effect.Effect<User, E, R>
  ) => Effect.Effect<User, E, R>
}>() {}

/** A new, empty in-memory store. */
export const makeMemory: Effect.Effect<UserStore["Type"]> = Effect.map(
  SynchronizedRef.make<ReadonlyMap<string, User>>(new Map()),
  (ref) =>
    UserStore.of({
      get: (id) => Effect.map(SynchronizedRef.get(ref), (users) => Option.fromNullable(users.get(id))),
      change: (id, f) =>
        SynchronizedRef.modifyEffect(ref, (users) =>
          Effect.map(f(Option.fromNullable(users.get(id)), users), (user) => {
            const next = new Map(users)
            next.set(id, user)
            return [user, next] as const
          }))
    })
)

/** An empty in-memory store as a layer. */
export const layerMemory: Layer.Layer<UserStore> = Layer.effect(UserStore, makeMemory)
