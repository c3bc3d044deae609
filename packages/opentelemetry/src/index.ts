/**
 * OpenTelemetry wiring for effect-nats services: spans exported over OTLP/HTTP
 * or to the console, configured from the standard `OTEL_*` variables.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Telemetry from "./Telemetry.js"
