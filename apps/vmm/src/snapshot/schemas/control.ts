import { ENTROPY_WORDS, HOST_ARGS_SIZE, type ControlState } from '../../devices/control.js';
import { array, count, matching, record, sectionVersion, u32, u8 } from './check.js';

/** Version of the `control` section this schema reads and writes ({@link ControlState} version 1). */
export const CONTROL_SECTION_VERSION = 1;

const u32Item = (v: unknown, path: string): number => u32(v, path);
const byteItem = (v: unknown, path: string): number => u8(v, path);

/**
 * Schema of the `control` section (a {@link ControlState}): a 64-bit generation id as 16
 * lower-case hex digits, exactly {@link ENTROPY_WORDS} u32 entropy words, a READY count and at
 * most {@link HOST_ARGS_SIZE} host-argument bytes.
 */
export function checkControl(body: unknown, version: number): ControlState {
  const o = record(body, '', ['version', 'generationId', 'entropy', 'readyCount', 'hostArgs']);
  return {
    version: sectionVersion(o.version, version),
    generationId: matching(
      o.generationId,
      'generationId',
      /^[0-9a-f]{16}$/,
      '16 lower-case hex digits',
    ),
    entropy: array(o.entropy, 'entropy', ENTROPY_WORDS, ENTROPY_WORDS, u32Item),
    readyCount: count(o.readyCount, 'readyCount'),
    hostArgs: array(o.hostArgs, 'hostArgs', 0, HOST_ARGS_SIZE, byteItem),
  };
}
