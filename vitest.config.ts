import { defineConfig } from 'vitest/config';

/**
 * One vitest run covers every workspace package: unit tests sit beside the code
 * (`src/**\/*.test.ts`), cross-process tests live under `test/`.
 * Workspace packages resolve to their TypeScript sources through the
 * `@handoff/source` export condition, so unit tests need no build.
 */
const sourceCondition = ['@handoff/source', 'node', 'import', 'default'];

export default defineConfig({
  resolve: { conditions: sourceCondition },
  ssr: { resolve: { conditions: sourceCondition, externalConditions: sourceCondition } },
  test: {
    reporters: ['default', './test/support/summary-reporter.ts'],
    // One test PKI per run: services under test serve mutual TLS with it.
    globalSetup: ['./test/support/tls-setup.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: [
            'libs/*/src/**/*.test.ts',
            'apps/*/src/**/*.test.ts',
            'tools/*/src/**/*.test.ts',
          ],
        },
      },
      {
        extends: true,
        test: {
          name: 'cross-process',
          include: ['test/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
