/** Time units and server defaults of the in-memory JetStream. */

export const NANOS_PER_MILLI = 1_000_000
export const toMillis = (ns: number): number => Math.floor(ns / NANOS_PER_MILLI)
export const defaultDuplicateWindow = 120_000 * NANOS_PER_MILLI
export const defaultAckWait = 30_000 * NANOS_PER_MILLI
export const isoOf = (millis: number): string => new Date(millis).toISOString()
