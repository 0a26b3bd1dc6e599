import {
  PLIC_CONTEXTS,
  PLIC_PRIORITY_MASK,
  PLIC_SOURCES,
  PLIC_WORDS,
  type PlicState,
} from '../../devices/plic.js';
import { bits, defineSection, rule, sectionVersion, u32Array } from '../table/fields.js';

/** The first item of an array that is not a priority (0–7), or undefined. */
const firstOverMax = (a: readonly number[]): number | undefined =>
  a.find((p) => p > PLIC_PRIORITY_MASK);

const PRIORITIES = rule<readonly number[]>({
  holds: (a) => firstOverMax(a) === undefined,
  expected: `priorities in [0, ${PLIC_PRIORITY_MASK}]`,
  got: firstOverMax,
});

/** Bit 0 of a source bit set is source 0, which never pends and is never claimed. */
const NO_SOURCE_0 = rule<readonly number[]>({
  at: '[0]',
  holds: (w) => (w[0]! & 1) === 0,
  expected: 'a word with bit 0 clear (source 0 does not exist)',
  got: (w) => w[0],
});

/**
 * The `plic` section (a {@link PlicState}), new in format 1.1: {@link PLIC_SOURCES} priorities of
 * 3 bits with source 0's at 0, pending and claimed bit sets without source 0, the enable words
 * and 3-bit thresholds of {@link PLIC_CONTEXTS} contexts, and the level of each context's output.
 * A container of format 1.0 has no `plic` section and loads the PLIC's reset state.
 */
export const PLIC_SECTION = defineSection<PlicState>({
  name: 'plic',
  version: 1,
  maxBodyBytes: 4096,
  fields: {
    version: sectionVersion(),
    priority: u32Array(PLIC_SOURCES, {
      rules: [
        rule<readonly number[]>({
          at: '[0]',
          holds: (a) => a[0] === 0,
          expected: '0 (source 0 does not exist)',
          got: (a) => a[0],
        }),
        PRIORITIES,
      ],
    }),
    pending: u32Array(PLIC_WORDS, { rules: [NO_SOURCE_0] }),
    claimed: u32Array(PLIC_WORDS, { rules: [NO_SOURCE_0] }),
    enable: u32Array(PLIC_WORDS * PLIC_CONTEXTS),
    threshold: u32Array(PLIC_CONTEXTS, { rules: [PRIORITIES] }),
    outputs: bits((1 << PLIC_CONTEXTS) - 1),
  },
});
