import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { unaryCall } from '@handoff/service';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMigratorCluster, type MigratorCluster } from './helpers/migrator-cluster.js';
import { repoRoot } from './helpers/services.js';
import { vmctlRunner } from './helpers/vmctl.js';
import { openConsole, type VmmUnderTest } from './helpers/vmm.js';

/**
 * `vmctl template create NEW --from-vm CLONE` through a real migrator, vmm and memstore: the
 * migrator's template job saves a clone with a bypass save, which the vmm makes a layer over the
 * clone's template; clones of the new template see the clone's writes.
 */

const kvserverElf = join(repoRoot, 'guests/kvserver/kvserver.elf');

describe.skipIf(!existsSync(kvserverElf))('chained templates through vmctl', () => {
  let cluster: MigratorCluster;
  let vmm: VmmUnderTest;
  let env: NodeJS.ProcessEnv;
  const { run: vmctl } = vmctlRunner(() => env);

  beforeAll(async () => {
    cluster = await startMigratorCluster({ vmms: ['vmm-a'] });
    vmm = cluster.vmms.get('vmm-a')!;
    env = {
      ...process.env,
      HANDOFF_MIGRATOR_ADDR: cluster.migrator.address,
      HANDOFF_MEMSTORE_ADDR: cluster.memstore.process.address,
      HANDOFF_OUTPUT: 'table',
    };
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  /** Sends kvserver commands and returns the answer lines (framed by two unique values). */
  const kv = async (name: string, commands: string[]): Promise<string[]> => {
    const open = `o${Math.random().toString(16).slice(2, 10)}`;
    const close = `c${Math.random().toString(16).slice(2, 10)}`;
    const console = openConsole(vmm.client, name);
    try {
      console.send(
        [`PUT sync ${open}`, 'GET sync', ...commands, `PUT sync ${close}`, 'GET sync', ''].join(
          '\n',
        ),
      );
      await console.waitFor(`VALUE ${close}\n`);
      const lines = console.output().split('\n');
      const from = lines.lastIndexOf(`VALUE ${open}`) + 1;
      return lines.slice(from, lines.lastIndexOf(`VALUE ${close}`) - 1);
    } finally {
      console.close();
    }
  };

  it('a template made from a running clone is a layer over the clone’s template', async () => {
    const base = await vmctl(
      'template',
      'create',
      'kvbase',
      '--guest',
      'kvserver',
      '--memory',
      '32M',
      '--arg',
      'kv.slots_log2=10',
      '--arg',
      'kv.work=2',
    );
    expect(base.code, base.stderr).toBe(0);
    const cloned = await vmctl('clone', 'kvbase', '--count', '1');
    expect(cloned.code, cloned.stderr).toBe(0);
    expect(await kv('kvbase-1', ['PUT layered yes'])).toEqual(['OK']);

    const made = await vmctl('template', 'create', 'kvtop', '--from-vm', 'kvbase-1');
    expect(made.code, made.stderr).toBe(0);
    const { snapshot } = await unaryCall(cluster.memstore.client, 'getSnapshot', {
      snapshot: { selector: { $case: 'name', value: 'kvtop' } },
      withDeviceState: false,
    });
    expect(snapshot).toMatchObject({ parent: 'kvbase', depth: 1, template: true });
    expect(Number(snapshot!.blocks[0]!.layerPageCount)).toBeLessThan((32 << 20) / 4096 / 8);

    const top = await vmctl('clone', 'kvtop', '--count', '1');
    expect(top.code, top.stderr).toBe(0);
    expect(await kv('kvtop-1', ['GET layered'])).toEqual(['VALUE yes']);
    // the layer pins its parent
    const busy = await vmctl('template', 'delete', 'kvbase');
    expect(busy.code).not.toBe(0);
  });
});
