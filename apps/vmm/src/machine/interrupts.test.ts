/**
 * External interrupts through the board: the UART's RX interrupt, routed by the PLIC to
 * mip.MEIP, waking a hart that sleeps in WFI with no timer armed (so the host may sleep with no
 * deadline), and the same across save/restore.
 */
import { describe, expect, it } from 'vitest';

import { Csr, MIP_MEIP, MIP_MTIP } from '../cpu/arch.js';
import { R, asm, bytesOf, li } from '../cpu/test-asm.js';
import { PlicReg, PlicSource } from '../devices/plic.js';
import { createMachine, type Machine } from './machine.js';
import { VirtMap } from './virt-map.js';

const HANDLER = VirtMap.DRAM + 0x400;
const CLAIM = VirtMap.PLIC + PlicReg.CONTEXT + PlicReg.CLAIM;

/**
 * A guest that enables the UART's RX interrupt (PLIC priority 1, context 0, threshold 0, IER.RDI,
 * mie.MEIE, mstatus.MIE) and sleeps in `wfi` forever; its handler records mcause and mepc in s1
 * and s2, counts interrupts in s3, claims, echoes every received byte, completes and returns.
 */
function echoGuest(): { program: Uint8Array; handler: Uint8Array; wfiAt: number } {
  const { t0, t1, t2, s0, s1, s2, s3, a1, a2, a3, zero } = R;
  const setup = [
    ...li(t0, VirtMap.PLIC + PlicReg.PRIORITY + 4 * PlicSource.UART0),
    asm.addi(t1, zero, 1),
    asm.sw(t1, t0, 0),
    ...li(t0, VirtMap.PLIC + PlicReg.ENABLE),
    ...li(t1, 1 << PlicSource.UART0),
    asm.sw(t1, t0, 0),
    ...li(t0, VirtMap.PLIC + PlicReg.CONTEXT + PlicReg.THRESHOLD),
    asm.sw(zero, t0, 0),
    ...li(s0, VirtMap.UART0),
    asm.addi(t1, zero, 1),
    asm.sb(t1, s0, 1), // IER = received data available
    ...li(t2, CLAIM),
    ...li(t1, HANDLER),
    asm.csrrw(zero, Csr.MTVEC, t1),
    ...li(t1, MIP_MEIP),
    asm.csrrw(zero, Csr.MIE, t1),
    asm.csrrsi(zero, Csr.MSTATUS, 8),
  ];
  const wfiAt = VirtMap.DRAM + 4 * setup.length;
  const program = bytesOf([...setup, asm.wfi(), asm.jal(zero, -4)]);
  const handler = bytesOf([
    asm.csrrs(s1, Csr.MCAUSE, zero),
    asm.csrrs(s2, Csr.MEPC, zero),
    asm.addi(s3, s3, 1),
    asm.lw(a1, t2, 0), // claim
    asm.lbu(a3, s0, 5), // drain: while LSR.DR
    asm.andi(a3, a3, 1),
    asm.beq(a3, zero, 16),
    asm.lbu(a2, s0, 0),
    asm.sb(a2, s0, 0),
    asm.jal(zero, -20),
    asm.sw(a1, t2, 0), // complete
    asm.mret(),
  ]);
  return { program, handler, wfiAt };
}

function bootEcho(out: number[], timeMode: 'realtime' | 'deterministic'): Machine {
  const m = createMachine({ ramSize: 1 << 20, timeMode, uartSink: (b) => out.push(b) });
  const { program, handler } = echoGuest();
  m.memory.writeBytes(VirtMap.DRAM, program);
  m.memory.writeBytes(HANDLER, handler);
  m.cpu.reset(VirtMap.DRAM);
  return m;
}

describe('UART RX interrupt through the PLIC', () => {
  for (const timeMode of ['realtime', 'deterministic'] as const) {
    it(`sleeps in WFI with no deadline and wakes at once on input (${timeMode} time)`, () => {
      const out: number[] = [];
      const m = bootEcho(out, timeMode);
      expect(m.run(10_000)).toBe('wfi');
      expect(m.cpu.mie).toBe(MIP_MEIP); // no timer interrupt enabled
      expect(m.wakeDelayMs()).toBe(Infinity);
      const asleep = m.cpu.retired;
      expect(m.run(10_000)).toBe('wfi');
      expect(m.cpu.retired).toBe(asleep); // nothing spins

      // The vCPU thread's contract: feed the UART, then wake the hart.
      m.uart.receive([0x68, 0x69]);
      m.cpu.wake();
      expect(m.wakeDelayMs()).toBe(0); // an enabled interrupt is pending
      expect(m.run(10_000)).toBe('wfi');
      expect(out).toEqual([0x68, 0x69]);
      // The first interrupt drained both bytes; reading the first re-announced the level while
      // in service, so the source pended again and a second one found the FIFO empty (QEMU 7.2
      // does the same: a pending bit is cleared only by a claim).
      expect(m.cpu.x[R.s3]).toBe(2);
      expect(m.cpu.x[R.s1]! >>> 0).toBe(0x8000000b);
      expect(m.cpu.x[R.s2]! >>> 0).toBe(echoGuest().wfiAt + 4); // after the wfi
      expect(m.cpu.mip() & MIP_MEIP).toBe(0);
      expect(m.wakeDelayMs()).toBe(Infinity);

      m.input([0x21]);
      expect(m.run(10_000)).toBe('wfi');
      expect(out).toEqual([0x68, 0x69, 0x21]);
      expect(m.cpu.x[R.s3]).toBe(3); // one byte: read empties the FIFO, no second interrupt
    });
  }

  it('wakes a hart restored in WFI from saved state (PLIC and UART included)', () => {
    const out: number[] = [];
    const m = bootEcho(out, 'deterministic');
    expect(m.run(10_000)).toBe('wfi');
    const saved = m.save();
    expect(saved.cpu.waiting).toBe(true);
    expect(saved.plic.enable[0]).toBe(1 << PlicSource.UART0);

    const again: number[] = [];
    const n = createMachine({
      ramSize: 1 << 20,
      timeMode: 'deterministic',
      ram: { bytes: m.memory.main.buffer.slice(0) },
      uartSink: (b) => again.push(b),
    });
    n.restore(saved);
    expect(n.run(10_000)).toBe('wfi');
    expect(n.wakeDelayMs()).toBe(Infinity);
    n.input([0x42]);
    expect(n.run(10_000)).toBe('wfi');
    expect(again).toEqual([0x42]);
  });

  it('restores MEIP asserted when it was saved asserted', () => {
    const m = bootEcho([], 'deterministic');
    expect(m.run(10_000)).toBe('wfi');
    m.cpu.mstatus = 0; // interrupts masked: the pending one stays pending
    m.uart.receive([1]);
    const saved = m.save();
    expect(saved.plic.outputs).toBe(1);
    const n = createMachine({ ramSize: 1 << 20, timeMode: 'deterministic' });
    n.restore(saved);
    expect(n.cpu.mip() & MIP_MEIP).toBe(MIP_MEIP);
    expect(n.wakeDelayMs()).toBe(0);
  });

  it('still reports the timer deadline when the timer interrupt is enabled too', () => {
    const m = bootEcho([], 'realtime');
    expect(m.run(10_000)).toBe('wfi');
    m.clint.write(0x4004, 4, 0);
    m.clint.write(0x4000, 4, m.clock.now() + 10_000_000); // 1 s ahead
    m.cpu.mie = MIP_MEIP | MIP_MTIP;
    const ms = m.wakeDelayMs();
    expect(ms).toBeGreaterThan(900);
    expect(ms).toBeLessThanOrEqual(1000);
  });
});
