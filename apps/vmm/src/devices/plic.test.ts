import { describe, expect, it } from 'vitest';

import { AddressSpace } from '../memory/address-space.js';
import {
  PLIC_SIZE,
  Plic,
  PlicContext,
  PlicReg,
  PlicSource,
  plicResetState,
  type PlicState,
} from './plic.js';

const BASE = 0x0c00_0000;
const UART = PlicSource.UART0;
const priority = (source: number): number => PlicReg.PRIORITY + 4 * source;
const enable = (context: number, word = 0): number =>
  PlicReg.ENABLE + context * PlicReg.ENABLE_STRIDE + 4 * word;
const threshold = (context: number): number =>
  PlicReg.CONTEXT + context * PlicReg.CONTEXT_STRIDE + PlicReg.THRESHOLD;
const claim = (context: number): number =>
  PlicReg.CONTEXT + context * PlicReg.CONTEXT_STRIDE + PlicReg.CLAIM;

/** A PLIC whose outputs are recorded: `levels[c]` is context c's last level, `calls` every call. */
function plicWithOutputs(): { plic: Plic; levels: boolean[]; calls: [number, boolean][] } {
  const levels = [false, false];
  const calls: [number, boolean][] = [];
  const plic = new Plic(BASE, (context, level) => {
    levels[context] = level;
    calls.push([context, level]);
  });
  return { plic, levels, calls };
}

const rd = (p: Plic, offset: number): number => p.read(offset, 4) >>> 0;
const wr = (p: Plic, offset: number, value: number): void => p.write(offset, 4, value);

describe('PLIC registers (QEMU virt layout)', () => {
  it('keeps 3-bit priorities for sources 1–95 only', () => {
    const { plic } = plicWithOutputs();
    wr(plic, priority(UART), 9);
    expect(rd(plic, priority(UART))).toBe(1); // WARL: the low 3 bits
    wr(plic, priority(UART), 0xffffffff);
    expect(rd(plic, priority(UART))).toBe(7);
    wr(plic, priority(95), 6);
    expect(rd(plic, priority(95))).toBe(6);
    for (const source of [0, 96, 127, 0x3ff]) {
      wr(plic, priority(source), 5);
      expect(rd(plic, priority(source)), `source ${source}`).toBe(0);
    }
  });

  it('has 3 enable words per context for 2 contexts, written whole', () => {
    const { plic } = plicWithOutputs();
    for (let w = 0; w < 4; w++) wr(plic, enable(0, w), 0xffffffff);
    expect([0, 1, 2, 3].map((w) => rd(plic, enable(0, w)))).toEqual([
      0xffffffff, 0xffffffff, 0xffffffff, 0,
    ]);
    wr(plic, enable(1), 0x400);
    expect(rd(plic, enable(1))).toBe(0x400);
    wr(plic, enable(2), 0x400); // no third context
    expect(rd(plic, enable(2))).toBe(0);
  });

  it('keeps 3-bit thresholds per context; other context offsets read 0', () => {
    const { plic } = plicWithOutputs();
    wr(plic, threshold(0), 9);
    wr(plic, threshold(1), 3);
    expect([rd(plic, threshold(0)), rd(plic, threshold(1))]).toEqual([1, 3]);
    wr(plic, threshold(2), 3);
    expect(rd(plic, threshold(2))).toBe(0);
    expect(rd(plic, PlicReg.CONTEXT + 8)).toBe(0);
    expect(rd(plic, PLIC_SIZE - 4)).toBe(0);
  });

  it('has read-only pending words', () => {
    const { plic } = plicWithOutputs();
    wr(plic, PlicReg.PENDING, 0xffffffff);
    expect(rd(plic, PlicReg.PENDING)).toBe(0);
    plic.setSource(UART, true);
    plic.setSource(40, true);
    plic.setSource(95, true);
    expect([0, 1, 2, 3].map((w) => rd(plic, PlicReg.PENDING + 4 * w))).toEqual([
      1 << UART,
      1 << 8,
      0x80000000,
      0,
    ]);
    plic.setSource(0, true);
    plic.setSource(96, true);
    expect(rd(plic, PlicReg.PENDING)).toBe(1 << UART);
  });

  it('takes only 32-bit accesses: narrower ones fault like unmapped memory', () => {
    const memory = new AddressSpace();
    const { plic } = plicWithOutputs();
    memory.addDevice(plic);
    memory.store(BASE + priority(UART), 4, 3);
    expect(memory.load(BASE + priority(UART), 4)).toBe(3);
    expect(memory.faulted).toBe(false);
    memory.load(BASE + priority(UART), 1);
    expect(memory.faulted).toBe(true);
    memory.faulted = false;
    memory.store(BASE + priority(UART), 2, 5);
    expect(memory.faulted).toBe(true);
    memory.faulted = false;
    memory.load(BASE + priority(UART) + 1, 4); // misaligned: split into bytes, which fault
    expect(memory.faulted).toBe(true);
    expect(rd(plic, priority(UART))).toBe(3);
  });
});

describe('PLIC claim and complete', () => {
  /** Sources 3 (priority 2), 10 (priority 5) and 11 (priority 5) enabled for context 0. */
  function threeSources(): ReturnType<typeof plicWithOutputs> {
    const p = plicWithOutputs();
    wr(p.plic, priority(3), 2);
    wr(p.plic, priority(10), 5);
    wr(p.plic, priority(11), 5);
    wr(p.plic, enable(0), (1 << 3) | (1 << 10) | (1 << 11));
    return p;
  }

  it('claims the highest priority first, the lowest number among equals, then nothing', () => {
    const { plic } = threeSources();
    for (const s of [11, 3, 10]) plic.setSource(s, true);
    expect(rd(plic, claim(0))).toBe(10);
    expect(rd(plic, claim(0))).toBe(11);
    expect(rd(plic, claim(0))).toBe(3);
    expect(rd(plic, claim(0))).toBe(0);
    expect(rd(plic, PlicReg.PENDING)).toBe(0);
  });

  it('masks priorities at or below the threshold, and priority 0 always', () => {
    const { plic, levels } = threeSources();
    plic.setSource(3, true);
    wr(plic, threshold(0), 2);
    expect(levels[0]).toBe(false);
    expect(rd(plic, claim(0))).toBe(0);
    wr(plic, threshold(0), 1);
    expect(levels[0]).toBe(true);
    wr(plic, priority(3), 0);
    wr(plic, threshold(0), 0);
    expect(levels[0]).toBe(false);
    expect(rd(plic, claim(0))).toBe(0);
    expect(rd(plic, PlicReg.PENDING)).toBe(1 << 3); // still pending, just never delivered
  });

  it('does not claim a claimed source again until it is completed, by any context', () => {
    const { plic, levels } = threeSources();
    wr(plic, enable(1), 1 << 10);
    plic.setSource(10, true);
    expect(rd(plic, claim(1))).toBe(10); // claimed through context 1: gone for context 0 too
    expect(levels).toEqual([false, false]);
    plic.setSource(10, true); // the device asks again while in service: pending, not deliverable
    expect(rd(plic, PlicReg.PENDING)).toBe(1 << 10);
    expect(rd(plic, claim(0))).toBe(0);
    wr(plic, claim(0), 96); // out of range: ignored
    wr(plic, claim(0), 3); // not claimed: no effect
    expect(levels).toEqual([false, false]);
    wr(plic, claim(0), 10); // completion through the other context counts
    expect(levels).toEqual([true, true]);
    expect(rd(plic, claim(0))).toBe(10);
  });

  it('keeps a source pending when its line drops, until a claim (QEMU 7.2)', () => {
    const { plic, levels } = threeSources();
    plic.setSource(10, true);
    plic.setSource(10, false);
    expect(rd(plic, PlicReg.PENDING)).toBe(1 << 10);
    expect(levels[0]).toBe(true);
    expect(rd(plic, claim(0))).toBe(10);
    wr(plic, claim(0), 10);
    expect(levels[0]).toBe(false); // not re-raised: the line said nothing new
  });

  it('re-evaluates the outputs on sources, priorities, thresholds, claims and completions, not on enables', () => {
    const { plic, levels, calls } = plicWithOutputs();
    wr(plic, priority(UART), 1);
    plic.setSource(UART, true);
    expect(calls).toEqual([]);
    wr(plic, enable(PlicContext.MACHINE), 1 << UART);
    expect(levels[0]).toBe(false); // QEMU 7.2 does not look after an enable write
    wr(plic, threshold(PlicContext.SUPERVISOR), 0);
    expect(calls).toEqual([[0, true]]);
    wr(plic, enable(PlicContext.MACHINE), 0);
    expect(levels[0]).toBe(true); // likewise when disabled
    expect(rd(plic, claim(0))).toBe(0); // but a claim finds nothing and lowers it
    expect(calls).toEqual([
      [0, true],
      [0, false],
    ]);
    wr(plic, enable(PlicContext.SUPERVISOR), 1 << UART);
    wr(plic, priority(UART), 2);
    expect(calls.at(-1)).toEqual([1, true]);
    expect(levels).toEqual([false, true]);
  });
});

describe('PLIC state', () => {
  it('saves and restores everything, outputs at their saved level even when stale', () => {
    const a = plicWithOutputs();
    wr(a.plic, priority(UART), 4);
    wr(a.plic, priority(3), 1);
    wr(a.plic, enable(0), (1 << UART) | (1 << 3));
    wr(a.plic, enable(1, 2), 0x80000000);
    wr(a.plic, threshold(1), 6);
    a.plic.setSource(3, true);
    expect(rd(a.plic, claim(0))).toBe(3);
    a.plic.setSource(UART, true);
    wr(a.plic, enable(0), 1 << 3); // UART no longer enabled, output stays up (no re-evaluation)
    const saved = a.plic.save();
    expect(saved).toMatchObject({
      version: 1,
      pending: [1 << UART, 0, 0],
      claimed: [1 << 3, 0, 0],
      enable: [1 << 3, 0, 0, 0, 0, 0x80000000],
      threshold: [0, 6],
      outputs: 1,
    });
    expect(saved.priority).toHaveLength(96);
    expect(JSON.parse(JSON.stringify(saved))).toEqual(saved);

    const b = plicWithOutputs();
    b.plic.restore(saved);
    expect(b.levels).toEqual([true, false]);
    expect(b.calls).toEqual([
      [0, true],
      [1, false],
    ]);
    expect(b.plic.save()).toEqual(saved);
    expect(rd(b.plic, claim(0))).toBe(0); // the stale output drops at the next evaluation
    expect(b.levels[0]).toBe(false);
  });

  it('resets to the reset state and lowers its outputs', () => {
    const { plic, levels } = plicWithOutputs();
    wr(plic, priority(UART), 4);
    wr(plic, enable(0), 1 << UART);
    plic.setSource(UART, true);
    expect(levels[0]).toBe(true);
    plic.reset();
    expect(levels[0]).toBe(false);
    expect(plic.save()).toEqual(plicResetState());
  });

  it('refuses a state of another version or shape', () => {
    const { plic } = plicWithOutputs();
    const good = plicResetState();
    expect(() => plic.restore({ ...good, version: 2 })).toThrow(/version 2/);
    const short: PlicState = { ...good, enable: [0, 0, 0] };
    expect(() => plic.restore(short)).toThrow(/3 enable items, want 6/);
  });
});
