/*
 * Conformance harness macros (see harness.S). Conventions:
 * - a test file defines `test_main` (called with ra set; return with `ret` or TEST_END);
 * - CHECK_* calls clobber a0-a7, t0-t6 and ra: keep live values in s0-s11;
 * - every check prints one line, "ok <name>" or "FAIL <name>: got X want Y";
 * - the harness powers off through the test finisher: pass if no check failed.
 */
#define UART_BASE     0x10000000
#define FINISHER_BASE 0x00100000
#define CLINT_MSIP    0x02000000
#define CLINT_MTIMECMP 0x02004000
#define CLINT_MTIME   0x0200bff8
#define UNMAPPED_ADDR 0x08000000

/* Places a string in .rodata and loads its address into reg. */
.macro LA_STR reg, text
  .pushsection .rodata.str, "aMS", @progbits, 1
.Lstr\@: .asciz "\text"
  .popsection
  la \reg, .Lstr\@
.endm

/* Checks that register `got` equals the constant (or symbol) `want`. */
.macro CHECK_EQ name, got, want
  mv a0, \got
  li a1, \want
  LA_STR a2, "\name"
  call check_eq
.endm

/* Checks that register `got` equals the address (symbol or label expression) `want`. */
.macro CHECK_EQ_ADDR name, got, want
  mv a0, \got
  la a1, \want
  LA_STR a2, "\name"
  call check_eq
.endm

/* Checks that register `got` equals register `want`. */
.macro CHECK_EQR name, got, want
  mv a0, \got
  mv a1, \want
  LA_STR a2, "\name"
  call check_eq
.endm

/* Prints a line of text. */
.macro SAY text
  LA_STR a0, "\text\n"
  call puts
.endm

/* rd = inst(v1, v2) checked against want. */
.macro TEST_RR name, inst, want, v1, v2
  li s1, \v1
  li s2, \v2
  \inst s3, s1, s2
  CHECK_EQ "\name", s3, \want
.endm

/* rd = inst(v1, imm) checked against want. */
.macro TEST_RI name, inst, want, v1, imm
  li s1, \v1
  \inst s3, s1, \imm
  CHECK_EQ "\name", s3, \want
.endm

/* The next synchronous trap is expected: record it and skip the faulting instruction. */
.macro ARM_TRAP
  la t0, trap_count
  sw zero, 0(t0)
  la t0, trap_armed
  li t1, 1
  sw t1, 0(t0)
.endm

/* Like ARM_TRAP, but the handler resumes in M-mode at `label` instead of skipping. */
.macro ARM_TRAP_RESUME label
  ARM_TRAP
  la t0, trap_resume
  la t1, \label
  sw t1, 0(t0)
.endm

/* Checks the recorded trap: count 1, mcause, mepc, mtval; then disarms. */
.macro CHECK_TRAP name, cause, epc, tval
  lw s4, trap_count
  CHECK_EQ "\name: trapped once", s4, 1
  lw s4, trap_cause
  CHECK_EQ "\name: mcause", s4, \cause
  lw s4, trap_epc
  CHECK_EQ_ADDR "\name: mepc", s4, \epc
  lw s4, trap_tval
  CHECK_EQ_ADDR "\name: mtval", s4, \tval
  call disarm_trap
.endm

/* Checks the recorded trap without looking at mtval. */
.macro CHECK_TRAP_NO_TVAL name, cause, epc
  lw s4, trap_count
  CHECK_EQ "\name: trapped once", s4, 1
  lw s4, trap_cause
  CHECK_EQ "\name: mcause", s4, \cause
  lw s4, trap_epc
  CHECK_EQ_ADDR "\name: mepc", s4, \epc
  call disarm_trap
.endm

/* Drops from M-mode to U-mode at `ucode`; a trap from there resumes in M at `resume`. */
.macro ENTER_U ucode, resume
  ARM_TRAP_RESUME \resume
  la t0, \ucode
  csrw mepc, t0
  li t0, 0x1800
  csrc mstatus, t0
  mret
.endm
