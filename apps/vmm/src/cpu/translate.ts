import { CODE_SLOTS, CODE_SLOT_INTS, type CodeEntry } from '../memory/code-pages.js';
import type { RamBlock } from '../memory/ram-block.js';
import { div, divu, mulh, mulhsu, mulhu, rem, remu } from './muldiv.js';
import { Op, RD_SHIFT, RS1_SHIFT, RS2_SHIFT, X0_SINK } from './ops.js';

/**
 * Translated code of one 4 KiB page: runs from interpreter index `i` (slot × 2) for at most
 * `budget` instructions and returns how many retired — bitwise negated (`~n`) when it stopped
 * at a slot that is not part of the translation (undecoded when translated, or an op it never
 * translates). It stops before anything it does not handle; {@link TranslatorExit.slot} then
 * says where the interpreter continues, or is -1 with {@link TranslatorExit.pc} set when
 * control left the page.
 */
export type PageFunction = (i: number, budget: number) => number;

/** Where a {@link PageFunction} left off (written by the function, read by the hart). */
export interface TranslatorExit {
  slot: number;
  pc: number;
}

/**
 * Page-at-a-time translator to JavaScript: the decoded slots of a page become one function
 * with a `switch` over slots whose cases fall through along straight-line code, so a basic
 * block costs one dispatch instead of one per instruction, and operands are literals.
 *
 * It is exact, not approximate: every translated instruction does what the interpreter does;
 * the budget is checked before each run of instructions (so the function stops exactly where
 * the interpreter would — deterministic time depends on it); anything else — a slow memory
 * access, a store into a page with code, CSRs, AMOs, traps, system instructions, undecoded
 * slots — exits before the instruction and the interpreter executes it.
 */
export function translatePage(
  block: RamBlock,
  page: number,
  x: Int32Array,
  exit: TranslatorExit,
): PageFunction | null {
  const entry = block.code(page);
  if (entry === undefined) return null;
  return translateEntry(block, page, entry, x, exit, true);
}

/**
 * The translation of `entry` (page `page` of `block`) for the hart with registers `x`: the plan
 * of its shared decoded page when it has one and `fresh` is false (clones then only bind it),
 * else a new plan (published to the shared page). A plan is bound to one machine's registers and
 * RAM views by {@link bindPlan}.
 */
export function translateEntry(
  block: RamBlock,
  page: number,
  entry: CodeEntry,
  x: Int32Array,
  exit: TranslatorExit,
  fresh: boolean,
): PageFunction | null {
  const shared = entry.shared;
  let plan = fresh || shared === undefined ? undefined : (shared.plan as PagePlan | undefined);
  if (plan === undefined) {
    const made = planPage(entry.code, block.guestBase, block.size, page);
    if (made === null) return null; // not shared: later sharers may have more slots decoded
    plan = made;
    if (shared !== undefined) shared.plan = plan;
  }
  return bindPlan(plan, block, x, exit);
}

/**
 * The machine-independent part of a page's translation: the compiled factory (shared by source
 * text) and the run-length table. It depends only on the decoded slots and the block's geometry.
 */
export interface PagePlan {
  readonly factory: Factory;
  readonly run: Int32Array;
}

/** Builds the plan of the decoded slots `code` of page `page` of a block; null when nothing translates. */
export function planPage(
  code: Int32Array,
  guestBase: number,
  size: number,
  page: number,
): PagePlan | null {
  const base = (guestBase + page * 4096) | 0;
  const ramBase = guestBase | 0;
  const ramLimit = (size ^ -0x80000000) | 0;
  // run[s]: instructions from slot s to the end of its straight-line run (0: not translated).
  const run = new Int32Array(CODE_SLOTS + 1);
  const ok = new Uint8Array(CODE_SLOTS);
  let count = 0;
  for (let s = 0; s < CODE_SLOTS; s++) {
    if (translatable(code, s, base)) {
      ok[s] = 1;
      count++;
    }
  }
  if (count === 0) return null;
  for (let s = CODE_SLOTS - 1; s >= 0; s--) {
    if (ok[s] === 0) continue;
    const op = code[s * CODE_SLOT_INTS]! & 127;
    run[s] = endsRun(op) || s === CODE_SLOTS - 1 ? 1 : run[s + 1]! + 1;
  }
  // Case labels are slot numbers, dense from the first to the last translated slot: V8 only
  // builds a jump table for a switch whose labels are dense (a sparse one becomes a compare chain).
  const out: string[] = [];
  const absent: string[] = [];
  let first = -1;
  let last = -1;
  for (let s = 0; s < CODE_SLOTS; s++) {
    if (ok[s] === 0) continue;
    if (first < 0) first = s;
    last = s;
  }
  for (let s = first; s <= last; s++) {
    if (ok[s] === 0) {
      absent.push(`case ${s}:`); // unreachable: the loop top leaves before dispatching to it
      continue;
    }
    const m = code[s * CODE_SLOT_INTS]!;
    const imm = code[s * CODE_SLOT_INTS + 1]!;
    out.push(`case ${s}:`);
    out.push(emit(m, imm, s, base, run[s]!, ramBase, ramLimit));
    const op = m & 127;
    if (!endsRun(op)) {
      // The run ends here because the next slot is not translated (or the page ends).
      if (s === CODE_SLOTS - 1)
        out.push(`exit.slot = -1; exit.pc = ${(base + 4096) | 0}; return n;`);
      else if (ok[s + 1] === 0) out.push(`exit.slot = ${(s + 1) * 2}; return n;`);
    }
  }
  if (absent.length > 0) out.push(`${absent.join(' ')} exit.slot = i; return ~(n - len);`);
  const body = `
return function page(i, budget) {
  const dirty = blk.dirty;
  let n = 0, a = 0, off = 0, p = 0, w = 0, b = 0, d = 0;
  for (;;) {
    const len = run[i >> 1];
    if (len === 0) { exit.slot = i; return ~n; }
    if (n + len > budget) { exit.slot = i; return n; }
    n += len;
    switch (i >> 1) {
${out.join('\n')}
      default: exit.slot = i; return n - len;
    }
  }
};`;
  return { factory: compile(body), run };
}

/** Binds `plan` to one machine: its registers, block (RAM views, bitmaps) and exit record. */
export function bindPlan(
  plan: PagePlan,
  block: RamBlock,
  x: Int32Array,
  exit: TranslatorExit,
): PageFunction {
  return plan.factory(
    x,
    block,
    plan.run,
    exit,
    block.i32,
    block.u8,
    block.i8,
    block.u16,
    block.i16,
    block.touched,
    block.codeBits,
    mulh,
    mulhsu,
    mulhu,
    div,
    divu,
    rem,
    remu,
  );
}

/** A compiled page factory: binds a machine's registers and RAM views to a {@link PageFunction}. */
export type Factory = (...args: unknown[]) => PageFunction;

/**
 * Compiled factories by source text. Identical pages (the same guest in many VMs, a template's
 * clones, a VM restored after a save) share one factory, hence one V8 function with its type
 * feedback and optimized code: a clone starts with warm code.
 */
const factories = new Map<string, Factory>();
const FACTORY_CACHE_LIMIT = 512;

function compile(body: string): Factory {
  let factory = factories.get(body);
  if (factory === undefined) {
    factory = new Function(
      'x',
      'blk',
      'run',
      'exit',
      'i32',
      'u8',
      'i8',
      'u16',
      'i16',
      'touched',
      'codeBits',
      'mulh',
      'mulhsu',
      'mulhu',
      'div',
      'divu',
      'rem',
      'remu',
      body,
    ) as Factory;
    if (factories.size >= FACTORY_CACHE_LIMIT) factories.delete(factories.keys().next().value!);
    factories.set(body, factory);
  }
  return factory;
}

function endsRun(op: number): boolean {
  return (op >= Op.JAL && op <= Op.BGEU) || op === Op.JALR;
}

/** True for ops the translator handles (a slot with such an op missing from a translation makes it stale). */
export function isTranslatableOp(op: number): boolean {
  return (
    op > Op.PAGE_END && op <= Op.REMU && op !== Op.FENCE_I && (op < Op.ECALL || op > Op.CSRRCI)
  );
}

function translatable(code: Int32Array, s: number, base: number): boolean {
  const m = code[s * CODE_SLOT_INTS]!;
  const op = m & 127;
  switch (op) {
    case Op.DECODE:
    case Op.PAGE_END:
    case Op.FENCE_I:
    case Op.ECALL:
    case Op.EBREAK:
    case Op.MRET:
    case Op.WFI:
    case Op.CSRRW:
    case Op.CSRRS:
    case Op.CSRRC:
    case Op.CSRRWI:
    case Op.CSRRSI:
    case Op.CSRRCI:
    case Op.LR_W:
    case Op.SC_W:
    case Op.AMOSWAP_W:
    case Op.AMOADD_W:
    case Op.AMOXOR_W:
    case Op.AMOAND_W:
    case Op.AMOOR_W:
    case Op.AMOMIN_W:
    case Op.AMOMAX_W:
    case Op.AMOMINU_W:
    case Op.AMOMAXU_W:
    case Op.ILLEGAL:
      return false;
    case Op.JAL:
      return (((base + s * 4 + code[s * CODE_SLOT_INTS + 1]!) | 0) & 3) === 0;
    default:
      return op <= Op.ILLEGAL;
  }
}

function emit(
  m: number,
  imm: number,
  s: number,
  base: number,
  len: number,
  ramBase: number,
  ramLimit: number,
): string {
  const op = m & 127;
  const rd = (m >>> RD_SHIFT) & 63;
  const rs1 = (m >>> RS1_SHIFT) & 31;
  const rs2 = (m >>> RS2_SHIFT) & 31;
  const r1 = rs1 === 0 ? '0' : `x[${rs1}]`;
  const r2 = rs2 === 0 ? '0' : `x[${rs2}]`;
  const pc = (base + s * 4) | 0;
  const set = (expr: string): string => (rd === X0_SINK ? '' : `x[${rd}] = ${expr};`);
  // Leave before this instruction: the interpreter runs it (slow path, trap, ...).
  const bail = `{ exit.slot = ${s * 2}; return n - ${len}; }`;
  const goTo = (target: number): string => {
    const d = (target - base) | 0;
    if ((d & ~0xffc) === 0) return `{ i = ${d >> 1}; continue; }`;
    return `{ exit.slot = -1; exit.pc = ${target}; return n; }`;
  };
  const next = goTo((pc + 4) | 0);
  const branch = (cond: string): string => {
    const target = (pc + imm) | 0;
    return (target & 3) !== 0
      ? `if (${cond}) ${bail} ${next}`
      : `if (${cond}) ${goTo(target)} ${next}`;
  };
  const unsigned = (e: string): string => `((${e}) ^ -2147483648)`;
  const addr = `a = (${r1} + ${imm}) | 0; off = (a - ${ramBase}) | 0;`;
  const inRam = `(off ^ -2147483648) < ${ramLimit}`;
  const store = (align: number, access: string): string =>
    `${addr} if (${align ? `(off & ${align}) !== 0 || ` : ''}!(${inRam})) ${bail}` +
    ` p = off >>> 12; w = p >>> 5; b = 1 << (p & 31); if ((codeBits[w] & b) !== 0) ${bail}` +
    ` ${access}; d = dirty[w]; if ((d & b) === 0) { dirty[w] = d | b; touched[w] |= b; }`;
  const load = (align: number, access: string): string =>
    `${addr} if (${align ? `(off & ${align}) !== 0 || ` : ''}!(${inRam})) ${bail} ${set(access)}`;
  switch (op) {
    case Op.LUI:
      return set(`${imm}`);
    case Op.AUIPC:
      return set(`${(pc + imm) | 0}`);
    case Op.JAL:
      return `${set(`${(pc + 4) | 0}`)} ${goTo((pc + imm) | 0)}`;
    case Op.JALR:
      return (
        `a = (${r1} + ${imm}) & -2; if ((a & 3) !== 0) ${bail} ${set(`${(pc + 4) | 0}`)}` +
        ` d = (a - ${base}) | 0; if ((d & -4093) === 0) { i = d >> 1; continue; }` +
        ` exit.slot = -1; exit.pc = a; return n;`
      );
    case Op.BEQ:
      return branch(`${r1} === ${r2}`);
    case Op.BNE:
      return branch(`${r1} !== ${r2}`);
    case Op.BLT:
      return branch(`${r1} < ${r2}`);
    case Op.BGE:
      return branch(`${r1} >= ${r2}`);
    case Op.BLTU:
      return branch(`${unsigned(r1)} < ${unsigned(r2)}`);
    case Op.BGEU:
      return branch(`${unsigned(r1)} >= ${unsigned(r2)}`);
    case Op.LB:
      return load(0, 'i8[off]');
    case Op.LH:
      return load(1, 'i16[off >> 1]');
    case Op.LW:
      return load(3, 'i32[off >> 2]');
    case Op.LBU:
      return load(0, 'u8[off]');
    case Op.LHU:
      return load(1, 'u16[off >> 1]');
    case Op.SB:
      return store(0, `u8[off] = ${r2}`);
    case Op.SH:
      return store(1, `u16[off >> 1] = ${r2}`);
    case Op.SW:
      return store(3, `i32[off >> 2] = ${r2}`);
    case Op.ADDI:
      return set(`(${r1} + ${imm}) | 0`);
    case Op.SLTI:
      return set(`${r1} < ${imm} ? 1 : 0`);
    case Op.SLTIU:
      return set(`${unsigned(r1)} < ${(imm ^ -0x80000000) | 0} ? 1 : 0`);
    case Op.XORI:
      return set(`${r1} ^ ${imm}`);
    case Op.ORI:
      return set(`${r1} | ${imm}`);
    case Op.ANDI:
      return set(`${r1} & ${imm}`);
    case Op.SLLI:
      return set(`${r1} << ${imm}`);
    case Op.SRLI:
      return set(`(${r1} >>> ${imm}) | 0`);
    case Op.SRAI:
      return set(`${r1} >> ${imm}`);
    case Op.ADD:
      return set(`(${r1} + ${r2}) | 0`);
    case Op.SUB:
      return set(`(${r1} - ${r2}) | 0`);
    case Op.SLL:
      return set(`${r1} << ${r2}`);
    case Op.SLT:
      return set(`${r1} < ${r2} ? 1 : 0`);
    case Op.SLTU:
      return set(`${unsigned(r1)} < ${unsigned(r2)} ? 1 : 0`);
    case Op.XOR:
      return set(`${r1} ^ ${r2}`);
    case Op.SRL:
      return set(`(${r1} >>> ${r2}) | 0`);
    case Op.SRA:
      return set(`${r1} >> ${r2}`);
    case Op.OR:
      return set(`${r1} | ${r2}`);
    case Op.AND:
      return set(`${r1} & ${r2}`);
    case Op.FENCE:
      return '';
    case Op.MUL:
      return set(`Math.imul(${r1}, ${r2})`);
    case Op.MULH:
      return set(`mulh(${r1}, ${r2})`);
    case Op.MULHSU:
      return set(`mulhsu(${r1}, ${r2})`);
    case Op.MULHU:
      return set(`mulhu(${r1}, ${r2})`);
    case Op.DIV:
      return set(`div(${r1}, ${r2})`);
    case Op.DIVU:
      return set(`divu(${r1}, ${r2})`);
    case Op.REM:
      return set(`rem(${r1}, ${r2})`);
    case Op.REMU:
      return set(`remu(${r1}, ${r2})`);
    default:
      return bail;
  }
}
