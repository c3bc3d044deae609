/**
 * Simulated outages of the provisioning backend, so the demo and the tests
 * can show retries and dead letters on purpose: a tenant whose provisioning
 * always fails with a transient error, and one that fails a few times before
 * it works. Production code provides {@link layerNone}.
 */
import { Context, Effect, Layer, Ref } from "effect"

/** Which tenants fail, and how. */
export interface Plan {
  /** These tenants always fail (the backend never recovers for them). */
  readonly alwaysFail?: ReadonlyArray<string> | undefined
  /** These tenants fail their first N attempts, then succeed. */
  readonly failFirst?: Readonly<Record<string, number>> | undefined
}

/** The outcome of one attempt: go ahead, or a simulated outage (with the attempt number). */
export type Verdict = { readonly _tag: "Proceed" } | { readonly _tag: "Outage"; readonly attempt: number }

/** The outages in effect, with a count of provisioning attempts per tenant (this process only). */
export class Outages extends Context.Tag("examples/tenant-provisioning/Outages")<Outages, {
  /** Count an attempt for the tenant and say whether it fails. */
  readonly attempt: (tenantId: string) => Effect.Effect<Verdict>
  /** Attempts so far for the tenant. */
  readonly attempts: (tenantId: string) => Effect.Effect<number>
}>() {}

/** Outages following a plan. */
export const make = (plan: Plan): Effect.Effect<Outages["Type"]> =>
  Effect.map(Ref.make<ReadonlyMap<string, number>>(new Map()), (counts) =>
    Outages.of({
      attempt: (tenantId) =>
        Ref.modify(counts, (m): [Verdict, ReadonlyMap<string, number>] => {
          const attempt = (m.get(tenantId) ?? 0) + 1
          const fails = (plan.alwaysFail ?? []).includes(tenantId) || attempt <= (plan.failFirst?.[tenantId] ?? 0)
          return [fails ? { _tag: "Outage", attempt } : { _tag: "Proceed" }, new Map(m).set(tenantId, attempt)]
        }),
      attempts: (tenantId) => Effect.map(Ref.get(counts), (m) => m.get(tenantId) ?? 0)
    }))

/** Outages following a plan, as a layer. */
export const layer = (plan: Plan): Layer.Layer<Outages> => Layer.effect(Outages, make(plan))

/** No outages: every attempt proceeds (attempts are still counted). */
export const layerNone: Layer.Layer<Outages> = layer({})
