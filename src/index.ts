/**
 * effect-nats: an Effect-native toolkit for event-driven services on NATS and JetStream.
 *
 * @since 0.1.0
 */

/** @since 0.2.0 */
export * as Aggregate from "./Aggregate.js"
/** @since 0.1.0 */
export * as AsyncApi from "./AsyncApi.js"
/** @since 0.1.0 */
export * as Command from "./Command.js"
/** @since 0.1.0 */
export * as CommandClient from "./CommandClient.js"
/** @since 0.1.0 */
export * as CommandService from "./CommandService.js"
/** @since 0.1.0 */
export * as Consumer from "./Consumer.js"
/** @since 0.1.0 */
export * as DeadLetter from "./DeadLetter.js"
/** @since 0.1.0 */
export * as Dedup from "./Dedup.js"
/** @since 0.1.0 */
export * as Envelope from "./Envelope.js"
/** @since 0.1.0 */
export * as Event from "./Event.js"
/** @since 0.1.0 */
export * as Handler from "./Handler.js"
/** @since 0.1.0 */
export * as JetStream from "./JetStream.js"
/** @since 0.2.0 */
export * as Lag from "./Lag.js"
/** @since 0.2.0 */
export * as Limits from "./Limits.js"
/** @since 0.1.0 */
export * as Metrics from "./Metrics.js"
/** @since 0.1.0 */
export * as Middleware from "./Middleware.js"
/** @since 0.1.0 */
export * as NatsClient from "./NatsClient.js"
/** @since 0.1.0 */
export * as NatsError from "./NatsError.js"
/** @since 0.1.0 */
export * as Outbox from "./Outbox.js"
/** @since 0.1.0 */
export * as OutboxRelay from "./OutboxRelay.js"
/** @since 0.2.0 */
export * as Projection from "./Projection.js"
/** @since 0.1.0 */
export * as Publisher from "./Publisher.js"
/** @since 0.2.0 */
export * as Replay from "./Replay.js"
/** @since 0.1.0 */
export * as Subject from "./Subject.js"
/** @since 0.1.0 */
export * as Tracing from "./Tracing.js"
