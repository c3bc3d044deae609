/**
 * Real-server test layers for effect-nats: a local `nats-server` with JetStream
 * and a throwaway Postgres, started per test scope.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as NatsTestServer from "./NatsTestServer.js"

/**
 * @since 0.1.0
 */
export * as PostgresTestServer from "./PostgresTestServer.js"
