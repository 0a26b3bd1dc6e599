import { ESLint } from 'eslint';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/services.js';

/**
 * The lint rules that keep packages apart still fire: each case lints a one-import file at a
 * path that does not exist (nothing is written) with the repository's eslint.config.js.
 */

let eslint: ESLint;

/** The rule ids and messages lint reports for `source` as if it were the file at `path`. */
async function lint(path: string, source: string): Promise<string[]> {
  const [result] = await eslint.lintText(source, { filePath: join(repoRoot, path) });
  return result!.messages.map((m) => `${m.ruleId}: ${m.message}`);
}

beforeAll(() => {
  eslint = new ESLint({ cwd: repoRoot });
});

describe('module boundaries (eslint.config.js)', () => {
  it.each([
    [
      'a service imports another service',
      'apps/migrator/src/zz.ts',
      '@handoff/vmm',
      /"type:service" can only depend on libs tagged with "type:lib"/,
    ],
    [
      'a service test imports another service',
      'apps/vmm/src/ram/zz.test.ts',
      '@handoff/memstore/testing',
      /"type:service" can only depend/,
    ],
    [
      'the CLI imports a service',
      'apps/cli/src/zz.ts',
      '@handoff/memstore',
      /"type:cli" can only depend on libs tagged with "type:lib"/,
    ],
    [
      'a lib imports an app',
      'libs/bitmap/src/zz.ts',
      '@handoff/migrator',
      /"type:lib" can only depend on libs tagged with "type:lib"/,
    ],
    [
      'the launcher imports a service',
      'tools/cluster/src/zz.ts',
      '@handoff/vmm',
      /"type:tool" can only depend on libs tagged with "type:lib", "type:cli"/,
    ],
    [
      'a cross-process test reaches into a service by path',
      'test/zz.test.ts',
      '../apps/vmm/src/guests/ab-check.js',
      /cannot be imported by a relative or absolute path/,
    ],
  ])('refuses: %s', async (_what, path, from, expected) => {
    const messages = await lint(path, `import { x } from '${from}';\nexport const y = x;\n`);
    expect(
      messages.some((m) => m.startsWith('@nx/enforce-module-boundaries') && expected.test(m)),
      messages.join('\n'),
    ).toBe(true);
  });

  it.each([
    ['a cross-process test imports services', 'test/zz.test.ts', '@handoff/vmm'],
    ['the launcher uses the CLI client library', 'tools/cluster/src/zz.ts', '@handoff/cli/client'],
    ['a service imports a lib', 'apps/vmm/src/zz.ts', '@handoff/bitmap'],
  ])('allows: %s', async (_what, path, from) => {
    expect(await lint(path, `import { x } from '${from}';\nexport const y = x;\n`)).toEqual([]);
  });
});

describe('generated wire types stay at the edges (PROTO_EDGES in eslint.config.js)', () => {
  const importProto = `import { vmm } from '@handoff/proto';\nexport const y = vmm;\n`;

  it('refuses @handoff/proto in domain code', async () => {
    for (const path of [
      'apps/vmm/src/cpu/zz.ts',
      'apps/memstore/src/leases/zz.ts',
      'libs/qapi/src/zz.ts',
      'tools/cluster/src/zz.ts',
      'apps/cli/src/commands/zz.ts',
    ]) {
      expect(await lint(path, importProto), path).toEqual([
        expect.stringMatching(/^no-restricted-imports: '@handoff\/proto' import is restricted/),
      ]);
    }
  });

  it('allows it at the edges, in tests and in benches', async () => {
    for (const path of [
      'apps/memstore/src/api/zz.ts',
      'apps/cli/src/api/zz.ts',
      'apps/vmm/src/migration/zz.ts',
      'libs/qapi/src/wire.ts',
      'apps/memstore/src/leases/zz.test.ts',
      'apps/memstore/src/zz.bench.ts',
      'test/zz.test.ts',
    ]) {
      expect(await lint(path, importProto), path).toEqual([]);
    }
  });
});

describe("the vmm's folders import only the layers below them (VMM_LAYERS in eslint.config.js)", () => {
  const importFrom = (from: string) => `import { x } from '${from}';\nexport const y = x;\n`;

  it.each([
    ['RAM backends reach up into the VM host', 'apps/vmm/src/ram/zz.ts', '../vm/host.js'],
    ['the VM host reaches up into migration', 'apps/vmm/src/vm/zz.ts', '../migration/index.js'],
    [
      'migration reaches up into the gRPC edge',
      'apps/vmm/src/migration/zz.ts',
      '../api/convert.js',
    ],
    ['a subfolder reaches up two levels', 'apps/vmm/src/migration/pages/zz.ts', '../../api/x.js'],
    [
      'the switchover reaches up into the vCPU thread',
      'apps/vmm/src/switchover/zz.ts',
      '../vcpu/protocol.js',
    ],
  ])('refuses: %s', async (_what, path, from) => {
    const messages = await lint(path, importFrom(from));
    expect(
      messages.some((m) => m.startsWith('layers/folder-layers') && /may not import/.test(m)),
      messages.join('\n'),
    ).toBe(true);
  });

  it.each([
    ['migration uses the VM host', 'apps/vmm/src/migration/zz.ts', '../vm/host.js'],
    ['the vCPU thread uses the switchover', 'apps/vmm/src/vcpu/zz.ts', '../switchover/thread.js'],
    ['a folder imports itself', 'apps/vmm/src/migration/pages/zz.ts', '../outgoing.js'],
    ['a test may reach anywhere', 'apps/vmm/src/ram/zz.test.ts', '../vm/host.js'],
  ])('allows: %s', async (_what, path, from) => {
    const messages = await lint(path, importFrom(from));
    expect(messages.filter((m) => m.startsWith('layers/'))).toEqual([]);
  });
});
