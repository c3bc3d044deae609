import { defineProject } from "vitest/config"

/**
 * The test projects: the core library, each package and each example.
 * `vitest.config.ts` reads this list as `test.projects`.
 */
const project = (name: string, root: string) =>
  defineProject({
    root,
    // resolve workspace packages (`effect-nats`, `@effect-nats/*`) to their TypeScript sources
    resolve: { conditions: ["source", "module", "node", "import", "default"] },
    ssr: { resolve: { conditions: ["source", "module", "node", "import", "default"], externalConditions: ["source"] } },
    test: {
      name,
      include: ["test/**/*.test.ts"],
      testTimeout: 30_000,
      hookTimeout: 30_000
    }
  })

export default [
  project("core", "."),
  project("testing", "packages/testing"),
  project("sql", "packages/sql"),
  project("cli", "packages/cli"),
  project("opentelemetry", "packages/opentelemetry"),
  project("example-quickstart", "examples/quickstart"),
  project("example-billing", "examples/billing"),
  project("example-user-service", "examples/user-service"),
  project("example-tenant-provisioning", "examples/tenant-provisioning")
]
