/**
 * The tenant events (`tenants.tenant.created`, `tenants.tenant.ready`,
 * following `<context>.<aggregate>.<event>`) and the tenant id rules.
 */
import { Schema } from "effect"
import { Event } from "effect-nats"

/**
 * A tenant id: a lowercase slug of 1 to 40 characters (`acme`, `acme-corp`,
 * `shop42`): a letter first, then letters and digits, single `-` between
 * them. Tenant ids end up in SQL identifiers, so anything else is refused
 * when the event is decoded (and again by the storage, see `TenantStorage`).
 */
export const TenantId = Schema.String.pipe(
  Schema.pattern(/^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$/),
  Schema.maxLength(40),
  Schema.annotations({ identifier: "TenantId" })
)

/** A tenant signed up (published by the sign-up flow; aggregate version 1). */
export const TenantCreated = Event.make({
  type: "tenants.tenant.created",
  aggregate: "Tenant",
  schema: Schema.Struct({ tenantId: TenantId, name: Schema.String.pipe(Schema.minLength(1)) }),
  aggregateId: (d) => d.tenantId
})

/** The tenant's storage is in place: services may serve it (aggregate version 2). */
export const TenantReady = Event.make({
  type: "tenants.tenant.ready",
  aggregate: "Tenant",
  schema: Schema.Struct({
    tenantId: TenantId,
    /** Where its data lives: a table (`tenant_acme_data`, SQLite) or a schema's table (`tenant_acme.data`, Postgres). */
    storage: Schema.String
  }),
  aggregateId: (d) => d.tenantId
})

/** The stream of tenant events (event subjects only). */
export const EventStream = { name: "TENANTS", subjects: ["tenants.tenant.>"] } as const
