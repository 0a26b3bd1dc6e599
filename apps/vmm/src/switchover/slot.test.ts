import { mkdtempSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import {
  SwitchoverSlot,
  SLOT_BYTES,
  SlotState,
  abortSlot,
  announceStop,
  awaitStop,
  awaitTakeover,
  finishSlot,
  publishState,
  slotState,
  takeState,
  type SlotExpectation,
} from './slot.js';
import { COMPACT_STATE_VERSION } from '../snapshot/compact-state.js';

const dir = mkdtempSync(
  join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'switchover-slot-test-'),
);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
};

/** Where the header says the expectation's length and bytes are (the file's layout table). */
const EXPECT_LENGTH_AT = 48;
const EXPECT_AT = 64;
const EXPECT_MAX = 4096 - EXPECT_AT;

const prepared: SlotExpectation = {
  from: 'vmm-a/vm-1',
  blocks: [
    {
      id: 'ram',
      regionId: 'region-1',
      identity: 'id-1',
      epoch: 3,
      size: 256 * 1024 * 1024,
      guestBase: 0x8000_0000,
    },
    {
      id: 'ram-hi',
      regionId: 'region-2',
      identity: 'id-2',
      epoch: 0,
      size: 4096,
      guestBase: 2 ** 40,
    },
  ],
};

/** Writes an expectation as a hostile target would: raw bytes and whatever length it likes. */
function writeExpectation(slot: SwitchoverSlot, bytes: Uint8Array, length = bytes.length): void {
  new Uint8Array(slot.buffer, EXPECT_AT, bytes.length).set(bytes);
  new DataView(slot.buffer).setUint32(EXPECT_LENGTH_AT, length, true);
}

/** A slot the target created, the source's handle on it, and their clean-up. */
function pair(owner: string): {
  target: SwitchoverSlot;
  source: SwitchoverSlot;
  close: () => void;
} {
  const target = SwitchoverSlot.create(dir, 'vmm-t', owner);
  const source = SwitchoverSlot.open(target.path);
  return {
    target,
    source,
    close: () => {
      source.close();
      target.close();
    },
  };
}

/** Drives a slot to TAKEN: the source stopped and published, the target's thread took it. */
function taken(owner: string): ReturnType<typeof pair> {
  return toTaken(pair(owner));
}

/** Drives a fresh pair through the stop and the publish to TAKEN. */
function toTaken(p: ReturnType<typeof pair>): ReturnType<typeof pair> {
  expect(announceStop(p.source.buffer, 100)).toBe(true);
  expect(publishState(p.source.buffer, Uint8Array.of(1, 2, 3))).toBe(true);
  expect(takeState(p.target.buffer, 1000).kind).toBe('state');
  expect(p.target.state()).toBe(SlotState.TAKEN);
  return p;
}

/** The target's thread ends a taken hand-off with `outcome`. */
function finish(
  p: ReturnType<typeof pair>,
  outcome: typeof SlotState.RUNNING | typeof SlotState.HELD | typeof SlotState.FAILED,
  atMs = 0,
): void {
  toTaken(p);
  finishSlot(p.target.buffer, outcome, atMs);
}

/**
 * A thread on `buffer` running `body` with the compiled module's exports in scope (like the vCPU
 * thread's; `npm test` builds first); what it posts arrives through `next()`, in order.
 */
function slotThread(
  buffer: SharedArrayBuffer,
  body: string,
): { next: () => Promise<unknown>; terminate: () => Promise<number> } {
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     import(workerData.module).then((slot) => {
       const buffer = workerData.buffer;
       ${body}
     });`,
    {
      eval: true,
      workerData: {
        buffer,
        module: new URL('../../dist/switchover/slot.js', import.meta.url).href,
      },
      execArgv: [], // not the test runner's source conditions: the built packages
    },
  );
  const posted: unknown[] = [];
  const waiting: ((m: unknown) => void)[] = [];
  let failed: Error | undefined;
  const failing: ((e: Error) => void)[] = [];
  worker.on('message', (m) => {
    const w = waiting.shift();
    failing.shift();
    if (w !== undefined) w(m);
    else posted.push(m);
  });
  worker.once('error', (e) => {
    failed = e;
    for (const f of failing.splice(0)) f(e);
  });
  return {
    next: () =>
      posted.length > 0
        ? Promise.resolve(posted.shift())
        : failed !== undefined
          ? Promise.reject(failed)
          : new Promise((resolve, reject) => {
              waiting.push(resolve);
              failing.push(reject);
            }),
    terminate: () => worker.terminate(),
  };
}

describe('SwitchoverSlot', () => {
  it('is created armed, opened by the other side, and deleted by its owner on close', () => {
    const target = SwitchoverSlot.create(dir, 'vmm-b', 'VM_1');
    expect(target.path).toMatch(/switchover-slot-vmm-b--vm-1-[0-9a-f]{12}\.bin$/);
    expect(target.state()).toBe(SlotState.ARMED);
    const source = SwitchoverSlot.open(target.path);
    expect(source.state()).toBe(SlotState.ARMED);
    expect(source.announced).toBe(false);
    source.close();
    expect(existsSync(target.path)).toBe(true); // the source never deletes it
    target.close();
    expect(existsSync(target.path)).toBe(false);
    target.close(); // idempotent
  });

  it('hands the state over: stop → publish → take → run, stamps visible to both sides', () => {
    const target = SwitchoverSlot.create(dir, 'vmm-t', 't');
    const source = SwitchoverSlot.open(target.path);
    expect(awaitStop(target.buffer, 1, () => true)).toBe('cancelled'); // nothing yet: gives up
    const again = SwitchoverSlot.create(dir, 'vmm-t', 't2');
    const src = SwitchoverSlot.open(again.path);
    expect(announceStop(src.buffer, 1234.5)).toBe(true);
    expect(src.announced).toBe(true);
    expect(again.abort()).toBe(false); // announced: the target's thread decides now
    expect(awaitStop(again.buffer, 10, () => false)).toBe('stopped');
    const state = new Uint8Array(5000).map((_, k) => k & 0xff);
    expect(publishState(src.buffer, state)).toBe(true);
    expect(src.stateLength).toBe(5000);
    const took = takeState(again.buffer, 1000);
    expect(took.kind).toBe('state');
    if (took.kind !== 'state') return;
    expect(took.stopAtMs).toBe(1234.5);
    expect(took.bytes).toEqual(state);
    expect(slotState(again.buffer)).toBe(SlotState.TAKEN);
    finishSlot(again.buffer, SlotState.RUNNING, 1240.25);
    expect(awaitTakeover(src.buffer, 1000)).toBe(SlotState.RUNNING);
    expect(again.runAtMs).toBe(1240.25);
    for (const x of [source, target, src, again]) x.close();
  });

  it('an aborted slot is never announced, and an announced one is never aborted', () => {
    const a = SwitchoverSlot.create(dir, 'vmm-t', 'a');
    expect(a.abort()).toBe(true);
    expect(a.abort()).toBe(true); // already aborted
    expect(announceStop(a.buffer, 1)).toBe(false);
    expect(a.announced).toBe(false);
    expect(awaitStop(a.buffer, 10, () => false)).toBe('aborted');
    a.close();
    const b = SwitchoverSlot.create(dir, 'vmm-t', 'b');
    expect(announceStop(b.buffer, 1)).toBe(true);
    expect(abortSlot(b.buffer)).toBe(false);
    expect(announceStop(b.buffer, 1)).toBe(false); // only once
    expect(publishState(b.buffer, new Uint8Array(8))).toBe(true);
    expect(publishState(b.buffer, new Uint8Array(8))).toBe(false); // only once
    b.close();
  });

  it('a state that cannot be published aborts the announced slot; the taker learns it', () => {
    for (const state of [new Uint8Array(SLOT_BYTES), null]) {
      const s = SwitchoverSlot.create(dir, 'vmm-t', 'big');
      expect(announceStop(s.buffer, 1)).toBe(true);
      expect(publishState(s.buffer, state)).toBe(false);
      expect(s.state()).toBe(SlotState.ABORTED);
      expect(s.announced).toBe(true); // aborted after the stop: the lease may have moved
      expect(s.abort()).toBe(false);
      expect(takeState(s.buffer, 1000)).toEqual({ kind: 'aborted' });
      s.close();
    }
  });

  it('a taker with nothing to do at the stop sleeps on until the state is there', () => {
    const s = SwitchoverSlot.create(dir, 'vmm-t', 'through');
    expect(announceStop(s.buffer, 1)).toBe(true);
    let asked = 0;
    const stopAsked = (): boolean => {
      asked++; // asked only while the slot is armed
      return false;
    };
    expect(publishState(s.buffer, Uint8Array.of(1))).toBe(true);
    expect(awaitStop(s.buffer, 1, stopAsked, true)).toBe('stopped');
    expect(s.state()).toBe(SlotState.READY);
    expect(asked).toBe(0);
    s.close();
    // Given up after the stop: still "stopped" (the taker then finds it aborted).
    const t = SwitchoverSlot.create(dir, 'vmm-t', 'through2');
    expect(announceStop(t.buffer, 1)).toBe(true);
    expect(publishState(t.buffer, null)).toBe(false);
    expect(awaitStop(t.buffer, 1, () => false, true)).toBe('stopped');
    expect(takeState(t.buffer, 1000)).toEqual({ kind: 'aborted' });
    t.close();
  });

  it('a taker gives up after its timeout when the state never comes', () => {
    const s = SwitchoverSlot.create(dir, 'vmm-t', 'late');
    expect(announceStop(s.buffer, 1)).toBe(true);
    expect(takeState(s.buffer, 5)).toEqual({ kind: 'timed-out' });
    s.close();
  });

  it('an armed taker gives up when told to stop, aborting the slot', () => {
    const s = SwitchoverSlot.create(dir, 'vmm-t', 'stop');
    let asked = 0;
    expect(awaitStop(s.buffer, 1, () => ++asked >= 3)).toBe('cancelled');
    expect(asked).toBe(3);
    expect(s.state()).toBe(SlotState.ABORTED);
    s.close();
  });

  it('refuses a hostile length written into the slot', () => {
    const s = SwitchoverSlot.create(dir, 'vmm-t', 'len');
    expect(announceStop(s.buffer, 1)).toBe(true);
    expect(publishState(s.buffer, new Uint8Array(16))).toBe(true);
    new DataView(s.buffer).setUint32(12, SLOT_BYTES, true); // past the capacity
    expect(takeState(s.buffer, 1000).kind).toBe('invalid');
    s.close();
  });

  it('wakes a taker sleeping in another thread, at the stop and at the state', async () => {
    const s = SwitchoverSlot.create(dir, 'vmm-t', 'wake');
    const worker = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads');
       import(workerData.module).then(({ awaitStop, takeState }) => {
         const stopped = awaitStop(workerData.buffer, 5000, () => false);
         parentPort.postMessage(stopped);
         const took = takeState(workerData.buffer, 5000);
         parentPort.postMessage(took.kind === 'state' ? Array.from(took.bytes) : took.kind);
       });`,
      {
        eval: true,
        // The compiled module, like the vCPU thread's (`npm test` builds first).
        workerData: {
          buffer: s.buffer,
          module: new URL('../../dist/switchover/slot.js', import.meta.url).href,
        },
        execArgv: [], // not the test runner's source conditions: the built packages
      },
    );
    const answers: unknown[] = [];
    const got = (n: number): Promise<void> =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (answers.length >= n) resolve();
        };
        worker.on('message', (m) => {
          answers.push(m);
          check();
        });
        worker.once('error', reject);
        check();
      });
    const first = got(1);
    await new Promise((r) => setTimeout(r, 50)); // asleep on the futex by now (or soon)
    expect(announceStop(s.buffer, 1)).toBe(true);
    await first;
    expect(answers[0]).toBe('stopped');
    expect(publishState(s.buffer, Uint8Array.of(7, 8, 9))).toBe(true);
    await got(2);
    expect(answers[1]).toEqual([7, 8, 9]);
    await worker.terminate();
    s.close();
  });
});

describe('SwitchoverSlot.open (the target is hostile too)', () => {
  it.each([
    ['a relative path', () => 'switchover-slot-x.bin'],
    ['another file name', () => join(dir, 'passwd')],
    [
      'a file of another size',
      () => {
        const p = join(dir, 'switchover-slot-short.bin');
        writeFileSync(p, new Uint8Array(4096));
        return p;
      },
    ],
    [
      'a slot-sized file without the header',
      () => {
        const p = join(dir, 'switchover-slot-zero.bin');
        writeFileSync(p, new Uint8Array(SLOT_BYTES));
        return p;
      },
    ],
    [
      'a symbolic link',
      () => {
        const real = SwitchoverSlot.create(dir, 'vmm-t', 'real');
        const p = join(dir, 'switchover-slot-link.bin');
        symlinkSync(real.path, p);
        return p;
      },
    ],
    ['a missing file', () => join(dir, 'switchover-slot-missing.bin')],
  ])('refuses %s with MIGRATION_BAD_STREAM', (_, make) => {
    expect(codeOf(() => SwitchoverSlot.open(make()))).toBe('MIGRATION_BAD_STREAM');
  });
});

describe('which state encoding the source writes into the slot', () => {
  /** Where the header keeps the compact layouts the target reads (the file's layout table). */
  const COMPACT_LAYOUTS_AT = 52;
  const layoutsWord = (slot: SwitchoverSlot, value: number): void =>
    new DataView(slot.buffer).setUint32(COMPACT_LAYOUTS_AT, value, true);

  it("the compact layout, when the target lists this build's layout version", () => {
    const target = SwitchoverSlot.create(dir, 'vmm-t', 'compact');
    expect(new DataView(target.buffer).getUint32(COMPACT_LAYOUTS_AT, true)).toBe(
      2 ** COMPACT_STATE_VERSION,
    );
    const source = SwitchoverSlot.open(target.path);
    expect(source.publishing).toEqual({ slot: source.buffer, compact: true });
    source.close();
    target.close();
  });

  it.each([
    ['lists no layout (a build before the compact layout)', 0],
    ['lists only other layout versions', ~(2 ** COMPACT_STATE_VERSION) >>> 0],
  ])('a snapshot container, when the target %s', (_, word) => {
    const target = SwitchoverSlot.create(dir, 'vmm-t', 'container');
    layoutsWord(target, word);
    const source = SwitchoverSlot.open(target.path);
    expect(source.publishing.compact).toBe(false);
    source.close();
    target.close();
  });
});

describe('SwitchoverSlot expectation (which VM the target prepared the slot for)', () => {
  it('reaches the source as the target wrote it', () => {
    const { target, source, close } = pair('expect');
    target.expect(prepared);
    expect(source.expectation()).toEqual(prepared);
    expect(target.expectation()).toEqual(prepared); // the same bytes from either side
    close();
  });

  it('is null until the target writes one', () => {
    const { target, source, close } = pair('none');
    expect(source.expectation()).toBeNull();
    target.expect(prepared);
    expect(source.expectation()).not.toBeNull();
    close();
  });

  it('is read up to its recorded length only: a shorter one replaces a longer one', () => {
    const { target, source, close } = pair('shorter');
    target.expect(prepared);
    const shorter: SlotExpectation = { from: 'vmm-a/vm-2', blocks: [] };
    target.expect(shorter); // the tail of the first is still in the file
    expect(source.expectation()).toEqual(shorter);
    close();
  });

  it(`holds up to ${EXPECT_MAX} bytes and refuses a bigger one with MIGRATION_FAILED`, () => {
    const { target, source, close } = pair('big');
    const sized = (bytes: number): SlotExpectation => {
      const from = 'x'.repeat(bytes - JSON.stringify({ from: '', blocks: [] }).length);
      return { from, blocks: [] };
    };
    expect(codeOf(() => target.expect(sized(EXPECT_MAX + 1)))).toBe('MIGRATION_FAILED');
    expect(source.expectation()).toBeNull(); // nothing of it was written
    expect(target.state()).toBe(SlotState.ARMED);
    const many: SlotExpectation = {
      from: 'vmm-a/vm-1',
      blocks: Array(60).fill(prepared.blocks[0]),
    };
    expect(codeOf(() => target.expect(many))).toBe('MIGRATION_FAILED'); // ≈ 6 KiB
    expect(source.expectation()).toBeNull();
    target.expect(sized(EXPECT_MAX)); // exactly full
    expect(source.expectation()).toEqual(sized(EXPECT_MAX));
    expect(codeOf(() => target.expect(sized(EXPECT_MAX + 1)))).toBe('MIGRATION_FAILED');
    expect(source.expectation()).toEqual(sized(EXPECT_MAX)); // the one written stays
    close();
  });
});

describe('SwitchoverSlot.expectation (what the target wrote is hostile input)', () => {
  const block = prepared.blocks[0]!;
  const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));
  const withBlock = (patch: Record<string, unknown>): Uint8Array =>
    json({ from: 'vmm-a/vm-1', blocks: [{ ...block, ...patch }] });
  // `{"from":"<0xff>","blocks":[]}`: read leniently, 0xff would become U+FFFD and pass.
  const badUtf8 = Uint8Array.from([
    ...new TextEncoder().encode('{"from":"'),
    0xff,
    ...new TextEncoder().encode('","blocks":[]}'),
  ]);

  it.each<[string, () => { bytes: Uint8Array; length?: number }]>([
    ['bytes that are not JSON', () => ({ bytes: new TextEncoder().encode('{"from":"vmm-a/') })],
    ['bytes that are not UTF-8', () => ({ bytes: badUtf8 })],
    ['a length of 5000 bytes', () => ({ bytes: json(prepared), length: 5000 })],
    [
      `a length of ${EXPECT_MAX + 1} bytes (one past the area)`,
      () => ({ bytes: new TextEncoder().encode(JSON.stringify(prepared).padEnd(EXPECT_MAX + 1)) }),
    ],
    ['a length of 2^32 - 1', () => ({ bytes: json(prepared), length: 0xffff_ffff })],
    ['JSON null', () => ({ bytes: json(null) })],
    ['a JSON array', () => ({ bytes: json([prepared]) })],
    ['a JSON string', () => ({ bytes: json('vmm-a/vm-1') })],
    ['no holder', () => ({ bytes: json({ blocks: prepared.blocks }) })],
    ['a holder that is not a string', () => ({ bytes: json({ ...prepared, from: 7 }) })],
    ['no block list', () => ({ bytes: json({ from: 'vmm-a/vm-1' }) })],
    [
      'a block list that is an object',
      () => ({ bytes: json({ from: 'v', blocks: { 0: block } }) }),
    ],
    ['a null block', () => ({ bytes: json({ from: 'vmm-a/vm-1', blocks: [null] }) })],
    ['a block that is a string', () => ({ bytes: json({ from: 'vmm-a/vm-1', blocks: ['ram'] }) })],
    ['a block without an id', () => ({ bytes: withBlock({ id: undefined }) })],
    ['a block without an identity', () => ({ bytes: withBlock({ identity: undefined }) })],
    ['a region id that is a number', () => ({ bytes: withBlock({ regionId: 1 }) })],
    ['a negative epoch', () => ({ bytes: withBlock({ epoch: -1 }) })],
    ['an epoch that is a string', () => ({ bytes: withBlock({ epoch: '3' }) })],
    ['an epoch that is null (NaN written as JSON)', () => ({ bytes: withBlock({ epoch: NaN }) })],
    ['a fractional size', () => ({ bytes: withBlock({ size: 1.5 }) })],
    ['a negative size', () => ({ bytes: withBlock({ size: -4096 }) })],
    ['a guest base past 2^53', () => ({ bytes: withBlock({ guestBase: 2 ** 53 }) })],
    ['a missing guest base', () => ({ bytes: withBlock({ guestBase: undefined }) })],
  ])('refuses %s with MIGRATION_BAD_STREAM', (_, make) => {
    const { target, source, close } = pair('hostile');
    const { bytes, length } = make();
    writeExpectation(target, bytes, length);
    expect(codeOf(() => source.expectation())).toBe('MIGRATION_BAD_STREAM');
    close();
  });

  it('takes a well-formed one padded to the full area (the bound is inclusive)', () => {
    const { target, source, close } = pair('padded');
    writeExpectation(
      target,
      new TextEncoder().encode(JSON.stringify(prepared).padEnd(EXPECT_MAX)), // JSON allows the blanks
    );
    expect(source.expectation()).toEqual(prepared);
    close();
  });
});

describe('the take-over outcome', () => {
  it('HELD: the target took the VM over paused; the source learns it with the stamp', () => {
    const { target, source, close } = taken('held');
    finishSlot(target.buffer, SlotState.HELD, 4321.5);
    expect(awaitTakeover(source.buffer, 1000)).toBe(SlotState.HELD);
    expect(source.runAtMs).toBe(4321.5);
    expect(target.runAtMs).toBe(4321.5);
    close();
  });

  it('FAILED carries no stamp', () => {
    const { target, source, close } = taken('failed');
    finishSlot(target.buffer, SlotState.FAILED, 4321.5);
    expect(awaitTakeover(source.buffer, 1000)).toBe(SlotState.FAILED);
    expect(source.runAtMs).toBe(0);
    close();
  });

  it('fail() turns a taken slot FAILED for the source', () => {
    const { target, source, close } = taken('fail');
    target.fail();
    expect(target.state()).toBe(SlotState.FAILED);
    expect(awaitTakeover(source.buffer, 1000)).toBe(SlotState.FAILED);
    expect(source.runAtMs).toBe(0);
    target.fail(); // again: no change
    expect(target.state()).toBe(SlotState.FAILED);
    close();
  });

  it('fail() turns a published slot FAILED: the target never takes it', () => {
    const { target, source, close } = pair('fail-ready');
    expect(announceStop(source.buffer, 1)).toBe(true);
    expect(publishState(source.buffer, Uint8Array.of(1))).toBe(true);
    target.fail();
    expect(target.state()).toBe(SlotState.FAILED);
    expect(awaitTakeover(source.buffer, 1000)).toBe(SlotState.FAILED);
    expect(takeState(target.buffer, 1000)).toEqual({ kind: 'aborted' });
    close();
  });

  it('fail() turns a stopped slot FAILED: the source cannot publish into it any more', () => {
    const { target, source, close } = pair('fail-stopped');
    expect(announceStop(source.buffer, 1)).toBe(true);
    target.fail();
    expect(target.state()).toBe(SlotState.FAILED);
    expect(publishState(source.buffer, Uint8Array.of(1))).toBe(false);
    expect(target.state()).toBe(SlotState.FAILED);
    close();
  });

  it.each<[string, (p: ReturnType<typeof pair>) => void, number, number]>([
    ['ARMED', () => undefined, SlotState.ARMED, 0],
    ['ABORTED (before the stop)', (p) => p.target.abort(), SlotState.ABORTED, 0],
    [
      'ABORTED (after the stop)',
      (p) => {
        announceStop(p.source.buffer, 1);
        publishState(p.source.buffer, null);
      },
      SlotState.ABORTED,
      0,
    ],
    ['RUNNING', (p) => finish(p, SlotState.RUNNING, 77), SlotState.RUNNING, 77],
    ['HELD', (p) => finish(p, SlotState.HELD, 88), SlotState.HELD, 88],
    ['FAILED', (p) => finish(p, SlotState.FAILED), SlotState.FAILED, 0],
  ])('fail() leaves a slot in %s as it is', (_, reach, state, runAtMs) => {
    const p = pair('keep');
    reach(p);
    expect(p.target.state()).toBe(state);
    p.target.fail();
    expect(p.target.state()).toBe(state);
    expect(p.source.runAtMs).toBe(runAtMs);
    if (state === SlotState.ARMED) expect(announceStop(p.source.buffer, 1)).toBe(true); // still usable
    p.close();
  });

  it('a thread ending a hand-off its main thread already failed leaves it failed', () => {
    const p = taken('late');
    p.target.fail();
    finishSlot(p.target.buffer, SlotState.RUNNING, 5);
    expect(p.source.state()).toBe(SlotState.FAILED);
    p.close();
  });

  it.each<[string, (slot: SwitchoverSlot) => void, number]>([
    ['fail()', (slot) => slot.fail(), SlotState.FAILED],
    ['a HELD outcome', (slot) => finishSlot(slot.buffer, SlotState.HELD, 5), SlotState.HELD],
  ])('%s wakes a source thread waiting for the take-over', async (_, settle, outcome) => {
    const { target, source, close } = taken('wake-source');
    const thread = slotThread(
      source.buffer,
      `parentPort.postMessage('waiting');
       const t0 = performance.now();
       const s = slot.awaitTakeover(buffer, 3000);
       parentPort.postMessage([s, performance.now() - t0]);`,
    );
    expect(await thread.next()).toBe('waiting');
    await new Promise((r) => setTimeout(r, 50)); // asleep on the futex by now (or soon)
    settle(target);
    const [state, waitedMs] = (await thread.next()) as [number, number];
    expect(state).toBe(outcome);
    expect(waitedMs).toBeLessThan(2000); // woken, not timed out after 3 s
    await thread.terminate();
    close();
  });
});
