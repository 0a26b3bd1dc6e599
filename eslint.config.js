// @ts-check
import js from '@eslint/js';
import { createProjectGraphAsync } from '@nx/devkit';
import nx from '@nx/eslint-plugin';
import tseslint from 'typescript-eslint';

/**
 * Where generated protobuf types (`@handoff/proto`) may be imported: a service's edges, where
 * wire messages are converted to and from its own domain types. Everywhere else speaks domain
 * types. This list is the one place that says so (docs/architecture.md, "Where wire types live").
 * Tests, benches and test fixtures are exempt (see PROTO_EXEMPT).
 */
const PROTO_EDGES = [
  // each service's and the CLI's gRPC edge
  'apps/*/src/api/**',
  // the vmm-to-vmm migration stream: its frames are protobuf messages, handled as such by the
  // sender, the receiver, the page framing and the transports
  'apps/vmm/src/migration/**',
  // the vmm's memstore client edge: lease calls (leases/) and region calls (ram/)
  'apps/vmm/src/leases/**',
  'apps/vmm/src/ram/**',
  // the vmm's migrator client edge (registration and heartbeats)
  'apps/vmm/src/registration/**',
  // the migrator's client of the vmm instances
  'apps/migrator/src/clients/**',
  // TODO: the job manager still calls the vmm with generated types; that use moves to
  // apps/migrator/src/clients/ (the migrator's vmm client edge), then this entry goes.
  'apps/migrator/src/jobs/job-manager.ts',
  // QAPI names <-> proto enums, in one place
  'libs/qapi/src/wire.ts',
  // the service runtime: gRPC server, health, reflection, clients
  'libs/service/**',
  // the generated package itself
  'libs/proto/**',
];

/** Files that may import `@handoff/proto` anywhere: tests, their fixtures, and benches. */
const PROTO_EXEMPT = [
  '**/*.test.ts',
  '**/*.bench.ts',
  '**/testing/**',
  '**/test-support.ts',
  'test/**',
];

/**
 * Module boundaries between the workspace packages, by the tags in each package.json:
 * - `type:lib` (libs/*) imports only libs;
 * - `type:service` (memstore, vmm, migrator) imports only libs: services never import each
 *   other, in their unit tests neither; what crosses services is tested under test/;
 * - `type:cli` (vmctl) is a client: libs only, no service and no tool;
 * - `type:tool` (tools/cluster, the local-cluster launcher) may use the CLI's client library and
 *   libs, and starts services as processes, never by importing them;
 * - `type:test` (test/, the cross-process tests) may import anything.
 */
const DEP_CONSTRAINTS = [
  { sourceTag: 'type:lib', onlyDependOnLibsWithTags: ['type:lib'] },
  { sourceTag: 'type:service', onlyDependOnLibsWithTags: ['type:lib'] },
  { sourceTag: 'type:cli', onlyDependOnLibsWithTags: ['type:lib'] },
  { sourceTag: 'type:tool', onlyDependOnLibsWithTags: ['type:lib', 'type:cli'] },
  {
    sourceTag: 'type:test',
    onlyDependOnLibsWithTags: ['type:lib', 'type:service', 'type:cli', 'type:tool'],
  },
];

// The boundary rule reads Nx's cached project graph and silently skips itself when there is none
// (a fresh clone) or checks against a stale one: compute it now, in this process.
process.env.NX_DAEMON ??= 'false';
await createProjectGraphAsync({ exitOnError: true });

export default tseslint.config(
  {
    ignores: ['**/dist/**', '**/build/**', '**/node_modules/**', 'libs/proto/src/gen/**', '.nx/**'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['**/*.ts', '**/*.js'],
    plugins: { '@nx': nx },
    rules: {
      '@nx/enforce-module-boundaries': [
        'error',
        { enforceBuildableLibDependency: false, allow: [], depConstraints: DEP_CONSTRAINTS },
      ],
    },
  },
  {
    files: ['**/*.ts'],
    ignores: [...PROTO_EDGES, ...PROTO_EXEMPT],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            {
              name: '@handoff/proto',
              message:
                'generated wire types stay at a service edge (see PROTO_EDGES in eslint.config.js)',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
);
