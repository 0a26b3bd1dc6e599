import type { vmmStream } from '@handoff/proto';
import { describe, expect, it } from 'vitest';
import { MigrationError } from '../../model/migration-error.js';
import {
  checkFrame,
  FrameBuilder,
  isZeroPage,
  MAX_FRAME_DATA,
  PAGE_SIZE,
  RUN_ZERO,
  type IncomingBlock,
} from './frames.js';

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

function collect(): { frames: vmmStream.PageFrame[]; b: FrameBuilder } {
  const frames: vmmStream.PageFrame[] = [];
  const b = new FrameBuilder((f) => {
    frames.push(f);
    return Promise.resolve();
  });
  return { frames, b };
}

describe('FrameBuilder: runs of data as views', () => {
  const ram = new Uint8Array(new SharedArrayBuffer(1024 * PAGE_SIZE));
  for (let i = 0; i < ram.length; i += 97) ram[i] = (i >>> 12) + 1;

  it('sends a contiguous run as a view of the memory, split at 1 MiB, without copying', async () => {
    const { frames, b } = collect();
    await b.zero(0, 0, 4);
    await b.data(0, 4, ram.subarray(4 * PAGE_SIZE, 304 * PAGE_SIZE));
    await b.flush();
    expect(frames).toHaveLength(2);
    expect(frames[0]!.runs).toEqual([
      { block: 0, firstPage: 0n, pageCount: 4, flags: RUN_ZERO },
      { block: 0, firstPage: 4n, pageCount: 256, flags: 0 },
    ]);
    expect(frames[1]!.runs).toEqual([{ block: 0, firstPage: 260n, pageCount: 44, flags: 0 }]);
    expect(frames[0]!.data.buffer).toBe(ram.buffer);
    expect(frames[0]!.data.byteOffset).toBe(4 * PAGE_SIZE);
    expect(frames[0]!.data.length).toBe(MAX_FRAME_DATA);
    expect(frames[1]!.data.buffer).toBe(ram.buffer);
    expect(frames[1]!.data.byteOffset).toBe(260 * PAGE_SIZE);
  });

  it('merges page-by-page additions of adjacent memory into one view', async () => {
    const { frames, b } = collect();
    for (let p = 10; p < 20; p++) {
      await b.page(0, p, ram.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE));
    }
    await b.flush();
    expect(frames[0]!.runs).toEqual([{ block: 0, firstPage: 10n, pageCount: 10, flags: 0 }]);
    expect(frames[0]!.data.buffer).toBe(ram.buffer);
    expect(frames[0]!.data.length).toBe(10 * PAGE_SIZE);
  });

  it('gathers short scattered runs into one buffer of their own, in order', async () => {
    const { frames, b } = collect();
    await b.data(0, 1, ram.subarray(1 * PAGE_SIZE, 3 * PAGE_SIZE));
    await b.zero(0, 3, 2);
    await b.data(0, 5, ram.subarray(5 * PAGE_SIZE, 6 * PAGE_SIZE));
    await b.data(1, 0, ram.subarray(100 * PAGE_SIZE, 101 * PAGE_SIZE));
    await b.flush();
    expect(frames).toHaveLength(1);
    const f = frames[0]!;
    expect(f.data.buffer).not.toBe(ram.buffer);
    expect(f.data.length).toBe(4 * PAGE_SIZE);
    expect(f.data.subarray(0, 2 * PAGE_SIZE)).toEqual(ram.subarray(PAGE_SIZE, 3 * PAGE_SIZE));
    expect(f.data.subarray(2 * PAGE_SIZE, 3 * PAGE_SIZE)).toEqual(
      ram.subarray(5 * PAGE_SIZE, 6 * PAGE_SIZE),
    );
    expect(f.data.subarray(3 * PAGE_SIZE)).toEqual(ram.subarray(100 * PAGE_SIZE, 101 * PAGE_SIZE));
    expect(
      checkFrame(f, [
        { pages: 16, mode: 'copy', bytes: null },
        { pages: 4, mode: 'copy', bytes: null },
      ]).map((r) => r.dataOffset),
    ).toEqual([0, 2 * PAGE_SIZE, 2 * PAGE_SIZE, 3 * PAGE_SIZE]);
  });

  it('sends a long run on its own before a run that does not continue it', async () => {
    const { frames, b } = collect();
    await b.data(0, 0, ram.subarray(0, 100 * PAGE_SIZE)); // 400 KiB: worth a view
    await b.data(0, 200, ram.subarray(200 * PAGE_SIZE, 201 * PAGE_SIZE));
    await b.flush();
    expect(frames).toHaveLength(2);
    expect(frames[0]!.data.buffer).toBe(ram.buffer);
    expect(frames[0]!.runs).toEqual([{ block: 0, firstPage: 0n, pageCount: 100, flags: 0 }]);
    expect(frames[1]!.data.buffer).toBe(ram.buffer);
    expect(frames[1]!.runs).toEqual([{ block: 0, firstPage: 200n, pageCount: 1, flags: 0 }]);
  });
});

describe('isZeroPage', () => {
  it('finds a non-zero word anywhere in the page, and nothing outside it', () => {
    const words = new Uint32Array(3 * (PAGE_SIZE / 4));
    expect(isZeroPage(words, PAGE_SIZE / 4)).toBe(true);
    for (const at of [0, 1, 2, 3, 4, 5, 6, 7, 8, 513, 1022, 1023]) {
      words.fill(0);
      words[PAGE_SIZE / 4 + at] = at === 1023 ? 0x80000000 : 1;
      expect(isZeroPage(words, PAGE_SIZE / 4), `word ${at}`).toBe(false);
      expect(isZeroPage(words, 0)).toBe(true);
      expect(isZeroPage(words, 2 * (PAGE_SIZE / 4))).toBe(true);
    }
  });
});
