/**
 * Test layers for effect-nats: a local `nats-server` with JetStream and a
 * throwaway Postgres, started per test scope; an in-memory NATS + JetStream
 * test double whose server-side delays follow `TestClock`; capture helpers
 * that read what was published, dead letters, metrics and spans on either.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as Capture from "./Capture.js"

/**
 * @since 0.1.0
 */
export * as Contracts from "./Contracts.js"

/**
 * @since 0.1.0
 */
export * as InMemoryNats from "./InMemoryNats.js"

/**
 * @since 0.1.0
 */
export * as NatsTestCluster from "./NatsTestCluster.js"

/**
 * @since 0.1.0
 */
export * as NatsTestServer from "./NatsTestServer.js"

/**
 * @since 0.1.0
 */
export * as PostgresTestServer from "./PostgresTestServer.js"

/**
 * @since 0.1.0
 */
export * as Provision from "./Provision.js"
