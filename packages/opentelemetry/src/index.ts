/**
 * Observability for effect-nats services in one layer: spans and metrics
 * exported over OTLP/HTTP (metrics also as a Prometheus `/metrics` endpoint),
 * configured from the standard `OTEL_*` variables, and log lines that carry
 * the trace.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Telemetry from "./Telemetry.js"
