import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { startWriteback } from './index.js';
import { expectShmError } from './testing/helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'handoff-shm-writeback-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('startWriteback', () => {
  it('queues the written range of a file on disk, which keeps its bytes', async () => {
    const path = join(dir, 'written');
    const fd = openSync(path, 'w+');
    try {
      const data = new Uint8Array(256 * 1024).map((_, k) => (k * 7) & 0xff);
      writeSync(fd, data, 0, data.length, 0);
      expect(await startWriteback(fd, 0, data.length)).toBe(true);
      expect(await startWriteback(fd, 4096, 4096)).toBe(true);
      expect(new Uint8Array(readFileSync(path))).toEqual(data);
    } finally {
      closeSync(fd);
    }
  });

  it('answers false where the kernel refuses (an fd no longer open), and checks its arguments', async () => {
    const fd = openSync(join(dir, 'closed'), 'w+');
    closeSync(fd);
    expect(await startWriteback(fd, 0, 4096)).toBe(false); // EBADF: no longer open
    expectShmError(() => startWriteback(-1, 0, 4096), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => startWriteback(0, -1, 4096), 'SHM_INVALID_ARGUMENT');
    expectShmError(() => startWriteback(0, 0, 0), 'SHM_INVALID_ARGUMENT');
  });
});
