import { defineConfig } from "vitest/config"

// standalone config for `npx vitest run` in this folder, with the settings of a project of the
// root's vitest.workspace.ts (as a project: a top-level resolve.conditions list containing "import"
// makes Node's own require() of CommonJS packages such as pg pick their ESM builds)
export default defineConfig({
  test: {
    projects: [{
      resolve: { conditions: ["source", "module", "node", "import", "default"] },
      ssr: { resolve: { conditions: ["source", "module", "node", "import", "default"], externalConditions: ["source"] } },
      test: { name: "example-user-service", include: ["test/**/*.test.ts"], testTimeout: 30_000, hookTimeout: 30_000 }
    }]
  }
})
