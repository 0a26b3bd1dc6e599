import { statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeTempDirs, codeOf, type TempDirs } from '../testing/fixtures.js';
import { crc32c } from './crc32c.js';
import {
  decodeStateFile,
  encodeStateFile,
  readStateFile,
  STATE_HEADER_BYTES,
  writeStateFile,
} from './state-file.js';

const STATE = new Uint8Array(1000).map((_, i) => (i * 31 + 5) & 0xff);

/** Recomputes the header CRC after a test edited a header field (so only that field is wrong). */
function resealHeader(file: Uint8Array): Uint8Array {
  new DataView(file.buffer, file.byteOffset).setUint32(28, crc32c(file.subarray(0, 28)), true);
  return file;
}

describe('crc32c', () => {
  it('is CRC-32C (Castagnoli): the check value, continued over parts, on views into a buffer', () => {
    const check = new TextEncoder().encode('123456789');
    expect(crc32c(check)).toBe(0xe3069283);
    expect(crc32c(check.subarray(4), crc32c(check.subarray(0, 4)))).toBe(0xe3069283);
    const padded = new Uint8Array(20);
    padded.set(check, 7);
    expect(crc32c(padded.subarray(7, 16))).toBe(0xe3069283);
  });
});

describe('device-state envelope', () => {
  it('round-trips, and names the recorded length and CRC when they differ', () => {
    const file = encodeStateFile(STATE);
    expect(file.length).toBe(STATE_HEADER_BYTES + STATE.length);
    expect(decodeStateFile(file, 'x', { bytes: STATE.length, crc32c: crc32c(STATE) })).toEqual(
      STATE,
    );
    expect(() => decodeStateFile(file, 'snapshot "s"', { bytes: 1000, crc32c: 1 })).toThrow(
      /catalog recorded 1000 bytes with 0x00000001/,
    );
  });

  it('refuses every damaged file with SNAPSHOT_CORRUPT and says what is wrong', () => {
    const cases: [string, (f: Uint8Array) => Uint8Array, RegExp][] = [
      ['magic', (f) => ((f[0] = 0), f), /bad magic/],
      ['a header byte', (f) => ((f[13]! ^= 1), f), /header fails its CRC-32C/],
      [
        'a payload byte',
        (f) => ((f[STATE_HEADER_BYTES + 500]! ^= 0x80), f),
        /device state fails its CRC-32C/,
      ],
      ['the end', (f) => f.subarray(0, f.length - 1), /truncated or extended/],
      ['the header', (f) => f.subarray(0, 10), /less than its 32-byte header/],
      [
        'the major version',
        (f) => resealHeader(((f[4] = 2), f)),
        /format version 2\.0 is not 1\.x/,
      ],
      ['the length', (f) => resealHeader(((f[14] = 0x7f), f)), /impossible header/],
    ];
    for (const [what, damage, message] of cases) {
      const file = damage(encodeStateFile(STATE));
      let err: unknown;
      try {
        decodeStateFile(file, 'snapshot "s"');
      } catch (e) {
        err = e;
      }
      expect(err, what).toMatchObject({
        code: 'SNAPSHOT_CORRUPT',
        message: expect.stringMatching(message),
      });
    }
  });

  it('reads a later minor of its major, skipping a longer header', () => {
    const base = encodeStateFile(STATE);
    const longer = new Uint8Array(base.length + 16);
    longer.set(base.subarray(0, STATE_HEADER_BYTES));
    longer.set(STATE, STATE_HEADER_BYTES + 16);
    const view = new DataView(longer.buffer);
    view.setUint16(6, 7, true); // minor 7
    view.setUint16(8, STATE_HEADER_BYTES + 16, true);
    expect(decodeStateFile(resealHeader(longer), 'x')).toEqual(STATE);
  });
});

describe('state files', () => {
  let dirs: TempDirs;
  beforeEach(() => {
    dirs = makeTempDirs();
  });
  afterEach(() => dirs.cleanup());

  it('are written 0600, never over an existing file, and read back checked', () => {
    const path = join(dirs.stateDir, 'a.state');
    writeStateFile(path, STATE);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readStateFile(path, 'x')).toEqual(STATE);
    expect(() => writeStateFile(path, STATE)).toThrow(/EEXIST/);
    expect(readFileSync(path).length).toBe(STATE_HEADER_BYTES + STATE.length);
    expect(codeOf(() => readStateFile(join(dirs.stateDir, 'missing'), 'x'))).toBe(
      'SNAPSHOT_CORRUPT',
    );
  });
});
