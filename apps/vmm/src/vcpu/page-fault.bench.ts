/**
 * `npm run bench -- page-fault`: the latency of a post-copy page fault as the guest sees it —
 * from the instruction that touched a missing page of lazy RAM parking the VM to the VM running
 * again — through the real vCPU pool and `Vm` (vcpu/page-requests.ts), with a stand-in for
 * memstore's FetchPages: the vmm's own part of a fault (thread → host message, the request, the
 * doorbell, the thread's wake-up), plus the answer's delay where a row says so.
 *
 * The guest reads one word of every 16th page of 64 MiB of lazy RAM (each request covers the
 * page and the next 15, so every read faults: 1023 faults), then powers off.
 *
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PresentMap, PresentState, presentMapBytes } from '@handoff/bitmap';
import { createLogger } from '@handoff/service';
import { createMachine } from '../machine/machine.js';
import { runUntilStopped } from '../machine/run-sync.js';
import { asm, elfOf, li } from '../cpu/test-asm.js';
import type { GuestImage } from '../guests/catalog.js';
import type { RamBlockSpec, VmSpec } from '../model/types.js';
import type { RamBacking } from '../ram/backing.js';
import { MAIN_BLOCK_ID, RAM_WINDOW } from '../vm/spec.js';
import { Vm } from '../vm/vm.js';
import { VcpuThreadPool } from './pool.js';
import { vcpuWorkerUrl } from './worker-url.js';

const RAM_SIZE = 64 * 1024 * 1024;
const PAGES = RAM_SIZE / 4096;
const STRIDE_PAGES = 16;
const FINISHER = 0x0010_0000;

/** A table of the harness (bench/run.js). */
interface Table {
  title: string;
  columns: string[];
  rows: string[][];
  notes?: string;
}

/** One row: how memstore answers, and whether a busy VM shares the thread. */
interface Case {
  readonly answerMs: number;
  readonly busyMate: boolean;
}

const CASES: readonly Case[] = [
  { answerMs: 0, busyMate: false },
  { answerMs: 1, busyMate: false },
  { answerMs: 0, busyMate: true },
];

const [t0, t1, t2, s0, s1] = [5, 6, 7, 8, 9];
/** Reads a word of every 16th page from page 16 on, then powers off. */
const TOUCHER = elfOf([
  ...li(s0, RAM_WINDOW.base + STRIDE_PAGES * 4096),
  ...li(s1, RAM_WINDOW.base + RAM_SIZE),
  ...li(t2, STRIDE_PAGES * 4096),
  asm.lw(t1, s0, 0), // loop:
  asm.add(s0, s0, t2),
  asm.sltu(t0, s0, s1),
  asm.bne(t0, 0, -12),
  ...li(s0, FINISHER),
  ...li(t1, 0x5555),
  asm.sw(t1, s0, 0),
  asm.jal(0, 0),
]);
const SPIN = elfOf([asm.addi(t0, t0, 1), asm.jal(0, -4)]);

function ramSpec(name: string, backend: RamBlockSpec['backend'], size = RAM_SIZE): RamBlockSpec {
  return {
    id: MAIN_BLOCK_ID,
    guestBase: RAM_WINDOW.base,
    size,
    backend,
    region: backend === 'private' ? '' : `${name}-ram0`,
  };
}

async function bootVm(
  threads: VcpuThreadPool,
  name: string,
  elf: Uint8Array,
  ram: RamBacking,
): Promise<Vm> {
  const spec: VmSpec = { name, guest: 'bench', ram: [ram.spec], args: {} };
  const guest = { name: 'bench', bytes: elf } as unknown as GuestImage;
  const logger = createLogger({ name: 'page-fault-bench', level: 'silent', format: 'json' });
  const vm = await Vm.boot(spec, [ram], guest, { vmmId: 'bench', logger, threads });
  await vm.start();
  return vm;
}

async function measure(threads: VcpuThreadPool, c: Case): Promise<string[]> {
  const buffer = new SharedArrayBuffer(RAM_SIZE);
  const presentBuffer = new SharedArrayBuffer(presentMapBytes(PAGES));
  const map = PresentMap.initialize(presentBuffer, PAGES);
  map.setState(PresentState.Filling);
  map.markPresent(0, STRIDE_PAGES); // the code, and the first stride
  let firstAsk = 0;
  let lastAsk = 0;
  const fetchPages = async (first: number, count: number): Promise<void> => {
    lastAsk = performance.now();
    if (firstAsk === 0) firstAsk = lastAsk;
    if (c.answerMs > 0) await new Promise((r) => setTimeout(r, c.answerMs));
    map.markPresent(first, count);
  };
  const lazy: RamBacking = {
    spec: ramSpec('lazy', 'shared'),
    buffer,
    regionRef: null,
    zeroed: false,
    lazy: { map, presentBuffer, fetchPages },
    close: () => Promise.resolve(),
    abandon: () => undefined,
  };
  let mate: Vm | undefined;
  if (c.busyMate) {
    mate = await bootVm(threads, 'mate', SPIN, {
      spec: ramSpec('mate', 'private', 1 << 20),
      buffer: new SharedArrayBuffer(1 << 20),
      regionRef: null,
      zeroed: true,
      close: () => Promise.resolve(),
      abandon: () => undefined,
    });
  }
  const vm = await bootVm(threads, 'lazy', TOUCHER, lazy);
  const mate0 = mate?.retiredInstructions() ?? 0;
  const started = performance.now();
  while (vm.currentState !== 'powered-off') {
    if (performance.now() - started > 120_000) throw new Error('the guest did not finish');
    await new Promise((r) => setTimeout(r, 2));
  }
  const elapsed = performance.now() - started;
  const faulting = lastAsk - firstAsk;
  const mateMips = mate === undefined ? 0 : (mate.retiredInstructions() - mate0) / elapsed / 1000;
  const w = vm.postcopyWaits()!;
  await vm.destroy();
  await mate?.destroy();
  return [
    c.answerMs === 0 ? 'at once' : `after ${c.answerMs} ms`,
    c.busyMate ? 'a busy VM' : 'none',
    String(w.pagesWaited),
    String(w.requests),
    (w.p50Us / 1000).toFixed(3),
    (w.p99Us / 1000).toFixed(3),
    ((faulting / Math.max(1, w.requests - 1)) * 1000).toFixed(0),
    mate === undefined ? '—' : mateMips.toFixed(0),
  ];
}

const BENCH_ELF = join(
  dirname(fileURLToPath(import.meta.url)),
  ...['..', '..', '..', '..', 'guests', 'bench', 'bench.elf'],
);
const SPEED_INSTRUCTIONS = 300_000_000;

/**
 * MIPS of guests/bench (the CPU bench guest) for its first 300 M instructions: on ordinary RAM
 * with and without the translator, and on lazy RAM whose pages are all present but whose map
 * does not say Complete yet (every access on the slow path, nothing translated).
 */
function speed(kind: 'ordinary' | 'interpreter' | 'lazy'): number {
  const elf = readFileSync(BENCH_ELF);
  const size = 128 * 1024 * 1024;
  const pages = size / 4096;
  let present: PresentMap | undefined;
  if (kind === 'lazy') {
    present = PresentMap.initialize(new SharedArrayBuffer(presentMapBytes(pages)), pages);
    present.setState(PresentState.Filling);
    present.markPresent(0, pages);
  }
  const m = createMachine({
    ramSize: size,
    timeMode: 'realtime',
    translate: kind === 'ordinary',
    elf,
    ...(present !== undefined ? { ram: { present } } : {}),
  });
  const t0 = performance.now();
  runUntilStopped(m, SPEED_INSTRUCTIONS);
  return m.cpu.retired / (performance.now() - t0) / 1000;
}

function speedTable(): Table {
  const rows: string[][] = [];
  for (let round = 0; round < 3; round++) {
    const ordinary = speed('ordinary');
    const interpreter = speed('interpreter');
    const lazy = speed('lazy');
    rows.push([
      String(round + 1),
      ordinary.toFixed(0),
      interpreter.toFixed(0),
      lazy.toFixed(0),
      `${((lazy / ordinary) * 100).toFixed(0)} %`,
    ]);
  }
  return {
    title: 'Guest speed while RAM is lazy (every page present, fill not Complete)',
    columns: ['round', 'ordinary MIPS', 'interpreter only MIPS', 'lazy MIPS', 'lazy / ordinary'],
    rows,
    notes:
      'guests/bench, first 300 M instructions, rounds alternated. Once the map says Complete ' +
      'the block is ordinary again (fast path and translator).',
  };
}

/** Runs every case on a one-thread pool, then the speed table. */
export async function run(): Promise<Table[]> {
  const faults = await faultTable();
  return [faults, speedTable()];
}

async function faultTable(): Promise<Table> {
  const threads = new VcpuThreadPool(vcpuWorkerUrl(), { threads: 1, spare: 0, maxThreads: 1 });
  try {
    const rows: string[][] = [];
    for (const c of CASES) rows.push(await measure(threads, c));
    return {
      title: 'Post-copy page fault, as the guest sees it (park → run again)',
      columns: [
        'FetchPages answers',
        'thread-mate',
        'faults',
        'requests',
        'p50 ms',
        'p99 ms',
        'µs from one request to the next',
        'thread-mate MIPS meanwhile',
      ],
      rows,
      notes:
        'One vCPU pool thread; memstore is a stand-in that marks the pages present (at once, or ' +
        "after a timer). The latency is the vmm's own part of a fault; a real fault adds " +
        "memstore's fetch from the source host. With a busy thread-mate a parked VM runs " +
        "again after the mate's current slice at the latest (0.25–1 ms on a quiet machine; " +
        'slices shrink on a loaded one). p99 is mostly the OS waking the sleeping thread on a ' +
        'loaded machine.',
    };
  } finally {
    await threads.close();
  }
}
