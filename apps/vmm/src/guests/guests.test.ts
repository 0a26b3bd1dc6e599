/**
 * The committed guests (guests/<name>/<name>.elf) on the Handoff machine: the control device,
 * host args, the READY doorbell and the kvserver protocol. The sizes are shrunk through host
 * args so each case runs in well under a second.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createMachine, type Machine } from '../machine/machine.js';
import { runElfSync } from '../machine/run-sync.js';

const guest = (name: string): Uint8Array =>
  readFileSync(fileURLToPath(new URL(`../../../../guests/${name}/${name}.elf`, import.meta.url)));
const text = (bytes: Uint8Array): string => Buffer.from(bytes).toString('latin1');
const args = (s: string): Uint8Array => new TextEncoder().encode(s);
const identity = { generationId: 0x0123456789abcdefn, entropy: [1, 2, 3, 4, 5, 6, 7, 8] };

describe('hello', () => {
  it('sees the control device, its generation id and host args, and passes', () => {
    const run = runElfSync(guest('hello'), {
      ramSize: 16 << 20,
      identity,
      hostArgs: args('mode=test'),
    });
    expect(run.exit).toEqual({ kind: 'pass', code: 0 });
    expect(text(run.output)).toBe(
      [
        'hello from a Handoff guest (rv32ima, hart 0)',
        'ram: 0x80000000..0x81000000 (16 MiB, from probe), image ends at 0x80013000',
        'control device: present, version 1.0, features 0xf',
        'generation id: 0x0123456789abcdef, entropy[0]: 0x00000001',
        'host args: mode=test',
        'bye',
        '',
      ].join('\n'),
    );
  });

  it('takes the RAM size from host args when given', () => {
    const run = runElfSync(guest('hello'), { ramSize: 16 << 20, hostArgs: args('ram=8M') });
    expect(text(run.output)).toContain('ram: 0x80000000..0x80800000 (8 MiB, from host-args)');
  });
});

describe('bench', () => {
  it('prints the checksums QEMU prints (bench.iters=3, cross-checked on qemu-system-riscv32)', () => {
    const run = runElfSync(guest('bench'), { ramSize: 16 << 20, hostArgs: args('bench.iters=3') });
    expect(run.exit).toEqual({ kind: 'pass', code: 0 });
    const out = text(run.output);
    expect(out).toContain(
      [
        'bench: 3 iterations of crc32, matmul, listsort, sieve',
        'crc32     checksum 0x18c60098',
        'matmul    checksum 0xaebcfeef',
        'listsort  checksum 0xda0fa8aa',
        'sieve     checksum 0x32184d76',
        'primes below 65534: 6542',
        'checksum: 0x16319235',
      ].join('\n'),
    );
    const m = /instret: (\d+) \(crc32 (\d+), matmul (\d+), listsort (\d+), sieve (\d+)\)/.exec(out);
    expect(m).not.toBeNull();
    const [total, ...parts] = m!.slice(1).map(Number) as [number, ...number[]];
    expect(parts.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(total);
    expect(total).toBeLessThan(run.instructions);
  });
});

describe('kvserver', () => {
  /** Runs until the console (since `from`) contains `want` or the budget runs out. */
  function runUntil(machine: Machine, out: () => string, want: string, budget = 200_000_000): void {
    const limit = machine.cpu.retired + budget;
    while (!out().includes(want)) {
      if (machine.cpu.retired >= limit) throw new Error(`no "${want}" in: ${out()}`);
      const reason = machine.run(1_000_000);
      if (reason === 'halted' || reason === 'fatal') break;
    }
  }

  it('builds its table, rings READY, then serves GET/PUT/STATS/RAND/SHUTDOWN', () => {
    let out = '';
    const ready: number[] = [];
    const machine = createMachine({
      ramSize: 16 << 20,
      elf: guest('kvserver'),
      timeMode: 'deterministic',
      identity,
      hostArgs: args('kv.slots_log2=12 kv.work=4'),
      uartSink: (b) => (out += String.fromCharCode(b)),
      onReady: (tag) => ready.push(tag),
    });
    runUntil(machine, () => out, 'kvserver: ready\n');
    expect(ready).toEqual([2]);
    expect(out).toMatch(
      /^kvserver: building 3072 entries in 4096 slots \(256 KiB at 0x800[0-9a-f]{5}\), 4 rounds each\n/,
    );
    const ask = (req: string, answer: string): string => {
      const from = out.length;
      machine.input(args(req));
      runUntil(machine, () => out.slice(from), answer);
      return out.slice(from);
    };
    expect(ask('PING\n', '\n')).toBe('PONG\n');
    expect(ask('GET k3071\n', '\n')).toMatch(/^VALUE [0-9a-f]{16}\n$/);
    expect(ask('GET k3072\n', '\n')).toBe('NOT_FOUND\n');
    expect(ask('PUT greeting hello world\r\n', '\n')).toBe('OK\n');
    expect(ask('GET greeting\n', '\n')).toBe('VALUE hello world\n');
    expect(ask('PUT\n', '\n')).toBe('ERR usage: PUT key value\n');
    expect(ask('FROB\n', '\n')).toMatch(/^ERR unknown command/);
    expect(ask('STATS\n', '\n')).toBe(
      'STATS entries=3073 slots=4096 gets=3 hits=2 puts=1 build_ms=' +
        /build_ms=(\d+)/.exec(out)![1] +
        ' ready_count=1 generation=0x0123456789abcdef\n',
    );
    const r1 = ask('RAND\n', '\n');
    // A clone gets a new generation id: RAND reseeds from the new entropy.
    machine.control.setIdentity({ generationId: 42n, entropy: [9, 9, 9, 9, 9, 9, 9, 9] });
    const r2 = ask('RAND\n', '\n');
    expect(r2).toMatch(/^RAND [0-9a-f]{16}\n$/);
    expect(r2).not.toBe(r1);
    expect(ask('SHUTDOWN\n', 'BYE\n')).toBe('BYE\n');
    machine.run(1_000_000);
    expect(machine.exit).toEqual({ kind: 'pass', code: 0 });
  });
});
