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
  aligned4,
  bits,
  boolean,
  count,
  defineSection,
  nullable,
  oneOf,
  record,
  rule,
  sectionVersion,
  u32,
  u32Array,
  u64,
} from '../table/fields.js';

/**
 * The `cpu` section (a {@link HartState}): 32 u32 registers with x0 = 0, an aligned pc,
 * privilege M or U, and CSR values the hart's WARL rules can produce (mstatus and mie only with
 * implemented bits, MPP holding M or U, mtvec mode direct or vectored, aligned mepc). The
 * registers, mstatus and mtvec are checked before the other fields.
 */
export const CPU_SECTION = defineSection<HartState>({
  name: 'cpu',
  version: 1,
  maxBodyBytes: 16 * 1024,
  fields: {
    version: sectionVersion(),
    pc: aligned4(),
    x: u32Array(32, {
      checkFirst: true,
      rules: [
        rule<readonly number[]>({
          at: '[0]',
          holds: (x) => x[0] === 0,
          expected: '0 (x0 is hardwired to zero)',
          got: (x) => x[0],
        }),
      ],
    }),
    priv: oneOf(['M', 'U']),
    waiting: boolean(),
    csr: record<HartState['csr']>({
      mstatus: bits(MSTATUS_MASK, {
        checkFirst: true,
        rules: [
          rule<number>({
            holds: (v) => {
              const mpp = (v & MSTATUS_MPP) >>> MSTATUS_MPP_SHIFT;
              return mpp === PRIV_M || mpp === PRIV_U;
            },
            expected: 'a value whose MPP field holds M (3) or U (0)',
          }),
        ],
      }),
      mie: bits(MIE_MASK),
      mtvec: u32({
        checkFirst: true,
        rules: [
          rule<number>({
            holds: (v) => (v & 3) < 2,
            expected: 'a value with mode 0 (direct) or 1 (vectored)',
          }),
        ],
      }),
      mepc: aligned4(),
      mcause: u32(),
      mtval: u32(),
      mscratch: u32(),
      mcounteren: u32(),
      pmpcfg: u32Array(4),
      pmpaddr: u32Array(16),
    }),
    retired: count(),
    minstret: u64(),
    mcycle: u64(),
    reservation: nullable(aligned4()),
  },
});
