/**
 * Hand-written checks of the JSON that goes with every request and response
 * (the command envelope), for the hot path; anything they do not accept goes
 * to the Schemas, which decide and say why.
 *
 * @internal
 */
import { DateTime } from "effect"

/** A JSON object (not null, not an array). */
export const isRecord = (u: unknown): u is { readonly [key: string]: unknown } =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** `YYYY-MM-DDTHH:mm:ss[.fraction]Z`: what `Date.prototype.toISOString` (and `Schema.DateTimeUtc` encoding) writes. */
const isoUtc = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z$/

/**
 * A UTC ISO 8601 timestamp as `Schema.DateTimeUtc` decodes it, for the usual
 * form only (`toISOString`); `undefined` for anything else, which the Schema
 * then decodes (or rejects).
 */
export const parseUtc = (u: unknown): DateTime.Utc | undefined => {
  if (typeof u !== "string" || !isoUtc.test(u)) return undefined
  const millis = Date.parse(u)
  return Number.isNaN(millis) ? undefined : DateTime.unsafeMake(millis)
}
