import { closeSync } from 'node:fs';

import { afterAll, describe, expect, it } from 'vitest';

import { PAGE_SIZE, createMemfd, mapFd, mapFile } from './index.js';
import {
  expectSameBytes,
  readFileBytes,
  removeScratchFiles,
  runChild,
  scratchFile,
  scratchPath,
  waitFor,
} from './testing/helpers.js';

afterAll(removeScratchFiles);

// Word slots of the handshake page (Int32 indexes).
const PARENT_VALUE = 0; // written by the parent before the child starts
const CHILD_VALUE = 1; // written by the child
const CHILD_READY = 2; // child -> parent flag
const PARENT_QUESTION = 3; // written by the parent after CHILD_READY
const PARENT_ASKED = 4; // parent -> child flag
const CHILD_ANSWER = 5; // PARENT_QUESTION + 1
const CHILD_DONE = 6; // child -> parent flag

/**
 * The child half of the handshake: maps `args.path` shared, reports what the parent wrote, then
 * answers the parent's question, all through the mapping while both processes have it mapped.
 */
const HANDSHAKE_CHILD = `
import { openSync, closeSync } from 'node:fs';
const fd = openSync(args.path, 'r+');
const [handle, buffer] = native.map(fd, 0, args.size, true, false, true);
closeSync(fd);
const w = new Int32Array(buffer);
const nap = new Int32Array(new SharedArrayBuffer(4));
function until(slot) {
  const end = Date.now() + 10000;
  while (Atomics.load(w, slot) !== 1) {
    if (Date.now() > end) { console.error('timed out waiting for slot ' + slot); process.exit(3); }
    Atomics.wait(nap, 0, 0, 1);
  }
}
const seen = Atomics.load(w, ${PARENT_VALUE});
Atomics.store(w, ${CHILD_VALUE}, 0x5678);
Atomics.store(w, ${CHILD_READY}, 1);
until(${PARENT_ASKED});
Atomics.store(w, ${CHILD_ANSWER}, Atomics.load(w, ${PARENT_QUESTION}) + 1);
Atomics.store(w, ${CHILD_DONE}, 1);
native.close(handle);
console.log(JSON.stringify({ seen }));
`;

describe('MAP_SHARED across processes', { timeout: 30_000 }, () => {
  it("two live processes see each other's writes through one file in /dev/shm", async () => {
    const path = scratchPath('xproc');
    const m = mapFile(path, { create: true, exclusive: true, size: PAGE_SIZE });
    const w = new Int32Array(m.buffer);
    Atomics.store(w, PARENT_VALUE, 0x1234);

    const child = runChild(HANDSHAKE_CHILD, { path, size: PAGE_SIZE });
    await waitFor(() => Atomics.load(w, CHILD_READY) === 1);
    expect(Atomics.load(w, CHILD_VALUE)).toBe(0x5678);
    Atomics.store(w, PARENT_QUESTION, 41);
    Atomics.store(w, PARENT_ASKED, 1);
    await waitFor(() => Atomics.load(w, CHILD_DONE) === 1);
    expect(Atomics.load(w, CHILD_ANSWER)).toBe(42);

    const result = await child;
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({ seen: 0x1234 });
    m.close();
  });

  it('a memfd inherited by a child process is the same memory', async () => {
    const size = 4 * PAGE_SIZE;
    const fd = createMemfd('handoff-test-inherit', { size });
    try {
      const m = mapFd(fd);
      const ram = new Uint8Array(m.buffer);
      ram.fill(7, 0, PAGE_SIZE);
      const result = await runChild(
        `
        const [handle, buffer] = native.map(3, 0, args.size, true, false, true);
        const ram = new Uint8Array(buffer);
        let sum = 0;
        for (let i = 0; i < ${PAGE_SIZE}; i++) sum += ram[i];
        ram.fill(9, ${PAGE_SIZE}, 2 * ${PAGE_SIZE});
        native.close(handle);
        console.log(JSON.stringify({ sum }));
        `,
        { size },
        { stdio: ['ignore', 'pipe', 'pipe', fd] },
      );
      expect(result.stderr).toBe('');
      expect(JSON.parse(result.stdout)).toEqual({ sum: 7 * PAGE_SIZE });
      expect(ram.subarray(PAGE_SIZE, 2 * PAGE_SIZE).every((b) => b === 9)).toBe(true);
      m.close();
    } finally {
      closeSync(fd);
    }
  });
});

describe('MAP_PRIVATE across processes', { timeout: 30_000 }, () => {
  it("a child's private writes reach neither the file nor the parent's shared mapping", async () => {
    const size = 8 * PAGE_SIZE;
    const path = scratchFile('xproc-private', size);
    const original = readFileBytes(path, 0, size);
    const shared = mapFile(path);
    const result = await runChild(
      `
      import { openSync, closeSync, constants } from 'node:fs';
      const fd = openSync(args.path, constants.O_RDONLY);
      const [handle, buffer] = native.map(fd, 0, args.size, false, false, true);
      closeSync(fd);
      const ram = new Uint8Array(buffer);
      ram.fill(0xcc);
      const own = ram.every((b) => b === 0xcc);
      native.close(handle);
      console.log(JSON.stringify({ own }));
      `,
      { path, size },
    );
    expect(result.stderr).toBe('');
    expect(JSON.parse(result.stdout)).toEqual({ own: true });
    expectSameBytes(new Uint8Array(shared.buffer), original);
    expectSameBytes(readFileBytes(path, 0, size), original);
    shared.close();
  });
});
