/**
 * The tenant flow's contract, for teams that do not use effect-nats: the
 * AsyncAPI 3.0 document of the tenant events, made from the definitions in
 * domain.ts. The sign-up flow publishes `tenants.tenant.created`; the
 * provisioning worker consumes it and publishes `tenants.tenant.ready`,
 * which the directory consumes. `asyncapi.yaml` next to this package is this
 * document, written by `npx effect-nats asyncapi src/contracts.ts --out asyncapi.yaml`;
 * a test fails when it is stale.
 */
import { AsyncApi } from "effect-nats"
import { TenantCreated, TenantReady } from "./domain.js"

export default AsyncApi.make({
  service: { name: "tenant-provisioning", version: "1.0.0", description: "provisions per-tenant storage" },
  events: { publishes: [TenantCreated, TenantReady], consumes: [TenantCreated, TenantReady] }
})
