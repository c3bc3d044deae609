/**
 * The SaaSQuatch tenant flow, end to end: sign-ups publish
 * `tenants.tenant.created`; the provisioning worker creates each tenant's
 * storage and publishes `tenants.tenant.ready`; a directory service marks
 * ready tenants as open. One tenant's provisioning always fails (dead-lettered
 * after 3 deliveries), one fails its first delivery and then succeeds, and a
 * repeated sign-up is provisioned once.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Console, type Duration, Effect, Layer, Metric, Ref } from "effect"
import { Consumer, DeadLetter, type Envelope, Handler, JetStream, Metrics, Publisher } from "effect-nats"
import { EventStream, TenantCreated, TenantReady } from "./domain.js"
import * as Outages from "./Outages.js"
import * as Provisioning from "./Provisioning.js"
import * as TenantStorage from "./TenantStorage.js"

/** A ready tenant, as the directory saw it. */
export type ReadyEvent = Envelope.Envelope<typeof TenantReady.schema.Type>

/**
 * The directory service: a second durable consumer, of `tenants.tenant.ready`
 * only, that opens each ready tenant (here: calls `onReady`).
 */
export const watchReadyTenants = <E, R>(onReady: (ready: ReadyEvent) => Effect.Effect<void, E, R>) =>
  Consumer.make({
    stream: EventStream.name,
    durable: "tenant-directory",
    filterSubject: TenantReady.subject,
    handlers: [Handler.make(TenantReady, onReady)]
  })

/** Publish a sign-up: `tenants.tenant.created` with the tenant as the envelope's tenant and a new flow id. */
export const signUp = (tenantId: string, name: string, meta: { readonly correlationId?: string; readonly id?: string } = {}) =>
  Effect.flatMap(Publisher.Publisher, (publisher) =>
    publisher.publish(TenantCreated, { tenantId, name }, {
      version: 1,
      tenantId,
      correlationId: meta.correlationId ?? `signup-${tenantId}-${crypto.randomUUID()}`,
      ...(meta.id !== undefined ? { id: meta.id } : {})
    }))

/** Poll `check` every 50 ms until it returns a value, for at most `timeout`. */
const waitFor = <A, E, R>(check: Effect.Effect<A | undefined, E, R>, timeout: Duration.DurationInput) => {
  const loop: Effect.Effect<A, E, R> = Effect.flatMap(
    check,
    (a) => a !== undefined ? Effect.succeed(a) : Effect.zipRight(Effect.sleep("50 millis"), loop)
  )
  return Effect.timeout(loop, timeout)
}

/** The outages of the demo: `doomed` never provisions, `flaky` fails its first delivery (the try and its retry). */
export const demoOutages: Outages.Plan = { alwaysFail: ["doomed"], failFirst: { flaky: 2 } }

/** What the flow saw. */
export interface FlowReport {
  /** The created events published, by tenant. */
  readonly created: Readonly<Record<string, { readonly id: string; readonly correlationId: string }>>
  /** The ready events the directory received, in order. */
  readonly ready: ReadonlyArray<ReadyEvent>
  /** The dead letters of this run's tenants. */
  readonly deadLetters: ReadonlyArray<DeadLetter.Entry>
  /** Provisioning attempts per tenant. */
  readonly attempts: Readonly<Record<string, number>>
  /** The tenants registry at the end. */
  readonly registered: ReadonlyArray<{ readonly tenantId: string; readonly storage: string }>
  /** Whether each tenant's storage exists at the end. */
  readonly storage: Readonly<Record<string, boolean>>
  /** Whether JetStream dropped the re-sent sign-up (same message id) as a duplicate. */
  readonly resentWasDuplicate: boolean
  /** How the consumer metrics moved during the flow (in-process retries, naks, dead letters, duplicates skipped). */
  readonly metrics: {
    readonly retried: number
    readonly redelivered: number
    readonly deadLettered: number
    readonly duplicatesSkipped: number
  }
}

/** The consumer counters the flow reports (process-wide `Metric`s of effect-nats). */
const counters = Effect.all({
  retried: Metric.value(Metrics.retried),
  redelivered: Metric.value(Metrics.redelivered),
  deadLettered: Metric.value(Metrics.deadLettered),
  duplicatesSkipped: Metric.value(Metrics.duplicatesSkipped)
}).pipe(Effect.map((m) => ({
  retried: m.retried.count,
  redelivered: m.redelivered.count,
  deadLettered: m.deadLettered.count,
  duplicatesSkipped: m.duplicatesSkipped.count
})))

/**
 * Run the flow: needs the worker (see {@link WorkerLive}), `Outages`, a
 * `Publisher`, `DeadLetter` and NATS.
 */
export const flow = Effect.gen(function*() {
  const storage = yield* TenantStorage.TenantStorage
  const outages = yield* Outages.Outages
  const before = yield* counters
  const ready = yield* Ref.make<ReadonlyArray<ReadyEvent>>([])
  yield* watchReadyTenants((e) =>
    Effect.zipRight(
      Ref.update(ready, (xs) => [...xs, e]),
      Console.log(`directory: ${e.data.tenantId} is open (storage ${e.data.storage}, caused by ${e.causationId})`)
    )
  )

  // 1. three sign-ups
  const tenants = [["acme-corp", "Acme Corp"], ["flaky", "Flaky Ltd"], ["doomed", "Doomed Inc"]] as const
  const created: Record<string, { id: string; correlationId: string }> = {}
  for (const [tenantId, name] of tenants) {
    const correlationId = `signup-${tenantId}-${crypto.randomUUID()}`
    const ack = yield* signUp(tenantId, name, { correlationId })
    created[tenantId] = { id: ack.id, correlationId }
    yield* Console.log(`sign-up: published tenants.tenant.created for ${tenantId} (${ack.id}, ${ack.stream}#${ack.seq})`)
  }

  // 2. acme-corp and flaky become ready; doomed is dead-lettered after 3 deliveries
  const readyFor = (tenantId: string) =>
    Effect.map(Ref.get(ready), (xs) => xs.find((e) => e.data.tenantId === tenantId))
  yield* waitFor(readyFor("acme-corp"), "10 seconds")
  yield* waitFor(readyFor("flaky"), "10 seconds")
  const ownDeadLetters = Effect.map(
    deadLetters,
    (entries) => entries.filter((e) => Object.values(created).some((c) => envelopeId(e.record.envelope) === c.id))
  )
  const doomed = yield* waitFor(Effect.map(ownDeadLetters, (xs) => xs[0]), "10 seconds")
  yield* Console.log(
    `dead letter #${doomed.seq} on ${doomed.subject}: ${doomed.record.reason} after ${doomed.record.attempts} deliveries ` +
      `(${doomed.record.errorTag}: ${doomed.record.errorMessage})`
  )

  // 3. the sign-up flow retries: the same message again, then the same sign-up under a new id
  const again = yield* signUp("acme-corp", "Acme Corp", { id: created["acme-corp"]!.id })
  yield* Console.log(`sign-up again, same message id: JetStream duplicate = ${again.duplicate}`)
  const resent = yield* signUp("acme-corp", "Acme Corp")
  yield* Console.log(`sign-up again, new message id ${resent.id}: stored as #${resent.seq}`)
  // settled: the provisioner has taken the re-sent sign-up and acked everything, and so has the directory
  yield* waitFor(settled(Provisioning.Durable, resent.seq), "10 seconds")
  yield* waitFor(settled("tenant-directory", 0), "10 seconds")
  const acmeReady = (yield* Ref.get(ready)).filter((e) => e.data.tenantId === "acme-corp").length
  yield* Console.log(`acme-corp: signed up 3 times, provisioned ${yield* outages.attempts("acme-corp")} time(s), ${acmeReady} ready event(s)`)

  // 4. where things stand
  const attempts: Record<string, number> = {}
  const exists: Record<string, boolean> = {}
  for (const [tenantId] of tenants) {
    attempts[tenantId] = yield* outages.attempts(tenantId)
    exists[tenantId] = yield* storage.exists(tenantId)
  }
  const registered = yield* storage.registered
  yield* Console.log(`provisioning attempts: ${JSON.stringify(attempts)}`)
  yield* Console.log(`storage exists: ${JSON.stringify(exists)}`)
  yield* Console.log(`registered tenants: ${registered.map((t) => `${t.tenantId} -> ${t.storage}`).join(", ")}`)
  const after = yield* counters
  const metrics = {
    retried: after.retried - before.retried,
    redelivered: after.redelivered - before.redelivered,
    deadLettered: after.deadLettered - before.deadLettered,
    duplicatesSkipped: after.duplicatesSkipped - before.duplicatesSkipped
  }
  yield* Console.log(`metrics: ${JSON.stringify(metrics)}`)
  return {
    created,
    ready: yield* Ref.get(ready),
    deadLetters: yield* ownDeadLetters,
    attempts,
    registered,
    storage: exists,
    resentWasDuplicate: again.duplicate,
    metrics
  } satisfies FlowReport
})

/** `true` once a durable consumer of the stream has nothing pending or unacked (and got past `seq`). */
export const settled = (durable: string, seq: number) =>
  Effect.flatMap(JetStream.JetStream, (js) => js.consumerInfo(EventStream.name, durable)).pipe(
    Effect.map((info) =>
      info.num_pending === 0 && info.num_ack_pending === 0 && info.delivered.stream_seq >= seq ? true : undefined
    )
  )

/**
 * The dead letters of the `tenants` context. (An empty DLQ stream is checked
 * first: `DeadLetter.list` on an empty stream asks for sequence 0, which the
 * server refuses.)
 */
export const deadLetters = Effect.gen(function*() {
  const dlq = yield* DeadLetter.DeadLetter
  const js = yield* JetStream.JetStream
  const info = yield* js.streamInfo(dlq.stream)
  return info.state.messages === 0 ? [] : yield* dlq.list({ context: "tenants", limit: 1000 })
})

/** The id of an envelope kept in a dead letter, if it has one. */
const envelopeId = (envelope: unknown): string | undefined =>
  typeof envelope === "object" && envelope !== null && "id" in envelope && typeof envelope.id === "string"
    ? envelope.id
    : undefined

/** The flow in its own scope (its consumers stop with it). */
export const program = Effect.scoped(flow)

/**
 * The provisioning worker on a SQL database (any `SqlClient` layer: SQLite,
 * Postgres) with the given outages, and the services the flow uses; needs
 * `JetStream` and `NatsClient`.
 */
export const workerLayer = <E, R>(sql: Layer.Layer<SqlClient.SqlClient, E, R>, outages: Outages.Plan = demoOutages) =>
  Provisioning.layer().pipe(
    Layer.provideMerge(TenantStorage.layer),
    Layer.provideMerge(Layer.merge(sql, Outages.layer(outages))),
    Layer.provideMerge(Layer.mergeAll(Publisher.layer({ source: "tenant-provisioner" }), DeadLetter.layer()))
  )

/** The worker on SQLite (`filename`, default in memory) with the demo's outages unless given others. */
export const WorkerLive = (options: { readonly filename?: string; readonly outages?: Outages.Plan } = {}) =>
  workerLayer(SqliteClient.layer({ filename: options.filename ?? ":memory:" }), options.outages)
