import { PageBitmap } from '@handoff/bitmap';
import type { vmmStream } from '@handoff/proto';
import { describe, expect, it, vi } from 'vitest';
import type { RamBacking } from '../../ram/index.js';
import { openPrivate } from '../../ram/private.js';
import type { RamContext } from '../../ram/backing.js';
import { PageReceiver } from './page-receiver.js';
import { PageSender } from './page-sender.js';
import { PAGE_SIZE, RUN_ZERO, type IncomingBlock } from './frames.js';

const PAGES = 64;

function backing(
  ranges: (readonly [number, number])[] | null | undefined,
  fill: (bytes: Uint8Array) => void,
): RamBacking {
  const buffer = new SharedArrayBuffer(PAGES * PAGE_SIZE);
  fill(new Uint8Array(buffer));
  return {
    spec: { id: 'ram0', guestBase: 0, size: PAGES * PAGE_SIZE, backend: 'shared', region: 'r' },
    buffer,
    regionRef: null,
    zeroed: false,
    close: () => Promise.resolve(),
    abandon: () => undefined,
    ...(ranges !== undefined ? { dataRanges: () => ranges } : {}),
  } as RamBacking;
}

async function bulk(b: RamBacking): Promise<{ frames: vmmStream.PageFrame[]; s: PageSender }> {
  const frames: vmmStream.PageFrame[] = [];
  const s = new PageSender((f) => {
    frames.push(f);
    return Promise.resolve();
  });
  await s.bulk(0, b, 'copy', new PageBitmap(PAGES), false);
  return { frames, s };
}

const runsOf = (frames: vmmStream.PageFrame[]): [number, number, number][] =>
  frames.flatMap((f) =>
    f.runs.map((r): [number, number, number] => [Number(r.firstPage), r.pageCount, r.flags]),
  );

describe('PageSender.bulk of a block whose untouched pages are not known zero', () => {
  // Pages 0-1 and 40-63 are "holes"; their bytes are garbage that must never be read.
  const fill = (u: Uint8Array): void => {
    u.fill(0xee, 0, 2 * PAGE_SIZE);
    u.fill(0xee, 40 * PAGE_SIZE);
    u.fill(1, 2 * PAGE_SIZE, 10 * PAGE_SIZE); // data
    // 10..19 zero (read, found zero)
    u.fill(2, 20 * PAGE_SIZE, 40 * PAGE_SIZE); // data
  };

  it('sends pages in holes of the backing file as zero runs without reading them', async () => {
    const b = backing(
      [
        [2 * PAGE_SIZE, 20 * PAGE_SIZE],
        [20 * PAGE_SIZE, 40 * PAGE_SIZE - 100], // partial page: rounded out
      ],
      fill,
    );
    const { frames, s } = await bulk(b);
    expect(runsOf(frames)).toEqual([
      [0, 2, RUN_ZERO],
      [2, 8, 0],
      [10, 10, RUN_ZERO],
      [20, 20, 0],
      [40, 24, RUN_ZERO],
    ]);
    expect(s.counts).toEqual({ zeroPages: 2 + 24, duplicate: 10, normal: 28 });
    const data = frames.flatMap((f) => [...f.data]);
    expect(data.every((x) => x === 1 || x === 2)).toBe(true);
  });

  it('reads every page when the backing has no hole map (or cannot tell)', async () => {
    for (const ranges of [undefined, null]) {
      const { frames, s } = await bulk(backing(ranges, fill));
      expect(runsOf(frames)).toEqual([
        [0, 10, 0],
        [10, 10, RUN_ZERO],
        [20, 44, 0],
      ]);
      expect(s.counts).toEqual({ zeroPages: 0, duplicate: 10, normal: 54 });
    }
  });

  it('sends a block that is all hole as one zero run', async () => {
    const { frames, s } = await bulk(backing([], (u) => u.fill(0xee)));
    expect(runsOf(frames)).toEqual([[0, PAGES, RUN_ZERO]]);
    expect(s.counts.zeroPages).toBe(PAGES);
  });
});

describe('PageSender maps long ranges in before reading them', () => {
  it('populates data ranges in 4 MiB chunks for reading, never a hole, never a short range', async () => {
    const pages = 2048;
    const buffer = new SharedArrayBuffer(pages * PAGE_SIZE);
    new Uint8Array(buffer).fill(3, 0, 1500 * PAGE_SIZE);
    const prefault = vi.fn();
    const b = {
      spec: { id: 'ram0', guestBase: 0, size: pages * PAGE_SIZE, backend: 'shared', region: 'r' },
      buffer,
      regionRef: null,
      zeroed: false,
      close: () => Promise.resolve(),
      abandon: () => undefined,
      dataRanges: () => [
        [0, 1500 * PAGE_SIZE],
        [1600 * PAGE_SIZE, 1610 * PAGE_SIZE],
      ],
      prefault,
    } as RamBacking;
    const s = new PageSender(() => Promise.resolve());
    await s.bulk(0, b, 'copy', new PageBitmap(pages), false);
    expect(prefault.mock.calls).toEqual([
      [0, 1024 * PAGE_SIZE, 'read'],
      [1024 * PAGE_SIZE, 476 * PAGE_SIZE, 'read'],
    ]);
    expect(s.counts).toEqual({ normal: 1500, duplicate: 10, zeroPages: 538 });
  });
});

describe('PageReceiver pre-faults the pages a data run fills', () => {
  it('asks the backing to fault in each data run before writing it, never a zero run', async () => {
    const bytes = new Uint8Array(PAGES * PAGE_SIZE);
    const prefault = vi.fn();
    const blocks: IncomingBlock[] = [{ pages: PAGES, mode: 'copy', bytes, backing: { prefault } }];
    const rx = new PageReceiver(blocks, new PageBitmap(PAGES));
    const data = new Uint8Array(3 * PAGE_SIZE).fill(9);
    await rx.apply({
      runs: [
        { block: 0, firstPage: 4n, pageCount: 2, flags: 0 },
        { block: 0, firstPage: 6n, pageCount: 10, flags: RUN_ZERO },
        { block: 0, firstPage: 30n, pageCount: 1, flags: 0 },
      ],
      data,
    });
    expect(prefault.mock.calls).toEqual([
      [4 * PAGE_SIZE, 2 * PAGE_SIZE],
      [30 * PAGE_SIZE, PAGE_SIZE],
    ]);
    expect(bytes[4 * PAGE_SIZE]).toBe(9);
    expect(bytes[31 * PAGE_SIZE - 1]).toBe(9);
  });
});

describe('PageReceiver writes through the block file where it can', () => {
  it('pwrites data runs and punches zero runs over filled pages; the mapping is not touched', async () => {
    const bytes = new Uint8Array(PAGES * PAGE_SIZE);
    const write = vi.fn(() => Promise.resolve());
    const zero = vi.fn();
    const prefault = vi.fn();
    const blocks: IncomingBlock[] = [
      { pages: PAGES, mode: 'copy', bytes, backing: { write, zero, prefault } },
    ];
    const rx = new PageReceiver(blocks, new PageBitmap(PAGES));
    const data = new Uint8Array(4 * PAGE_SIZE).map((_, i) => (i >> 12) + 1);
    await rx.apply({
      runs: [
        { block: 0, firstPage: 8n, pageCount: 4, flags: 0 },
        { block: 0, firstPage: 20n, pageCount: 4, flags: RUN_ZERO }, // never filled: nothing
      ],
      data,
    });
    await rx.drain();
    expect(write.mock.calls).toHaveLength(1);
    expect((write.mock.calls[0] as unknown[])[0]).toBe(8 * PAGE_SIZE);
    expect((write.mock.calls[0] as unknown[])[1]).toEqual(data);
    expect(zero).not.toHaveBeenCalled();
    await rx.apply({
      runs: [{ block: 0, firstPage: 6n, pageCount: 4, flags: RUN_ZERO }],
      data: new Uint8Array(0),
    });
    await rx.drain();
    expect(zero.mock.calls).toEqual([[8 * PAGE_SIZE, 2 * PAGE_SIZE]]); // only pages 8, 9 were filled
    expect(prefault).not.toHaveBeenCalled();
    expect(bytes.every((x) => x === 0)).toBe(true);
  });
});

describe('PageReceiver queues file writes in stream order', () => {
  it('lands a page sent twice with its later contents, and waits before running out of room', async () => {
    const landed: [number, number][] = []; // [offset, first byte] in the order writes finished
    let release: (() => void) | undefined;
    const write = vi.fn(async (offset: number, data: Uint8Array) => {
      const first = data[0]!;
      if (first === 1) await new Promise<void>((r) => (release = r)); // the first write is slow
      landed.push([offset, first]);
    });
    const zero = vi.fn((offset: number) => void landed.push([offset, 0]));
    const blocks: IncomingBlock[] = [
      {
        pages: PAGES,
        mode: 'copy',
        bytes: new Uint8Array(PAGES * PAGE_SIZE),
        backing: { write, zero },
      },
    ];
    const rx = new PageReceiver(blocks, null);
    const frame = (v: number, flags = 0): Parameters<PageReceiver['apply']>[0] => ({
      runs: [{ block: 0, firstPage: 3n, pageCount: 1, flags }],
      data: flags === 0 ? new Uint8Array(PAGE_SIZE).fill(v) : new Uint8Array(0),
    });
    await rx.apply(frame(1));
    await rx.apply(frame(2));
    await rx.apply(frame(0, RUN_ZERO));
    await rx.apply(frame(4));
    expect(landed).toEqual([]); // all behind the slow first write
    const drained = rx.drain();
    release!();
    await drained;
    expect(landed).toEqual([
      [3 * PAGE_SIZE, 1],
      [3 * PAGE_SIZE, 2],
      [3 * PAGE_SIZE, 0],
      [3 * PAGE_SIZE, 4],
    ]);
  });

  it('fails the next apply and drain with the error of a failed write', async () => {
    const write = vi.fn(() => Promise.reject(new Error('EIO')));
    const blocks: IncomingBlock[] = [
      { pages: PAGES, mode: 'copy', bytes: new Uint8Array(PAGES * PAGE_SIZE), backing: { write } },
    ];
    const rx = new PageReceiver(blocks, null);
    const f = {
      runs: [{ block: 0, firstPage: 0n, pageCount: 1, flags: 0 }],
      data: new Uint8Array(PAGE_SIZE),
    };
    await rx.apply(f);
    await expect(rx.drain()).rejects.toThrow('EIO');
    await expect(rx.apply(f)).rejects.toThrow('EIO');
  });
});

describe('private RAM: hole map, pre-fault, write and zero through the memfd', () => {
  const ctx = {
    vmName: 'pt',
    logger: { debug: () => undefined, warn: () => undefined },
  } as unknown as RamContext;

  it('reports written pages as data, and pre-faulting allocates without changing bytes', async () => {
    const b = openPrivate(
      { id: 'ram0', guestBase: 0, size: PAGES * PAGE_SIZE, backend: 'private', region: '' },
      ctx,
    );
    try {
      expect(b.dataRanges!()).toEqual([]);
      const u = new Uint8Array(b.buffer);
      u[5 * PAGE_SIZE + 1] = 7;
      expect(b.dataRanges!()).toEqual([[5 * PAGE_SIZE, 6 * PAGE_SIZE]]);
      b.prefault!(10 * PAGE_SIZE, 4 * PAGE_SIZE);
      const after = b.dataRanges!();
      // populate-write allocates (Linux 5.14+); older kernels leave the holes.
      expect([
        [[5 * PAGE_SIZE, 6 * PAGE_SIZE]],
        [
          [5 * PAGE_SIZE, 6 * PAGE_SIZE],
          [10 * PAGE_SIZE, 14 * PAGE_SIZE],
        ],
      ]).toContainEqual(after);
      expect(u.subarray(10 * PAGE_SIZE, 14 * PAGE_SIZE).every((x) => x === 0)).toBe(true);
      // write() lands in the file and shows through the mapping; zero() punches it out again.
      await b.write!(20 * PAGE_SIZE, new Uint8Array(2 * PAGE_SIZE).fill(5));
      expect(u[20 * PAGE_SIZE]).toBe(5);
      expect(u[22 * PAGE_SIZE - 1]).toBe(5);
      b.zero!(20 * PAGE_SIZE, PAGE_SIZE);
      // (checked before reading page 20: reading a hole through the mapping allocates it)
      expect(b.dataRanges!()).toContainEqual([21 * PAGE_SIZE, 22 * PAGE_SIZE]);
      expect(
        (b.dataRanges!() ?? []).some(([s, e]) => s <= 20 * PAGE_SIZE && e > 20 * PAGE_SIZE),
      ).toBe(false);
      expect(u[20 * PAGE_SIZE]).toBe(0);
      expect(u[21 * PAGE_SIZE]).toBe(5);
    } finally {
      await b.close();
    }
    expect(b.dataRanges!()).toBeNull();
  });
});
