import type { AddressSpace } from '../memory/address-space.js';
import {
  CODE_PAGE_INTS,
  CODE_SLOTS,
  CODE_SLOT_INTS,
  type CodeEntry,
} from '../memory/code-pages.js';
import { PAGE_SHIFT, PAGE_SIZE } from '../memory/pages.js';
import type { RamBlock } from '../memory/ram-block.js';
import {
  Cause,
  Csr,
  MIE_MASK,
  MIP_MEIP,
  MIP_MSIP,
  MIP_MTIP,
  MISA,
  MSTATUS_MASK,
  MSTATUS_MIE,
  MSTATUS_MPIE,
  MSTATUS_MPP,
  MSTATUS_MPP_SHIFT,
  MSTATUS_MPRV,
  MSTATUS_TW,
  PRIV_M,
  PRIV_U,
} from './arch.js';
import { decodeInto } from './decode.js';
import { div, divu, mulh, mulhsu, mulhu, rem, remu } from './muldiv.js';
import { Op } from './ops.js';
import { HART_STATE_VERSION, type HartState } from './state.js';
import {
  isTranslatableOp,
  translateEntry,
  type PageFunction,
  type TranslatorExit,
} from './translate.js';

/** Why {@link Hart.run} returned. */
export type StopReason =
  /** The instruction budget is used up. */
  | 'budget'
  /** The hart executes WFI and no enabled interrupt is pending: sleep until the timer deadline or an external wake. */
  | 'wfi'
  /** A device (the test finisher) asked to stop; see the machine for the exit status. */
  | 'halted'
  /** A device asked the host loop to look (the control device's READY doorbell); run again to continue. */
  | 'yield'
  /** The hart cannot continue (e.g. its trap vector is not executable); see {@link Hart.fatalMessage}. */
  | 'fatal'
  /**
   * The next instruction touches a page of a lazy RAM block that has not arrived (post-copy):
   * it did not retire, wrote nothing and trapped not; {@link Hart.missingBlock} and
   * {@link Hart.missingPage} say which page. Run again once the page is present.
   */
  | 'page';

/** What the hart needs from the platform timer (the CLINT's mtime / mtimecmp). */
export interface TimerPort {
  /** Current mtime, in 10 MHz ticks. */
  now(): number;
  /** True when mtime ≥ mtimecmp (mip.MTIP). */
  pending(): boolean;
  /**
   * Retired-instruction count at which {@link TimerPort.pending} turns true by itself, or
   * `Infinity` when it cannot be predicted (real-time clock), is already pending, or never.
   */
  deadline(): number;
}

/** A timer that never fires (before a CLINT is attached). */
const NO_TIMER: TimerPort = { now: () => 0, pending: () => false, deadline: () => Infinity };

/** Options of {@link Hart}. */
export interface HartOptions {
  /** Hart id, readable in mhartid (QEMU virt boots hart 0). */
  readonly hartId?: number;
  /** Longest run of instructions between interrupt checks when the timer cannot predict its deadline. */
  readonly maxSlice?: number;
  /** Translate hot pages of main RAM to JavaScript (default true; false: interpreter only). */
  readonly translate?: boolean;
}

// Stop codes kept in `stop` (0 = running).
const STOP_HALT = 1;
const STOP_FATAL = 2;
const STOP_YIELD = 3;
const STOP_PAGE = 4;
const INT_MIN = -0x80000000;
/** Page entries before a page is translated, and instructions interpreted in one visit that force it. */
const HOT_ENTRIES = 16;
const HOT_RUN = 20_000;
/** Visits to translatable slots missing from a page's translation before it is translated again. */
const STALE_MISSES = 64;

/**
 * One RV32IMA + Zicsr + Zifencei hart with machine and user modes.
 *
 * Execution: {@link Hart.run} runs bounded slices of the interpreter loop; between slices it
 * takes pending interrupts. Instructions are decoded once into per-page code arrays owned by
 * the RAM block (see `memory/code-pages.ts`) and re-decoded when a store overwrites them.
 * Interrupts are taken only between slices; a slice ends after every instruction that can
 * change interrupt state (CSR writes, MRET, WFI, stores outside RAM) and at the timer deadline,
 * so interrupt timing depends on the instruction count only (deterministic time mode).
 */
export class Hart {
  /** Registers x0..x31 plus a sink (index 32) that absorbs writes to x0. */
  readonly x = new Int32Array(33);
  /** Program counter as an int32 (use {@link Hart.pcU} for the unsigned value). */
  pc = 0;
  /** Current privilege: {@link PRIV_M} or {@link PRIV_U}. */
  priv = PRIV_M;
  /** Instructions retired since reset; drives the deterministic clock. */
  retired = 0;
  /** Traps taken since reset (they consume run budget but retire nothing). */
  traps = 0;
  /** True while stopped in WFI. */
  waiting = false;
  /** Interrupt lines driven by devices (MSIP, MEIP); MTIP comes from {@link Hart.timer}. */
  irqLines = 0;
  /** Platform timer; set by the board. */
  timer: TimerPort = NO_TIMER;
  /** Why the hart is fatally stopped. */
  fatalMessage = '';
  /** After {@link Hart.run} returned `page`: the lazy block whose page is missing. */
  missingBlock: RamBlock | undefined = undefined;
  /** After {@link Hart.run} returned `page`: the missing page (block page index). */
  missingPage = 0;

  // Machine CSRs, as int32.
  mstatus = 0;
  mie = 0;
  mtvec = 0;
  mepc = 0;
  mcause = 0;
  mtval = 0;
  mscratch = 0;
  mcounteren = 0;
  readonly pmpcfg = new Int32Array(4);
  readonly pmpaddr = new Int32Array(16);
  /** minstret - retired, and mcycle - retired (guest writes to the counters move these). */
  private instretOffset = 0;
  private cycleOffset = 0;

  /** LR reservation: address, valid when `reserved`. */
  private reserved = false;
  private reservation = 0;

  private readonly memory: AddressSpace;
  private readonly hartId: number;
  private readonly maxSlice: number;
  private stop = 0;
  // Where the interpreter is: the decoded page, its base address, the slot index (×2).
  private code: Int32Array;
  private codeBase = 0;
  private slot = 0;
  private codeBlock: RamBlock | undefined;
  private codePageIndex = 0;
  private codeEntry: CodeEntry | undefined;
  private trans: PageFunction | undefined;
  private readonly tExit: TranslatorExit = { slot: 0, pc: 0 };
  private staleMisses = 0;
  private readonly translate: boolean;
  private csrIllegal = false;
  private atomicFault = 0;
  private static readonly NO_CODE = new Int32Array(CODE_PAGE_INTS);

  constructor(memory: AddressSpace, opts: HartOptions = {}) {
    this.memory = memory;
    this.hartId = opts.hartId ?? 0;
    this.maxSlice = opts.maxSlice ?? 1 << 14;
    this.translate = opts.translate ?? true;
    this.code = Hart.NO_CODE;
  }

  /** The program counter as an unsigned number. */
  get pcU(): number {
    return this.pc >>> 0;
  }

  /** Architectural reset: M-mode at `entry`, a0 = hart id, a1 = `dtb`; CSRs cleared. */
  reset(entry: number, dtb = 0): void {
    this.x.fill(0);
    this.x[10] = this.hartId;
    this.x[11] = dtb | 0;
    this.pc = entry | 0;
    this.priv = PRIV_M;
    this.retired = 0;
    this.traps = 0;
    this.waiting = false;
    this.stop = 0;
    this.fatalMessage = '';
    this.mstatus = this.mie = this.mtvec = this.mepc = this.mcause = this.mtval = 0;
    this.mscratch = this.mcounteren = 0;
    this.pmpcfg.fill(0);
    this.pmpaddr.fill(0);
    this.instretOffset = this.cycleOffset = 0;
    this.reserved = false;
    this.code = Hart.NO_CODE;
    this.trans = undefined;
  }

  /** Drives a device interrupt line (`MIP_MSIP` or `MIP_MEIP`). */
  setIrqLine(bit: number, level: boolean): void {
    this.irqLines = level ? this.irqLines | bit : this.irqLines & ~bit;
  }

  /** Asks the hart to stop after the current instruction; {@link Hart.run} then returns `halted`. */
  requestHalt(): void {
    this.stop = STOP_HALT;
  }

  /** Asks the hart to return `yield` from {@link Hart.run} after the current instruction (one-shot). */
  requestYield(): void {
    if (this.stop === 0) this.stop = STOP_YIELD;
  }

  /** Ends a WFI wait as if by a spurious wake-up (external event for the host loop, e.g. UART input). */
  wake(): void {
    this.waiting = false;
  }

  /** Lets a halted hart run again (e.g. after the host handled a finisher write). */
  clearHalt(): void {
    if (this.stop === STOP_HALT) this.stop = 0;
  }

  /** mip as the guest reads it. */
  mip(): number {
    return this.irqLines | (this.timer.pending() ? MIP_MTIP : 0);
  }

  /**
   * Runs up to `budget` instructions (traps count as one each) and returns why it stopped.
   * Never blocks: on WFI with nothing pending it returns `wfi` at once.
   */
  run(budget: number): StopReason {
    let left = budget;
    // A lazy block whose pages all arrived becomes an ordinary one (fast path, translation).
    if (this.memory.lazyBlocks !== 0) this.memory.settleLazy();
    for (;;) {
      if (this.stop !== 0) {
        if (this.stop === STOP_YIELD || this.stop === STOP_PAGE) {
          const page = this.stop === STOP_PAGE;
          this.stop = 0;
          return page ? 'page' : 'yield';
        }
        return this.stop === STOP_HALT ? 'halted' : 'fatal';
      }
      if (this.waiting) {
        if ((this.mip() & this.mie) === 0) return 'wfi';
        this.waiting = false;
      }
      if (this.priv !== PRIV_M || (this.mstatus & MSTATUS_MIE) !== 0) this.takeInterrupt();
      if (left <= 0) return 'budget';
      let slice = left < this.maxSlice ? left : this.maxSlice;
      if ((this.mie & MIP_MTIP) !== 0) {
        const until = this.timer.deadline() - this.retired;
        if (until < slice) slice = until > 1 ? until : 1;
      }
      const r0 = this.retired;
      const t0 = this.traps;
      this.execute(slice);
      left -= this.retired - r0 + (this.traps - t0);
    }
  }

  /** Takes the highest-priority enabled pending interrupt (MEI > MSI > MTI), if any. */
  private takeInterrupt(): void {
    const pending = this.mip() & this.mie;
    if (pending === 0) return;
    const cause = (pending & MIP_MEIP) !== 0 ? 11 : (pending & MIP_MSIP) !== 0 ? 3 : 7;
    this.enterTrap(this.pc, cause | INT_MIN, 0);
  }

  /** Trap entry: saves state into the M-mode CSRs and moves the pc to the vector. */
  private enterTrap(epc: number, cause: number, tval: number): void {
    this.traps++;
    this.mepc = epc;
    this.mcause = cause;
    this.mtval = tval;
    const mie = (this.mstatus & MSTATUS_MIE) !== 0;
    this.mstatus =
      (this.mstatus & ~(MSTATUS_MIE | MSTATUS_MPIE | MSTATUS_MPP)) |
      (mie ? MSTATUS_MPIE : 0) |
      (this.priv << MSTATUS_MPP_SHIFT);
    this.priv = PRIV_M;
    this.reserved = false;
    this.waiting = false;
    const base = this.mtvec & ~3;
    this.pc = cause < 0 && (this.mtvec & 3) === 1 ? (base + 4 * (cause & 0x7fffffff)) | 0 : base;
    this.code = Hart.NO_CODE;
    this.trans = undefined;
  }

  /** Takes a synchronous exception at `pc` and positions the interpreter at the handler. */
  private trapAt(pc: number, cause: number, tval: number): void {
    this.enterTrap(pc, cause, tval);
    this.jump(this.pc);
  }

  /**
   * Positions the interpreter at `pc` (aligned): finds or creates the decoded page. An
   * unexecutable pc raises an instruction access fault; if the handler is unexecutable too
   * the hart stops with `fatal`.
   */
  private jump(pc: number): void {
    for (let attempt = 0; attempt < 2; attempt++) {
      const block = this.memory.findRam(pc >>> 0);
      if (block !== undefined) {
        const off = (pc >>> 0) - block.guestBase;
        const page = off >>> PAGE_SHIFT;
        if (block.present !== undefined && !block.present.isPresent(page)) {
          // Fetch from a page that has not arrived: wait at `pc`, nothing decoded from it.
          this.waitForPage(block, page);
          this.code = Hart.NO_CODE;
          this.codeBase = (pc & ~(PAGE_SIZE - 1)) | 0;
          this.slot = (off & (PAGE_SIZE - 1)) >>> 1;
          this.pc = pc;
          this.codeEntry = undefined;
          this.trans = undefined;
          return;
        }
        const entry = block.openCode(page, blankCodePage);
        this.code = entry.code;
        this.codeBase = (pc & ~(PAGE_SIZE - 1)) | 0;
        this.slot = (off & (PAGE_SIZE - 1)) >>> 1;
        this.pc = pc;
        this.codeBlock = block;
        this.codePageIndex = page;
        this.codeEntry = entry;
        this.trans = this.translation(block, page, entry, false, false);
        return;
      }
      if (attempt === 1) break;
      this.enterTrap(pc, Cause.INSTRUCTION_ACCESS_FAULT, pc);
      pc = this.pc;
    }
    this.stop = STOP_FATAL;
    this.fatalMessage = `trap vector 0x${(pc >>> 0).toString(16)} is not in RAM (mtvec=0x${(this.mtvec >>> 0).toString(16)})`;
    this.code = Hart.NO_CODE;
    this.codeBase = pc;
    this.slot = 0;
    this.codeEntry = undefined;
    this.trans = undefined;
  }

  /**
   * The translated function of a page of main RAM: translates it once it is hot (entered
   * {@link HOT_ENTRIES} times, or `now`); `fresh` makes a new plan even when the page's shared
   * decoded page has one (that plan went stale). Undefined when translation is off or not possible.
   */
  private translation(
    block: RamBlock,
    page: number,
    entry: CodeEntry,
    now: boolean,
    fresh: boolean,
  ): PageFunction | undefined {
    if (!this.translate || block !== this.memory.main || block.present !== undefined) {
      return undefined; // a lazy block's code is interpreted: every access checks presence
    }
    let t = entry.translated;
    if (t === undefined) {
      if (!now && entry.heat < HOT_ENTRIES) {
        entry.heat++;
        return undefined;
      }
      try {
        t = translateEntry(block, page, entry, this.x, this.tExit, fresh);
      } catch {
        t = null; // a translator bug must not stop the guest: interpret this page
      }
      entry.translated = t;
    }
    return typeof t === 'function' ? (t as PageFunction) : undefined;
  }

  /** The current page's translation, made now (see {@link Hart.translation}). */
  private translateCurrent(fresh: boolean): PageFunction | undefined {
    const entry = this.codeEntry;
    if (entry === undefined) return undefined;
    return this.translation(this.codeBlock!, this.codePageIndex, entry, true, fresh);
  }

  /** Ends the slice before the current instruction: it waits for a page of a lazy block. */
  private waitForPage(block: RamBlock, page: number): void {
    this.missingBlock = block;
    this.missingPage = page;
    this.stop = STOP_PAGE;
  }

  /** Forgets the current page's translation (its decoded code changed); it cools down first. */
  private forgetTranslation(): void {
    const entry = this.codeEntry;
    if (entry !== undefined) {
      entry.translated = undefined;
      entry.heat = 0;
    }
    this.trans = undefined;
  }

  /**
   * A store hit main-RAM page `p`, which holds decoded code: the page's slots become private if
   * they were shared, and the overwritten slot is forgotten. Returns the slots to go on with:
   * `current`, or the private copy when `current` was the shared slots just copied.
   */
  private codeWritten(p: number, off: number, current: Int32Array): Int32Array {
    const main = this.memory.main;
    const entry = main.code(p)!;
    const isCurrent = this.codeEntry === entry;
    if (entry.shared !== undefined) {
      const shared = entry.code;
      main.privatizeCode(entry);
      if (current === shared) current = entry.code;
      if (isCurrent) this.trans = undefined;
    }
    const page = entry.code;
    const k = (off & 4092) >> 1;
    if (page[k] === 0) return current;
    page[k] = 0;
    entry.translated = undefined;
    entry.heat = 0;
    if (isCurrent) this.trans = undefined;
    return current;
  }

  /** The interpreter: runs until `limit` instructions retired, a slice-ending event, or a stop. */
  private execute(limit: number): void {
    const x = this.x;
    const mem = this.memory;
    const main = mem.main;
    const ramBase = main.guestBase | 0;
    // Unsigned `off < size` as one signed compare: flip the sign bit of both sides. A lazy
    // block's fast-path size is 0: every access takes the slow path, which checks presence.
    const ramLimit = (main.fastSize ^ -0x80000000) | 0;
    const i32 = main.i32;
    const u8 = main.u8;
    const i8 = main.i8;
    const u16 = main.u16;
    const i16 = main.i16;
    const dirty = main.dirty;
    const touched = main.touched;
    const codeBits = main.codeBits;
    const r0 = this.retired;
    mem.missingBlock = undefined;
    this.jump(this.pc);
    if (this.stop !== 0) return; // the code page has not arrived (or the vector is gone)
    let code = this.code;
    let base = this.codeBase;
    let i = this.slot;
    let tp = this.trans;
    let hotAt = HOT_RUN;
    const exit = this.tExit;
    let n = 0;
    let cause = 0;
    let tval = 0;
    let tgt = 0;
    for (;;) {
      if (n >= limit) break;
      if (tp !== undefined) {
        // Translated page: run as far as it goes, then interpret what it left.
        let done = tp(i, limit - n);
        i = exit.slot;
        if (done < 0) {
          done = ~done;
          // Stopped at a slot the translation lacks: code decoded since. Often enough: retranslate.
          if (isTranslatableOp(code[i]! & 127) && ++this.staleMisses >= STALE_MISSES) {
            this.staleMisses = 0;
            this.forgetTranslation();
            tp = this.trans = this.translateCurrent(true);
          }
        }
        n += done;
        if (i < 0) {
          this.retired = r0 + n;
          this.jump(exit.pc);
          code = this.code;
          base = this.codeBase;
          i = this.slot;
          tp = this.trans;
          hotAt = n + HOT_RUN;
          if (this.stop !== 0) break;
          continue;
        }
        if (n >= limit) break;
      } else if (n >= hotAt) {
        hotAt = n + HOT_RUN;
        tp = this.trans = this.translateCurrent(false);
        if (tp !== undefined) continue;
      }
      const m = code[i]!;
      switch (m & 127) {
        case 0: // DECODE
          decodeInto(mem.load((base + (i << 1)) >>> 0, 4), code, i >> 1);
          continue;
        case 1: // PAGE_END
          tgt = (base + PAGE_SIZE) | 0;
          cause = -1;
          break;
        case 2: // LUI
          x[(m >>> 7) & 63] = code[i + 1]!;
          i += 2;
          n++;
          continue;
        case 3: // AUIPC
          x[(m >>> 7) & 63] = (base + (i << 1) + code[i + 1]!) | 0;
          i += 2;
          n++;
          continue;
        case 4: {
          // JAL
          const pc = (base + (i << 1)) | 0;
          tgt = (pc + code[i + 1]!) | 0;
          if ((tgt & 3) !== 0) {
            cause = Cause.INSTRUCTION_MISALIGNED;
            tval = tgt;
            break;
          }
          x[(m >>> 7) & 63] = (pc + 4) | 0;
          n++;
          const d = (tgt - base) | 0;
          if ((d & ~0xffc) === 0) {
            i = d >> 1;
            continue;
          }
          cause = -1;
          break;
        }
        case 5: {
          // JALR
          const pc = (base + (i << 1)) | 0;
          tgt = ((x[(m >>> 13) & 31]! + code[i + 1]!) & ~1) | 0;
          if ((tgt & 3) !== 0) {
            cause = Cause.INSTRUCTION_MISALIGNED;
            tval = tgt;
            break;
          }
          x[(m >>> 7) & 63] = (pc + 4) | 0;
          n++;
          const d = (tgt - base) | 0;
          if ((d & ~0xffc) === 0) {
            i = d >> 1;
            continue;
          }
          cause = -1;
          break;
        }
        case 6: // BEQ
          if (x[(m >>> 13) & 31] === x[(m >>> 18) & 31]) {
            tgt = (base + (i << 1) + code[i + 1]!) | 0;
            const d = (tgt - base) | 0;
            if ((d & ~0xffc) === 0) {
              i = d >> 1;
              n++;
              continue;
            }
            if ((tgt & 3) !== 0) {
              cause = Cause.INSTRUCTION_MISALIGNED;
              tval = tgt;
              break;
            }
            n++;
            cause = -1;
            break;
          }
          i += 2;
          n++;
          continue;
        case 7: // BNE
          if (x[(m >>> 13) & 31] !== x[(m >>> 18) & 31]) {
            tgt = (base + (i << 1) + code[i + 1]!) | 0;
            const d = (tgt - base) | 0;
            if ((d & ~0xffc) === 0) {
              i = d >> 1;
              n++;
              continue;
            }
            if ((tgt & 3) !== 0) {
              cause = Cause.INSTRUCTION_MISALIGNED;
              tval = tgt;
              break;
            }
            n++;
            cause = -1;
            break;
          }
          i += 2;
          n++;
          continue;
        case 8: // BLT
          if (x[(m >>> 13) & 31]! < x[(m >>> 18) & 31]!) {
            tgt = (base + (i << 1) + code[i + 1]!) | 0;
            const d = (tgt - base) | 0;
            if ((d & ~0xffc) === 0) {
              i = d >> 1;
              n++;
              continue;
            }
            if ((tgt & 3) !== 0) {
              cause = Cause.INSTRUCTION_MISALIGNED;
              tval = tgt;
              break;
            }
            n++;
            cause = -1;
            break;
          }
          i += 2;
          n++;
          continue;
        case 9: // BGE
          if (x[(m >>> 13) & 31]! >= x[(m >>> 18) & 31]!) {
            tgt = (base + (i << 1) + code[i + 1]!) | 0;
            const d = (tgt - base) | 0;
            if ((d & ~0xffc) === 0) {
              i = d >> 1;
              n++;
              continue;
            }
            if ((tgt & 3) !== 0) {
              cause = Cause.INSTRUCTION_MISALIGNED;
              tval = tgt;
              break;
            }
            n++;
            cause = -1;
            break;
          }
          i += 2;
          n++;
          continue;
        case 10: // BLTU
          if ((x[(m >>> 13) & 31]! ^ -0x80000000) < (x[(m >>> 18) & 31]! ^ -0x80000000)) {
            tgt = (base + (i << 1) + code[i + 1]!) | 0;
            const d = (tgt - base) | 0;
            if ((d & ~0xffc) === 0) {
              i = d >> 1;
              n++;
              continue;
            }
            if ((tgt & 3) !== 0) {
              cause = Cause.INSTRUCTION_MISALIGNED;
              tval = tgt;
              break;
            }
            n++;
            cause = -1;
            break;
          }
          i += 2;
          n++;
          continue;
        case 11: // BGEU
          if ((x[(m >>> 13) & 31]! ^ -0x80000000) >= (x[(m >>> 18) & 31]! ^ -0x80000000)) {
            tgt = (base + (i << 1) + code[i + 1]!) | 0;
            const d = (tgt - base) | 0;
            if ((d & ~0xffc) === 0) {
              i = d >> 1;
              n++;
              continue;
            }
            if ((tgt & 3) !== 0) {
              cause = Cause.INSTRUCTION_MISALIGNED;
              tval = tgt;
              break;
            }
            n++;
            cause = -1;
            break;
          }
          i += 2;
          n++;
          continue;
        case 12: {
          // LB
          const a = (x[(m >>> 13) & 31]! + code[i + 1]!) | 0;
          const off = (a - ramBase) | 0;
          if ((off ^ -0x80000000) < ramLimit) x[(m >>> 7) & 63] = i8[off]!;
          else {
            this.retired = r0 + n;
            const v = mem.load(a >>> 0, 1);
            if (mem.faulted) {
              mem.faulted = false;
              cause = Cause.LOAD_ACCESS_FAULT;
              tval = a;
              break;
            }
            x[(m >>> 7) & 63] = (v << 24) >> 24;
          }
          i += 2;
          n++;
          continue;
        }
        case 13: {
          // LH
          const a = (x[(m >>> 13) & 31]! + code[i + 1]!) | 0;
          const off = (a - ramBase) | 0;
          if ((off & 1) === 0 && (off ^ -0x80000000) < ramLimit) x[(m >>> 7) & 63] = i16[off >> 1]!;
          else {
            this.retired = r0 + n;
            const v = mem.load(a >>> 0, 2);
            if (mem.faulted) {
              mem.faulted = false;
              cause = Cause.LOAD_ACCESS_FAULT;
              tval = a;
              break;
            }
            x[(m >>> 7) & 63] = (v << 16) >> 16;
          }
          i += 2;
          n++;
          continue;
        }
        case 14: {
          // LW
          const a = (x[(m >>> 13) & 31]! + code[i + 1]!) | 0;
          const off = (a - ramBase) | 0;
          if ((off & 3) === 0 && (off ^ -0x80000000) < ramLimit) x[(m >>> 7) & 63] = i32[off >> 2]!;
          else {
            this.retired = r0 + n;
            const v = mem.load(a >>> 0, 4);
            if (mem.faulted) {
              mem.faulted = false;
              cause = Cause.LOAD_ACCESS_FAULT;
              tval = a;
              break;
            }
            x[(m >>> 7) & 63] = v;
          }
          i += 2;
          n++;
          continue;
        }
        case 15: {
          // LBU
          const a = (x[(m >>> 13) & 31]! + code[i + 1]!) | 0;
          const off = (a - ramBase) | 0;
          if ((off ^ -0x80000000) < ramLimit) x[(m >>> 7) & 63] = u8[off]!;
          else {
            this.retired = r0 + n;
            const v = mem.load(a >>> 0, 1);
            if (mem.faulted) {
              mem.faulted = false;
              cause = Cause.LOAD_ACCESS_FAULT;
              tval = a;
              break;
            }
            x[(m >>> 7) & 63] = v;
          }
          i += 2;
          n++;
          continue;
        }
        case 16: {
          // LHU
          const a = (x[(m >>> 13) & 31]! + code[i + 1]!) | 0;
          const off = (a - ramBase) | 0;
          if ((off & 1) === 0 && (off ^ -0x80000000) < ramLimit) x[(m >>> 7) & 63] = u16[off >> 1]!;
          else {
            this.retired = r0 + n;
            const v = mem.load(a >>> 0, 2);
            if (mem.faulted) {
              mem.faulted = false;
              cause = Cause.LOAD_ACCESS_FAULT;
              tval = a;
              break;
            }
            x[(m >>> 7) & 63] = v;
          }
          i += 2;
          n++;
          continue;
        }
        case 17: {
          // SB
          const a = (x[(m >>> 13) & 31]! + code[i + 1]!) | 0;
          const off = (a - ramBase) | 0;
          if ((off ^ -0x80000000) < ramLimit) {
            u8[off] = x[(m >>> 18) & 31]!;
            const p = off >>> 12;
            const w = p >>> 5;
            const b = 1 << (p & 31);
            const dw = dirty[w]!;
            if ((dw & b) === 0) {
              dirty[w] = dw | b; // dirty ⊆ touched: touched only needs setting here
              touched[w]! |= b;
            }
            if ((codeBits[w]! & b) !== 0) {
              code = this.codeWritten(p, off, code);
              tp = this.trans;
            }
            i += 2;
            n++;
            continue;
          }
          this.retired = r0 + n;
          mem.store(a >>> 0, 1, x[(m >>> 18) & 31]!);
          if (mem.faulted) {
            mem.faulted = false;
            cause = Cause.STORE_ACCESS_FAULT;
            tval = a;
            break;
          }
          i += 2;
          n++;
          if (main.present !== undefined && off >= 0 && off < main.size) {
            // A store into a lazy main block (its fast path is off): RAM, no device to look
            // at, so the slice goes on — with the page's slots as they are now (the store may
            // have made them private or zeroed one).
            code = this.codeEntry?.code ?? code;
            continue;
          }
          cause = -2;
          break;
        }
        case 18: {
          // SH
          const a = (x[(m >>> 13) & 31]! + code[i + 1]!) | 0;
          const off = (a - ramBase) | 0;
          if ((off & 1) === 0 && (off ^ -0x80000000) < ramLimit) {
            u16[off >> 1] = x[(m >>> 18) & 31]!;
            const p = off >>> 12;
            const w = p >>> 5;
            const b = 1 << (p & 31);
            const dw = dirty[w]!;
            if ((dw & b) === 0) {
              dirty[w] = dw | b; // dirty ⊆ touched: touched only needs setting here
              touched[w]! |= b;
            }
            if ((codeBits[w]! & b) !== 0) {
              code = this.codeWritten(p, off, code);
              tp = this.trans;
            }
            i += 2;
            n++;
            continue;
          }
          this.retired = r0 + n;
          mem.store(a >>> 0, 2, x[(m >>> 18) & 31]!);
          if (mem.faulted) {
            mem.faulted = false;
            cause = Cause.STORE_ACCESS_FAULT;
            tval = a;
            break;
          }
          i += 2;
          n++;
          if (main.present !== undefined && off >= 0 && off < main.size) {
            // A store into a lazy main block (its fast path is off): RAM, no device to look
            // at, so the slice goes on — with the page's slots as they are now (the store may
            // have made them private or zeroed one).
            code = this.codeEntry?.code ?? code;
            continue;
          }
          cause = -2;
          break;
        }
        case 19: {
          // SW
          const a = (x[(m >>> 13) & 31]! + code[i + 1]!) | 0;
          const off = (a - ramBase) | 0;
          if ((off & 3) === 0 && (off ^ -0x80000000) < ramLimit) {
            i32[off >> 2] = x[(m >>> 18) & 31]!;
            const p = off >>> 12;
            const w = p >>> 5;
            const b = 1 << (p & 31);
            const dw = dirty[w]!;
            if ((dw & b) === 0) {
              dirty[w] = dw | b; // dirty ⊆ touched: touched only needs setting here
              touched[w]! |= b;
            }
            if ((codeBits[w]! & b) !== 0) {
              code = this.codeWritten(p, off, code);
              tp = this.trans;
            }
            i += 2;
            n++;
            continue;
          }
          this.retired = r0 + n;
          mem.store(a >>> 0, 4, x[(m >>> 18) & 31]!);
          if (mem.faulted) {
            mem.faulted = false;
            cause = Cause.STORE_ACCESS_FAULT;
            tval = a;
            break;
          }
          i += 2;
          n++;
          if (main.present !== undefined && off >= 0 && off < main.size) {
            // A store into a lazy main block (its fast path is off): RAM, no device to look
            // at, so the slice goes on — with the page's slots as they are now (the store may
            // have made them private or zeroed one).
            code = this.codeEntry?.code ?? code;
            continue;
          }
          cause = -2;
          break;
        }
        case 20: // ADDI
          x[(m >>> 7) & 63] = (x[(m >>> 13) & 31]! + code[i + 1]!) | 0;
          i += 2;
          n++;
          continue;
        case 21: // SLTI
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! < code[i + 1]! ? 1 : 0;
          i += 2;
          n++;
          continue;
        case 22: // SLTIU
          x[(m >>> 7) & 63] =
            (x[(m >>> 13) & 31]! ^ -0x80000000) < (code[i + 1]! ^ -0x80000000) ? 1 : 0;
          i += 2;
          n++;
          continue;
        case 23: // XORI
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! ^ code[i + 1]!;
          i += 2;
          n++;
          continue;
        case 24: // ORI
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! | code[i + 1]!;
          i += 2;
          n++;
          continue;
        case 25: // ANDI
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! & code[i + 1]!;
          i += 2;
          n++;
          continue;
        case 26: // SLLI
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! << code[i + 1]!;
          i += 2;
          n++;
          continue;
        case 27: // SRLI
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! >>> code[i + 1]!;
          i += 2;
          n++;
          continue;
        case 28: // SRAI
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! >> code[i + 1]!;
          i += 2;
          n++;
          continue;
        case 29: // ADD
          x[(m >>> 7) & 63] = (x[(m >>> 13) & 31]! + x[(m >>> 18) & 31]!) | 0;
          i += 2;
          n++;
          continue;
        case 30: // SUB
          x[(m >>> 7) & 63] = (x[(m >>> 13) & 31]! - x[(m >>> 18) & 31]!) | 0;
          i += 2;
          n++;
          continue;
        case 31: // SLL
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! << x[(m >>> 18) & 31]!;
          i += 2;
          n++;
          continue;
        case 32: // SLT
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! < x[(m >>> 18) & 31]! ? 1 : 0;
          i += 2;
          n++;
          continue;
        case 33: // SLTU
          x[(m >>> 7) & 63] =
            (x[(m >>> 13) & 31]! ^ -0x80000000) < (x[(m >>> 18) & 31]! ^ -0x80000000) ? 1 : 0;
          i += 2;
          n++;
          continue;
        case 34: // XOR
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! ^ x[(m >>> 18) & 31]!;
          i += 2;
          n++;
          continue;
        case 35: // SRL
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! >>> x[(m >>> 18) & 31]!;
          i += 2;
          n++;
          continue;
        case 36: // SRA
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! >> x[(m >>> 18) & 31]!;
          i += 2;
          n++;
          continue;
        case 37: // OR
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! | x[(m >>> 18) & 31]!;
          i += 2;
          n++;
          continue;
        case 38: // AND
          x[(m >>> 7) & 63] = x[(m >>> 13) & 31]! & x[(m >>> 18) & 31]!;
          i += 2;
          n++;
          continue;
        case 39: // FENCE
          i += 2;
          n++;
          continue;
        case 40: // FENCE_I
          // Shared pages are let go: look the page up again (the jump re-attaches or decodes).
          for (const block of mem.blocks) block.flushCode();
          tp = this.trans = undefined;
          tgt = (base + (i << 1) + 4) | 0;
          n++;
          cause = -1;
          break;
        case 41: // ECALL
          cause = this.priv === PRIV_M ? Cause.ECALL_FROM_M : Cause.ECALL_FROM_U;
          tval = 0;
          break;
        case 42: // EBREAK
          cause = Cause.BREAKPOINT;
          tval = 0;
          break;
        case 43: // MRET
          if (this.priv !== PRIV_M) {
            cause = Cause.ILLEGAL_INSTRUCTION;
            tval = mem.load((base + (i << 1)) >>> 0, 4);
            break;
          }
          tgt = this.mret();
          n++;
          cause = -3;
          break;
        case 44: // WFI
          if (this.priv === PRIV_U && (this.mstatus & MSTATUS_TW) !== 0) {
            cause = Cause.ILLEGAL_INSTRUCTION;
            tval = mem.load((base + (i << 1)) >>> 0, 4);
            break;
          }
          this.waiting = true;
          i += 2;
          n++;
          cause = -2;
          break;
        case 45: // CSRRW
        case 46: // CSRRS
        case 47: // CSRRC
        case 48: // CSRRWI
        case 49: // CSRRSI
        case 50: {
          // CSRRCI
          this.retired = r0 + n;
          const op = m & 127;
          const src = op >= 48 ? (m >>> 13) & 31 : x[(m >>> 13) & 31]!;
          const old = this.csrInstruction(op, code[i + 1]!, src, ((m >>> 13) & 31) !== 0);
          if (this.csrIllegal) {
            this.csrIllegal = false;
            cause = Cause.ILLEGAL_INSTRUCTION;
            tval = mem.load((base + (i << 1)) >>> 0, 4);
            break;
          }
          x[(m >>> 7) & 63] = old;
          i += 2;
          n++;
          cause = -2;
          break;
        }
        case 51: // MUL
          x[(m >>> 7) & 63] = Math.imul(x[(m >>> 13) & 31]!, x[(m >>> 18) & 31]!);
          i += 2;
          n++;
          continue;
        case 52: // MULH
          x[(m >>> 7) & 63] = mulh(x[(m >>> 13) & 31]!, x[(m >>> 18) & 31]!);
          i += 2;
          n++;
          continue;
        case 53: // MULHSU
          x[(m >>> 7) & 63] = mulhsu(x[(m >>> 13) & 31]!, x[(m >>> 18) & 31]!);
          i += 2;
          n++;
          continue;
        case 54: // MULHU
          x[(m >>> 7) & 63] = mulhu(x[(m >>> 13) & 31]!, x[(m >>> 18) & 31]!);
          i += 2;
          n++;
          continue;
        case 55: // DIV
          x[(m >>> 7) & 63] = div(x[(m >>> 13) & 31]!, x[(m >>> 18) & 31]!);
          i += 2;
          n++;
          continue;
        case 56: // DIVU
          x[(m >>> 7) & 63] = divu(x[(m >>> 13) & 31]!, x[(m >>> 18) & 31]!);
          i += 2;
          n++;
          continue;
        case 57: // REM
          x[(m >>> 7) & 63] = rem(x[(m >>> 13) & 31]!, x[(m >>> 18) & 31]!);
          i += 2;
          n++;
          continue;
        case 58: // REMU
          x[(m >>> 7) & 63] = remu(x[(m >>> 13) & 31]!, x[(m >>> 18) & 31]!);
          i += 2;
          n++;
          continue;
        case 59: // LR_W
        case 60: // SC_W
        case 61: // AMOSWAP_W
        case 62: // AMOADD_W
        case 63: // AMOXOR_W
        case 64: // AMOAND_W
        case 65: // AMOOR_W
        case 66: // AMOMIN_W
        case 67: // AMOMAX_W
        case 68: // AMOMINU_W
        case 69: {
          // AMOMAXU_W
          this.retired = r0 + n;
          const a = x[(m >>> 13) & 31]!;
          const v = this.atomic(m & 127, a, x[(m >>> 18) & 31]!);
          if (this.atomicFault !== 0) {
            cause = this.atomicFault;
            this.atomicFault = 0;
            tval = a;
            break;
          }
          x[(m >>> 7) & 63] = v;
          // A write into the running page (through the slow path) may have made its slots
          // private or dropped its translation: go on with what the page holds now.
          const e = this.codeEntry;
          if (e !== undefined && (e.code !== code || (tp !== undefined && e.translated !== tp))) {
            code = e.code;
            tp = this.trans =
              typeof e.translated === 'function' ? (e.translated as PageFunction) : undefined;
          }
          i += 2;
          n++;
          continue;
        }
        case 70: // ILLEGAL
          cause = Cause.ILLEGAL_INSTRUCTION;
          tval = code[i + 1]!;
          break;
        default:
          cause = Cause.ILLEGAL_INSTRUCTION;
          tval = mem.load((base + (i << 1)) >>> 0, 4);
          break;
      }
      // Leaving the straight path: -1 jump, -2 end the slice here, -3 jump and end, else a trap.
      if (cause === -2) break;
      if (cause < 0) {
        this.retired = r0 + n;
        this.jump(tgt);
      } else {
        this.retired = r0 + n;
        if (mem.missingBlock !== undefined) {
          // Not a trap: the access touched a page of a lazy block that has not arrived. The
          // instruction did nothing and did not retire; the slice ends before it.
          this.waitForPage(mem.missingBlock, mem.missingPage);
          mem.missingBlock = undefined;
          mem.faulted = false;
          break;
        }
        this.trapAt((base + (i << 1)) | 0, cause, tval);
        limit--;
      }
      code = this.code;
      base = this.codeBase;
      i = this.slot;
      tp = this.trans;
      hotAt = n + HOT_RUN;
      if (cause === -3 || this.stop !== 0) break;
    }
    this.retired = r0 + n;
    this.pc = (base + (i << 1)) | 0;
    this.code = code;
    this.codeBase = base;
    this.slot = i;
  }

  /** MRET: restores the privilege and interrupt enable; returns the new pc. */
  private mret(): number {
    const s = this.mstatus;
    const mpp = (s & MSTATUS_MPP) >>> MSTATUS_MPP_SHIFT;
    this.priv = mpp === PRIV_M ? PRIV_M : PRIV_U;
    let next = (s & ~(MSTATUS_MIE | MSTATUS_MPP)) | MSTATUS_MPIE;
    if ((s & MSTATUS_MPIE) !== 0) next |= MSTATUS_MIE;
    if (this.priv !== PRIV_M) next &= ~MSTATUS_MPRV;
    this.mstatus = next;
    return this.mepc & ~3;
  }

  /**
   * LR/SC/AMO on a naturally aligned word. Misaligned: LR raises load-address-misaligned,
   * SC/AMOs store/AMO-address-misaligned; unmapped: the matching access fault. Sets
   * `atomicFault` instead of returning on a fault.
   */
  private atomic(op: number, addr: number, src: number): number {
    const isLoad = op === Op.LR_W;
    if ((addr & 3) !== 0) {
      this.atomicFault = isLoad ? Cause.LOAD_MISALIGNED : Cause.STORE_MISALIGNED;
      return 0;
    }
    const mem = this.memory;
    const a = addr >>> 0;
    if (op === Op.SC_W) {
      const ok = this.reserved && this.reservation === addr;
      if (ok && !mem.ready(a)) {
        // Waits for the page with its reservation kept: the retry succeeds.
        this.atomicFault = Cause.STORE_ACCESS_FAULT;
        return 0;
      }
      this.reserved = false;
      if (!ok) {
        if (mem.findRam(a) === undefined && mem.findDevice(a) === undefined) {
          this.atomicFault = Cause.STORE_ACCESS_FAULT;
        }
        return 1;
      }
      mem.store(a, 4, src);
      if (mem.faulted) {
        mem.faulted = false;
        this.atomicFault = Cause.STORE_ACCESS_FAULT;
      }
      return 0;
    }
    const old = mem.load(a, 4);
    if (mem.faulted) {
      mem.faulted = false;
      this.atomicFault = isLoad ? Cause.LOAD_ACCESS_FAULT : Cause.STORE_ACCESS_FAULT;
      return 0;
    }
    if (isLoad) {
      this.reserved = true;
      this.reservation = addr;
      return old;
    }
    let v: number;
    switch (op) {
      case Op.AMOSWAP_W:
        v = src;
        break;
      case Op.AMOADD_W:
        v = (old + src) | 0;
        break;
      case Op.AMOXOR_W:
        v = old ^ src;
        break;
      case Op.AMOAND_W:
        v = old & src;
        break;
      case Op.AMOOR_W:
        v = old | src;
        break;
      case Op.AMOMIN_W:
        v = old < src ? old : src;
        break;
      case Op.AMOMAX_W:
        v = old > src ? old : src;
        break;
      case Op.AMOMINU_W:
        v = old >>> 0 < src >>> 0 ? old : src;
        break;
      default:
        v = old >>> 0 > src >>> 0 ? old : src;
        break;
    }
    mem.store(a, 4, v);
    if (mem.faulted) {
      mem.faulted = false;
      this.atomicFault = Cause.STORE_ACCESS_FAULT;
      return 0;
    }
    return old;
  }

  /**
   * A CSR instruction: reads the old value and writes the new one. `src` is rs1's value or
   * the immediate; `srcNonZero` tells whether rs1/uimm field is non-zero (CSRRS/C then write).
   * Sets `csrIllegal` for unknown CSRs, insufficient privilege and writes to read-only CSRs.
   */
  private csrInstruction(op: number, csr: number, src: number, srcNonZero: boolean): number {
    const writes = op === Op.CSRRW || op === Op.CSRRWI || srcNonZero;
    if (((csr >>> 8) & 3) > this.priv || (writes && csr >>> 10 === 3)) {
      this.csrIllegal = true;
      return 0;
    }
    const old = this.readCsr(csr);
    if (this.csrIllegal) return 0;
    if (writes) {
      const kind =
        op === Op.CSRRW || op === Op.CSRRWI ? 0 : op === Op.CSRRS || op === Op.CSRRSI ? 1 : 2;
      this.writeCsr(csr, kind === 0 ? src : kind === 1 ? old | src : old & ~src);
    }
    return old;
  }

  /** Reads a CSR (privilege already checked); sets `csrIllegal` when it does not exist or is not enabled for U. */
  readCsr(csr: number): number {
    switch (csr) {
      case Csr.MSTATUS:
        return this.mstatus;
      case Csr.MISA:
        return MISA;
      case Csr.MIE:
        return this.mie;
      case Csr.MTVEC:
        return this.mtvec;
      case Csr.MCOUNTEREN:
        return this.mcounteren;
      case Csr.MSTATUSH:
      case Csr.MCOUNTINHIBIT:
      case Csr.MVENDORID:
      case Csr.MARCHID:
      case Csr.MIMPID:
      case Csr.MCONFIGPTR:
        return 0;
      case Csr.MHARTID:
        return this.hartId;
      case Csr.MSCRATCH:
        return this.mscratch;
      case Csr.MEPC:
        return this.mepc & ~3;
      case Csr.MCAUSE:
        return this.mcause;
      case Csr.MTVAL:
        return this.mtval;
      case Csr.MIP:
        return this.mip();
      case Csr.MCYCLE:
        return lo32(this.retired + this.cycleOffset);
      case Csr.MCYCLEH:
        return hi32(this.retired + this.cycleOffset);
      case Csr.MINSTRET:
        return lo32(this.retired + this.instretOffset);
      case Csr.MINSTRETH:
        return hi32(this.retired + this.instretOffset);
    }
    if (csr >= Csr.PMPCFG0 && csr < Csr.PMPCFG0 + 4) return this.pmpcfg[csr - Csr.PMPCFG0]!;
    if (csr >= Csr.PMPADDR0 && csr < Csr.PMPADDR0 + 16) return this.pmpaddr[csr - Csr.PMPADDR0]!;
    // mhpmcounter3..31(h) and mhpmevent3..31: hardwired zero.
    if (
      (csr >= 0xb03 && csr <= 0xb1f) ||
      (csr >= 0xb83 && csr <= 0xb9f) ||
      (csr >= 0x323 && csr <= 0x33f)
    )
      return 0;
    // User counters: cycle, time, instret, hpmcounter3..31 and their high halves.
    if ((csr >= 0xc00 && csr <= 0xc1f) || (csr >= 0xc80 && csr <= 0xc9f)) {
      const index = csr & 31;
      if (this.priv === PRIV_U && ((this.mcounteren >>> index) & 1) === 0) {
        this.csrIllegal = true;
        return 0;
      }
      const high = csr >= 0xc80;
      let v: number;
      if (index === 0) v = this.retired + this.cycleOffset;
      else if (index === 1) v = this.timer.now();
      else if (index === 2) v = this.retired + this.instretOffset;
      else return 0;
      return high ? hi32(v) : lo32(v);
    }
    this.csrIllegal = true;
    return 0;
  }

  /** Writes a CSR with its WARL rules (existence and privilege already checked). */
  writeCsr(csr: number, v: number): void {
    switch (csr) {
      case Csr.MSTATUS: {
        let s = v & MSTATUS_MASK;
        const mpp = (s & MSTATUS_MPP) >>> MSTATUS_MPP_SHIFT;
        if (mpp !== PRIV_M && mpp !== PRIV_U) s &= ~MSTATUS_MPP; // no S mode: MPP holds M or U
        this.mstatus = s;
        return;
      }
      case Csr.MIE:
        this.mie = v & MIE_MASK;
        return;
      case Csr.MTVEC:
        if ((v & 3) < 2) this.mtvec = v; // reserved modes: keep the old value (as QEMU)
        return;
      case Csr.MCOUNTEREN:
        this.mcounteren = v;
        return;
      case Csr.MSCRATCH:
        this.mscratch = v;
        return;
      case Csr.MEPC:
        this.mepc = v & ~3;
        return;
      case Csr.MCAUSE:
        this.mcause = v;
        return;
      case Csr.MTVAL:
        this.mtval = v;
        return;
      // The written counter value is what the next instruction reads (this one retires first).
      case Csr.MCYCLE:
        this.cycleOffset = setLo(this.retired + this.cycleOffset, v) - (this.retired + 1);
        return;
      case Csr.MCYCLEH:
        this.cycleOffset = setHi(this.retired + this.cycleOffset, v) - (this.retired + 1);
        return;
      case Csr.MINSTRET:
        this.instretOffset = setLo(this.retired + this.instretOffset, v) - (this.retired + 1);
        return;
      case Csr.MINSTRETH:
        this.instretOffset = setHi(this.retired + this.instretOffset, v) - (this.retired + 1);
        return;
    }
    if (csr >= Csr.PMPCFG0 && csr < Csr.PMPCFG0 + 4) this.pmpcfg[csr - Csr.PMPCFG0] = v;
    else if (csr >= Csr.PMPADDR0 && csr < Csr.PMPADDR0 + 16) this.pmpaddr[csr - Csr.PMPADDR0] = v;
    // Everything else that exists is read-only zero or hardwired (misa, mip, mstatush, hpm*).
  }

  /** Saves the architectural state (a model of the hart, JSON-friendly). */
  save(): HartState {
    return {
      version: HART_STATE_VERSION,
      pc: this.pc >>> 0,
      x: Array.from(this.x.subarray(0, 32), (v, k) => (k === 0 ? 0 : v >>> 0)),
      priv: this.priv === PRIV_M ? 'M' : 'U',
      waiting: this.waiting,
      csr: {
        mstatus: this.mstatus >>> 0,
        mie: this.mie >>> 0,
        mtvec: this.mtvec >>> 0,
        mepc: this.mepc >>> 0,
        mcause: this.mcause >>> 0,
        mtval: this.mtval >>> 0,
        mscratch: this.mscratch >>> 0,
        mcounteren: this.mcounteren >>> 0,
        pmpcfg: Array.from(this.pmpcfg, (v) => v >>> 0),
        pmpaddr: Array.from(this.pmpaddr, (v) => v >>> 0),
      },
      retired: this.retired,
      minstret: this.retired + this.instretOffset,
      mcycle: this.retired + this.cycleOffset,
      reservation: this.reserved ? this.reservation >>> 0 : null,
    };
  }

  /** Restores a state from {@link Hart.save}; forgets decoded code. @throws Error on a malformed state. */
  restore(state: HartState): void {
    if (state.version !== HART_STATE_VERSION) {
      throw new Error(
        `hart state version ${String(state.version)} is not supported (want ${HART_STATE_VERSION})`,
      );
    }
    if (state.x.length !== 32)
      throw new Error(`hart state has ${state.x.length} registers, want 32`);
    this.x.fill(0);
    for (let k = 1; k < 32; k++) this.x[k] = state.x[k]!;
    this.pc = state.pc | 0;
    this.priv = state.priv === 'M' ? PRIV_M : PRIV_U;
    this.waiting = state.waiting;
    const c = state.csr;
    this.mstatus = c.mstatus & MSTATUS_MASK;
    this.mie = c.mie & MIE_MASK;
    this.mtvec = c.mtvec | 0;
    this.mepc = c.mepc & ~3;
    this.mcause = c.mcause | 0;
    this.mtval = c.mtval | 0;
    this.mscratch = c.mscratch | 0;
    this.mcounteren = c.mcounteren | 0;
    for (let k = 0; k < 4; k++) this.pmpcfg[k] = c.pmpcfg[k] ?? 0;
    for (let k = 0; k < 16; k++) this.pmpaddr[k] = c.pmpaddr[k] ?? 0;
    this.retired = state.retired;
    this.instretOffset = state.minstret - state.retired;
    this.cycleOffset = state.mcycle - state.retired;
    this.reserved = state.reservation !== null;
    this.reservation = (state.reservation ?? 0) | 0;
    this.stop = 0;
    this.fatalMessage = '';
    for (const block of this.memory.blocks) block.flushCode();
    this.code = Hart.NO_CODE;
    this.trans = undefined;
  }
}

/** A fresh code page: every slot undecoded, the end-of-page sentinel in place. */
function blankCodePage(): Int32Array {
  const code = new Int32Array(CODE_PAGE_INTS);
  code[CODE_SLOTS * CODE_SLOT_INTS] = Op.PAGE_END;
  return code;
}

function lo32(v: number): number {
  return (v % 4294967296) | 0;
}

function hi32(v: number): number {
  return Math.floor(v / 4294967296) | 0;
}

function setLo(v: number, lo: number): number {
  return Math.floor(v / 4294967296) * 4294967296 + (lo >>> 0);
}

function setHi(v: number, hi: number): number {
  return (hi >>> 0) * 4294967296 + (v % 4294967296);
}
