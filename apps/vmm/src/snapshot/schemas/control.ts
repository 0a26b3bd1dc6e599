import { ENTROPY_WORDS, HOST_ARGS_SIZE, type ControlState } from '../../devices/control.js';
import {
  byteArray,
  count,
  defineSection,
  hexDigits,
  sectionVersion,
  u32Array,
} from '../table/fields.js';

/**
 * The `control` section (a {@link ControlState}): a 64-bit generation id as 16 lower-case hex
 * digits (the compact layout carries up to 64 ASCII characters, so that a wrong id is judged by
 * this rule rather than by the layout), exactly {@link ENTROPY_WORDS} u32 entropy words, a READY
 * count and at most {@link HOST_ARGS_SIZE} host-argument bytes.
 */
export const CONTROL_SECTION = defineSection<ControlState>({
  name: 'control',
  version: 1,
  maxBodyBytes: 16 * 1024,
  fields: {
    version: sectionVersion(),
    generationId: hexDigits(16, 64),
    entropy: u32Array(ENTROPY_WORDS),
    readyCount: count(),
    hostArgs: byteArray(HOST_ARGS_SIZE),
  },
});
