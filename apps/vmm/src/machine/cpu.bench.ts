import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runElfSync } from './run-sync.js';

/** One row of the CPU benchmark table. */
interface Row {
  engine: string;
  instructions: number;
  seconds: number;
}

const guestsDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'guests');

const QEMU_ARGS = [
  '-M',
  'virt',
  '-bios',
  'none',
  '-nographic',
  '-monitor',
  'none',
  '-cpu',
  'rv32,f=off,d=off,c=off,h=off,s=off',
];

function qemuAvailable(): boolean {
  return spawnSync('qemu-system-riscv32', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Wall time of one QEMU run of an ELF, in seconds. */
function qemuSeconds(elf: string): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('qemu-system-riscv32', [...QEMU_ARGS, '-kernel', elf], {
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 120_000,
  });
  if (r.status !== 0)
    throw new Error(`qemu-system-riscv32 failed on ${elf}: ${r.stderr.toString()}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function ours(elf: Uint8Array, translate: boolean): Row {
  const t0 = process.hrtime.bigint();
  const r = runElfSync(elf, { timeMode: 'realtime', translate, maxInstructions: 20e9 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.exit === null || r.exit.code !== 0)
    throw new Error(`bench guest did not pass (${r.reason})`);
  return {
    engine: translate ? 'Handoff, block translator' : 'Handoff, interpreter only',
    instructions: r.instructions,
    seconds,
  };
}

/**
 * `npm run bench -- cpu`: runs guests/bench (CRC-32, matmul, list sort, sieve;
 * 3.25 G instructions) with dirty tracking on, with and without the block
 * translator, and on qemu-system-riscv32 when installed. QEMU's instruction
 * count is ours (the guest is deterministic; checked with -icount); its
 * start-up (a hello run) is subtracted.
 */
export async function run(): Promise<{
  title: string;
  columns: string[];
  rows: (string | number)[][];
  notes: string;
}> {
  const path = join(guestsDir, 'bench', 'bench.elf');
  const elf = readFileSync(path);
  const rows: Row[] = [ours(elf, true), ours(elf, false)];
  let note = 'qemu-system-riscv32 is not installed: no QEMU column.';
  if (qemuAvailable()) {
    const startup = qemuSeconds(join(guestsDir, 'hello', 'hello.elf'));
    const total = qemuSeconds(path);
    rows.push({
      engine: 'QEMU 7.2 TCG',
      instructions: rows[0]!.instructions,
      seconds: Math.max(total - startup, 1e-3),
    });
    note = `QEMU wall ${total.toFixed(2)} s minus start-up ${startup.toFixed(2)} s (a hello run).`;
  }
  const qemu = rows.find((r) => r.engine.startsWith('QEMU'));
  return {
    title: 'guests/bench: guest MIPS (instret / wall), dirty tracking on',
    columns: ['engine', 'instructions', 'wall (s)', 'MIPS', 'vs QEMU'],
    rows: rows.map((r) => [
      r.engine,
      r.instructions,
      r.seconds.toFixed(2),
      Math.round(r.instructions / r.seconds / 1e6),
      qemu === undefined ? '-' : `${(qemu.seconds / r.seconds).toFixed(2)}×`,
    ]),
    notes: `${note} Targets: ≥ 150 MIPS interpreted; a quarter of QEMU's speed with the translator.`,
  };
}
