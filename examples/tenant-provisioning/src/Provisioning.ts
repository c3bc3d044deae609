/**
 * The provisioning worker: a durable JetStream consumer of
 * `tenants.tenant.created` that creates the tenant's storage and publishes
 * `tenants.tenant.ready`.
 *
 * - Retries: a failed attempt is retried in process (`retry`), then the
 *   message is redelivered with a growing delay (`redelivery`, through
 *   `nak(delay)`); the third failed delivery is dead-lettered (`maxDeliver: 3`)
 *   to `dlq.tenants` with its reason and attempt count. An invalid tenant id
 *   is dead-lettered at once.
 * - Idempotency: the handler runs in the SQL dedup transaction
 *   (`SqlDedup`, natural key `<tenantId>:tenants.tenant.created:1`), so the
 *   storage, the registry row and the inbox row commit together, and a
 *   redelivered or re-published `tenant.created` of a tenant already
 *   provisioned is acked without running again. The DDL itself is
 *   `IF NOT EXISTS`. `tenant.ready` gets an id derived from the created
 *   event's id, so a re-run after a crash between publish and commit is
 *   dropped by JetStream's duplicate window.
 * - Causation: the pipeline runs the handler as the handling of the created
 *   event, so `tenant.ready` has `causationId` = the created event's id and
 *   the same `correlationId` and `tenantId`.
 */
import { Effect, Layer, Schedule } from "effect"
import { Consumer, Handler, JetStream, Publisher } from "effect-nats"
import { SqlDedup } from "@effect-nats/sql"
import { EventStream, TenantCreated, TenantReady } from "./domain.js"
import { isPermanent, TenantStorage } from "./TenantStorage.js"

/** The durable consumer's name. */
export const Durable = "tenant-provisioner"

/** The id of the `tenant.ready` event caused by a `tenant.created` event. */
export const readyId = (createdId: string) => `${createdId}-ready`

/** Handle `tenant.created`: provision, then announce `tenant.ready`. */
export const onTenantCreated = Handler.make(TenantCreated, (created) =>
  Effect.gen(function*() {
    const storage = yield* TenantStorage
    const publisher = yield* Publisher.Publisher
    const provisioned = yield* storage.provision(created.data.tenantId, created.data.name)
    yield* publisher.publish(TenantReady, provisioned, { id: readyId(created.id), version: created.version + 1 })
  }))

/** Retry and redelivery settings (the defaults suit a demo: a dead letter within a second). */
export interface Options {
  /** In-process retries of one delivery (default: one retry after 20 ms). */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /** The delay before the n-th redelivery (default: exponential from 250 ms: 250 ms, 500 ms). */
  readonly redelivery?: Schedule.Schedule<unknown, unknown> | undefined
  /** Deliveries before a dead letter (default 3). */
  readonly maxDeliver?: number | undefined
}

/** The default in-process retry: once, after 20 ms. */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.spaced("20 millis").pipe(
  Schedule.intersect(Schedule.recurs(1))
)

/** The default redelivery delays: 250 ms, then 500 ms. */
export const defaultRedelivery: Schedule.Schedule<unknown, unknown> = Schedule.exponential("250 millis")

/** Make sure the tenant events stream exists (idempotent). */
export const ensureEventStream = Effect.flatMap(JetStream.JetStream, (js) => js.ensureStream(EventStream))

/** The consumer's options. */
export const consumerOptions = (options: Options = {}) => ({
  stream: EventStream.name,
  durable: Durable,
  filterSubject: TenantCreated.subject,
  handlers: [onTenantCreated],
  concurrency: 4,
  maxDeliver: options.maxDeliver ?? 3,
  retry: options.retry ?? defaultRetry,
  redelivery: options.redelivery ?? defaultRedelivery,
  isPermanent
})

/**
 * Start the provisioning worker in the current scope. Needs the
 * `TenantStorage`, a `Publisher`, the `DeadLetter` service, NATS, and a
 * `Dedup` store sharing the storage's `SqlClient` (see {@link layer}).
 */
export const make = (options: Options = {}) =>
  Effect.zipRight(ensureEventStream, Consumer.make(consumerOptions(options)))

/**
 * The worker as a layer, with its SQL dedup store (natural key: one
 * provisioning per tenant). Needs the `SqlClient` and the `TenantStorage`
 * built on it, a `Publisher`, `DeadLetter`, `JetStream` and `NatsClient`.
 */
export const layer = (options: Options = {}) =>
  Layer.scopedDiscard(make(options)).pipe(Layer.provide(SqlDedup.layer({ key: "natural" })))
