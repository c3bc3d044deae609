/**
 * effect-nats: an Effect-native toolkit for event-driven services on NATS and JetStream.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Envelope from "./Envelope.js"
/** @since 0.1.0 */
export * as JetStream from "./JetStream.js"
/** @since 0.1.0 */
export * as NatsClient from "./NatsClient.js"
/** @since 0.1.0 */
export * as NatsError from "./NatsError.js"
/** @since 0.1.0 */
export * as Subject from "./Subject.js"
