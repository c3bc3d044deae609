/**
 * SQL stores for effect-nats: the transactional outbox and dedup (inbox), on
 * SQLite (`@effect/sql-sqlite-node`) and Postgres (`@effect/sql-pg`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as SqlDedup from "./SqlDedup.js"
/** @since 0.1.0 */
export * as SqlMigrations from "./SqlMigrations.js"
/** @since 0.1.0 */
export * as SqlOutbox from "./SqlOutbox.js"
