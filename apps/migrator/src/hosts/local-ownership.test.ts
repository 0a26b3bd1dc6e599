import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

  it('lands a burst of 200 claims made together on disk, each resolving with its epoch', async () => {
    const o = LocalHostOwnership.open(dir);
    const names = Array.from({ length: 200 }, (_, i) => `clone-${i}`);
    const claimed = await Promise.all(names.map((vm) => o.claim(vm, 'host-2', 0)));
    expect(claimed.every((c) => c.host === 'host-2' && c.epoch === 1)).toBe(true);
    const onDisk = JSON.parse(readFileSync(join(dir, OWNERSHIP_FILE), 'utf8')) as {
      vms: Record<string, { host: string; epoch: number }>;
    };
    expect(Object.keys(onDisk.vms).sort()).toEqual([...names].sort());
  });

  it('refuses every change of a write that failed and goes back to what is on disk', async () => {
    const o = LocalHostOwnership.open(dir);
    await o.claim('vm1', 'host-1', 0);
    // the temporary file cannot be created: the next write fails
    mkdirSync(join(dir, `${OWNERSHIP_FILE}.tmp`));
    const failed = await Promise.all([
      code(o.claim('vm1', 'host-2', 1)),
      code(o.claim('vm2', 'host-1', 0)),
    ]);
    expect(failed).toEqual(['MIGRATOR_JOURNAL_FAILED', 'MIGRATOR_JOURNAL_FAILED']);
    expect(await o.owner('vm1')).toEqual({ vm: 'vm1', host: 'host-1', epoch: 1 });
    expect(await o.owner('vm2')).toEqual({ vm: 'vm2', host: null, epoch: 0 });
    rmSync(join(dir, `${OWNERSHIP_FILE}.tmp`), { recursive: true });
    expect(await o.claim('vm1', 'host-2', 1)).toMatchObject({ host: 'host-2', epoch: 2 });
    expect(await LocalHostOwnership.open(dir).owner('vm1')).toMatchObject({ epoch: 2 });
  });

  it('answers owner after the changes in flight are on disk', async () => {
    const o = LocalHostOwnership.open(dir);
    const claim = o.claim('vm1', 'host-1', 0);
    expect(await o.owner('vm1')).toEqual({ vm: 'vm1', host: 'host-1', epoch: 1 });
    expect(readFileSync(join(dir, OWNERSHIP_FILE), 'utf8')).toContain('"vm1"');
    await claim;
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
