import type { vmmStream } from '@handoff/proto';
import { describe, expect, it } from 'vitest';
import { MigrationError } from './errors.js';
import {
  checkFrame,
  FrameBuilder,
  MAX_FRAME_DATA,
  PAGE_SIZE,
  RUN_ZERO,
  type IncomingBlock,
} from './stream.js';

const table: IncomingBlock[] = [
  { pages: 16, mode: 'copy', bytes: null },
  { pages: 4, mode: 'ref', bytes: null },
];

function frame(runs: [number, number, number, number][], dataPages: number): vmmStream.PageFrame {
  return {
    runs: runs.map(([block, first, count, flags]) => ({
      block,
      firstPage: BigInt(first),
      pageCount: count,
      flags,
    })),
    data: new Uint8Array(dataPages * PAGE_SIZE),
  };
}

function rejects(f: vmmStream.PageFrame, pattern: RegExp): void {
  try {
    checkFrame(f, table);
  } catch (e) {
    expect(MigrationError.is(e, 'MIGRATION_BAD_STREAM')).toBe(true);
    expect((e as Error).message).toMatch(pattern);
    return;
  }
  throw new Error('the frame was accepted');
}

describe('checkFrame: every run is checked against the table before a write', () => {
  it('accepts data and zero runs whose data matches exactly', () => {
    const runs = checkFrame(
      frame(
        [
          [0, 0, 2, 0],
          [0, 2, 10, RUN_ZERO],
          [0, 12, 4, 0],
        ],
        6,
      ),
      table,
    );
    expect(runs.map((r) => [r.first, r.count, r.zero, r.dataOffset])).toEqual([
      [0, 2, false, 0],
      [2, 10, true, 2 * PAGE_SIZE],
      [12, 4, false, 2 * PAGE_SIZE],
    ]);
  });

  it('rejects an unknown block, a by-reference block, and pages past the end', () => {
    rejects(frame([[2, 0, 1, 0]], 1), /names block 2/);
    rejects(frame([[1, 0, 1, 0]], 1), /by reference/);
    rejects(frame([[0, 15, 2, 0]], 2), /has 16 pages/);
    rejects(frame([[0, 2 ** 40, 1, RUN_ZERO]], 0), /has 16 pages/);
  });

  it('rejects data that does not match the runs, unknown flags and empty runs', () => {
    rejects(frame([[0, 0, 2, 0]], 1), /beyond|take/);
    rejects(frame([[0, 0, 1, 0]], 2), /take 4096 data bytes but the frame carries 8192/);
    rejects(frame([[0, 0, 1, 4]], 1), /unknown flags/);
    rejects(frame([[0, 0, 0, 0]], 0), /empty/);
    rejects(frame([], 0), /no runs/);
  });
});

describe('FrameBuilder', () => {
  it('merges adjacent runs and cuts frames at 1 MiB of data', async () => {
    const frames: vmmStream.PageFrame[] = [];
    const b = new FrameBuilder((f) => {
      frames.push(f);
      return Promise.resolve();
    });
    const page = new Uint8Array(PAGE_SIZE).fill(7);
    await b.zero(0, 0, 5);
    await b.zero(0, 5, 5);
    for (let p = 10; p < 10 + 300; p++) await b.page(0, p, page);
    await b.flush();
    expect(frames).toHaveLength(2);
    expect(frames[0]!.data.length).toBe(MAX_FRAME_DATA);
    expect(frames[0]!.runs).toEqual([
      { block: 0, firstPage: 0n, pageCount: 10, flags: RUN_ZERO },
      { block: 0, firstPage: 10n, pageCount: 256, flags: 0 },
    ]);
    expect(frames[1]!.runs).toEqual([{ block: 0, firstPage: 266n, pageCount: 44, flags: 0 }]);
    const big: IncomingBlock[] = [{ pages: 512, mode: 'copy', bytes: null }];
    for (const f of frames) expect(() => checkFrame(f, big)).not.toThrow();
  });
});
