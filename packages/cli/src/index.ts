/**
 * The effect-nats command line (`effect-nats`): dead letters, stream
 * provisioning from a file, and a server check.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Cli from "./Cli.js"
/** @since 0.1.0 */
export * as StreamsFile from "./StreamsFile.js"
