// @ts-check
import js from '@eslint/js';
import { createProjectGraphAsync } from '@nx/devkit';
import nx from '@nx/eslint-plugin';
import tseslint from 'typescript-eslint';
import layers from './tools/lint/folder-layers.js';

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
  // a VM spec to and from the wire, for both of the vmm's protobuf edges (api/, migration/)
  'apps/vmm/src/wire/**',
  // the migrator's client of the vmm instances
  'apps/migrator/src/clients/**',
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

/**
 * The vmm's folders, bottom to top, and what each may import (tests exempt): no folder imports
 * one above it, so following a call never returns to a folder it left. Entry points (vmm.ts,
 * main.ts, index.ts) are unrestricted. docs/architecture.md draws the same layers.
 */
const VMM_LAYERS = {
  model: [],
  'config.ts': [],
  'failpoints.ts': [],
  memory: [],
  registration: ['wire', 'model'],
  cpu: ['memory'],
  loader: ['memory'],
  devices: ['cpu', 'memory'],
  guests: ['loader', 'model'],
  machine: ['cpu', 'devices', 'loader', 'memory'],
  snapshot: ['machine', 'cpu', 'devices', 'memory'],
  leases: ['model'],
  ram: ['leases', 'model'],
  wire: ['model'],
  switchover: ['leases', 'snapshot', 'machine', 'model', 'failpoints.ts'],
  vcpu: ['switchover', 'leases', 'snapshot', 'machine', 'devices', 'loader', 'memory', 'model'],
  vm: [
    'vcpu',
    'switchover',
    'leases',
    'ram',
    'snapshot',
    'machine',
    'guests',
    'devices',
    'loader',
    'memory',
    'model',
    'failpoints.ts',
  ],
  'save-restore': [
    'vm',
    'ram',
    'leases',
    'snapshot',
    'machine',
    'devices',
    'memory',
    'wire',
    'model',
  ],
  migration: [
    'vm',
    'switchover',
    'leases',
    'ram',
    'snapshot',
    'machine',
    'wire',
    'model',
    'failpoints.ts',
  ],
  api: ['migration', 'save-restore', 'vm', 'wire', 'model'],
};

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
    files: ['apps/vmm/src/**/*.ts'],
    ignores: PROTO_EXEMPT,
    plugins: { layers },
    rules: { 'layers/folder-layers': ['error', { root: 'apps/vmm/src', layers: VMM_LAYERS }] },
  },
  {
    files: ['**/*.js'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly' } },
  },
);
