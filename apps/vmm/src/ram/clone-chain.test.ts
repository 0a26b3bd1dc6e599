import {
  closeSync,
  ftruncateSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { PageBitmap } from '@handoff/bitmap';
import { memstore as pb } from '@handoff/proto';
import { afterAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '../memory/pages.js';
import { VmmError } from '../model/vmm-error.js';
import { chainDataRanges, cloneChainOf, mapCloneChain } from './clone-chain.js';
import { bitmapToLayerPages, layerPagesToBitmap } from './layer-pages.js';

const PAGES = 20;
const SIZE = PAGES * PAGE_SIZE;
const files: string[] = [];
afterAll(() => {
  for (const f of files) rmSync(f, { force: true });
});

/** A sparse file of the block's size whose page p holds `mark` + p in every byte (else holes). */
function regionFile(tag: string, mark: number, pages: readonly number[] | 'all'): string {
  const path = `/dev/shm/handoff-chain-test-${process.pid}-${tag}`;
  files.push(path);
  const list = pages === 'all' ? Array.from({ length: PAGES }, (_, p) => p) : pages;
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, SIZE);
    for (const p of list) {
      writeSync(fd, new Uint8Array(PAGE_SIZE).fill((mark + p) & 0xff), 0, PAGE_SIZE, p * PAGE_SIZE);
    }
  } finally {
    closeSync(fd);
  }
  return path;
}

/** True when this process maps none of the test's files. */
function nothingMapped(): boolean {
  const maps = readFileSync('/proc/self/maps', 'utf8');
  return files.every((f) => !maps.includes(f));
}

function region(id: string, path: string, size = SIZE): pb.Region {
  return pb.Region.fromPartial({
    id,
    name: `${id}-ram0`,
    path,
    identity: `i-${id}`,
    size: BigInt(size),
  });
}

function layer(id: string, path: string, pages: readonly number[] | null): pb.CloneLayer {
  return {
    regionId: id,
    path,
    identity: `i-${id}`,
    pages:
      pages === null ? new Uint8Array(0) : bitmapToLayerPages(PageBitmap.fromIndices(PAGES, pages)),
  };
}

function pageMarks(buffer: SharedArrayBuffer): number[] {
  const ram = new Uint8Array(buffer);
  return Array.from({ length: PAGES }, (_, p) => ram[p * PAGE_SIZE + 5]!);
}

function refused(fn: () => unknown, text: RegExp): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(VmmError.is(thrown, 'VMM_SNAPSHOT_INVALID'), String(thrown)).toBe(true);
  expect((thrown as Error).message).toMatch(text);
}

describe('layer pages', () => {
  it('round-trips LSB-first bitmaps and refuses other lengths and bits past the block', () => {
    const b = PageBitmap.fromIndices(PAGES, [0, 3, 8, 9, 10, 11, 12, 13, 14, 15, 19]);
    const bytes = bitmapToLayerPages(b);
    expect(Array.from(bytes)).toEqual([0b1001, 0xff, 0b1000]);
    const back = layerPagesToBitmap(bytes, PAGES);
    expect(back.bitmap?.toIndices()).toEqual(b.toIndices());
    expect(layerPagesToBitmap(new Uint8Array(4), PAGES).bitmap).toBeNull();
    const past = layerPagesToBitmap(Uint8Array.of(0, 0, 0x10), PAGES);
    expect(past.bitmap).toBeNull();
  });
});

describe('clone chain', () => {
  const root = regionFile('root', 0x10, 'all');
  const l1 = regionFile('l1', 0x40, [2, 3, 7]);
  const l2 = regionFile('l2', 0x80, [3, 4, 19]);

  it('maps the root whole and each layer over it: every page shows the topmost level holding it', () => {
    const layers = [
      layer('r0', root, null),
      layer('r1', l1, [2, 3, 7]),
      layer('r2', l2, [3, 4, 19]),
    ];
    const chain = cloneChainOf(region('r2', l2), layers, SIZE, 'block', 'VMM_SNAPSHOT_INVALID', [
      'i-r0',
      'i-r1',
      'i-r2',
    ]);
    const m = mapCloneChain(chain, SIZE, 'block', 'VMM_SNAPSHOT_INVALID');
    const want = Array.from({ length: PAGES }, (_, p) => 0x10 + p);
    want[2] = 0x42;
    want[7] = 0x47;
    want[3] = 0x83;
    want[4] = 0x84;
    want[19] = 0x80 + 19;
    expect(pageMarks(m.buffer)).toEqual(want);
    // a write stays in the clone
    new Uint8Array(m.buffer)[3 * PAGE_SIZE + 5] = 1;
    const again = mapCloneChain(chain, SIZE, 'block', 'VMM_SNAPSHOT_INVALID');
    expect(pageMarks(again.buffer)).toEqual(want);
    again.close();
    m.close();
    expect(chainDataRanges(chain, SIZE)).toEqual([[0, SIZE]]);
  });

  it('treats an empty chain as the attached region alone, and unions sparse data ranges', () => {
    const sparse = regionFile('sparse', 0x40, [2, 3, 7]); // read whole below: reads allocate holes
    const layered = cloneChainOf(
      region('r2', l2),
      [layer('r1', sparse, null), layer('r2', l2, [3, 4, 19])],
      SIZE,
      'block',
      'VMM_INVALID_SPEC',
    );
    expect(chainDataRanges(layered, SIZE)).toEqual([
      [2 * PAGE_SIZE, 5 * PAGE_SIZE],
      [7 * PAGE_SIZE, 8 * PAGE_SIZE],
      [19 * PAGE_SIZE, 20 * PAGE_SIZE],
    ]);
    const chain = cloneChainOf(region('r1', sparse), [], SIZE, 'block', 'VMM_INVALID_SPEC');
    expect(chain).toHaveLength(1);
    const m = mapCloneChain(chain, SIZE, 'block', 'VMM_INVALID_SPEC');
    expect(pageMarks(m.buffer)[7]).toBe(0x47);
    expect(pageMarks(m.buffer)[0]).toBe(0);
    m.close();
  });

  it('refuses chains that do not fit the block, leaving nothing mapped', () => {
    const ok = [layer('r0', root, null), layer('r1', l1, [2])];
    const of = (layers: pb.CloneLayer[], ids?: string[]) => () =>
      cloneChainOf(region('r1', l1), layers, SIZE, 'block', 'VMM_SNAPSHOT_INVALID', ids);
    refused(of([layer('r0', root, null), layer('rx', l1, [2])]), /not the attached region/);
    refused(of([layer('r0', root, [1]), ok[1]!]), /root .* a page bitmap/);
    refused(
      of([ok[0]!, { ...ok[1]!, pages: new Uint8Array(2) }]),
      /page bitmap is 2 bytes, a block of 20 pages needs 3/,
    );
    refused(of([ok[0]!, { ...ok[1]!, pages: Uint8Array.of(0, 0, 0xf0) }]), /past the block's last/);
    refused(of([layer('r1', root, null), ok[1]!]), /twice/);
    refused(of(ok, ['i-r0', 'i-other']), /recorded i-other .*replaced/);
    refused(of(ok, ['i-r1']), /2 levels, the snapshot's chain 1/);

    const short = regionFile('short', 0x20, [0]);
    writeFileSync(short, new Uint8Array(4 * PAGE_SIZE));
    const shortTop = cloneChainOf(
      region('r9', short),
      [layer('r0', root, null), layer('r9', short, [1, 12])],
      SIZE,
      'block',
      'VMM_SNAPSHOT_INVALID',
    );
    refused(
      () => mapCloneChain(shortTop, SIZE, 'block', 'VMM_SNAPSHOT_INVALID'),
      /holds 16384 bytes, the block is/,
    );
    const missing = cloneChainOf(
      region('r8', '/dev/shm/handoff-chain-test-missing'),
      [layer('r0', root, null), layer('r8', '/dev/shm/handoff-chain-test-missing', [1])],
      SIZE,
      'block',
      'VMM_SNAPSHOT_INVALID',
    );
    refused(
      () => mapCloneChain(missing, SIZE, 'block', 'VMM_SNAPSHOT_INVALID'),
      /cannot map region r8/,
    );
    const shortRoot = cloneChainOf(region('r9', short), [], SIZE, 'block', 'VMM_SNAPSHOT_INVALID');
    refused(
      () => mapCloneChain(shortRoot, SIZE, 'block', 'VMM_SNAPSHOT_INVALID'),
      /cannot map region r9/,
    );
    expect(nothingMapped()).toBe(true);
  });
});
