import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MigratorError } from '../errors.js';
import { LocalHostOwnership, OWNERSHIP_FILE } from './local-ownership.js';

const code = async (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'resolved',
    (err: unknown) => (err instanceof MigratorError ? err.code : String(err)),
  );

describe('LocalHostOwnership', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'handoff-owners-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('owns nothing at first: no host, epoch 0', async () => {
    const o = LocalHostOwnership.open(dir);
    expect(await o.owner('vm1')).toEqual({ vm: 'vm1', host: null, epoch: 0 });
    expect(existsSync(join(dir, OWNERSHIP_FILE))).toBe(false);
  });

  it('claims by compare-and-set: the expected epoch wins and moves it on by one', async () => {
    const o = LocalHostOwnership.open(dir);
    expect(await o.claim('vm1', 'host-1', 0)).toEqual({ vm: 'vm1', host: 'host-1', epoch: 1 });
    expect(await o.claim('vm1', 'host-2', 1)).toEqual({ vm: 'vm1', host: 'host-2', epoch: 2 });
    expect(await o.owner('vm1')).toEqual({ vm: 'vm1', host: 'host-2', epoch: 2 });
    expect(await o.owner('vm2')).toEqual({ vm: 'vm2', host: null, epoch: 0 });
  });

  it('refuses a stale epoch, and of two racing claims at one epoch exactly one wins', async () => {
    const o = LocalHostOwnership.open(dir);
    await o.claim('vm1', 'host-1', 0);
    await expect(o.claim('vm1', 'host-2', 0)).rejects.toThrow(
      /host-2 cannot claim vm1 at epoch 0: it is at epoch 1, owned by host-1/,
    );
    const raced = await Promise.all([
      code(o.claim('vm1', 'host-1', 1)),
      code(o.claim('vm1', 'host-2', 1)),
    ]);
    expect(raced.sort()).toEqual(['MIGRATOR_OWNERSHIP_CONFLICT', 'resolved']);
    expect((await o.owner('vm1')).epoch).toBe(2);
  });

  it('releases only for the owner at its epoch; the epoch keeps growing after', async () => {
    const o = LocalHostOwnership.open(dir);
    await o.claim('vm1', 'host-1', 0);
    expect(await code(o.release('vm1', 'host-2', 1))).toBe('MIGRATOR_OWNERSHIP_CONFLICT');
    expect(await code(o.release('vm1', 'host-1', 0))).toBe('MIGRATOR_OWNERSHIP_CONFLICT');
    expect(await o.release('vm1', 'host-1', 1)).toEqual({ vm: 'vm1', host: null, epoch: 2 });
    // the old owner's epoch is stale now; a new claim goes on from the release
    expect(await code(o.claim('vm1', 'host-1', 1))).toBe('MIGRATOR_OWNERSHIP_CONFLICT');
    expect(await o.claim('vm1', 'host-2', 2)).toEqual({ vm: 'vm1', host: 'host-2', epoch: 3 });
  });

  it('survives a restart: a table opened again holds every claim and release', async () => {
    const first = LocalHostOwnership.open(dir);
    await first.claim('vm1', 'host-1', 0);
    await first.claim('vm1', 'host-2', 1);
    await first.claim('vm2', 'host-1', 0);
    await first.release('vm2', 'host-1', 1);
    const again = LocalHostOwnership.open(dir);
    expect(await again.owner('vm1')).toEqual({ vm: 'vm1', host: 'host-2', epoch: 2 });
    expect(await again.owner('vm2')).toEqual({ vm: 'vm2', host: null, epoch: 2 });
    expect(await code(again.claim('vm1', 'host-1', 1))).toBe('MIGRATOR_OWNERSHIP_CONFLICT');
    expect(existsSync(join(dir, `${OWNERSHIP_FILE}.tmp`))).toBe(false);
  });

  it('forgets everything in memory only', async () => {
    const o = LocalHostOwnership.inMemory();
    await o.claim('vm1', 'host-1', 0);
    expect(await o.owner('vm1')).toMatchObject({ host: 'host-1', epoch: 1 });
    expect((await LocalHostOwnership.inMemory().owner('vm1')).epoch).toBe(0);
  });

  it('refuses bad names, hosts and epochs before touching the table', async () => {
    const o = LocalHostOwnership.open(dir);
    for (const p of [
      o.claim('../vm', 'host-1', 0),
      o.claim('vm1', 'Host 1', 0),
      o.claim('vm1', 'host-1', -1),
      o.claim('vm1', 'host-1', 0.5),
      o.owner(''),
    ]) {
      expect(await code(p)).toBe('MIGRATOR_INVALID_ARGUMENT');
    }
    expect((await o.owner('vm1')).epoch).toBe(0);
  });

  it('refuses to open a table file that is not its format, naming the file', () => {
    const path = join(dir, OWNERSHIP_FILE);
    for (const text of [
      'not json',
      '{"v":2,"vms":{}}',
      '{"v":1,"vms":[]}',
      '{"v":1,"vms":{"vm1":{"host":"host-1","epoch":-1}}}',
      '{"v":1,"vms":{"vm1":{"host":"../x","epoch":1}}}',
      '{"v":1,"vms":{"../x":{"host":null,"epoch":1}}}',
    ]) {
      writeFileSync(path, text);
      expect(() => LocalHostOwnership.open(dir), text).toThrow(
        new RegExp(`cannot read the host ownership table ${path}`),
      );
    }
    writeFileSync(path, '{"v":1,"vms":{"vm1":{"host":null,"epoch":4}}}');
    expect(() => LocalHostOwnership.open(dir)).not.toThrow();
    expect(readFileSync(path, 'utf8')).toContain('"epoch":4');
  });
});
