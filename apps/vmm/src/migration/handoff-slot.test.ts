import { mkdtempSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import {
  HandoffSlot,
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
} from './handoff-slot.js';

const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'handoff-slot-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
};

describe('HandoffSlot', () => {
  it('is created armed, opened by the other side, and deleted by its owner on close', () => {
    const target = HandoffSlot.create(dir, 'vmm-b-VM_1');
    expect(target.path).toMatch(/handoff-slot-vmm-b-vm-1-[0-9a-f]{12}\.bin$/);
    expect(target.state()).toBe(SlotState.ARMED);
    const source = HandoffSlot.open(target.path);
    expect(source.state()).toBe(SlotState.ARMED);
    expect(source.announced).toBe(false);
    source.close();
    expect(existsSync(target.path)).toBe(true); // the source never deletes it
    target.close();
    expect(existsSync(target.path)).toBe(false);
    target.close(); // idempotent
  });

  it('hands the state over: stop → publish → take → run, stamps visible to both sides', () => {
    const target = HandoffSlot.create(dir, 't');
    const source = HandoffSlot.open(target.path);
    expect(awaitStop(target.buffer, 1, () => true)).toBe('cancelled'); // nothing yet: gives up
    const again = HandoffSlot.create(dir, 't2');
    const src = HandoffSlot.open(again.path);
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
    finishSlot(again.buffer, true, 1240.25);
    expect(awaitTakeover(src.buffer, 1000)).toBe(SlotState.RUNNING);
    expect(again.runAtMs).toBe(1240.25);
    for (const x of [source, target, src, again]) x.close();
  });

  it('an aborted slot is never announced, and an announced one is never aborted', () => {
    const a = HandoffSlot.create(dir, 'a');
    expect(a.abort()).toBe(true);
    expect(a.abort()).toBe(true); // already aborted
    expect(announceStop(a.buffer, 1)).toBe(false);
    expect(a.announced).toBe(false);
    expect(awaitStop(a.buffer, 10, () => false)).toBe('aborted');
    a.close();
    const b = HandoffSlot.create(dir, 'b');
    expect(announceStop(b.buffer, 1)).toBe(true);
    expect(abortSlot(b.buffer)).toBe(false);
    expect(announceStop(b.buffer, 1)).toBe(false); // only once
    expect(publishState(b.buffer, new Uint8Array(8))).toBe(true);
    expect(publishState(b.buffer, new Uint8Array(8))).toBe(false); // only once
    b.close();
  });

  it('a state that cannot be published aborts the announced slot; the taker learns it', () => {
    for (const state of [new Uint8Array(SLOT_BYTES), null]) {
      const s = HandoffSlot.create(dir, 'big');
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
    const s = HandoffSlot.create(dir, 'through');
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
    const t = HandoffSlot.create(dir, 'through2');
    expect(announceStop(t.buffer, 1)).toBe(true);
    expect(publishState(t.buffer, null)).toBe(false);
    expect(awaitStop(t.buffer, 1, () => false, true)).toBe('stopped');
    expect(takeState(t.buffer, 1000)).toEqual({ kind: 'aborted' });
    t.close();
  });

  it('a taker gives up after its timeout when the state never comes', () => {
    const s = HandoffSlot.create(dir, 'late');
    expect(announceStop(s.buffer, 1)).toBe(true);
    expect(takeState(s.buffer, 5)).toEqual({ kind: 'timed-out' });
    s.close();
  });

  it('an armed taker gives up when told to stop, aborting the slot', () => {
    const s = HandoffSlot.create(dir, 'stop');
    let asked = 0;
    expect(awaitStop(s.buffer, 1, () => ++asked >= 3)).toBe('cancelled');
    expect(asked).toBe(3);
    expect(s.state()).toBe(SlotState.ABORTED);
    s.close();
  });

  it('refuses a hostile length written into the slot', () => {
    const s = HandoffSlot.create(dir, 'len');
    expect(announceStop(s.buffer, 1)).toBe(true);
    expect(publishState(s.buffer, new Uint8Array(16))).toBe(true);
    new DataView(s.buffer).setUint32(12, SLOT_BYTES, true); // past the capacity
    expect(takeState(s.buffer, 1000).kind).toBe('invalid');
    s.close();
  });

  it('wakes a taker sleeping in another thread, at the stop and at the state', async () => {
    const s = HandoffSlot.create(dir, 'wake');
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
          module: new URL('../../dist/migration/handoff-slot.js', import.meta.url).href,
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

describe('HandoffSlot.open (the target is hostile too)', () => {
  it.each([
    ['a relative path', () => 'handoff-slot-x.bin'],
    ['another file name', () => join(dir, 'passwd')],
    [
      'a file of another size',
      () => {
        const p = join(dir, 'handoff-slot-short.bin');
        writeFileSync(p, new Uint8Array(4096));
        return p;
      },
    ],
    [
      'a slot-sized file without the header',
      () => {
        const p = join(dir, 'handoff-slot-zero.bin');
        writeFileSync(p, new Uint8Array(SLOT_BYTES));
        return p;
      },
    ],
    [
      'a symbolic link',
      () => {
        const real = HandoffSlot.create(dir, 'real');
        const p = join(dir, 'handoff-slot-link.bin');
        symlinkSync(real.path, p);
        return p;
      },
    ],
    ['a missing file', () => join(dir, 'handoff-slot-missing.bin')],
  ])('refuses %s with MIGRATION_BAD_STREAM', (_, make) => {
    expect(codeOf(() => HandoffSlot.open(make()))).toBe('MIGRATION_BAD_STREAM');
  });
});
