import type { ExitStatus, FinisherState } from '../../devices/test-finisher.js';
import {
  defineSection,
  nullable,
  oneOf,
  record,
  sectionVersion,
  u16,
  variant,
  zero,
} from '../table/fields.js';

/**
 * The `finisher` section (a {@link FinisherState}): no exit yet (`null`), or pass / reset with
 * code 0, or fail with a 16-bit code.
 */
export const FINISHER_SECTION = defineSection<FinisherState>({
  name: 'finisher',
  version: 1,
  maxBodyBytes: 1024,
  fields: {
    version: sectionVersion(),
    exit: nullable(
      record<ExitStatus>({
        kind: oneOf(['pass', 'fail', 'reset']),
        code: variant(
          'kind',
          { fail: u16() },
          zero((kind) => `0 for a '${kind}' exit`),
        ),
      }),
      { unusedSlots: 'the exit code of a finisher with no exit' },
    ),
  },
});
