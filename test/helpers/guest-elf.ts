import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { asm } from '@handoff/vmm';

/**
 * Tiny RV32 guests built in the test, so VM tests need no cross toolchain and no guest that is
 * still being written. `echoGuestElf()` is an idle-friendly echo server: it prints
 * "echo ready\n", then echoes every UART byte; between bytes it sleeps in WFI with the CLINT
 * timer armed 100 ms ahead (so an idle VM costs no host CPU); the byte `q` powers it off
 * through the test finisher with exit code 5. The idle, spin and crash guests below serve the
 * tests of VMs that share a vCPU thread.
 */

const RAM_BASE = 0x8000_0000;
const CODE_OFFSET = 0x1000;

type Ins = (pc: number, label: (name: string) => number) => number;

// Registers.
const zero = 0,
  t0 = 5,
  t1 = 6,
  t2 = 7,
  s0 = 8,
  s1 = 9,
  a0 = 10,
  a1 = 11,
  a2 = 12,
  s2 = 18,
  t3 = 28,
  t4 = 29,
  t5 = 30,
  t6 = 31;

const word =
  (w: number): Ins =>
  () =>
    w;
const lui = (rd: number, imm20: number): Ins => word(asm.lui(rd, imm20));
const addi = (rd: number, rs1: number, imm: number): Ins => word(asm.addi(rd, rs1, imm));
const andi = (rd: number, rs1: number, imm: number): Ins => word(asm.andi(rd, rs1, imm));
const lbu = (rd: number, rs1: number, imm: number): Ins => word(asm.lbu(rd, rs1, imm));
const lw = (rd: number, rs1: number, imm: number): Ins => word(asm.lw(rd, rs1, imm));
const sb = (rs2: number, rs1: number, imm: number): Ins => word(asm.sb(rs2, rs1, imm));
const sw = (rs2: number, rs1: number, imm: number): Ins => word(asm.sw(rs2, rs1, imm));
const add = (rd: number, rs1: number, rs2: number): Ins => word(asm.add(rd, rs1, rs2));
const sltu = (rd: number, rs1: number, rs2: number): Ins => word(asm.sltu(rd, rs1, rs2));
const csrrs = (rd: number, csr: number, rs1: number): Ins => word(asm.csrrs(rd, csr, rs1));
const beq =
  (rs1: number, rs2: number, to: string): Ins =>
  (pc, l) =>
    asm.beq(rs1, rs2, l(to) - pc);
const bne =
  (rs1: number, rs2: number, to: string): Ins =>
  (pc, l) =>
    asm.bne(rs1, rs2, l(to) - pc);
const j =
  (to: string): Ins =>
  (pc, l) =>
    asm.jal(zero, l(to) - pc);
const wfi: Ins = word(asm.wfi());

/** Assembles `program` (instructions and `'label:'` strings) at RAM_BASE. */
function assemble(program: (Ins | string)[]): Uint8Array {
  const labels = new Map<string, number>();
  let pc = RAM_BASE;
  for (const item of program) {
    if (typeof item === 'string') labels.set(item.replace(/:$/, ''), pc);
    else pc += 4;
  }
  const words: number[] = [];
  pc = RAM_BASE;
  const label = (name: string): number => {
    const at = labels.get(name);
    if (at === undefined) throw new Error(`no label ${name}`);
    return at;
  };
  for (const item of program) {
    if (typeof item === 'string') continue;
    words.push(item(pc, label));
    pc += 4;
  }
  const out = new Uint8Array(words.length * 4);
  const dv = new DataView(out.buffer);
  words.forEach((w, k) => dv.setUint32(k * 4, w, true));
  return out;
}

/** Wraps code into an ELF32 RISC-V executable with one R+X segment at 0x80000000. */
export function elfOf(code: Uint8Array): Uint8Array {
  const file = new Uint8Array(CODE_OFFSET + code.length);
  const dv = new DataView(file.buffer);
  file.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1], 0); // magic, ELFCLASS32, little-endian, version
  dv.setUint16(16, 2, true); // ET_EXEC
  dv.setUint16(18, 243, true); // EM_RISCV
  dv.setUint32(20, 1, true);
  dv.setUint32(24, RAM_BASE, true); // entry
  dv.setUint32(28, 52, true); // phoff
  dv.setUint16(40, 52, true); // ehsize
  dv.setUint16(42, 32, true); // phentsize
  dv.setUint16(44, 1, true); // phnum
  const ph = 52;
  dv.setUint32(ph, 1, true); // PT_LOAD
  dv.setUint32(ph + 4, CODE_OFFSET, true);
  dv.setUint32(ph + 8, RAM_BASE, true);
  dv.setUint32(ph + 12, RAM_BASE, true);
  dv.setUint32(ph + 16, code.length, true);
  dv.setUint32(ph + 20, code.length, true);
  dv.setUint32(ph + 24, 5, true); // R + X
  dv.setUint32(ph + 28, 0x1000, true);
  file.set(code, CODE_OFFSET);
  return file;
}

/** The echo guest (see the module doc). */
export function echoGuestElf(): Uint8Array {
  const banner = [...'echo ready\n'].flatMap((c) => [
    addi(t0, zero, c.charCodeAt(0)),
    sb(t0, s0, 0),
  ]);
  return elfOf(
    assemble([
      lui(s0, 0x10000), // UART 0x10000000
      lui(s1, 0x2004), // mtimecmp 0x02004000
      lui(s2, 0x200c),
      addi(s2, s2, -8), // mtime 0x0200bff8
      addi(t0, zero, 0x80),
      csrrs(zero, 0x304, t0), // mie.MTIE: the timer ends WFI (mstatus.MIE stays 0)
      ...banner,
      'loop:',
      lbu(t1, s0, 5), // LSR
      andi(t1, t1, 1), // data ready?
      beq(t1, zero, 'idle'),
      lbu(t2, s0, 0), // RBR
      sb(t2, s0, 0), // echo
      addi(t3, zero, 0x71), // 'q'
      bne(t2, t3, 'loop'),
      lui(t4, 0x100), // finisher 0x00100000
      lui(t5, 0x53),
      addi(t5, t5, 0x333), // 0x3333 | 5 << 16: fail with code 5
      sw(t5, t4, 0),
      j('loop'),
      'idle:',
      lw(t3, s2, 0), // mtime lo
      lw(t4, s2, 4), // mtime hi
      lui(t5, 0xf4), // ~100 ms at 10 MHz
      add(t6, t3, t5),
      sltu(a0, t6, t3),
      add(a1, t4, a0),
      addi(a2, zero, -1),
      sw(a2, s1, 4), // mtimecmp hi = max first: no spurious match
      sw(t6, s1, 0),
      sw(a1, s1, 4),
      wfi,
      j('loop'),
    ]),
  );
}

/** Writes `text` to the UART (whose address is in s0), byte by byte. */
function print(text: string): Ins[] {
  return [...text].flatMap((c) => [addi(t0, zero, c.charCodeAt(0)), sb(t0, s0, 0)]);
}

/**
 * The idle guest: prints "idle\n", then waits in WFI with every interrupt off — only console
 * input ends a wait, and it goes back to WFI at once. A VM of it costs its host nothing.
 */
export function idleGuestElf(): Uint8Array {
  return elfOf(assemble([lui(s0, 0x10000), ...print('idle\n'), 'loop:', wfi, j('loop')]));
}

/** The spin guest: prints "spin\n", then counts in a register forever (always busy). */
export function spinGuestElf(): Uint8Array {
  return elfOf(
    assemble([lui(s0, 0x10000), ...print('spin\n'), 'loop:', addi(t1, t1, 1), j('loop')]),
  );
}

/**
 * The crash guest: prints "armed\n" and waits in WFI (interrupts off) until a byte arrives on
 * its console; then it runs an illegal instruction with no trap vector in RAM (mtvec 0), which
 * stops the hart for good: the VM crashes.
 */
export function crashGuestElf(): Uint8Array {
  return elfOf(
    assemble([
      lui(s0, 0x10000),
      ...print('armed\n'),
      'loop:',
      lbu(t1, s0, 5), // LSR
      andi(t1, t1, 1), // data ready?
      beq(t1, zero, 'sleep'),
      word(0), // illegal
      'sleep:',
      wfi,
      j('loop'),
    ]),
  );
}

/**
 * The guest folder of the cross-process tests: vmm instances started with `--guest-dir` set to
 * it load the guests written here (a vmm reads no other guest files).
 */
export const TEST_GUEST_DIR = join(tmpdir(), 'handoff-test-guests');

/**
 * Writes the echo guest as `echo.elf` into `dir` (default {@link TEST_GUEST_DIR}; the same bytes
 * every time, written atomically, so tests running at once never see a partial file) and returns
 * its path.
 */
export function writeEchoGuest(dir = TEST_GUEST_DIR): string {
  return writeGuest('echo.elf', echoGuestElf(), dir);
}

/** Writes `elf` as `name` into `dir` like {@link writeEchoGuest}; returns its path. */
export function writeGuest(name: string, elf: Uint8Array, dir = TEST_GUEST_DIR): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  const partial = `${path}.${process.pid}.tmp`;
  writeFileSync(partial, elf);
  renameSync(partial, path);
  return path;
}
