import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@handoff/service';
import { afterAll, describe, expect, it } from 'vitest';
import { SwitchoverSlot } from '../switchover/slot.js';
import { sweepLeftovers } from './leftovers.js';

const root = mkdtempSync(join(tmpdir(), 'handoff-leftovers-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const log = createLogger({ name: 'leftovers-test', level: 'silent', format: 'json' });

function listen(path: string): Promise<Server> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(path, () => resolve(s));
  });
}

describe('sweepLeftovers', () => {
  it("removes only this instance id's slot files, whatever the VM", async () => {
    const dir = mkdtempSync(join(root, 'slots-'));
    const mine = [
      SwitchoverSlot.create(dir, 'vmm-a', 'web-1'),
      SwitchoverSlot.create(dir, 'vmm-a', 'db'),
    ];
    // Ids one is a prefix of, a near miss, and files that are no slots.
    const others = [
      SwitchoverSlot.create(dir, 'vmm-a-2', 'web-1'),
      SwitchoverSlot.create(dir, 'vmm-ab', 'x'),
      SwitchoverSlot.create(dir, 'vmm', 'a--web'),
    ];
    writeFileSync(join(dir, 'handoff-slot-vmm-a--notes.txt'), 'not a slot');
    // A slot an earlier build of this instance left under the old name.
    writeFileSync(join(dir, 'handoff-slot-vmm-a--web-1-0123456789ab.bin'), '');
    writeFileSync(join(dir, 'region-vmm-a.bin'), '');
    const names = (slots: SwitchoverSlot[]) => slots.map((s) => s.path.slice(dir.length + 1));

    const swept = await sweepLeftovers(
      { vmmId: 'vmm-a', switchoverDir: dir, socketDir: null },
      log,
    );

    expect([...swept.slots].sort()).toEqual(
      [...names(mine), 'handoff-slot-vmm-a--web-1-0123456789ab.bin'].sort(),
    );
    expect(swept.sockets).toEqual([]);
    expect(readdirSync(dir).sort()).toEqual(
      [...names(others), 'handoff-slot-vmm-a--notes.txt', 'region-vmm-a.bin'].sort(),
    );
    for (const s of [...mine, ...others]) s.close();
  });

  it('removes sockets of earlier processes that nothing listens on, never a live one', async () => {
    const dir = mkdtempSync(join(root, 'sockets-'));
    // A dead process's socket: a file left where nobody listens.
    const dead = 'handoff-vmm-a-999999.sock';
    writeFileSync(join(dir, dead), '');
    // Another process of the same id that still serves, this process's own, another id's.
    const live = await listen(join(dir, 'handoff-vmm-a-12345.sock'));
    const own = `handoff-vmm-a-${process.pid}.sock`;
    writeFileSync(join(dir, own), '');
    writeFileSync(join(dir, 'handoff-vmm-a-2-999998.sock'), '');
    writeFileSync(join(dir, 'handoff-vmm-a-x.sock'), '');
    try {
      const swept = await sweepLeftovers(
        { vmmId: 'vmm-a', switchoverDir: null, socketDir: dir },
        log,
      );
      expect(swept).toEqual({ slots: [], sockets: [dead] });
      expect(existsSync(join(dir, dead))).toBe(false);
      expect(readdirSync(dir).sort()).toEqual(
        [
          'handoff-vmm-a-12345.sock',
          own,
          'handoff-vmm-a-2-999998.sock',
          'handoff-vmm-a-x.sock',
        ].sort(),
      );
    } finally {
      await new Promise((r) => live.close(r));
    }
  });

  it('starts anyway when a folder cannot be read', async () => {
    const missing = join(root, 'gone');
    await expect(
      sweepLeftovers({ vmmId: 'vmm-a', switchoverDir: missing, socketDir: missing }, log),
    ).resolves.toEqual({ slots: [], sockets: [] });
  });
});
