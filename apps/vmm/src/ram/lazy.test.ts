import { PresentMap, PresentState, presentMapBytes, PRESENT_HEADER_WORDS } from '@handoff/bitmap';
import { memstore as msPb } from '@handoff/proto';
import { createLogger } from '@handoff/service';
import { mapFile } from '@handoff/shm';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { asm, bytesOf, li } from '../cpu/test-asm.js';
import type { PageCalls } from '../leases/lease-channel.js';
import { createMachine } from '../machine/machine.js';
import { PageRequests } from '../vcpu/page-requests.js';
import type { RamContext } from './backing.js';
import { mapLazy, openLazy, startLazyFill } from './lazy.js';

type Callback = (err: unknown, res?: unknown) => void;
/** 128 MiB: the present map is two pages long, so a bit in its second page is tested too. */
const SIZE = 128 * 1024 * 1024;
const PAGES = SIZE / 4096;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/**
 * A lazy region as memstore keeps it on tmpfs: a sparse region file and a present map file of
 * which only the header was written (the rest holes), with memstore's writer view of the map.
 * Its FetchPages answerer writes the asked pages (each page's bytes: its page number) into the
 * file through the file, then marks them present, as memstore's fill does.
 */
function lazyRegion() {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = mkdtempSync(join(base, 'handoff-lazy-'));
  dirs.push(dir);
  const path = join(dir, 'region.mem');
  const presentPath = `${path}.present`;
  closeSync(openSync(path, 'w'));
  const regionFile = mapFile(path, { sharing: 'shared', size: SIZE });
  regionFile.close();
  const mapBytes = presentMapBytes(PAGES);
  expect(mapBytes).toBeGreaterThan(4096);
  // The header only, through the file: the bits' pages stay holes until memstore sets a bit.
  const header = new Int32Array(PRESENT_HEADER_WORDS);
  PresentMap.initialize(new SharedArrayBuffer(mapBytes), PAGES)
    .words.subarray(0, 16)
    .forEach((w, k) => (header[k] = w));
  const fd = openSync(presentPath, 'w');
  writeSync(fd, new Uint8Array(header.buffer), 0, header.byteLength, 0);
  closeSync(fd);
  const writer = mapFile(presentPath, { sharing: 'shared', size: mapBytes });
  const map = PresentMap.open(writer.buffer, PAGES);
  map.setState(PresentState.Filling);
  const asked: [number, number][] = [];
  const pages: PageCalls = {
    fetchPages: (req) => {
      const first = Number(req.firstPage);
      asked.push([first, req.pageCount]);
      const file = openSync(path, 'r+');
      for (let p = first; p < first + req.pageCount; p++) {
        const bytes = new Uint8Array(4096);
        new DataView(bytes.buffer).setUint32(0, p, true);
        writeSync(file, bytes, 0, 4096, p * 4096);
      }
      closeSync(file);
      map.markPresent(first, req.pageCount);
      return Promise.resolve({ waitedUs: 0n });
    },
    startLazyFill: () => Promise.reject(new Error('not in this test')),
  };
  const calls: string[] = [];
  const client = {
    acquireLease(req: { holder: string }, _md: unknown, _opts: unknown, cb: Callback) {
      calls.push(`acquire:${req.holder}`);
      cb(null, { lease: { holder: req.holder, epoch: 4n } });
    },
    releaseLease(req: { epoch: bigint }, _md: unknown, _opts: unknown, cb: Callback) {
      calls.push(`release:${req.epoch}`);
      cb(null, {});
    },
  };
  const ctx = {
    vmmId: 'vmm-b',
    vmName: 'kv',
    memstore: () => client,
    memstoreAddress: '127.0.0.1:1',
    deadlineMs: 1000,
    logger: createLogger({ name: 'test', level: 'silent', format: 'json' }),
  } as unknown as RamContext;
  const region = msPb.Region.fromPartial({
    id: 'r9',
    name: 'kv-ram0',
    path,
    size: BigInt(SIZE),
    lazy: { presentPath, totalPages: BigInt(PAGES) },
  });
  const spec = {
    id: 'ram0',
    guestBase: 0x8000_0000,
    size: SIZE,
    backend: 'shared' as const,
    region: 'kv-ram0',
  };
  return { ctx, region, spec, calls, map, writer, pages, asked, presentPath };
}

describe('lazy RAM blocks (ram/lazy.ts)', () => {
  it('takes the lease, maps the region and its present map; fetched pages show in both', async () => {
    const s = lazyRegion();
    const ram = await openLazy(s.spec, s.region, s.ctx, { pages: s.pages });
    expect(s.calls).toEqual(['acquire:vmm-b/kv']);
    const lazy = ram.lazy!;
    expect(lazy.map.pages).toBe(PAGES);
    expect(lazy.map.state).toBe(PresentState.Filling);
    const far = PAGES - 3; // its bit lies in the map's second page, a hole when mapped
    expect(lazy.map.isPresent(far)).toBe(false);
    await lazy.fetchPages(far, 2);
    expect(s.asked).toEqual([[far, 2]]);
    expect(lazy.map.isPresent(far)).toBe(true);
    expect(lazy.map.isPresent(far + 1)).toBe(true);
    expect(lazy.map.isPresent(far + 2)).toBe(false);
    expect(new DataView(ram.buffer).getUint32(far * 4096, true)).toBe(far);
    s.map.setState(PresentState.Complete);
    expect(lazy.map.state).toBe(PresentState.Complete);
    expect(ram.dataRanges?.()).toBeNull(); // pages not arrived are not zero
    await ram.close();
    expect(s.calls).toEqual(['acquire:vmm-b/kv', 'release:4']);
    s.writer.close();
  });

  it('refuses a region that is not lazy, or a present map that is not one', async () => {
    const s = lazyRegion();
    const plain = msPb.Region.fromPartial({ ...s.region, lazy: undefined });
    await expect(openLazy(s.spec, plain, s.ctx, { pages: s.pages })).rejects.toMatchObject({
      code: 'VMM_INVALID_SPEC',
    });
    expect(s.calls).toEqual([]); // nothing taken
    s.writer.close();
    const fd = openSync(s.presentPath, 'r+');
    writeSync(fd, new Uint8Array(4), 0, 4, 0); // the magic
    closeSync(fd);
    expect(() => mapLazy(s.spec, s.region, 4, s.ctx, { pages: s.pages })).toThrow(
      /present map .* is unusable \(not a present map/,
    );
  });

  it('a guest on the lazy block waits for a page, the host fetches it, the guest reads it', async () => {
    const s = lazyRegion();
    const ram = mapLazy(s.spec, s.region, 4, s.ctx, { pages: s.pages });
    const lazy = ram.lazy!;
    const m = createMachine({
      ramSize: SIZE,
      timeMode: 'deterministic',
      ram: { bytes: ram.buffer, present: PresentMap.open(lazy.presentBuffer, PAGES) },
    });
    const target = 0x8000_0000 + 300 * 4096;
    await lazy.fetchPages(0, 1); // the code page
    m.memory.writeBytes(
      0x8000_0000,
      bytesOf([...li(10, target), asm.lw(11, 10, 0), asm.jal(0, 0)]),
    );
    m.cpu.reset(0x8000_0000);
    let rung = 0;
    const requests = new PageRequests({
      map: lazy.map,
      fetch: lazy.fetchPages,
      wake: () => rung++,
    });
    expect(m.run(100)).toBe('page');
    requests.onMessage({
      t: 'page-wait',
      block: 'ram0',
      page: m.cpu.missingPage,
      sourcePaused: false,
    });
    await new Promise((r) => setImmediate(r));
    expect(rung).toBe(1);
    expect(s.asked.at(-1)).toEqual([300, 16]);
    m.run(10);
    expect(m.cpu.x[11]).toBe(300);
    await ram.close();
    s.writer.close();
  });

  it('starts the fill through the page calls, or over gRPC without them', async () => {
    const s = lazyRegion();
    const asked: string[] = [];
    const pages = {
      ...s.pages,
      startLazyFill: (req: { region?: unknown }) => {
        asked.push(`channel:${JSON.stringify(req.region)}`);
        return Promise.resolve({ region: msPb.Region.fromPartial({ id: 'r9', name: 'kv-ram0' }) });
      },
    };
    const withPages = { ...s.ctx, pages: () => pages } as RamContext;
    expect((await startLazyFill(withPages, 'r9')).name).toBe('kv-ram0');
    expect(asked).toEqual([
      `channel:${JSON.stringify({ selector: { $case: 'id', value: 'r9' } })}`,
    ]);
    const grpcCtx = {
      ...s.ctx,
      memstore: () => ({
        startLazyFill: (_req: unknown, _md: unknown, _opts: unknown, cb: Callback) =>
          cb(null, { region: { id: 'r9', name: 'over-grpc' } }),
      }),
    } as unknown as RamContext;
    expect((await startLazyFill(grpcCtx, 'r9')).name).toBe('over-grpc');
    s.writer.close();
  });
});
