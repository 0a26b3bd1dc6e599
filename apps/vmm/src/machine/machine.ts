import type { PresentMap } from '@handoff/bitmap';
import { MIP_MEIP, MIP_MTIP } from '../cpu/arch.js';
import { Hart, type StopReason } from '../cpu/hart.js';
import { Clint } from '../devices/clint.js';
import { createClock, type Clock, type TimeMode } from '../devices/clock.js';
import { ControlDevice, type ControlIdentity } from '../devices/control.js';
import { Plic, PlicContext, PlicSource } from '../devices/plic.js';
import { TestFinisher, type ExitStatus } from '../devices/test-finisher.js';
import { Uart16550 } from '../devices/uart16550.js';
import { loadElf, type ElfImage } from '../loader/elf.js';
import { AddressSpace } from '../memory/address-space.js';
import { MACHINE_STATE_VERSION, type MachineState } from './state.js';
import { DEFAULT_RAM_SIZE, VirtMap } from './virt-map.js';

/** Options of {@link createMachine}. */
export interface MachineOptions {
  /** Main RAM size in bytes (multiple of 4 KiB); default 128 MiB. Ignored size check against `ram.bytes`. */
  readonly ramSize?: number;
  /** Backing of main RAM and its bitmaps (e.g. a libs/shm mapping and libs/bitmap words). */
  readonly ram?: {
    readonly bytes?: ArrayBuffer | SharedArrayBuffer;
    readonly dirty?: Uint32Array;
    readonly touched?: Uint32Array;
    /** Makes main RAM a lazy block (post-copy): which of its pages are here (memory/ram-block.ts). */
    readonly present?: PresentMap;
  };
  /** ELF image to load; the hart resets to its entry. Without it, call {@link Machine.boot}. */
  readonly elf?: Uint8Array;
  /** Receives every byte the guest writes to the UART. */
  readonly uartSink?: (byte: number) => void;
  /** mtime source; default `realtime`. Use `deterministic` for reproducible runs and tests. */
  readonly timeMode?: TimeMode;
  /** Deterministic time: retired instructions per 10 MHz tick (default 10, i.e. a nominal 100 MIPS). */
  readonly instructionsPerTick?: number;
  /** Generation id and entropy for the control device; random when omitted. */
  readonly identity?: ControlIdentity;
  /** Host arguments readable by the guest through the control device. */
  readonly hostArgs?: Uint8Array;
  /** Called when the guest rings the READY doorbell (the run then returns `yield`). */
  readonly onReady?: (tag: number) => void;
  /** Called when the guest writes the test finisher (the run then returns `halted`). */
  readonly onExit?: (status: ExitStatus) => void;
  /** Device-tree address passed in a1 at boot (default 0: no device tree). */
  readonly dtbAddress?: number;
  /** Translate hot code to JavaScript (default true); false runs the interpreter only. */
  readonly translate?: boolean;
  /**
   * Share decoded code pages and translation plans with this thread's other machines whose
   * main RAM holds the same bytes there (default true; see memory/shared-code.ts).
   */
  readonly shareCode?: boolean;
}

/**
 * A QEMU-virt-compatible RV32 machine: one hart, RAM, UART, CLINT, PLIC, test finisher, control
 * device. The UART's interrupt is PLIC source 10; the PLIC's context 0 drives mip.MEIP.
 */
export interface Machine {
  readonly cpu: Hart;
  readonly memory: AddressSpace;
  readonly uart: Uart16550;
  readonly clint: Clint;
  readonly plic: Plic;
  readonly clock: Clock;
  readonly finisher: TestFinisher;
  readonly control: ControlDevice;
  /** The loaded image, when one was given. */
  readonly image: ElfImage | undefined;
  /** How the guest ended (finisher write), or null while it runs. */
  readonly exit: ExitStatus | null;
  /**
   * Runs up to `budget` instructions. In deterministic time, WFI with an armed timer skips
   * time to the deadline and goes on; `wfi` is returned only when nothing can wake the hart
   * but the host (real time: sleep {@link Machine.wakeDelayMs} or until input, then run again).
   */
  run(budget: number): StopReason;
  /**
   * Real time: milliseconds until the timer can wake a hart in WFI: 0 when an enabled interrupt
   * is pending already, Infinity when only the host can (no timer interrupt enabled — a guest
   * waiting for UART input with its interrupt enabled sleeps until `uart.receive` raises it).
   */
  wakeDelayMs(): number;
  /** Hands input bytes to the UART (raising its interrupt if enabled) and ends a WFI wait. */
  input(bytes: Uint8Array | readonly number[]): void;
  /** Loads an ELF and resets the hart to its entry. */
  boot(elf: Uint8Array): ElfImage;
  /** Saves the device state (not RAM). */
  save(): MachineState;
  /** Restores device state saved by a machine with the same RAM layout (RAM is restored separately). */
  restore(state: MachineState): void;
}

/** Builds a machine; with `elf` it is loaded and ready to run. */
export function createMachine(opts: MachineOptions = {}): Machine {
  const memory = new AddressSpace();
  memory.addRam({
    id: 'ram0',
    guestBase: VirtMap.DRAM,
    size: opts.ramSize ?? DEFAULT_RAM_SIZE,
    ...(opts.ram?.bytes !== undefined ? { bytes: opts.ram.bytes } : {}),
    ...(opts.ram?.dirty !== undefined ? { dirty: opts.ram.dirty } : {}),
    ...(opts.ram?.touched !== undefined ? { touched: opts.ram.touched } : {}),
    ...(opts.ram?.present !== undefined ? { present: opts.ram.present } : {}),
    ...(opts.shareCode !== undefined ? { shareCode: opts.shareCode } : {}),
  });
  const cpu = new Hart(memory, opts.translate !== undefined ? { translate: opts.translate } : {});
  const clock = createClock(opts.timeMode ?? 'realtime', cpu, opts.instructionsPerTick);
  const clint = new Clint(VirtMap.CLINT, clock, cpu);
  cpu.timer = clint;
  const plic = new Plic(VirtMap.PLIC, (context, level) => {
    if (context === PlicContext.MACHINE) cpu.setIrqLine(MIP_MEIP, level);
  });
  const uart = new Uart16550(VirtMap.UART0, {
    ...(opts.uartSink !== undefined ? { sink: opts.uartSink } : {}),
    onIrq: (level) => plic.setSource(PlicSource.UART0, level),
  });
  const finisher = new TestFinisher(VirtMap.TEST, (status) => {
    cpu.requestHalt();
    opts.onExit?.(status);
  });
  const control = new ControlDevice(VirtMap.CONTROL, (tag) => {
    cpu.requestYield();
    opts.onReady?.(tag);
  });
  control.setIdentity(opts.identity ?? ControlDevice.randomIdentity());
  if (opts.hostArgs !== undefined) control.setHostArgs(opts.hostArgs);
  memory.addDevice(finisher);
  memory.addDevice(clint);
  memory.addDevice(plic);
  memory.addDevice(uart);
  memory.addDevice(control);

  let image: ElfImage | undefined;
  const machine: Machine = {
    cpu,
    memory,
    uart,
    clint,
    plic,
    clock,
    finisher,
    control,
    get image() {
      return image;
    },
    get exit() {
      return finisher.exit;
    },
    run(budget: number): StopReason {
      let left = budget;
      for (;;) {
        const r0 = cpu.retired + cpu.traps;
        const reason = cpu.run(left);
        left -= cpu.retired + cpu.traps - r0;
        if (reason !== 'wfi' || clock.mode !== 'deterministic') return reason;
        // Deterministic idle: only the timer can wake the hart; skip time to its deadline.
        if ((cpu.mie & MIP_MTIP) === 0 || clint.pending()) return reason;
        clock.warpTo(clint.mtimecmp);
        if (left <= 0) return 'budget';
      }
    },
    wakeDelayMs(): number {
      if ((cpu.mip() & cpu.mie) !== 0) return 0;
      if ((cpu.mie & MIP_MTIP) === 0) return Infinity;
      return clock.msUntil(clint.mtimecmp);
    },
    input(bytes) {
      uart.receive(bytes);
      cpu.wake();
    },
    boot(elf: Uint8Array): ElfImage {
      image = loadElf(memory, elf);
      cpu.reset(image.entry, opts.dtbAddress ?? 0);
      return image;
    },
    save(): MachineState {
      return {
        version: MACHINE_STATE_VERSION,
        cpu: cpu.save(),
        clock: clock.save(),
        clint: clint.save(),
        uart: uart.save(),
        finisher: finisher.save(),
        control: control.save(),
        plic: plic.save(),
      };
    },
    restore(state: MachineState): void {
      if (state.version !== MACHINE_STATE_VERSION) {
        throw new Error(
          `machine state version ${state.version} is not supported (want ${MACHINE_STATE_VERSION})`,
        );
      }
      cpu.restore(state.cpu);
      clock.restore(state.clock);
      clint.restore(state.clint);
      uart.restore(state.uart);
      finisher.restore(state.finisher);
      control.restore(state.control);
      plic.restore(state.plic); // drives MEIP to its saved level
      if (state.finisher.exit !== null) cpu.requestHalt();
    },
  };
  if (opts.elf !== undefined) machine.boot(opts.elf);
  return machine;
}
