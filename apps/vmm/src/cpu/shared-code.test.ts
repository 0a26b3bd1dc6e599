/**
 * Machines of one thread share decoded code pages and translation plans when their pages hold
 * the same bytes (memory/shared-code.ts). What one machine writes into its code must change what
 * it runs and never what another runs: a store over a decoded slot, a store into a slot nobody
 * decoded yet, a rewrite followed by fence.i, and a rewrite of a translated loop.
 */
import { describe, expect, it } from 'vitest';
import { createMachine, type Machine } from '../machine/machine.js';
import { R, asm, bytesOf, li } from './test-asm.js';

const RAM = 0x80000000;

/** A machine with `words` at the start of RAM, reset there. */
function machineWith(words: number[], shareCode = true): Machine {
  const m = createMachine({ ramSize: 1 << 20, timeMode: 'deterministic', shareCode });
  m.memory.writeBytes(RAM, bytesOf(words));
  m.cpu.reset(RAM);
  return m;
}

/**
 * Runs `m` from `pc` for `steps` instructions with a0 cleared, in runs of at most 1000 (each
 * run enters the page again, so a loop's page gets hot and is translated); returns a0.
 */
function runFrom(m: Machine, pc: number, steps: number): number {
  m.cpu.x[R.a0] = 0;
  m.cpu.pc = pc | 0;
  for (let left = steps; left > 0; left -= 1000) m.cpu.run(Math.min(left, 1000));
  return m.cpu.x[R.a0]!;
}

describe('decoded code shared between machines', () => {
  it('a store over a decoded shared slot changes only the machine that wrote it', () => {
    // 0: li t0, &slot; 8: li t1, <addi a0, zero, 7>; 16: sw t1, 0(t0); 20: slot: addi a0, zero, 1
    const slot = RAM + 20;
    const words = [
      ...li(R.t0, slot),
      ...li(R.t1, asm.addi(R.a0, 0, 7)),
      asm.sw(R.t1, R.t0, 0),
      asm.addi(R.a0, 0, 1),
      asm.jal(0, 0),
    ];
    const a = machineWith(words);
    const b = machineWith(words);
    expect(runFrom(b, slot, 1)).toBe(1); // b decodes the slot
    expect(runFrom(a, slot, 1)).toBe(1);
    expect(a.memory.main.code(0)!.code).toBe(b.memory.main.code(0)!.code);

    expect(runFrom(a, RAM, 6)).toBe(7); // a rewrites the slot, then runs it
    expect(a.memory.main.code(0)!.shared).toBeUndefined();
    expect(runFrom(b, slot, 1)).toBe(1);
    expect(b.memory.main.code(0)!.shared).toBeDefined();
    expect(runFrom(a, slot, 1)).toBe(7);

    const c = machineWith(words); // a newcomer with the original bytes joins b, not a
    expect(runFrom(c, slot, 1)).toBe(1);
    expect(c.memory.main.code(0)!.code).toBe(b.memory.main.code(0)!.code);
  });

  it('a store into a shared page slot nobody decoded yet stays private when another decodes it', () => {
    // a writes <addi a0, zero, 9> over `later` before anyone ran it; then b runs `later` first.
    const later = RAM + 40;
    const words = [
      ...li(R.t0, later),
      ...li(R.t1, asm.addi(R.a0, 0, 9)),
      asm.sw(R.t1, R.t0, 0),
      asm.jal(0, 0),
      asm.nop(),
      asm.nop(),
      asm.nop(),
      asm.nop(),
      asm.addi(R.a0, 0, 3), // later (offset 40)
      asm.jal(0, 0),
    ];
    const a = machineWith(words);
    const b = machineWith(words);
    expect(runFrom(b, RAM, 1)).toBe(0); // b attaches to the page (slot 0 decoded)
    runFrom(a, RAM, 5); // a: both li, then the store
    expect(a.memory.main.code(0)!.shared).toBeUndefined();
    expect(runFrom(b, later, 1)).toBe(3); // b decodes `later` from its own bytes
    expect(runFrom(a, later, 1)).toBe(9); // a never runs b's decoding of its slot
  });

  it('fence.i after a rewrite: the writer runs its new code, the others their old code', () => {
    // 0: li t0, &slot; 8: li t1, <addi a0, zero, 5>; 16: sw; 20: fence.i; 24: slot: addi a0, zero, 2
    const slot = RAM + 24;
    const words = [
      ...li(R.t0, slot),
      ...li(R.t1, asm.addi(R.a0, 0, 5)),
      asm.sw(R.t1, R.t0, 0),
      asm.fence_i(),
      asm.addi(R.a0, 0, 2),
      asm.jal(0, 0),
    ];
    const a = machineWith(words);
    const b = machineWith(words);
    expect(runFrom(b, slot, 1)).toBe(2);
    expect(runFrom(a, RAM, 7)).toBe(5);
    expect(runFrom(b, slot, 1)).toBe(2);
    // Both fence.i again with their own bytes in place: each still runs what its RAM holds.
    expect(runFrom(a, RAM + 20, 2)).toBe(5);
    const fence = [asm.fence_i(), asm.addi(R.a0, 0, 2)];
    b.memory.writeBytes(RAM + 20, bytesOf(fence)); // the same bytes: no change for b
    expect(runFrom(b, RAM + 20, 2)).toBe(2);
  });

  it('an AMO over a decoded shared slot of the running page: the writer runs the new instruction', () => {
    // 0: li t0, &slot; 8: li t1, <new - old>; 16: amoadd.w zero, t1, (t0); 20: slot: addi a0, zero, 2
    const slot = RAM + 20;
    const before = asm.addi(R.a0, 0, 2);
    const after = asm.addi(R.a0, 0, 9);
    const words = [
      ...li(R.t0, slot),
      ...li(R.t1, (after - before) | 0),
      asm.amoadd(0, R.t1, R.t0),
      before,
      asm.jal(0, 0),
    ];
    const a = machineWith(words);
    const b = machineWith(words);
    expect(runFrom(b, slot, 1)).toBe(2);
    expect(runFrom(a, RAM, 6)).toBe(9);
    expect(runFrom(b, slot, 1)).toBe(2);
  });

  it('fence.i lets the shared page go: a store after it still reaches the writer only', () => {
    // 0: li t0, &slot; 8: li t1, <addi a0, zero, 5>; 16: fence.i; 20: sw; 24: slot: addi a0, zero, 2
    const slot = RAM + 24;
    const words = [
      ...li(R.t0, slot),
      ...li(R.t1, asm.addi(R.a0, 0, 5)),
      asm.fence_i(),
      asm.sw(R.t1, R.t0, 0),
      asm.addi(R.a0, 0, 2),
      asm.jal(0, 0),
    ];
    const a = machineWith(words);
    const b = machineWith(words);
    expect(runFrom(b, slot, 1)).toBe(2);
    expect(runFrom(a, RAM, 7)).toBe(5);
    expect(runFrom(b, slot, 1)).toBe(2);
  });

  it('a rewrite of a translated loop changes the writer only; the others keep the shared plan', () => {
    // 0: li t0, &slot; 8: li t1, <addi a0, a0, 5>; 16: li t2, 10000
    // 24: slot: addi a0, a0, 1; 28: addi t2, t2, -1; 32: bne t2, zero, slot
    // 36: beq s0, zero, +8; 40: sw t1, 0(t0); 44: j .
    const slot = RAM + 24;
    const words = [
      ...li(R.t0, slot),
      ...li(R.t1, asm.addi(R.a0, R.a0, 5)),
      ...li(R.t2, 10_000),
      asm.addi(R.a0, R.a0, 1),
      asm.addi(R.t2, R.t2, -1),
      asm.bne(R.t2, 0, -8),
      asm.beq(R.s0, 0, 8),
      asm.sw(R.t1, R.t0, 0),
      asm.jal(0, 0),
    ];
    const a = machineWith(words);
    const b = machineWith(words);
    expect(runFrom(b, RAM, 40_000)).toBe(10_000);
    const eb = b.memory.main.code(0)!;
    expect(typeof eb.translated).toBe('function');
    expect(eb.shared!.plan).toBeDefined();
    a.cpu.x[R.s0] = 1;
    expect(runFrom(a, RAM, 40_000)).toBe(10_000); // ran b's plan, bound to a; then the store
    const ea = a.memory.main.code(0)!;
    expect(ea.shared).toBeUndefined();
    expect(runFrom(a, RAM, 40_000)).toBe(50_000);
    expect(runFrom(b, RAM, 40_000)).toBe(10_000);
    expect(typeof eb.translated).toBe('function');
  });

  it('machines that do not share keep private pages', () => {
    const words = [asm.addi(R.a0, 0, 1), asm.jal(0, 0)];
    const a = machineWith(words, false);
    const b = machineWith(words);
    expect(runFrom(a, RAM, 1)).toBe(1);
    expect(runFrom(b, RAM, 1)).toBe(1);
    expect(a.memory.main.code(0)!.shared).toBeUndefined();
    expect(a.memory.main.code(0)!.code).not.toBe(b.memory.main.code(0)!.code);
  });
});
