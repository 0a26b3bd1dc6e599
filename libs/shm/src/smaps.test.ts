import { spawnSync } from 'node:child_process';

import { describe, expect, it } from 'vitest';

import { readSmapsRange, readSmapsRollup, readSmapsRollupAsync } from './index.js';
import { parseSmapsRange, parseSmapsRollup } from './smaps.js';
import { expectShmError } from './testing/helpers.js';

const ROLLUP = `55d0c2a6b000-7ffd3c5f2000 ---p 00000000 00:00 0                          [rollup]
Rss:               51200 kB
Pss:               30720 kB
Pss_Dirty:         20000 kB
Pss_Anon:          10240 kB
Pss_File:          10240 kB
Pss_Shmem:         10240 kB
Shared_Clean:      20480 kB
Shared_Dirty:          0 kB
Private_Clean:      4096 kB
Private_Dirty:     26624 kB
Referenced:        51200 kB
Anonymous:         10240 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
Swap:                  8 kB
SwapPss:               4 kB
Locked:                0 kB
`;

const SMAPS = `7f0000000000-7f0000004000 rw-s 00000000 00:1a 17 /dev/shm/a
Size:                 16 kB
Rss:                  16 kB
Pss:                   8 kB
Private_Dirty:         4 kB
VmFlags: rd wr sh mr mw me ms sd
7f0000004000-7f0000008000 rw-p 00000000 00:1a 18 /dev/shm/b
Size:                 16 kB
Rss:                  12 kB
Pss:                  12 kB
Anonymous:             4 kB
VmFlags: rd wr mr mw me ac sd
7f0000008000-7f000000c000 rw-p 00000000 00:00 0
Rss:                 100 kB
`;

describe('smaps parsing', () => {
  it('reads smaps_rollup fields in bytes', () => {
    const u = parseSmapsRollup(ROLLUP);
    expect(u).toEqual({
      rss: 51200 * 1024,
      pss: 30720 * 1024,
      pssAnon: 10240 * 1024,
      pssFile: 10240 * 1024,
      pssShmem: 10240 * 1024,
      sharedClean: 20480 * 1024,
      sharedDirty: 0,
      privateClean: 4096 * 1024,
      privateDirty: 26624 * 1024,
      referenced: 51200 * 1024,
      anonymous: 10240 * 1024,
      swap: 8 * 1024,
      swapPss: 4 * 1024,
    });
  });

  it('sums the VMAs of an address range', () => {
    const both = parseSmapsRange(SMAPS, 0x7f0000000000n, 0x7f0000008000n);
    expect(both.vmas).toBe(2);
    expect(both.usage.rss).toBe(28 * 1024);
    expect(both.usage.pss).toBe(20 * 1024);
    expect(both.usage.anonymous).toBe(4 * 1024);
    const second = parseSmapsRange(SMAPS, 0x7f0000004000n, 0x7f0000008000n);
    expect(second.vmas).toBe(1);
    expect(second.usage.rss).toBe(12 * 1024);
    expect(parseSmapsRange(SMAPS, 0x1000n, 0x2000n).vmas).toBe(0);
  });
});

describe('reading /proc', () => {
  it('reads this process and its parent, synchronously and not', async () => {
    const self = readSmapsRollup();
    expect(self.rss).toBeGreaterThan(1 << 20);
    expect(self.pss).toBeGreaterThan(0);
    expect(self.pss).toBeLessThanOrEqual(self.rss);
    expect((await readSmapsRollupAsync()).rss).toBeGreaterThan(1 << 20);
    expect(readSmapsRollup(process.pid).rss).toBeGreaterThan(1 << 20);
    expect(readSmapsRollup(process.ppid).rss).toBeGreaterThan(0);
  });

  it('reports a process that is gone as SHM_NOT_FOUND, and bad pids as SHM_INVALID_ARGUMENT', async () => {
    const gone = spawnSync('true').pid;
    expect(gone).toBeGreaterThan(0);
    const err = expectShmError(() => readSmapsRollup(gone), 'SHM_NOT_FOUND');
    expect(err.errno).toBe('ENOENT');
    await expect(readSmapsRollupAsync(gone)).rejects.toMatchObject({ code: 'SHM_NOT_FOUND' });
    expectShmError(() => readSmapsRollup(0), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => readSmapsRollup(-5), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => readSmapsRollup('me' as unknown as 'self'), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => readSmapsRange(-1n, 10), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => readSmapsRange(0n, -10), 'SHM_INVALID_ARGUMENT');
    expect(readSmapsRange(0n, 4096).rss).toBe(0);
  });
});
