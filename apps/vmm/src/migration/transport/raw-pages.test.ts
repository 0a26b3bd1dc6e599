import type { vmmStream } from '@handoff/proto';
import { describe, expect, it } from 'vitest';
import { MigrationError } from '../../model/migration-error.js';
import {
  checkFrame,
  MAX_FRAME_RUNS,
  PAGE_SIZE,
  RUN_ZERO,
  type IncomingBlock,
} from '../pages/frames.js';
import { decodeRequest } from './data-channel.js';
import {
  decodeRawPages,
  encodeRawPages,
  fitsRawPages,
  isRawPages,
  MAX_RAW_PAGES_BYTES,
} from './raw-pages.js';

/** The frame's parts as one payload, as the target receives it. */
const payloadOf = (frame: vmmStream.PageFrame): Uint8Array => Buffer.concat(encodeRawPages(frame));

/** Runs the `decode` failure of `payload` and returns its message. */
function refusal(payload: Uint8Array): string {
  try {
    decodeRawPages(payload);
  } catch (err) {
    expect(err).toBeInstanceOf(MigrationError);
    expect((err as MigrationError).code).toBe('MIGRATION_BAD_STREAM');
    return (err as Error).message;
  }
  throw new Error('the frame was accepted');
}

describe('raw page frames', () => {
  const data = new Uint8Array(new SharedArrayBuffer(3 * PAGE_SIZE)).map((_, i) => (i * 7) | 1);
  const frame: vmmStream.PageFrame = {
    runs: [
      { block: 0, firstPage: 5n, pageCount: 1, flags: 0 },
      { block: 2, firstPage: 0xffff_fff0n, pageCount: 300, flags: RUN_ZERO },
      { block: 1, firstPage: 17n, pageCount: 2, flags: 0 },
    ],
    data,
  };

  it('round-trip: the runs come back equal and the data is the page bytes, uncopied', () => {
    const parts = encodeRawPages(frame);
    expect(parts).toHaveLength(2);
    expect(parts[1]).toBe(data); // written from the guest memory view itself
    const payload = payloadOf(frame);
    expect(isRawPages(payload)).toBe(true);
    const back = decodeRawPages(payload);
    expect(back.runs).toEqual(frame.runs);
    expect(Buffer.from(back.data).equals(Buffer.from(data))).toBe(true);
    expect(back.data.buffer).toBe(payload.buffer); // a view of the received bytes
    // The data channel's request decoder takes both forms.
    const req = decodeRequest(payload);
    expect(req.frame?.$case === 'pages' && req.frame.value.runs).toEqual(frame.runs);
  });

  it('carries a frame of zero runs only with no data part', () => {
    const zeros: vmmStream.PageFrame = {
      runs: [{ block: 0, firstPage: 0n, pageCount: 1 << 20, flags: RUN_ZERO }],
      data: new Uint8Array(0),
    };
    expect(encodeRawPages(zeros)).toHaveLength(1);
    const back = decodeRawPages(payloadOf(zeros));
    expect(back.runs).toEqual(zeros.runs);
    expect(back.data.length).toBe(0);
  });

  it('leaves frames with values past 32 bits to the protobuf form', () => {
    expect(fitsRawPages(frame)).toBe(true);
    const far = (r: Partial<vmmStream.PageRun>): vmmStream.PageFrame => ({
      runs: [{ block: 0, firstPage: 0n, pageCount: 1, flags: 0, ...r }],
      data: new Uint8Array(PAGE_SIZE),
    });
    expect(fitsRawPages(far({ firstPage: 2n ** 32n }))).toBe(false);
    expect(fitsRawPages(far({ firstPage: -1n }))).toBe(false);
    expect(fitsRawPages(far({ pageCount: 2 ** 32 }))).toBe(false);
  });

  it('refuses broken framing: truncated, reserved bits, run counts, a run table past the end', () => {
    const good = payloadOf(frame);
    expect(refusal(good.subarray(0, 5))).toMatch(/5 bytes, shorter than its header/);
    const reserved = Uint8Array.from(good);
    reserved[2] = 1;
    expect(refusal(reserved)).toMatch(/reserved bytes are not zero/);
    const none = Uint8Array.from(good);
    none.fill(0, 4, 8);
    expect(refusal(none)).toMatch(/0 runs/);
    const many = Uint8Array.from(good);
    new DataView(many.buffer).setUint32(4, MAX_FRAME_RUNS + 1, true);
    expect(refusal(many)).toMatch(/4097 runs/);
    // The run count lies: 3 runs claimed, the frame ends inside the second.
    expect(refusal(good.subarray(0, 8 + 16 + 4))).toMatch(/3 runs need 56 bytes; the frame has 28/);
    expect(refusal(new Uint8Array(MAX_RAW_PAGES_BYTES + 1))).toMatch(/max/);
  });

  describe('checked against the block table like any page frame', () => {
    const blocks: IncomingBlock[] = [0, 1, 2].map(() => ({
      pages: 64,
      mode: 'copy',
      bytes: null,
    }));
    const check = (f: vmmStream.PageFrame): string => {
      try {
        checkFrame(decodeRawPages(payloadOf(f)), blocks);
      } catch (err) {
        expect((err as MigrationError).code).toBe('MIGRATION_BAD_STREAM');
        return (err as Error).message;
      }
      return 'accepted';
    };
    const page = new Uint8Array(PAGE_SIZE).fill(1);

    it('accepts a frame that fits', () => {
      const f = { runs: [{ block: 1, firstPage: 63n, pageCount: 1, flags: 0 }], data: page };
      expect(check(f)).toBe('accepted');
    });

    it('refuses an out-of-range page, an unknown block and unknown flags', () => {
      expect(
        check({ runs: [{ block: 1, firstPage: 64n, pageCount: 1, flags: 0 }], data: page }),
      ).toMatch(/covers pages 64\.\.\+1 of block 1, which has 64 pages/);
      expect(
        check({ runs: [{ block: 0, firstPage: 60n, pageCount: 8, flags: RUN_ZERO }], data: page }),
      ).toMatch(/covers pages 60\.\.\+8/);
      expect(
        check({ runs: [{ block: 3, firstPage: 0n, pageCount: 1, flags: 0 }], data: page }),
      ).toMatch(/names block 3; the table has 3/);
      expect(
        check({ runs: [{ block: 0, firstPage: 0n, pageCount: 1, flags: 4 }], data: page }),
      ).toMatch(/unknown flags 0x4/);
    });

    it('refuses data lengths that lie about the runs', () => {
      const run = { block: 0, firstPage: 0n, pageCount: 2, flags: 0 };
      expect(check({ runs: [run], data: page })).toMatch(/needs data beyond the 4096 bytes/);
      expect(
        check({ runs: [{ ...run, pageCount: 1 }], data: new Uint8Array(PAGE_SIZE + 1) }),
      ).toMatch(/the runs take 4096 data bytes but the frame carries 4097/);
    });
  });
});
