import { describe, expect, it } from 'vitest';
import { createMachine, type Machine } from '../machine/machine.js';
import { listPages } from '../memory/pages.js';
import { Cause, MIP_MEIP, MIP_MSIP, MISA, PRIV_M, PRIV_U } from './arch.js';
import { decodeInto } from './decode.js';
import { Op } from './ops.js';
import { R, asm, bytesOf, li } from './test-asm.js';

const RAM = 0x80000000;
const HANDLER = RAM + 0x800;
const DATA = RAM + 0x4000;

/** A machine with `words` at the start of RAM, mtvec at HANDLER (an infinite loop). */
function machineWith(words: number[]): Machine {
  const m = createMachine({ ramSize: 1 << 20, timeMode: 'deterministic' });
  m.memory.writeBytes(RAM, bytesOf(words));
  m.memory.writeBytes(HANDLER, bytesOf([asm.jal(0, 0)]));
  m.cpu.reset(RAM);
  m.cpu.mtvec = HANDLER | 0;
  return m;
}

function expectTrap(m: Machine, cause: number, epc: number, tval: number): void {
  expect(m.cpu.mcause >>> 0, 'mcause').toBe(cause >>> 0);
  expect(m.cpu.mepc >>> 0, 'mepc').toBe(epc >>> 0);
  expect(m.cpu.mtval >>> 0, 'mtval').toBe(tval >>> 0);
  expect(m.cpu.pcU, 'pc at the handler').toBe(HANDLER);
}

describe('decode', () => {
  const decodeOp = (word: number): number => {
    const page = new Int32Array(4);
    decodeInto(word, page, 0);
    return page[0]! & 127;
  };

  it('rejects reserved and unsupported encodings', () => {
    for (const word of [
      0x00000000,
      0xffffffff,
      0x02009013 /* slli shamt[5] */,
      0x4000d0b3 & ~0x1000 /* sub with f3 4? */,
      0x0000b003 /* ld */,
      0x00002007 /* flw */,
      0x10200073 /* sret */,
      0x12000073 /* sfence.vma */,
      0x00004073 /* system f3=4 */,
      0x0000206f & 0 /* zero again */,
      0x1000a02f | (1 << 20) /* lr with rs2 */,
      0x0000302f /* amo f3=3 (64-bit) */,
      0x00003063 /* branch f3=3 */,
      0x0000106b /* jalr f3=1 -> opcode 0x6b */,
      0x00001067 /* jalr f3=1 */,
      0x00007003 /* load f3=7 */,
      0x00003023 /* sd */,
      0x00000001 /* compressed */,
    ]) {
      expect(decodeOp(word), `0x${(word >>> 0).toString(16)}`).toBe(Op.ILLEGAL);
    }
  });

  it('redirects writes to x0 to the sink register', () => {
    const page = new Int32Array(4);
    decodeInto(asm.addi(0, 0, 5), page, 0);
    expect((page[0]! >>> 7) & 63).toBe(32);
    expect(page[1]).toBe(5);
  });
});

describe('hart execution', () => {
  it('counts the budget exactly and never writes x0', () => {
    const m = machineWith([asm.addi(0, 0, 5), asm.addi(R.a0, R.a0, 1), asm.jal(0, -8)]);
    expect(m.cpu.run(100)).toBe('budget');
    expect(m.cpu.retired).toBe(100);
    expect(m.cpu.x[0]).toBe(0);
    expect(m.cpu.x[R.a0]).toBe(33);
  });

  it('boots in M-mode with a0 = hart id and a1 = dtb', () => {
    const m = createMachine({ ramSize: 1 << 20, dtbAddress: 0x87e00000 });
    m.cpu.reset(RAM, 0x87e00000);
    expect(m.cpu.priv).toBe(PRIV_M);
    expect(m.cpu.x[R.a0]).toBe(0);
    expect(m.cpu.x[R.a1]! >>> 0).toBe(0x87e00000);
  });

  it('re-decodes an instruction overwritten by a store, without fence.i', () => {
    // 0: li t0, &slot; 8: li t1, <addi a0, zero, 7>; 16: sw t1, 0(t0); 20: slot: addi a0, zero, 1; 24: j .
    const slot = RAM + 20;
    const words = [
      ...li(R.t0, slot),
      ...li(R.t1, asm.addi(R.a0, 0, 7)),
      asm.sw(R.t1, R.t0, 0),
      asm.addi(R.a0, 0, 1),
      asm.jal(0, 0),
    ];
    const m = machineWith(words);
    // Decode the slot first by running it once from a second entry.
    m.cpu.pc = slot | 0;
    m.cpu.run(1);
    expect(m.cpu.x[R.a0]).toBe(1);
    m.cpu.pc = RAM | 0;
    m.cpu.run(6);
    expect(m.cpu.x[R.a0]).toBe(7);
  });

  it('re-decodes code rewritten by the host', () => {
    const m = machineWith([asm.addi(R.a0, 0, 1), asm.jal(0, 0)]);
    m.cpu.run(2);
    expect(m.cpu.x[R.a0]).toBe(1);
    m.memory.writeBytes(RAM, bytesOf([asm.addi(R.a0, 0, 2)]));
    m.cpu.pc = RAM | 0;
    m.cpu.run(1);
    expect(m.cpu.x[R.a0]).toBe(2);
  });

  it('marks dirty and touched pages for stores, AMOs, SC and host writes', () => {
    const m = machineWith([
      ...li(R.t0, DATA),
      asm.sw(R.t0, R.t0, 0),
      ...li(R.t1, DATA + 0x1001),
      asm.sb(R.t0, R.t1, 0),
      asm.addi(R.t0, R.t0, 0x7ff),
      asm.addi(R.t0, R.t0, 0x7ff),
      asm.addi(R.t0, R.t0, 0x7ff),
      asm.addi(R.t0, R.t0, 0x7ff),
      asm.addi(R.t0, R.t0, 4), // DATA + 0x2000
      asm.amoadd(R.a0, R.t0, R.t0),
      ...li(R.t1, DATA + 0x3000),
      asm.lr(R.a1, R.t1),
      asm.sc(R.a2, R.t1, R.t1),
      asm.jal(0, 0),
    ]);
    const block = m.memory.main;
    const fresh = new Uint32Array(block.dirtyWords.length);
    const afterBoot = block.swapDirty(fresh);
    expect(listPages(afterBoot, block.pages)).toEqual([0]); // the program and the handler
    m.cpu.run(17);
    expect(m.cpu.x[R.a2]).toBe(0); // sc succeeded
    expect(listPages(block.dirtyWords, block.pages)).toEqual([4, 5, 6, 7]);
    expect(listPages(block.touchedWords, block.pages)).toEqual([0, 4, 5, 6, 7]);
  });

  it('raises store/AMO-misaligned for AMOs and SC, load-misaligned for LR', () => {
    for (const [inst, cause] of [
      [asm.amoadd(R.a0, R.t1, R.t0), Cause.STORE_MISALIGNED],
      [asm.sc(R.a0, R.t1, R.t0), Cause.STORE_MISALIGNED],
      [asm.lr(R.a0, R.t0), Cause.LOAD_MISALIGNED],
    ] as const) {
      const m = machineWith([...li(R.t0, DATA + 2), inst]);
      m.cpu.run(3);
      expectTrap(m, cause, RAM + 8, DATA + 2);
    }
  });

  it('performs misaligned loads and stores like QEMU (no trap)', () => {
    const m = machineWith([
      ...li(R.t0, DATA + 1),
      ...li(R.t1, 0x11223344),
      asm.sw(R.t1, R.t0, 0),
      asm.lw(R.a0, R.t0, 0),
    ]);
    m.cpu.run(6);
    expect(m.cpu.x[R.a0]).toBe(0x11223344);
    expect(m.cpu.traps).toBe(0);
  });

  it('reports access faults with the address in mtval', () => {
    const load = machineWith([...li(R.t0, 0x08000000), asm.lw(R.a0, R.t0, 4)]);
    load.cpu.run(3);
    expectTrap(load, Cause.LOAD_ACCESS_FAULT, RAM + 8, 0x08000004);
    const store = machineWith([...li(R.t0, 0x08000000), asm.sw(R.a0, R.t0, 8)]);
    store.cpu.run(3);
    expectTrap(store, Cause.STORE_ACCESS_FAULT, RAM + 8, 0x08000008);
    const fetch = machineWith([...li(R.t0, 0x08000000), asm.jalr(R.ra, R.t0, 0)]);
    fetch.cpu.run(3);
    expectTrap(fetch, Cause.INSTRUCTION_ACCESS_FAULT, 0x08000000, 0x08000000);
    expect(fetch.cpu.x[R.ra]! >>> 0).toBe(RAM + 12);
  });

  it('traps on a taken branch to a misaligned target, not on a fall-through', () => {
    const m = machineWith([asm.bne(0, 0, 6), asm.beq(0, 0, 6)]);
    m.cpu.run(1);
    expect(m.cpu.pcU).toBe(RAM + 4);
    m.cpu.run(1);
    expectTrap(m, Cause.INSTRUCTION_MISALIGNED, RAM + 4, RAM + 10);
  });

  it('leaves rd alone when jalr traps on a misaligned target', () => {
    const m = machineWith([
      ...li(R.t0, RAM + 0x102),
      asm.addi(R.ra, 0, 9),
      asm.jalr(R.ra, R.t0, 0),
    ]);
    m.cpu.run(4);
    expectTrap(m, Cause.INSTRUCTION_MISALIGNED, RAM + 12, RAM + 0x102);
    expect(m.cpu.x[R.ra]).toBe(9);
  });

  it('ecall and ebreak have mtval 0; illegal has the instruction bits', () => {
    const e = machineWith([asm.ecall()]);
    e.cpu.run(1);
    expectTrap(e, Cause.ECALL_FROM_M, RAM, 0);
    const b = machineWith([asm.ebreak()]);
    b.cpu.run(1);
    expectTrap(b, Cause.BREAKPOINT, RAM, 0);
    const i = machineWith([0xdeadbee3]);
    i.cpu.run(1);
    expectTrap(i, Cause.ILLEGAL_INSTRUCTION, RAM, 0xdeadbee3);
    const c = machineWith([asm.csrrw(R.a0, 0x7c0, R.a0)]);
    c.cpu.run(1);
    expectTrap(c, Cause.ILLEGAL_INSTRUCTION, RAM, asm.csrrw(R.a0, 0x7c0, R.a0));
  });

  it('takes interrupts by priority MEI > MSI > MTI, between instructions', () => {
    const m = machineWith([asm.addi(R.a0, R.a0, 1), asm.jal(0, -4)]);
    m.clint.write(0x4000, 4, 0); // mtimecmp = 0: MTIP pending
    m.cpu.setIrqLine(MIP_MSIP, true);
    m.cpu.setIrqLine(MIP_MEIP, true);
    m.cpu.mie = 0x888;
    m.cpu.run(3);
    expect(m.cpu.retired).toBe(3); // MIE=0 in M-mode: nothing taken
    m.cpu.mstatus = 8;
    m.cpu.run(1);
    expect(m.cpu.mcause >>> 0).toBe(0x8000000b);
    m.cpu.setIrqLine(MIP_MEIP, false);
    m.cpu.mstatus = 8;
    m.cpu.pc = RAM | 0;
    m.cpu.run(1);
    expect(m.cpu.mcause >>> 0).toBe(0x80000003);
    m.cpu.setIrqLine(MIP_MSIP, false);
    m.cpu.mstatus = 8;
    m.cpu.pc = RAM | 0;
    m.cpu.run(1);
    expect(m.cpu.mcause >>> 0).toBe(0x80000007);
    expect(m.cpu.mepc >>> 0).toBe(RAM);
  });

  it('returns wfi instead of spinning, and wakes on an enabled interrupt line', () => {
    const m = machineWith([asm.wfi(), asm.addi(R.a0, 0, 1), asm.jal(0, 0)]);
    m.clint.write(0x4004, 4, -1); // no timer
    expect(m.cpu.run(1_000_000)).toBe('wfi');
    expect(m.cpu.retired).toBe(1);
    expect(m.cpu.run(1_000_000)).toBe('wfi');
    expect(m.cpu.retired).toBe(1);
    m.cpu.setIrqLine(MIP_MSIP, true);
    expect(m.cpu.run(10)).toBe('wfi'); // MSIE is off: still asleep
    m.cpu.mie = MIP_MSIP;
    expect(m.cpu.run(10)).toBe('budget'); // wakes; MIE=0 so no trap, continues after wfi
    expect(m.cpu.x[R.a0]).toBe(1);
    expect(m.cpu.traps).toBe(0);
  });

  it('stops with fatal when the trap vector is not executable', () => {
    const m = machineWith([asm.ecall()]);
    m.cpu.mtvec = 0x08000000;
    expect(m.cpu.run(10)).toBe('fatal');
    expect(m.cpu.fatalMessage).toMatch(/not in RAM/);
  });

  it('mret to U-mode and ecall back', () => {
    const m = machineWith([asm.mret()]);
    m.memory.writeBytes(RAM + 0x100, bytesOf([asm.ecall()]));
    m.cpu.mepc = (RAM + 0x100) | 0;
    m.cpu.mstatus = 0x80; // MPP = U, MPIE = 1
    m.cpu.run(1);
    expect(m.cpu.priv).toBe(PRIV_U);
    expect(m.cpu.mstatus & 0x88).toBe(0x88);
    m.cpu.run(1);
    expect(m.cpu.priv).toBe(PRIV_M);
    expectTrap(m, Cause.ECALL_FROM_U, RAM + 0x100, 0);
    expect((m.cpu.mstatus >>> 11) & 3).toBe(PRIV_U);
  });

  it('applies the WARL rules of the machine CSRs', () => {
    const m = machineWith([]);
    m.cpu.mtvec = 0x80000100;
    m.cpu.writeCsr(0x305, 0x80000202); // reserved mode 2: ignored
    expect(m.cpu.mtvec >>> 0).toBe(0x80000100);
    m.cpu.writeCsr(0x300, 0xffffffff);
    expect(m.cpu.mstatus >>> 0).toBe(0x00221888);
    m.cpu.writeCsr(0x300, 1 << 11); // MPP = S does not exist
    expect((m.cpu.mstatus >>> 11) & 3).toBe(PRIV_U);
    m.cpu.writeCsr(0x341, 0x80000007);
    expect(m.cpu.readCsr(0x341) >>> 0).toBe(0x80000004);
    expect(m.cpu.readCsr(0x301)).toBe(MISA);
    m.cpu.writeCsr(0x304, -1);
    expect(m.cpu.mie).toBe(0x888);
  });

  it('fetches from a second RAM block', () => {
    const m = machineWith([...li(R.t0, 0x40000000), asm.jalr(0, R.t0, 0)]);
    m.memory.addRam({ id: 'ram1', guestBase: 0x40000000, size: 0x1000 });
    m.memory.writeBytes(0x40000000, bytesOf([asm.addi(R.a0, 0, 42), asm.jal(0, 0)]));
    m.cpu.run(4);
    expect(m.cpu.x[R.a0]).toBe(42);
  });

  it('saves and restores the architectural state', () => {
    const m = machineWith([
      ...li(R.t0, DATA),
      asm.lr(R.a0, R.t0),
      asm.csrrw(0, 0x340, R.t0),
      asm.jal(0, 0),
    ]);
    m.cpu.run(5);
    const state = m.cpu.save();
    expect(state.reservation).toBe(DATA);
    expect(state.csr.mscratch).toBe(DATA);
    const other = createMachine({ ramSize: 1 << 20, timeMode: 'deterministic' });
    other.cpu.restore(JSON.parse(JSON.stringify(state)));
    expect(other.cpu.save()).toEqual(state);
  });
});
