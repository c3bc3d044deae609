import { defineProject } from "vitest/config"

/**
 * Lets `npx vitest run` work from this folder (same settings as the
 * `example-billing` entry of the root vitest.workspace.ts).
 */
export default defineProject({
  // resolve workspace packages (`effect-nats`, `@effect-nats/*`) to their TypeScript sources
  resolve: { conditions: ["source", "module", "node", "import", "default"] },
  ssr: { resolve: { conditions: ["source", "module", "node", "import", "default"], externalConditions: ["source"] } },
  test: {
    name: "example-billing",
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
