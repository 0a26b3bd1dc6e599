import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startCluster } from '@handoff/cluster';
import { memstoreDirs, startMemstoreProcess, type MemstoreDirs } from './helpers/memstore.js';

/**
 * No `lease-arms-*` file outlives its memstore: a clean stop (SIGTERM, or the cluster launcher's
 * Ctrl-C) removes it; a killed memstore's file is reconciled by a restart on the same catalog and
 * removed by the start of any memstore once no process maps it.
 */

const armsFiles = (dir: string): string[] =>
  readdirSync(dir)
    .filter((n) => n.startsWith('lease-arms-'))
    .sort();

/** `dirs` with another state (catalog) folder but the same volatile folder. */
function sameVolatile(dirs: MemstoreDirs, tag: string): MemstoreDirs {
  const stateDir = join(dirs.stateDir, tag);
  return {
    ...dirs,
    stateDir,
    persistentDir: join(stateDir, 'regions'),
    args: [
      '--state-dir',
      stateDir,
      '--volatile-dir',
      dirs.volatileDir,
      '--persistent-dir',
      join(stateDir, 'regions'),
    ],
  };
}

describe('lease arms files', () => {
  const cleanups: (() => void)[] = [];
  afterEach(() => {
    for (const c of cleanups.splice(0)) c();
  });

  it('SIGTERM removes the file; kill -9 leaves it for the next start to reconcile or remove', async () => {
    const dirs = memstoreDirs();
    cleanups.push(() => dirs.cleanup());
    let a = await startMemstoreProcess(dirs);
    const own = armsFiles(dirs.volatileDir);
    expect(own).toHaveLength(1);
    expect(await a.stop()).toBe(0);
    expect(armsFiles(dirs.volatileDir)).toEqual([]);

    a = await startMemstoreProcess(dirs);
    await a.kill9();
    expect(armsFiles(dirs.volatileDir)).toEqual(own); // the same catalog's file
    // restarted on its catalog: the file is its own, reconciled and kept while it runs
    a = await startMemstoreProcess(dirs);
    expect(armsFiles(dirs.volatileDir)).toEqual(own);
    await a.kill9();

    // another catalog's memstore starts: nobody maps the killed one's file, so it goes
    const other = sameVolatile(dirs, 'other');
    const b = await startMemstoreProcess(other);
    const theirs = armsFiles(dirs.volatileDir);
    expect(theirs).toHaveLength(1);
    expect(theirs).not.toEqual(own);
    // a live memstore's file stays when another one starts
    a = await startMemstoreProcess(dirs);
    expect(armsFiles(dirs.volatileDir)).toEqual([...own, ...theirs].sort());
    expect(await a.stop()).toBe(0);
    expect(await b.stop()).toBe(0);
    expect(armsFiles(dirs.volatileDir)).toEqual([]);
  });

  it('a stopped local cluster leaves none', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'handoff-arms-cluster-'));
    const volatileDir = mkdtempSync('/dev/shm/handoff-arms-cluster-');
    cleanups.push(() => {
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(volatileDir, { recursive: true, force: true });
    });
    const cluster = await startCluster({
      stateDir,
      volatileDir,
      ports: { memstore: 0, migrator: 0, vmms: { 'vmm-a': 0 } },
    });
    try {
      expect(armsFiles(volatileDir)).toHaveLength(1);
    } finally {
      await cluster.stop();
    }
    expect(armsFiles(volatileDir)).toEqual([]);
  });
});
