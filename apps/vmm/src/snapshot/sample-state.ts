/**
 * A realistic machine state built from a hand-assembled guest, for the golden-file writer
 * (scripts/write-golden.js, which runs against the build) and the snapshot tests. Deterministic:
 * the same build always produces the same state.
 *
 * @packageDocumentation
 */

import { Csr, MIP_MTIP, MSTATUS_MPIE, MSTATUS_MPP } from '../cpu/arch.js';
import { R, asm, bytesOf, li } from '../cpu/test-asm.js';
import { PlicReg, PlicSource } from '../devices/plic.js';
import { UartReg } from '../devices/uart16550.js';
import { createMachine, type Machine } from '../machine/machine.js';
import type { MachineState } from '../machine/state.js';
import { VirtMap } from '../machine/virt-map.js';

/** RAM of the sample machines (and of the snapshot tests' machines). */
export const TEST_RAM = 16 << 20;
/** A fixed identity, so states are reproducible. */
export const TEST_IDENTITY = { generationId: 42n, entropy: [1, 2, 3, 4, 5, 6, 7, 8] } as const;

/**
 * A realistic machine state that needs no prebuilt guest: the hand-assembled mixer stopped
 * mid-run (holding an LR reservation), with CSRs set, host arguments, unread UART input that
 * raised the UART's interrupt, and a PLIC with a source claimed by context 1 and the UART
 * pending for context 0 (MEIP asserted).
 */
export function sampleState(): MachineState {
  const m = bootMixer([], 3000, new Uint8Array([0x6b, 0x76, 0x3d, 0x31]));
  m.cpu.writeCsr(Csr.MTVEC, VirtMap.DRAM + 0x101);
  m.cpu.writeCsr(Csr.MIE, MIP_MTIP);
  m.cpu.writeCsr(Csr.MSTATUS, MSTATUS_MPIE | MSTATUS_MPP);
  m.cpu.writeCsr(Csr.MSCRATCH, 0xdeadbeef);
  m.cpu.run(5003);
  const plic = (offset: number, value: number): void => m.plic.write(offset, 4, value);
  plic(PlicReg.PRIORITY + 4 * 3, 2);
  plic(PlicReg.PRIORITY + 4 * PlicSource.UART0, 5);
  plic(PlicReg.ENABLE, (1 << 3) | (1 << PlicSource.UART0));
  plic(PlicReg.ENABLE + PlicReg.ENABLE_STRIDE, 1 << 3);
  plic(PlicReg.CONTEXT + PlicReg.THRESHOLD, 1);
  m.plic.setSource(3, true);
  m.plic.read(PlicReg.CONTEXT + PlicReg.CONTEXT_STRIDE + PlicReg.CLAIM, 4); // context 1 takes 3
  m.uart.write(UartReg.IER, 1, 0x01);
  m.uart.receive([0x68, 0x69, 0x0a]);
  return m.save();
}

/**
 * A hand-assembled guest (needs no prebuilt ELF): a pseudo-random walk over a 1 KiB RAM table
 * that folds what it reads into an accumulator and writes the low byte of every step to the
 * UART, holding an LR reservation most of the time; then it powers off. Its output depends on
 * registers, RAM and the reservation alike.
 */
export function mixerProgram(steps: number): Uint8Array {
  const { s0, s1, s2, s3, s4, s6, s7, s8, s9, t0, t1, t2, t4, zero } = R;
  const head = [
    ...li(s0, VirtMap.UART0),
    asm.addi(s1, zero, 0),
    ...li(s2, steps),
    ...li(s3, VirtMap.DRAM + 0x2000),
    asm.addi(s4, zero, 7),
    ...li(s6, 1103515245),
    asm.addi(s7, s3, 0),
    asm.addi(s8, zero, 0),
    asm.addi(s9, zero, 256),
  ];
  const loop = [
    asm.lw(t2, s7, 0),
    asm.lr(t4, s7),
    asm.mul(s4, s4, s6),
    asm.add(s4, s4, t2),
    asm.addi(s4, s4, 0x39),
    asm.sw(s4, s7, 0),
    asm.sb(s4, s0, 0),
    asm.addi(s7, s7, 4),
    asm.addi(s8, s8, 1),
    asm.bne(s8, s9, 12),
    asm.addi(s7, s3, 0),
    asm.addi(s8, zero, 0),
    asm.addi(s1, s1, 1),
  ];
  const back = asm.blt(s1, s2, -4 * loop.length);
  const tail = [...li(t0, VirtMap.TEST), ...li(t1, 0x5555), asm.sw(t1, t0, 0), asm.jal(zero, 0)];
  return bytesOf([...head, ...loop, back, ...tail]);
}

/** A deterministic-time machine running {@link mixerProgram}, output appended to `out`. */
export function bootMixer(out: number[], steps = 3000, hostArgs?: Uint8Array): Machine {
  const m = createMachine({
    ramSize: TEST_RAM,
    timeMode: 'deterministic',
    uartSink: (b) => out.push(b),
    identity: TEST_IDENTITY,
    ...(hostArgs !== undefined ? { hostArgs } : {}),
  });
  m.memory.writeBytes(VirtMap.DRAM, mixerProgram(steps));
  m.cpu.reset(VirtMap.DRAM);
  return m;
}
