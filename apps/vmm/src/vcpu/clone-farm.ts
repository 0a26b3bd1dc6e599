/**
 * A measuring tool of the `vcpu` benchmark (many-vms.bench.ts): idle clones of a kvserver
 * template in one process, built the way a vCPU thread holds them — each clone a machine whose
 * RAM is the template's RAM file mapped copy-on-write, restored from the template's device
 * state and run until it sleeps in WFI — and what they cost: PSS, V8 heap (after a full GC),
 * array-buffer memory, and optionally a heap snapshot summed by constructor.
 *
 * Run as a child process (the numbers are the whole process's):
 * `node --expose-gc clone-farm.js RAM_MIB CLONES [--requests] [--snapshot]`; it prints one JSON
 * line ({@link FarmReport}). `--requests`: each clone answers a PUT and a GET before the
 * measurement (it then has decoded and translated kvserver's request path).
 *
 * @packageDocumentation
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8';
import { mapFile, readSmapsRollup, type Mapping } from '@handoff/shm';
import { createMachine, type Machine } from '../machine/machine.js';

const MiB = 1024 * 1024;
const KVSERVER = fileURLToPath(
  new URL('../../../../guests/kvserver/kvserver.elf', import.meta.url),
);
const HOST_ARGS = new TextEncoder().encode('kv.slots_log2=12 kv.work=4');

/** What one farm measured (bytes unless named otherwise). */
export interface FarmReport {
  readonly ramMiB: number;
  readonly clones: number;
  readonly requests: boolean;
  readonly pssBefore: number;
  readonly pssAfter: number;
  readonly heapBefore: number;
  readonly heapAfter: number;
  readonly buffersBefore: number;
  readonly buffersAfter: number;
  readonly buildMs: number;
  /** Heap snapshots before and after: the growth of self sizes by constructor, per clone, largest first. */
  readonly byConstructor?: readonly {
    name: string;
    bytesPerClone: number;
    countPerClone: number;
  }[];
}

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g === undefined) throw new Error('run clone-farm with node --expose-gc');
  g();
  g();
}

/** Runs `m` until it sleeps with nothing but the host to wake it. */
function runToSleep(m: Machine): void {
  const limit = m.cpu.retired + 200_000_000;
  for (;;) {
    const reason = m.run(1_000_000);
    if (reason === 'wfi' && m.wakeDelayMs() > 0) return;
    if (reason === 'halted' || reason === 'fatal') throw new Error(`guest stopped: ${reason}`);
    if (m.cpu.retired >= limit) throw new Error('guest never went to sleep');
  }
}

function request(m: Machine, out: { text: string }, text: string): string {
  const from = out.text.length;
  m.input(new TextEncoder().encode(text));
  runToSleep(m);
  return out.text.slice(from);
}

/** Self sizes and counts of a heap snapshot by constructor (objects) or kind (everything else). */
type HeapCensus = Map<string, { bytes: number; count: number }>;

/** Takes a heap snapshot and sums it by constructor; the RAM mappings' backing stores are left out. */
function heapCensus(): HeapCensus {
  const dir = mkdtempSync(join(tmpdir(), 'handoff-farm-'));
  try {
    const file = writeHeapSnapshot(join(dir, 'farm.heapsnapshot'));
    const snap = JSON.parse(readFileSync(file, 'utf8')) as {
      snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
      nodes: number[];
      strings: string[];
    };
    const fields = snap.snapshot.meta.node_fields;
    const types = snap.snapshot.meta.node_types[0];
    const stride = fields.length;
    const typeAt = fields.indexOf('type');
    const nameAt = fields.indexOf('name');
    const sizeAt = fields.indexOf('self_size');
    const sums: HeapCensus = new Map();
    for (let k = 0; k < snap.nodes.length; k += stride) {
      const type = types[snap.nodes[k + typeAt]!]!;
      const raw = snap.strings[snap.nodes[k + nameAt]!]!;
      if (raw === 'system / JSArrayBufferData') continue; // off-heap: RAM mappings, counted apart
      const name =
        type === 'object' || type === 'native' ? raw : type === 'closure' ? 'closure' : `(${type})`;
      const s = sums.get(name) ?? { bytes: 0, count: 0 };
      s.bytes += snap.nodes[k + sizeAt]!;
      s.count++;
      sums.set(name, s);
    }
    return sums;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The growth from `before` to `after` per clone, largest first (top 12). */
function censusGrowth(
  before: HeapCensus,
  after: HeapCensus,
  clones: number,
): { name: string; bytesPerClone: number; countPerClone: number }[] {
  return [...after.entries()]
    .map(([name, s]) => {
      const b = before.get(name) ?? { bytes: 0, count: 0 };
      return {
        name,
        bytesPerClone: (s.bytes - b.bytes) / clones,
        countPerClone: (s.count - b.count) / clones,
      };
    })
    .sort((x, y) => y.bytesPerClone - x.bytesPerClone)
    .slice(0, 12);
}

/** Builds the template and `clones` clones; measures. */
export function farm(
  ramMiB: number,
  clones: number,
  requests: boolean,
  snapshot: boolean,
): FarmReport {
  const ramSize = ramMiB * MiB;
  const dir = mkdtempSync(join(tmpdir(), 'handoff-farm-'));
  const held: { m: Machine; map: Mapping<SharedArrayBuffer> }[] = [];
  try {
    const template = createMachine({
      ramSize,
      elf: readFileSync(KVSERVER),
      hostArgs: HOST_ARGS,
      uartSink: () => undefined,
    });
    runToSleep(template);
    const state = template.save();
    const file = join(dir, 'template.mem');
    writeFileSync(file, template.memory.main.u8);
    gc();
    const censusBefore = snapshot ? heapCensus() : undefined;
    gc();
    const pssBefore = readSmapsRollup().pss;
    const heapBefore = getHeapStatistics().used_heap_size;
    const buffersBefore = process.memoryUsage().arrayBuffers;
    const t0 = performance.now();
    for (let k = 0; k < clones; k++) {
      const map = mapFile(file, { sharing: 'private', length: ramSize });
      const out = { text: '' };
      const m = createMachine({
        ramSize,
        ram: { bytes: map.buffer },
        uartSink: (b) => (out.text += String.fromCharCode(b)),
      });
      m.restore(state);
      runToSleep(m);
      if (requests) {
        const got = request(m, out, `PUT key${k} v${k}\nGET key${k}\n`);
        if (got !== `OK\nVALUE v${k}\n`)
          throw new Error(`clone ${k} answered ${JSON.stringify(got)}`);
      }
      held.push({ m, map });
    }
    const buildMs = performance.now() - t0;
    gc();
    const report: FarmReport = {
      ramMiB,
      clones,
      requests,
      pssBefore,
      pssAfter: readSmapsRollup().pss,
      heapBefore,
      heapAfter: getHeapStatistics().used_heap_size,
      buffersBefore,
      buffersAfter: process.memoryUsage().arrayBuffers,
      buildMs,
      ...(censusBefore !== undefined
        ? { byConstructor: censusGrowth(censusBefore, heapCensus(), clones) }
        : {}),
    };
    return report;
  } finally {
    for (const h of held) h.map.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [ram, count] = process.argv.slice(2).map(Number);
  const report = farm(
    ram ?? 256,
    count ?? 100,
    process.argv.includes('--requests'),
    process.argv.includes('--snapshot'),
  );
  process.stdout.write(`${JSON.stringify(report)}\n`);
}
