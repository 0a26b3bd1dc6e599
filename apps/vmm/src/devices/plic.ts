import type { AccessWidth, MmioDevice } from '../memory/mmio.js';

/** Interrupt sources, source 0 included (reserved: it never pends), as on QEMU virt. */
export const PLIC_SOURCES = 96;
/** 32-bit words of a pending, claimed or enable bit set (one bit per source). */
export const PLIC_WORDS = PLIC_SOURCES / 32;
/** Interrupt targets: hart 0's M-mode and S-mode contexts, in QEMU virt's order. */
export const PLIC_CONTEXTS = 2;
/** Priorities and thresholds are 3 bits (QEMU virt: 7 levels above "never"). */
export const PLIC_PRIORITY_MASK = 7;
/** Window size: the context registers of QEMU virt's largest machine (512 harts × M and S). */
export const PLIC_SIZE = 0x60_0000;

/** The sources Handoff's board wires (QEMU virt's numbers). */
export const PlicSource = {
  /** NS16550A UART 0. */
  UART0: 10,
} as const;

/** The contexts (targets) of hart 0. */
export const PlicContext = {
  /** Drives mip.MEIP. */
  MACHINE: 0,
  /** Would drive mip.SEIP; the hart has no S-mode, so its output goes nowhere. */
  SUPERVISOR: 1,
} as const;

/** Register layout (offsets in the window), SiFive / QEMU virt. */
export const PlicReg = {
  /** Priority of source n at `PRIORITY + 4n` (n ≥ 1). */
  PRIORITY: 0x0000,
  /** Pending bits, word w at `PENDING + 4w` (read-only). */
  PENDING: 0x1000,
  /** Enable bits of context c, word w at `ENABLE + c * ENABLE_STRIDE + 4w`. */
  ENABLE: 0x2000,
  ENABLE_STRIDE: 0x80,
  /** Registers of context c start at `CONTEXT + c * CONTEXT_STRIDE`. */
  CONTEXT: 0x20_0000,
  CONTEXT_STRIDE: 0x1000,
  /** Within a context: the priority threshold. */
  THRESHOLD: 0x0,
  /** Within a context: read claims the best interrupt, write completes one. */
  CLAIM: 0x4,
} as const;

/** Version of {@link PlicState}. */
export const PLIC_STATE_VERSION = 1;

/**
 * The PLIC as a model. Bit n of word w of a bit set is source 32w + n; enable words are context
 * 0's {@link PLIC_WORDS} words, then context 1's.
 */
export interface PlicState {
  readonly version: number;
  /** Priority of every source (index = source number; source 0's is always 0), 0–7. */
  readonly priority: readonly number[];
  /** Sources waiting to be claimed. */
  readonly pending: readonly number[];
  /** Sources claimed and not yet completed. */
  readonly claimed: readonly number[];
  /** Per-context enable words, context-major. */
  readonly enable: readonly number[];
  /** Per-context priority threshold, 0–7. */
  readonly threshold: readonly number[];
  /** Bit c: context c's interrupt output as last evaluated (see {@link Plic}). */
  readonly outputs: number;
}

/** The state of a PLIC after reset: nothing enabled, pending or claimed, every level 0. */
export function plicResetState(): PlicState {
  return {
    version: PLIC_STATE_VERSION,
    priority: new Array<number>(PLIC_SOURCES).fill(0),
    pending: new Array<number>(PLIC_WORDS).fill(0),
    claimed: new Array<number>(PLIC_WORDS).fill(0),
    enable: new Array<number>(PLIC_WORDS * PLIC_CONTEXTS).fill(0),
    threshold: new Array<number>(PLIC_CONTEXTS).fill(0),
    outputs: 0,
  };
}

/** Drives the interrupt output of context `context` (0: mip.MEIP of hart 0). */
export type PlicOutput = (context: number, level: boolean) => void;

/**
 * Platform-level interrupt controller at 0x0c000000, register- and behaviour-compatible with
 * QEMU 7.2's `sifive_plic` on the `virt` board (96 sources, 3-bit priorities, hart 0's M and S
 * contexts). Only 32-bit accesses exist: narrower ones fault, as on QEMU.
 *
 * Semantics, all as QEMU does them (measured against qemu-system-riscv32 7.2):
 * - A source raising its line ({@link Plic.setSource} with `true`) marks it pending; lowering it
 *   changes nothing. Pending is cleared only by a claim. A device that re-asserts while its
 *   interrupt is claimed (e.g. the UART after a read that left bytes) pends again.
 * - A claim returns the pending, enabled, unclaimed source of the highest priority above the
 *   context's threshold (ties: the lowest number), or 0; it clears that source's pending bit
 *   and marks it claimed for every context. A completion (any context) of a source number below
 *   {@link PLIC_SOURCES} clears its claimed bit; other values are ignored.
 * - Priorities and thresholds keep their low 3 bits (WARL). Source 0's priority, pending bits
 *   and enable words beyond the sources are not writable.
 * - The outputs are re-evaluated after a source raises, a priority or threshold write, a claim
 *   and a completion — **not** after an enable write (QEMU 7.2 neither): enabling a pending
 *   source asserts MEIP at the next of those events. Because of that the outputs are state.
 */
export class Plic implements MmioDevice {
  readonly name = 'plic';
  readonly size = PLIC_SIZE;
  readonly wordOnly = true;
  private readonly priority = new Uint8Array(PLIC_SOURCES);
  private readonly pending = new Uint32Array(PLIC_WORDS);
  private readonly claimed = new Uint32Array(PLIC_WORDS);
  private readonly enable = new Uint32Array(PLIC_WORDS * PLIC_CONTEXTS);
  private readonly threshold = new Uint8Array(PLIC_CONTEXTS);
  private outputs = 0;

  constructor(
    readonly base: number,
    private readonly output: PlicOutput,
  ) {}

  /**
   * A source's interrupt line moved (or a device re-announced its level, as QEMU's devices do
   * at every register access that can change it): `true` marks the source pending.
   */
  setSource(source: number, level: boolean): void {
    if (!level || source <= 0 || source >= PLIC_SOURCES) return;
    this.pending[source >>> 5]! |= 1 << (source & 31);
    this.update();
  }

  /** The source a claim by `context` would return now (0: none), without claiming it. */
  best(context: number): number {
    let bestSource = 0;
    let bestPriority = this.threshold[context]!;
    const e = context * PLIC_WORDS;
    for (let w = 0; w < PLIC_WORDS; w++) {
      let bits = this.pending[w]! & ~this.claimed[w]! & this.enable[e + w]!;
      while (bits !== 0) {
        const bit = 31 - Math.clz32(bits & -bits);
        bits &= bits - 1;
        const source = (w << 5) | bit;
        const p = this.priority[source]!;
        if (p > bestPriority) {
          bestPriority = p;
          bestSource = source;
        }
      }
    }
    return bestSource;
  }

  read(offset: number, _width: AccessWidth): number {
    if (offset < PlicReg.PENDING) {
      const source = offset >>> 2;
      return source < PLIC_SOURCES ? this.priority[source]! : 0;
    }
    if (offset < PlicReg.ENABLE) {
      const w = (offset - PlicReg.PENDING) >>> 2;
      return w < PLIC_WORDS ? this.pending[w]! | 0 : 0;
    }
    if (offset < PlicReg.CONTEXT) {
      const i = this.enableIndex(offset);
      return i < 0 ? 0 : this.enable[i]! | 0;
    }
    const context = (offset - PlicReg.CONTEXT) >>> 12;
    if (context >= PLIC_CONTEXTS) return 0;
    switch (offset & (PlicReg.CONTEXT_STRIDE - 1)) {
      case PlicReg.THRESHOLD:
        return this.threshold[context]!;
      case PlicReg.CLAIM:
        return this.claim(context);
      default:
        return 0;
    }
  }

  write(offset: number, _width: AccessWidth, value: number): void {
    if (offset < PlicReg.PENDING) {
      const source = offset >>> 2;
      if (source === 0 || source >= PLIC_SOURCES) return;
      this.priority[source] = value & PLIC_PRIORITY_MASK;
      this.update();
      return;
    }
    if (offset < PlicReg.ENABLE) return; // pending bits are read-only
    if (offset < PlicReg.CONTEXT) {
      const i = this.enableIndex(offset);
      if (i >= 0) this.enable[i] = value; // no re-evaluation: QEMU 7.2 does none here
      return;
    }
    const context = (offset - PlicReg.CONTEXT) >>> 12;
    if (context >= PLIC_CONTEXTS) return;
    switch (offset & (PlicReg.CONTEXT_STRIDE - 1)) {
      case PlicReg.THRESHOLD:
        this.threshold[context] = value & PLIC_PRIORITY_MASK;
        this.update();
        return;
      case PlicReg.CLAIM: {
        const source = value >>> 0;
        if (source >= PLIC_SOURCES) return;
        this.claimed[source >>> 5]! &= ~(1 << (source & 31));
        this.update();
        return;
      }
    }
  }

  /** Back to the reset state (everything 0), outputs lowered. */
  reset(): void {
    this.priority.fill(0);
    this.pending.fill(0);
    this.claimed.fill(0);
    this.enable.fill(0);
    this.threshold.fill(0);
    this.drive(0, true);
  }

  save(): PlicState {
    return {
      version: PLIC_STATE_VERSION,
      priority: Array.from(this.priority),
      pending: Array.from(this.pending),
      claimed: Array.from(this.claimed),
      enable: Array.from(this.enable),
      threshold: Array.from(this.threshold),
      outputs: this.outputs,
    };
  }

  /** Restores a saved model and drives every output to its saved level. */
  restore(state: PlicState): void {
    if (state.version !== PLIC_STATE_VERSION) {
      throw new Error(
        `PLIC state version ${state.version} is not supported (want ${PLIC_STATE_VERSION})`,
      );
    }
    const lengths: [string, readonly number[], number][] = [
      ['priority', state.priority, PLIC_SOURCES],
      ['pending', state.pending, PLIC_WORDS],
      ['claimed', state.claimed, PLIC_WORDS],
      ['enable', state.enable, PLIC_WORDS * PLIC_CONTEXTS],
      ['threshold', state.threshold, PLIC_CONTEXTS],
    ];
    for (const [name, a, n] of lengths) {
      if (a.length !== n) throw new Error(`PLIC state has ${a.length} ${name} items, want ${n}`);
    }
    for (let s = 0; s < PLIC_SOURCES; s++) {
      this.priority[s] = s === 0 ? 0 : state.priority[s]! & PLIC_PRIORITY_MASK;
    }
    this.pending.set(state.pending);
    this.claimed.set(state.claimed);
    this.pending[0]! &= ~1;
    this.claimed[0]! &= ~1;
    this.enable.set(state.enable);
    for (let c = 0; c < PLIC_CONTEXTS; c++) {
      this.threshold[c] = state.threshold[c]! & PLIC_PRIORITY_MASK;
    }
    this.drive(state.outputs & ((1 << PLIC_CONTEXTS) - 1), true);
  }

  /** Claims for `context`: the best source, now in service (0: none). */
  private claim(context: number): number {
    const source = this.best(context);
    if (source !== 0) {
      const bit = 1 << (source & 31);
      this.pending[source >>> 5]! &= ~bit;
      this.claimed[source >>> 5]! |= bit;
    }
    this.update();
    return source;
  }

  /** Index in `enable` of an enable-register offset, or -1 outside every context's words. */
  private enableIndex(offset: number): number {
    const rel = offset - PlicReg.ENABLE;
    const context = rel >>> 7;
    const w = (rel & (PlicReg.ENABLE_STRIDE - 1)) >>> 2;
    return context < PLIC_CONTEXTS && w < PLIC_WORDS ? context * PLIC_WORDS + w : -1;
  }

  /** Re-evaluates every context's output. */
  private update(): void {
    let levels = 0;
    for (let c = 0; c < PLIC_CONTEXTS; c++) if (this.best(c) !== 0) levels |= 1 << c;
    this.drive(levels, false);
  }

  /** Sets the outputs to `levels`, calling the output of each that changed (or all: `every`). */
  private drive(levels: number, every: boolean): void {
    const changed = every ? (1 << PLIC_CONTEXTS) - 1 : levels ^ this.outputs;
    this.outputs = levels;
    for (let c = 0; c < PLIC_CONTEXTS; c++) {
      if ((changed & (1 << c)) !== 0) this.output(c, (levels & (1 << c)) !== 0);
    }
  }
}
