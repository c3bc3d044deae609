/**
 * The `effect-nats` executable: `Cli.run(process.argv.slice(2))` under
 * `NodeRuntime.runMain` (Ctrl-C interrupts the command and closes the NATS
 * connection; a failure exits with code 1 after printing one line).
 *
 * @since 0.1.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect } from "effect"
import * as Cli from "./Cli.js"

// `effect-nats dlq list --json | head -1`: a closed pipe ends the output, not in a crash
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0)
  throw error
})

Cli.run(process.argv.slice(2)).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
