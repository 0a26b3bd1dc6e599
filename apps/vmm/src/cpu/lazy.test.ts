import { PresentMap, PresentState, presentMapBytes } from '@handoff/bitmap';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createMachine, type Machine } from '../machine/machine.js';
import { runUntilStopped } from '../machine/run-sync.js';
import { PAGE_SHIFT, testPageBit } from '../memory/pages.js';
import type { StopReason } from './hart.js';
import { R, asm, bytesOf, li } from './test-asm.js';

const RAM = 0x80000000;
const RAM_SIZE = 1 << 20;
const PAGES = RAM_SIZE >>> PAGE_SHIFT;
const HANDLER = RAM + 0xf0000;
/** Page 4 of RAM: missing unless a test marks it. */
const DATA = RAM + 0x4000;
const DATA_PAGE = 4;

/** A present map over a plain SharedArrayBuffer, filling, with `present` pages marked. */
function presentMap(present: readonly number[]): PresentMap {
  const map = PresentMap.initialize(new SharedArrayBuffer(presentMapBytes(PAGES)), PAGES);
  map.setState(PresentState.Filling);
  for (const p of present) map.markPresent(p, 1);
  return map;
}

/**
 * A machine whose main RAM is lazy (`map`), with `words` at the start of RAM and an endless
 * loop at HANDLER; the code page (page 0) is marked present.
 */
function lazyMachine(words: number[], map: PresentMap, translate = true): Machine {
  const m = createMachine({
    ramSize: RAM_SIZE,
    timeMode: 'deterministic',
    ram: { present: map },
    translate,
  });
  m.memory.writeBytes(RAM, bytesOf(words));
  m.memory.writeBytes(HANDLER, bytesOf([asm.jal(0, 0)]));
  map.markPresent(0, 1);
  map.markPresent((HANDLER - RAM) >>> PAGE_SHIFT, 1);
  m.cpu.reset(RAM);
  m.cpu.mtvec = HANDLER | 0;
  return m;
}

/** Writes `bytes` into a missing page the way memstore does: bytes first, then the bit. */
function arrive(m: Machine, map: PresentMap, addr: number, bytes: Uint8Array): void {
  m.memory.main.u8.set(bytes, addr - RAM);
  map.markPresent((addr - RAM) >>> PAGE_SHIFT, 1);
}

function word(v: number): Uint8Array {
  return bytesOf([v]);
}

describe('lazy RAM blocks: the CPU waits for missing pages', () => {
  it('a load from a missing page stops before it (registers, retired, no trap), the retry reads what arrived', () => {
    const map = presentMap([]);
    const m = lazyMachine(
      [...li(R.a0, DATA), asm.lw(R.a1, R.a0, 8), asm.addi(R.a2, 0, 7), asm.jal(0, 0)],
      map,
    );
    m.cpu.x[R.a1] = 0x1234;
    expect(m.run(100)).toBe('page');
    expect(m.cpu.missingBlock).toBe(m.memory.main);
    expect(m.cpu.missingPage).toBe(DATA_PAGE);
    expect(m.cpu.retired).toBe(2);
    expect(m.cpu.traps).toBe(0);
    expect(m.cpu.pcU).toBe(RAM + 8);
    expect(m.cpu.x[R.a1]).toBe(0x1234);
    expect(m.cpu.x[R.a2]).toBe(0);
    expect(m.memory.faulted).toBe(false);
    // Still missing: it stops again, at the same instruction.
    expect(m.run(100)).toBe('page');
    expect(m.cpu.retired).toBe(2);

    arrive(m, map, DATA + 8, word(0xcafe));
    expect(m.run(10)).toBe('budget');
    expect(m.cpu.x[R.a1]).toBe(0xcafe);
    expect(m.cpu.x[R.a2]).toBe(7);
    expect(m.cpu.traps).toBe(0);
  });

  it('a store to a missing page writes nothing and marks nothing; after it arrives the store lands', () => {
    const map = presentMap([]);
    const m = lazyMachine(
      [...li(R.a0, DATA), ...li(R.a1, 0x55667788), asm.sw(R.a1, R.a0, 16), asm.jal(0, 0)],
      map,
    );
    const main = m.memory.main;
    main.u8[DATA - RAM + 16] = 0xaa; // what memstore will deliver there
    expect(m.run(100)).toBe('page');
    expect(m.cpu.missingPage).toBe(DATA_PAGE);
    expect(m.cpu.retired).toBe(4);
    expect(main.u8[DATA - RAM + 16]).toBe(0xaa);
    expect(testPageBit(main.dirty, DATA_PAGE)).toBe(false);

    map.markPresent(DATA_PAGE, 1);
    expect(m.run(10)).toBe('budget');
    expect(main.view.getUint32(DATA - RAM + 16, true)).toBe(0x55667788);
    expect(testPageBit(main.dirty, DATA_PAGE)).toBe(true);
  });

  it('fetching from a missing code page waits at the target; the code runs once it arrives', () => {
    const map = presentMap([]);
    const target = RAM + 0x3000;
    const m = lazyMachine([asm.addi(R.a0, 0, 1), asm.jal(0, target - (RAM + 4))], map);
    expect(m.run(100)).toBe('page');
    expect(m.cpu.missingPage).toBe(3);
    expect(m.cpu.pcU).toBe(target);
    expect(m.cpu.retired).toBe(2); // the jump retired; nothing at the target did
    expect(m.memory.main.code(3)).toBeUndefined(); // nothing was decoded from the missing page
    arrive(m, map, target, bytesOf([asm.addi(R.a0, R.a0, 41), asm.jal(0, 0)]));
    expect(m.run(10)).toBe('budget');
    expect(m.cpu.x[R.a0]).toBe(42);
  });

  it('running off the end of a page into a missing one waits there', () => {
    const map = presentMap([]);
    const words = new Array<number>(1024).fill(asm.addi(R.a0, R.a0, 1));
    const m = lazyMachine(words, map);
    expect(m.run(5000)).toBe('page');
    expect(m.cpu.missingPage).toBe(1);
    expect(m.cpu.pcU).toBe(RAM + 0x1000);
    expect(m.cpu.retired).toBe(1024);
    expect(m.cpu.x[R.a0]).toBe(1024);
  });

  it('a misaligned access straddling a present and a missing page does nothing', () => {
    const map = presentMap([DATA_PAGE - 1]);
    const m = lazyMachine(
      [
        ...li(R.a0, DATA - 2),
        ...li(R.a1, 0x11223344),
        asm.sw(R.a1, R.a0, 0), // bytes in pages 3 and 4
        asm.lw(R.a2, R.a0, 0),
        asm.jal(0, 0),
      ],
      map,
    );
    const main = m.memory.main;
    expect(m.run(100)).toBe('page');
    expect(m.cpu.missingPage).toBe(DATA_PAGE);
    expect(m.cpu.retired).toBe(4);
    expect(main.view.getUint16(DATA - RAM - 2, true)).toBe(0); // not even the present half
    map.markPresent(DATA_PAGE, 1);
    expect(m.run(2)).toBe('budget');
    expect(m.cpu.x[R.a2]).toBe(0x11223344);
  });

  it('an AMO on a missing page waits; LR then SC keeps the reservation across a wait', () => {
    const map = presentMap([]);
    const m = lazyMachine(
      [
        ...li(R.a0, DATA),
        asm.addi(R.a1, 0, 5),
        asm.amoadd(R.a2, R.a1, R.a0), // a2 = old, mem += 5
        asm.lr(R.a3, R.a0),
        asm.addi(R.a3, R.a3, 1),
        asm.sc(R.a4, R.a3, R.a0),
        asm.jal(0, 0),
      ],
      map,
    );
    m.cpu.x[R.a2] = -1;
    expect(m.run(100)).toBe('page');
    expect(m.cpu.retired).toBe(3);
    expect(m.cpu.x[R.a2]).toBe(-1);
    arrive(m, map, DATA, word(100));
    expect(m.run(4)).toBe('budget');
    expect(m.cpu.x[R.a2]).toBe(100);
    expect(m.cpu.x[R.a4]).toBe(0); // SC succeeded
    expect(m.memory.main.view.getUint32(DATA - RAM, true)).toBe(106);
  });

  it('a trap vector on a missing page: the trap is taken, the handler waits for its page', () => {
    const map = presentMap([]);
    const m = lazyMachine([asm.ecall()], map);
    m.cpu.mtvec = (RAM + 0x2000) | 0;
    expect(m.run(10)).toBe('page');
    expect(m.cpu.missingPage).toBe(2);
    expect(m.cpu.traps).toBe(1);
    expect(m.cpu.pcU).toBe(RAM + 0x2000);
  });

  it('a fully present lazy block computes what an ordinary one does', () => {
    // A loop of loads and stores over four pages, with a store into its own code page.
    const prog = [
      ...li(R.a0, DATA),
      ...li(R.a1, 0),
      asm.addi(R.a2, 0, 0),
      // loop: (at RAM + 20)
      asm.add(R.a3, R.a0, R.a2),
      asm.lw(R.a4, R.a3, 0),
      asm.add(R.a4, R.a4, R.a2),
      asm.sw(R.a4, R.a3, 0),
      asm.sb(R.a4, R.a3, 3),
      asm.add(R.a1, R.a1, R.a4),
      asm.addi(R.a2, R.a2, 12),
      ...li(R.a5, 0x4000),
      asm.blt(R.a2, R.a5, -36),
      asm.jal(0, 0),
    ];
    const all = presentMap([]);
    all.markPresent(0, PAGES);
    const lazy = lazyMachine(prog, all);
    const plain = createMachine({ ramSize: RAM_SIZE, timeMode: 'deterministic' });
    plain.memory.writeBytes(RAM, bytesOf(prog));
    plain.cpu.reset(RAM);
    plain.cpu.mtvec = HANDLER | 0;
    plain.memory.writeBytes(HANDLER, bytesOf([asm.jal(0, 0)]));
    for (const budget of [7, 1000, 33, 50_000]) {
      expect(lazy.run(budget)).toBe(plain.run(budget));
      expect(lazy.cpu.save()).toEqual(plain.cpu.save());
    }
    expect(Buffer.compare(lazy.memory.main.u8, plain.memory.main.u8)).toBe(0);
    expect(Array.from(lazy.memory.main.dirty)).toEqual(Array.from(plain.memory.main.dirty));
  });

  it('once the map says Complete the block is ordinary again: fast path and translation', () => {
    const map = presentMap([]);
    const loop = [asm.addi(R.a0, R.a0, 1), asm.jal(0, -4)];
    const m = lazyMachine(loop, map);
    const main = m.memory.main;
    expect(main.fastSize).toBe(0);
    m.run(200_000);
    expect(main.code(0)?.translated).toBeUndefined(); // lazy: interpreted only
    map.markPresent(0, PAGES);
    map.setState(PresentState.Complete);
    m.run(1_000_000);
    expect(main.present).toBeUndefined();
    expect(main.fastSize).toBe(RAM_SIZE);
    expect(m.memory.lazyBlocks).toBe(0);
    expect(typeof main.code(0)?.translated).toBe('function');
  });

  it('the CPU bench guest runs the same on lazy RAM (all present) as on ordinary RAM', () => {
    const elf = readFileSync(new URL('../../../../guests/bench/bench.elf', import.meta.url));
    const size = 16 * 1024 * 1024;
    const pages = size >>> PAGE_SHIFT;
    const map = PresentMap.initialize(new SharedArrayBuffer(presentMapBytes(pages)), pages);
    map.setState(PresentState.Filling);
    map.markPresent(0, pages);
    const out: number[][] = [[], []];
    const make = (k: number, present?: PresentMap): Machine =>
      createMachine({
        ramSize: size,
        timeMode: 'deterministic',
        elf,
        uartSink: (b) => out[k]!.push(b),
        ...(present !== undefined ? { ram: { present } } : {}),
      });
    const plain = make(0);
    const lazy = make(1, map);
    expect(lazy.memory.main.fastSize).toBe(0);
    for (let k = 0; k < 4; k++) {
      expect(runUntilStopped(lazy, 1_500_000)).toBe(runUntilStopped(plain, 1_500_000));
      expect(lazy.cpu.save()).toEqual(plain.cpu.save());
    }
    expect(Buffer.compare(lazy.memory.main.u8, plain.memory.main.u8)).toBe(0);
    expect(out[1]).toEqual(out[0]);
  });

  it('the CPU bench guest with every page arriving only when touched ends exactly where ordinary RAM does', () => {
    const elf = readFileSync(new URL('../../../../guests/bench/bench.elf', import.meta.url));
    const size = 16 * 1024 * 1024;
    const pages = size >>> PAGE_SHIFT;
    // Nothing present: the loader's bytes are in RAM (as memstore's would be once fetched), and
    // each page "arrives" (its bit is set) when the guest stops for it.
    const map = PresentMap.initialize(new SharedArrayBuffer(presentMapBytes(pages)), pages);
    map.setState(PresentState.Filling);
    const out: number[][] = [[], []];
    const make = (k: number, present?: PresentMap): Machine =>
      createMachine({
        ramSize: size,
        timeMode: 'deterministic',
        elf,
        uartSink: (b) => out[k]!.push(b),
        ...(present !== undefined ? { ram: { present } } : {}),
      });
    const plain = make(0);
    const lazy = make(1, map);
    const N = 3_000_000;
    const arrived = new Set<number>();
    let reason: StopReason = 'budget';
    while (lazy.cpu.retired < N) {
      reason = lazy.run(N - lazy.cpu.retired); // as runUntilStopped counts
      if (reason === 'page') {
        expect(arrived.has(lazy.cpu.missingPage)).toBe(false); // never the same page twice
        arrived.add(lazy.cpu.missingPage);
        map.markPresent(lazy.cpu.missingPage, 1);
        continue;
      }
      if (reason !== 'budget') break;
    }
    expect(arrived.size).toBeGreaterThan(3);
    expect(reason).toBe(runUntilStopped(plain, N));
    expect(lazy.cpu.save()).toEqual(plain.cpu.save());
    expect(Buffer.compare(lazy.memory.main.u8, plain.memory.main.u8)).toBe(0);
    expect(out[1]).toEqual(out[0]);
  });
});
