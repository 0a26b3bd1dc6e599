import { PresentMap, PresentState, presentMapBytes } from '@handoff/bitmap';
import { createLogger } from '@handoff/service';
import { afterAll, describe, expect, it } from 'vitest';
import { asm, elfOf, li } from '../cpu/test-asm.js';
import type { GuestImage } from '../guests/catalog.js';
import type { RamBlockSpec, VmSpec } from '../model/types.js';
import type { RamBacking } from '../ram/index.js';
import { MAIN_BLOCK_ID, RAM_WINDOW } from '../vm/spec.js';
import { Vm } from '../vm/vm.js';
import { VcpuThreadPool } from './pool.js';
import { vcpuWorkerUrl } from './worker-url.js';

const RAM_SIZE = 1 << 20;
const PAGES = RAM_SIZE >>> 12;
const DATA_PAGE = 40;
const [t0, t1, s0] = [5, 6, 8];

const SPIN = elfOf([asm.addi(t0, t0, 1), asm.jal(0, -4)]);
/** Reads a word of DATA_PAGE, stores it + 1 after it, then spins. */
const READER = elfOf([
  ...li(s0, RAM_WINDOW.base + DATA_PAGE * 4096),
  asm.lw(t1, s0, 0),
  asm.addi(t1, t1, 1),
  asm.sw(t1, s0, 4),
  asm.addi(t0, t0, 1),
  asm.jal(0, -4),
]);

const threads = new VcpuThreadPool(vcpuWorkerUrl(), { threads: 1, spare: 0, maxThreads: 1 });
afterAll(() => threads.close());
const logger = createLogger({ name: 'pool-lazy-test', level: 'silent', format: 'json' });

function ramOf(name: string): { spec: VmSpec; main: RamBlockSpec } {
  const main: RamBlockSpec = {
    id: MAIN_BLOCK_ID,
    guestBase: RAM_WINDOW.base,
    size: RAM_SIZE,
    backend: 'shared',
    region: `${name}-ram0`,
  };
  return { spec: { name, guest: 'test', ram: [main], args: {} }, main };
}

async function boot(name: string, elf: Uint8Array, ram: RamBacking, spec: VmSpec): Promise<Vm> {
  const guest = { name: 'test', bytes: elf } as unknown as GuestImage;
  const vm = await Vm.boot(spec, [ram], guest, { vmmId: 'vmm-test', logger, threads });
  await vm.start();
  return vm;
}

const until = async (what: string, ok: () => boolean, ms = 5000): Promise<void> => {
  const end = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('a lazy VM on the real vCPU pool', () => {
  it('parks on a missing page while its thread-mate runs; the fetched page resumes it', async () => {
    const { spec, main } = ramOf('lazy');
    const buffer = new SharedArrayBuffer(RAM_SIZE);
    const presentBuffer = new SharedArrayBuffer(presentMapBytes(PAGES));
    const map = PresentMap.initialize(presentBuffer, PAGES);
    map.setState(PresentState.Filling);
    map.markPresent(0, 1); // the code
    const asked: [number, number][] = [];
    let answer!: () => void;
    const fetchPages = (first: number, count: number): Promise<void> => {
      asked.push([first, count]);
      return new Promise<void>((resolve) => {
        answer = () => {
          for (let p = first; p < first + count; p++) {
            new DataView(buffer).setUint32(p * 4096, p * 10, true);
          }
          map.markPresent(first, count);
          resolve();
        };
      });
    };
    const lazyRam: RamBacking = {
      spec: main,
      buffer,
      regionRef: null,
      zeroed: false,
      lazy: { map, presentBuffer, fetchPages },
      close: () => Promise.resolve(),
      abandon: () => undefined,
    };
    const busy = ramOf('busy');
    const busyRam: RamBacking = {
      spec: { ...busy.main, backend: 'private', region: '' },
      buffer: new SharedArrayBuffer(RAM_SIZE),
      regionRef: null,
      zeroed: true,
      close: () => Promise.resolve(),
      abandon: () => undefined,
    };
    const b = await boot('busy', SPIN, busyRam, busy.spec);
    const a = await boot('lazy', READER, lazyRam, spec);
    expect(a.postcopyWaits()).not.toBeNull();
    expect(b.postcopyWaits()).toBeNull();

    await until('the page request', () => asked.length === 1);
    expect(asked[0]).toEqual([DATA_PAGE, 16]);
    expect(a.postcopyWaits()).toMatchObject({ pagesWaited: 1, waiting: 1, page: DATA_PAGE });
    const a0 = a.retiredInstructions();
    const b0 = b.retiredInstructions();
    await until('the thread-mate to run on', () => b.retiredInstructions() > b0 + 1_000_000);
    expect(a.retiredInstructions()).toBe(a0);
    map.setState(PresentState.SourcePaused);
    expect(a.postcopyWaits()?.sourcePaused).toBe(true);
    map.setState(PresentState.Filling);

    answer();
    await until('the guest to resume', () => a.retiredInstructions() > a0);
    expect(new DataView(buffer).getUint32(DATA_PAGE * 4096 + 4, true)).toBe(DATA_PAGE * 10 + 1);
    await until('the wait to be counted', () => a.postcopyWaits()!.samples === 1);
    const w = a.postcopyWaits()!;
    expect(w).toMatchObject({ pagesWaited: 1, waiting: 0, sourcePaused: false, requests: 1 });
    expect(w.p50Us).toBeGreaterThan(0);
    await a.destroy();
    await b.destroy();
  });
});
