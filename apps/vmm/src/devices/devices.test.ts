import { describe, expect, it } from 'vitest';
import { MIP_MEIP } from '../cpu/arch.js';
import { createMachine } from '../machine/machine.js';
import { VirtMap } from '../machine/virt-map.js';
import { DeterministicClock, RealtimeClock } from './clock.js';
import { CONTROL_MAGIC, ControlReg } from './control.js';
import { PlicReg, PlicSource } from './plic.js';
import { Uart16550, UartReg } from './uart16550.js';

describe('NS16550A UART', () => {
  it('transmits to the sink and always reports THR empty', () => {
    const out: number[] = [];
    const m = createMachine({ ramSize: 1 << 16, uartSink: (b) => out.push(b) });
    m.uart.write(UartReg.DATA, 1, 0x41);
    expect(out).toEqual([0x41]);
    expect(m.uart.read(UartReg.LSR, 1)).toBe(0x60);
  });

  it('receives host bytes in order with LSR.DR', () => {
    const m = createMachine({ ramSize: 1 << 16 });
    m.uart.receive(new Uint8Array([1, 2]));
    expect(m.uart.read(UartReg.LSR, 1) & 1).toBe(1);
    expect(m.uart.read(UartReg.DATA, 1)).toBe(1);
    expect(m.uart.read(UartReg.DATA, 1)).toBe(2);
    expect(m.uart.read(UartReg.LSR, 1) & 1).toBe(0);
  });

  it('keeps the divisor behind DLAB and identifies interrupts in IIR', () => {
    const m = createMachine({ ramSize: 1 << 16 });
    const u = m.uart;
    u.write(UartReg.LCR, 1, 0x83);
    u.write(UartReg.DATA, 1, 0x0c);
    u.write(UartReg.IER, 1, 0x00);
    u.write(UartReg.LCR, 1, 0x03);
    expect(u.save().divisor).toBe(0x0c);
    expect(u.read(UartReg.IIR_FCR, 1)).toBe(0x01);
    u.write(UartReg.IIR_FCR, 1, 0x07);
    u.write(UartReg.IER, 1, 0x03); // RDI + THRI
    expect(u.read(UartReg.IIR_FCR, 1)).toBe(0xc2); // THR empty
    expect(u.read(UartReg.IIR_FCR, 1)).toBe(0xc1); // cleared by the read
    u.receive([9]);
    expect(u.read(UartReg.IIR_FCR, 1)).toBe(0xc4);
    u.write(UartReg.MCR, 1, 0x10); // loopback
    u.write(UartReg.DATA, 1, 0x77);
    expect(u.save().rx).toEqual([9, 0x77]);
    u.write(UartReg.SCR, 1, 0x5a);
    expect(u.read(UartReg.SCR, 1)).toBe(0x5a);
  });
});

describe('NS16550A UART interrupts (as QEMU 7.2 reports them)', () => {
  /** A bare UART whose every interrupt announcement is recorded. */
  function uartWithIrq(): { u: Uart16550; announced: boolean[] } {
    const announced: boolean[] = [];
    const u = new Uart16550(VirtMap.UART0, { onIrq: (level) => announced.push(level) });
    return { u, announced };
  }
  const iir = (u: Uart16550): number => u.read(UartReg.IIR_FCR, 1);

  it('reports received data over THR empty, and THR empty once per IIR read', () => {
    const { u } = uartWithIrq();
    expect(iir(u)).toBe(0x01);
    u.write(UartReg.IER, 1, 0x02);
    expect(iir(u)).toBe(0x02); // turning THRI on with THR empty raises it
    expect(iir(u)).toBe(0x01); // reading IIR while it reports THRE clears it
    u.write(UartReg.IER, 1, 0x03); // THRI did not change: not re-armed
    expect(iir(u)).toBe(0x01);
    u.write(UartReg.DATA, 1, 0x41); // a byte sent: THR empty again
    u.receive([1]);
    expect(iir(u)).toBe(0x04); // received data first; THRE still pending behind it
    expect(u.read(UartReg.DATA, 1)).toBe(1);
    expect(iir(u)).toBe(0x02);
    expect(iir(u)).toBe(0x01);
  });

  it('with FIFOs: sets IIR bits 7:6 and reports data at the trigger level, a timeout below it', () => {
    const { u } = uartWithIrq();
    u.write(UartReg.IER, 1, 0x01);
    u.write(UartReg.IIR_FCR, 1, 0x01); // FIFOs on, trigger 1
    expect(iir(u)).toBe(0xc1);
    u.receive([1]);
    expect(iir(u)).toBe(0xc4);
    u.write(UartReg.IIR_FCR, 1, 0x81); // trigger 8
    expect(iir(u)).toBe(0xcc); // character timeout: fewer bytes than the trigger level
    u.receive([2, 3, 4, 5, 6, 7, 8]);
    expect(iir(u)).toBe(0xc4);
    u.read(UartReg.DATA, 1);
    expect(iir(u)).toBe(0xcc);
    u.write(UartReg.IIR_FCR, 1, 0xc1); // trigger 14
    u.receive(new Array<number>(7).fill(9));
    expect(iir(u)).toBe(0xc4);
  });

  it('clears both FIFOs when the FIFOs are turned on or off, and on FCR bits 1 and 2', () => {
    const { u } = uartWithIrq();
    u.write(UartReg.IER, 1, 0x03);
    expect(iir(u)).toBe(0x02);
    expect(iir(u)).toBe(0x01);
    u.receive([1, 2]);
    u.write(UartReg.IIR_FCR, 1, 0x01); // FIFOs on: RX cleared, THR empty again
    expect(u.rxLength()).toBe(0);
    expect(iir(u)).toBe(0xc2);
    u.receive([3]);
    u.write(UartReg.IIR_FCR, 1, 0x01); // unchanged: nothing cleared
    expect(u.rxLength()).toBe(1);
    u.write(UartReg.IIR_FCR, 1, 0x03); // RX reset
    expect(u.rxLength()).toBe(0);
    u.receive([4]);
    u.write(UartReg.IIR_FCR, 1, 0x00); // FIFOs off: cleared again
    expect(u.rxLength()).toBe(0);
    expect(iir(u)).toBe(0x02);
  });

  it('announces its level at every event that can change it, not on restore', () => {
    const { u, announced } = uartWithIrq();
    u.write(UartReg.IER, 1, 0x01);
    expect(announced).toEqual([false]);
    u.write(UartReg.IER, 1, 0x01); // no change: no announcement (QEMU neither)
    u.write(UartReg.LCR, 1, 0x03);
    u.write(UartReg.SCR, 1, 0x03);
    u.read(UartReg.LSR, 1);
    expect(announced).toEqual([false]);
    u.receive([1, 2]);
    expect(announced).toEqual([false, true]);
    u.receive([]);
    expect(announced).toHaveLength(2);
    u.read(UartReg.DATA, 1); // one left: still high, announced again
    u.read(UartReg.DATA, 1);
    u.read(UartReg.DATA, 1); // empty: low, announced anyway
    expect(announced).toEqual([false, true, true, false, false]);
    expect(u.irqLevel).toBe(false);
    const saved = { ...u.save(), rx: [7] };
    u.restore(saved);
    expect(announced).toHaveLength(5);
    expect(u.irqLevel).toBe(true);
  });

  it('raises the PLIC source 10, which claims, completes and re-pends as on QEMU', () => {
    const m = createMachine({ ramSize: 1 << 16 });
    const plic = (off: number): number => m.plic.read(off, 4);
    const setPlic = (off: number, v: number): void => m.plic.write(off, 4, v);
    setPlic(PlicReg.PRIORITY + 4 * PlicSource.UART0, 1);
    setPlic(PlicReg.ENABLE, 1 << PlicSource.UART0);
    setPlic(PlicReg.CONTEXT + PlicReg.THRESHOLD, 0);
    m.uart.write(UartReg.IER, 1, 0x01);
    expect(m.cpu.mip() & MIP_MEIP).toBe(0);
    m.uart.receive([1, 2]);
    expect(m.cpu.mip() & MIP_MEIP).toBe(MIP_MEIP);
    const claim = PlicReg.CONTEXT + PlicReg.CLAIM;
    expect(plic(claim)).toBe(PlicSource.UART0);
    expect(m.cpu.mip() & MIP_MEIP).toBe(0);
    m.uart.read(UartReg.DATA, 1); // a byte left: the UART re-announces, the source pends again
    setPlic(claim, PlicSource.UART0);
    expect(m.cpu.mip() & MIP_MEIP).toBe(MIP_MEIP);
    expect(plic(claim)).toBe(PlicSource.UART0);
    m.uart.read(UartReg.DATA, 1); // drained: nothing more
    setPlic(claim, PlicSource.UART0);
    expect(m.cpu.mip() & MIP_MEIP).toBe(0);
  });
});

describe('CLINT', () => {
  it('compares mtimecmp against mtime and drives MSIP', () => {
    const m = createMachine({ ramSize: 1 << 16, timeMode: 'deterministic' });
    expect(m.clint.pending()).toBe(true); // mtimecmp resets to 0
    m.clint.write(0x4004, 4, 0);
    m.clint.write(0x4000, 4, 100);
    expect(m.clint.pending()).toBe(false);
    expect(m.clint.deadline()).toBe(1000); // 10 instructions per tick
    m.clint.write(0x0, 4, 1);
    expect(m.cpu.mip() & 8).toBe(8);
    m.clint.write(0x0, 4, 0);
    expect(m.cpu.mip() & 8).toBe(0);
    m.clint.write(0xbff8, 4, 500);
    expect(m.clint.read(0xbff8, 4)).toBe(500);
    expect(m.clint.pending()).toBe(true);
  });

  it('deterministic clock: ticks with instructions, warps, survives save/restore', () => {
    const counter = { retired: 0 };
    const clock = new DeterministicClock(counter, 10);
    counter.retired = 95;
    expect(clock.now()).toBe(9);
    clock.warpTo(1000);
    expect(clock.now()).toBe(1000);
    counter.retired = 117;
    const state = clock.save();
    expect(state).toMatchObject({ mtime: 1002, subTick: 2 });
    const counter2 = { retired: 117 };
    const clock2 = new DeterministicClock(counter2);
    clock2.restore(state);
    counter2.retired = 125;
    counter.retired = 125;
    expect(clock2.now()).toBe(clock.now());
  });
});

describe('test finisher', () => {
  it('reports pass, fail with code, reset; ignores other values', () => {
    const seen: unknown[] = [];
    const m = createMachine({ ramSize: 1 << 16, onExit: (s) => seen.push(s) });
    m.finisher.write(0, 4, 0x1234);
    expect(m.exit).toBeNull();
    m.finisher.write(0, 4, (7 << 16) | 0x3333);
    expect(m.exit).toEqual({ kind: 'fail', code: 7 });
    expect(m.cpu.run(10)).toBe('halted');
    m.finisher.write(0, 4, 0x5555);
    m.finisher.write(0, 4, 0x7777);
    expect(seen).toEqual([
      { kind: 'fail', code: 7 },
      { kind: 'pass', code: 0 },
      { kind: 'reset', code: 0 },
    ]);
  });
});

describe('Handoff control device', () => {
  it('exposes magic, identity, entropy and host args; READY calls the host and yields', () => {
    const tags: number[] = [];
    const m = createMachine({
      ramSize: 1 << 16,
      identity: { generationId: 0x1122334455667788n, entropy: [1, 2, 3, 4, 5, 6, 7, 0xffffffff] },
      hostArgs: new TextEncoder().encode('key=v'),
      onReady: (t) => tags.push(t),
    });
    const rd = (off: number, w: 1 | 2 | 4 = 4) => m.memory.load(VirtMap.CONTROL + off, w) >>> 0;
    expect(rd(ControlReg.MAGIC)).toBe(CONTROL_MAGIC);
    expect(rd(ControlReg.GENERATION_LO)).toBe(0x55667788);
    expect(rd(ControlReg.GENERATION_HI)).toBe(0x11223344);
    expect(rd(ControlReg.ENTROPY + 28)).toBe(0xffffffff);
    expect(rd(ControlReg.HOST_ARGS_LEN)).toBe(5);
    expect(rd(ControlReg.HOST_ARGS, 4)).toBe(0x3d79656b); // "key="
    m.memory.store(VirtMap.CONTROL + ControlReg.READY, 4, 0xabc);
    expect(tags).toEqual([0xabc]);
    expect(rd(ControlReg.READY_COUNT)).toBe(1);
    expect(m.cpu.run(10)).toBe('yield');
    m.control.setIdentity({ generationId: 2n, entropy: new Uint32Array(8) });
    expect(rd(ControlReg.GENERATION_LO)).toBe(2);
  });
});

describe('real-time clock', () => {
  it('stops while held and resumes from the held value', async () => {
    const clock = new RealtimeClock(1000);
    clock.hold();
    const held = clock.now();
    await new Promise((r) => setTimeout(r, 5));
    expect(clock.now()).toBe(held);
    clock.release();
    expect(clock.now()).toBeGreaterThanOrEqual(held);
    expect(clock.now() - held).toBeLessThan(10_000); // not the 5 ms (50 000 ticks) it was held
  });
});
