import {
  MIE_MASK,
  MSTATUS_MASK,
  MSTATUS_MPP,
  MSTATUS_MPP_SHIFT,
  PRIV_M,
  PRIV_U,
} from '../../cpu/arch.js';
import type { HartState } from '../../cpu/state.js';
import {
  SchemaViolation,
  aligned4,
  array,
  bits,
  boolean,
  count,
  oneOf,
  record,
  sectionVersion,
  u32,
  u64,
} from './check.js';

/** Version of the `cpu` section this schema reads and writes ({@link HartState} version 1). */
export const CPU_SECTION_VERSION = 1;

const u32Item = (v: unknown, path: string): number => u32(v, path);

/**
 * Schema of the `cpu` section (a {@link HartState}): 32 u32 registers with x0 = 0, an aligned
 * pc, privilege M or U, and CSR values the hart's WARL rules can produce (mstatus and mie only
 * with implemented bits, MPP holding M or U, mtvec mode direct or vectored, aligned mepc).
 */
export function checkCpu(body: unknown, version: number): HartState {
  const o = record(body, '', [
    'version',
    'pc',
    'x',
    'priv',
    'waiting',
    'csr',
    'retired',
    'minstret',
    'mcycle',
    'reservation',
  ]);
  const x = array(o.x, 'x', 32, 32, u32Item);
  if (x[0] !== 0) throw new SchemaViolation('x[0]', '0 (x0 is hardwired to zero)', x[0]);
  const c = record(o.csr, 'csr', [
    'mstatus',
    'mie',
    'mtvec',
    'mepc',
    'mcause',
    'mtval',
    'mscratch',
    'mcounteren',
    'pmpcfg',
    'pmpaddr',
  ]);
  const mstatus = bits(c.mstatus, 'csr.mstatus', MSTATUS_MASK);
  const mpp = (mstatus & MSTATUS_MPP) >>> MSTATUS_MPP_SHIFT;
  if (mpp !== PRIV_M && mpp !== PRIV_U) {
    throw new SchemaViolation(
      'csr.mstatus',
      'a value whose MPP field holds M (3) or U (0)',
      mstatus,
    );
  }
  const mtvec = u32(c.mtvec, 'csr.mtvec');
  if ((mtvec & 3) >= 2) {
    throw new SchemaViolation('csr.mtvec', 'a value with mode 0 (direct) or 1 (vectored)', mtvec);
  }
  return {
    version: sectionVersion(o.version, version),
    pc: aligned4(o.pc, 'pc'),
    x,
    priv: oneOf(o.priv, 'priv', ['M', 'U'] as const),
    waiting: boolean(o.waiting, 'waiting'),
    csr: {
      mstatus,
      mie: bits(c.mie, 'csr.mie', MIE_MASK),
      mtvec,
      mepc: aligned4(c.mepc, 'csr.mepc'),
      mcause: u32(c.mcause, 'csr.mcause'),
      mtval: u32(c.mtval, 'csr.mtval'),
      mscratch: u32(c.mscratch, 'csr.mscratch'),
      mcounteren: u32(c.mcounteren, 'csr.mcounteren'),
      pmpcfg: array(c.pmpcfg, 'csr.pmpcfg', 4, 4, u32Item),
      pmpaddr: array(c.pmpaddr, 'csr.pmpaddr', 16, 16, u32Item),
    },
    retired: count(o.retired, 'retired'),
    minstret: u64(o.minstret, 'minstret'),
    mcycle: u64(o.mcycle, 'mcycle'),
    reservation: o.reservation === null ? null : aligned4(o.reservation, 'reservation'),
  };
}
